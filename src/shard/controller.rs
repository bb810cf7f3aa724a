//! The controller service: it owns the cluster metadata, decides every topic change and
//! publishes the result to every shard. It is a service on shard 0 of every node.
//!
//! - On a single node the metadata log (`metadata::store`) is the record of every
//!   change: a change is appended there, applied and published.
//! - In a cluster the record is the controller log (`metadata::controller_log`), raft
//!   group 0 on the controller voters. Its leader decides: it checks a change against the
//!   metadata as of everything committed, proposes the change's records as one batch and
//!   answers once it is committed and applied here. Every voter applies the committed
//!   records in order ([`ControllerService::apply_committed`]) and keeps the result, with
//!   its revision, in its metadata log, which is then a copy it restarts from. Nodes
//!   outside the quorum adopt the copy the leader sends them
//!   ([`ControllerService::adopt_sent`]), newer revisions only.
//!
//! Handlers reach the service through `controller_client::Controller`; it knows nothing of
//! shards beyond [`Publish`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::raft_driver::GroupHandle;
use crate::error::ErrorCode;
use crate::log::Log;
use crate::metadata::controller_log::{decode_batch, encode_batch};
use crate::metadata::store::{decode_snapshot, records_of, MetaRecord, MetaStore};
use crate::metadata::{
    BrokerEndpoint, ClusterMetadata, NodeId, PartitionId, ShardAddr, ShardId, TopicMeta,
};
use crate::notify::Notify;
use crate::replica::raft_shard::{Acks, ProposeError};
use crate::replica::replication::ReplicationGroup;
use crate::task::Semaphore;

use super::placement::place;
use super::router::{CreateOutcome, QuorumState, TopicChange, TopicSpec};

/// The first producer id a cluster's controller hands out: above every id a node's shard
/// could have made itself (`counter << 20 | node << 10 | shard`) in any plausible life.
pub const FIRST_PRODUCER_ID: u64 = 1 << 48;

/// How long a change waits to be committed and applied before the client is told the
/// request timed out (its outcome is then unknown, as Kafka's controller says too).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a new controller leader may take to apply what its predecessors committed
/// before it decides anything.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the controller log read per step while applying it.
const APPLY_READ_BYTES: usize = 1 << 20;

/// The shard of each node that hosts the controller service.
pub const CONTROLLER_SHARD: ShardId = 0;

/// How the controller has every shard adopt a new metadata snapshot; resolves once all
/// of them did (or failed, which they log).
pub trait Publish {
    /// Sends `meta` to every shard and waits for them.
    fn publish(&self, meta: Arc<ClusterMetadata>) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

/// The controller service: the authoritative metadata, its record, and the lock that
/// serialises changes.
pub struct ControllerService {
    /// Behind a mutex only so that writes can run on a helper thread: the log is written
    /// with blocking calls, which must not stall the shard.
    store: Arc<Mutex<MetaStore>>,
    /// The metadata as of the last change applied here.
    meta: RefCell<ClusterMetadata>,
    lock: Semaphore,
    /// Serialises applying the controller log (and adopting copies).
    apply_lock: Semaphore,
    node: NodeId,
    shards: usize,
    /// Every node of the cluster, in order (this one alone on a single node).
    nodes: Vec<NodeId>,
    /// True on a node of a cluster: changes go through the controller log.
    cluster: bool,
    /// The controller log and its raft group, once opened (voters of a cluster only).
    log: RefCell<Option<ControllerLog>>,
    /// Revision every shard has applied (a change answers once it is reached).
    published: Cell<u64>,
    /// True once this leader seeded an empty controller log with its own copy.
    seeded: Cell<bool>,
    /// The controller leader as last seen, so that a change of leader wakes
    /// [`ControllerService::changed`]'s waiters.
    seen_leader: Cell<Option<u64>>,
    /// Replicas of a topic created with replication factor -1.
    default_replication_factor: i16,
    /// Woken whenever the metadata changes (the controller leader then sends it).
    pub changed: Notify,
}

/// The controller log as a voter holds it: the log to read committed records from and
/// the raft group to propose to.
#[derive(Clone)]
pub struct ControllerLog {
    /// The log (`__cluster_metadata-0`).
    pub log: Rc<Log>,
    /// Its raft group.
    pub group: Rc<GroupHandle>,
}

/// Where the controller service sits in its cluster.
#[derive(Debug, Clone)]
pub struct ControllerPlace {
    /// This node.
    pub node: NodeId,
    /// Its shard count (every node of a cluster runs the same).
    pub shards: usize,
    /// Every node of the cluster, in order (this one alone on a single node).
    pub nodes: Vec<NodeId>,
    /// Replicas of a topic created with replication factor -1.
    pub default_replication_factor: i16,
}

impl ControllerService {
    /// The service over the metadata log `store`, whose replay gave `meta`, for the
    /// node and cluster `place` describes.
    pub fn new(
        store: MetaStore,
        meta: ClusterMetadata,
        place: ControllerPlace,
    ) -> ControllerService {
        let cluster = !place.nodes.is_empty();
        let published = meta.revision;
        ControllerService {
            store: Arc::new(Mutex::new(store)),
            meta: RefCell::new(meta),
            lock: Semaphore::new(1),
            apply_lock: Semaphore::new(1),
            node: place.node,
            shards: place.shards,
            nodes: if place.nodes.is_empty() {
                vec![place.node]
            } else {
                place.nodes
            },
            cluster,
            log: RefCell::new(None),
            published: Cell::new(published),
            seeded: Cell::new(false),
            seen_leader: Cell::new(None),
            default_replication_factor: place.default_replication_factor,
            changed: Notify::default(),
        }
    }

    /// Hands the service the controller log once its raft group is open (a voter).
    pub fn attach_log(&self, log: ControllerLog) {
        *self.log.borrow_mut() = Some(log);
        self.changed.notify();
    }

    /// True when this node's service decides changes: always on a single node; in a
    /// cluster, while it leads the controller group.
    pub fn decides(&self) -> bool {
        if !self.cluster {
            return true;
        }
        self.log
            .borrow()
            .as_ref()
            .and_then(|l| l.group.view())
            .is_some_and(|v| v.is_leader)
    }

    /// The controller leader as this node knows it (a voter: from the raft group).
    pub fn leader(&self) -> Option<NodeId> {
        let view = self.log.borrow().as_ref().and_then(|l| l.group.view())?;
        view.leader.and_then(|n| i32::try_from(n).ok())
    }

    /// The controller quorum as this node sees it; `voters` are the configured ones
    /// (this node's view of the raft group is used when it keeps the log).
    pub async fn quorum_state(&self, voters: &[u64]) -> QuorumState {
        let log = self.log.borrow().clone();
        let node = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        let Some((cl, view)) = log.and_then(|l| l.group.view().map(|v| (l, v))) else {
            return QuorumState {
                leader: None,
                term: 0,
                high_watermark: -1,
                voters: voters.iter().map(|&v| (node(v), -1)).collect(),
            };
        };
        let progress = cl.group.driver.progress(cl.group.group).await;
        QuorumState {
            leader: view.leader.map(node),
            term: view.term,
            high_watermark: view.high_watermark,
            voters: view
                .voters
                .iter()
                .map(|&v| {
                    let end = progress
                        .iter()
                        .find(|(n, _)| *n == v)
                        .map_or(-1, |(_, o)| *o);
                    (node(v), end)
                })
                .collect(),
        }
    }

    /// The revision of the metadata applied here.
    pub fn revision(&self) -> u64 {
        self.meta.borrow().revision
    }

    /// The metadata as of the last change applied here.
    pub fn metadata(&self) -> ClusterMetadata {
        self.meta.borrow().clone()
    }

    /// Records an applied change as the new metadata, publishes it to every shard, and
    /// then counts its revision as published.
    async fn adopt(&self, meta: ClusterMetadata, publish: &dyn Publish) {
        let revision = meta.revision;
        *self.meta.borrow_mut() = meta.clone();
        publish.publish(Arc::new(meta)).await;
        self.published.set(self.published.get().max(revision));
        self.changed.notify();
    }

    /// Keeps `meta` in this node's metadata log, replacing what it held, off the shard's
    /// thread.
    async fn keep(&self, meta: &ClusterMetadata) -> std::io::Result<()> {
        let kept = meta.clone();
        self.with_store(move |store| store.replace(&kept)).await
    }

    /// Runs `f` on the metadata log on a helper thread: its writes block.
    async fn with_store(
        &self,
        f: impl FnOnce(&mut MetaStore) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let store = self.store.clone();
        crate::task::blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| std::io::Error::other("metadata log lock poisoned"))?;
            f(&mut store)
        })
        .await
    }

    /// Adopts the metadata the controller leader sent (on a node outside the quorum):
    /// kept in this node's log, so that it restarts with it, and applied on every shard.
    /// Nothing happens unless its revision is newer than this node's.
    pub async fn adopt_sent(
        &self,
        sent: ClusterMetadata,
        publish: &dyn Publish,
    ) -> std::io::Result<()> {
        let Ok(_permit) = self.apply_lock.acquire_permit(1).await else {
            return Ok(());
        };
        self.adopt_newer(sent, publish).await
    }

    /// [`ControllerService::adopt_sent`] with the apply lock held.
    async fn adopt_newer(
        &self,
        sent: ClusterMetadata,
        publish: &dyn Publish,
    ) -> std::io::Result<()> {
        if sent.revision <= self.meta.borrow().revision {
            return Ok(());
        }
        self.keep(&sent).await?;
        let mut meta = sent;
        // Versions are this node's own: shards take a snapshot only when it is newer.
        meta.version = self.meta.borrow().version + 1;
        info!(
            revision = meta.revision,
            topics = meta.topics.len(),
            brokers = meta.brokers.len(),
            "adopted the controller's metadata"
        );
        self.adopt(meta, publish).await;
        Ok(())
    }

    /// Adopts the metadata of the snapshot installed in the controller log, which now
    /// starts at `start`, past this node's revision (the apply lock held).
    async fn adopt_installed(
        &self,
        cl: &ControllerLog,
        start: i64,
        publish: &dyn Publish,
    ) -> Result<bool, String> {
        let dir = cl.log.dir();
        let state = crate::replica::raft_snapshot::load_state(dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .ok_or_else(|| {
                format!(
                    "the controller log starts at {start}, past this node's metadata (revision {}), and holds no snapshot",
                    self.revision()
                )
            })?;
        let meta = decode_snapshot(&state)
            .map_err(|e| format!("the controller snapshot's metadata: {e}"))?;
        if i64::try_from(meta.revision).unwrap_or(i64::MAX) < start {
            return Err(format!(
                "the controller snapshot's metadata (revision {}) is older than the log's start {start}",
                meta.revision
            ));
        }
        info!(
            revision = meta.revision,
            "adopting the metadata of the controller's snapshot"
        );
        self.adopt_newer(meta, publish)
            .await
            .map_err(|e| format!("keeping the controller snapshot's metadata: {e}"))?;
        Ok(true)
    }

    /// Applies what the controller log committed since the last call (a voter), keeps
    /// the result and publishes it; true when anything was applied. A leader whose log
    /// is empty first seeds it with its own copy (a cluster upgraded from a build
    /// without the controller log).
    pub async fn apply_committed(&self, publish: &dyn Publish) -> Result<bool, String> {
        let Ok(_permit) = self.apply_lock.acquire_permit(1).await else {
            return Ok(false);
        };
        let Some(cl) = self.log.borrow().clone() else {
            return Ok(false);
        };
        let Some(view) = cl.group.view() else {
            return Ok(false);
        };
        if self.seen_leader.replace(view.leader) != view.leader {
            // The new leader sends the metadata and takes registrations.
            self.changed.notify();
        }
        let from = self.meta.borrow().revision;
        if view.is_leader && view.log_end == 0 && !self.seeded.get() {
            self.seeded.set(true);
            let own = self.meta.borrow().clone();
            if from == 0 && !own.brokers.is_empty() {
                info!(
                    topics = own.topics.len(),
                    "seeding the empty controller log with this node's metadata"
                );
                let batch = encode_batch(&records_of(&own), crate::clock::now_ms());
                if let Err(e) = cl.group.propose(batch, Acks::All).await {
                    warn!(error = %e, "could not seed the controller log");
                    self.seeded.set(false);
                }
                return Ok(false);
            }
        }
        let start = cl.log.log_start_offset();
        if i64::try_from(from).unwrap_or(i64::MAX) < start {
            // The log was started over by the leader's snapshot: its metadata comes
            // first, and the records after it are applied from its revision on.
            return self.adopt_installed(&cl, start, publish).await;
        }
        let end = view.high_watermark;
        if end <= i64::try_from(from).unwrap_or(i64::MAX) {
            return Ok(false);
        }
        let mut meta = self.meta.borrow().clone();
        let mut at = i64::try_from(from).unwrap_or(i64::MAX);
        while at < end {
            let read = cl
                .log
                .read(at, APPLY_READ_BYTES, end)
                .await
                .map_err(|e| format!("reading the controller log at {at}: {e}"))?;
            if read.batches.is_empty() {
                break;
            }
            for batch in &read.batches {
                let records = decode_batch(batch).map_err(|e| format!("{e} (at offset {at})"))?;
                for (offset, rec) in records {
                    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                    if offset < at || offset >= end {
                        continue;
                    }
                    log_change(&rec, offset);
                    rec.apply(&mut meta);
                    at = offset + 1;
                }
            }
        }
        meta.revision = u64::try_from(at).unwrap_or(0);
        self.keep(&meta)
            .await
            .map_err(|e| format!("keeping the metadata at revision {at}: {e}"))?;
        self.adopt(meta, publish).await;
        Ok(true)
    }

    /// Waits until this leader has applied everything committed before its term, so it
    /// decides on the latest metadata; `NOT_CONTROLLER` when it does not lead.
    async fn ready_to_decide(&self) -> Result<(), (ErrorCode, String)> {
        if !self.cluster {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let generation = self.changed.generation();
            let view = self.log.borrow().as_ref().and_then(|l| l.group.view());
            let Some(view) = view.filter(|v| v.is_leader) else {
                return Err(self.not_controller());
            };
            // The leader's own entry of its term is committed once the high watermark
            // reaches its log's end: everything before it is then known and applied.
            let applied = self.published.get();
            if view.high_watermark == view.log_end
                && u64::try_from(view.high_watermark).unwrap_or(0) <= applied
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(self.not_controller());
            }
            futures_lite::future::or(
                crate::task::sleep(left.min(Duration::from_millis(50))),
                self.changed.changed_since(generation),
            )
            .await;
        }
    }

    /// Makes `records` one committed change: on a single node appended to the metadata
    /// log; in a cluster proposed as one batch to the controller log. Returns once every
    /// shard of this node applied it.
    async fn commit(
        &self,
        records: Vec<MetaRecord>,
        publish: &dyn Publish,
    ) -> Result<(), (ErrorCode, String)> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.cluster {
            let mut meta = self.meta.borrow().clone();
            for rec in &records {
                self.persist(rec)
                    .await
                    .map_err(|e| (ErrorCode::KafkaStorageError, format!("metadata log: {e}")))?;
                log_change(rec, 0);
                rec.apply(&mut meta);
            }
            self.adopt(meta, publish).await;
            return Ok(());
        }
        let Some(cl) = self.log.borrow().clone() else {
            return Err(self.not_controller());
        };
        let batch = encode_batch(&records, crate::clock::now_ms());
        let first = match cl.group.propose(batch, Acks::All).await {
            Ok(offset) => offset,
            Err(ProposeError::NotLeader) => return Err(self.not_controller()),
            Err(ProposeError::Unknown) => {
                return Err((
                    ErrorCode::RequestTimedOut,
                    "the controller changed before the change was decided; it may or may not have been made".into(),
                ))
            }
            Err(e) => {
                return Err((
                    ErrorCode::UnknownServerError,
                    format!("controller log: {e}"),
                ))
            }
        };
        let want = u64::try_from(first).unwrap_or(0) + records.len() as u64;
        let deadline = std::time::Instant::now() + COMMIT_TIMEOUT;
        while self.published.get() < want {
            let generation = self.changed.generation();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err((
                    ErrorCode::RequestTimedOut,
                    "the change was not applied in time; it may or may not have been made".into(),
                ));
            }
            futures_lite::future::or(
                crate::task::sleep(left),
                self.changed.changed_since(generation),
            )
            .await;
        }
        Ok(())
    }

    /// Records where node `node` takes Kafka clients (on the controller leader).
    pub async fn register_broker(
        &self,
        node: NodeId,
        endpoint: BrokerEndpoint,
        peer: (String, u16),
        publish: &dyn Publish,
    ) -> Result<(), (ErrorCode, String)> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Ok(());
        };
        self.ready_to_decide().await?;
        let mut records = Vec::new();
        {
            let meta = self.meta.borrow();
            if meta.brokers.get(&node) != Some(&endpoint) {
                records.push(MetaRecord::PutBroker(node, endpoint.clone()));
            }
            if meta.peers.get(&node) != Some(&peer) {
                records.push(MetaRecord::PutPeer(node, peer.0, peer.1));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        if usize::from(endpoint.shards) != self.shards {
            warn!(node, shards = endpoint.shards, expected = self.shards, "a node runs another shard count than the controller: partitions are placed on the shards every node has");
        }
        self.commit(records, publish).await
    }

    /// Hands out `count` producer ids no other node ever gets (on the controller
    /// leader): the first of them. Ids start at [`FIRST_PRODUCER_ID`], above any a node
    /// handed out itself before the controller did.
    pub async fn allocate_producer_ids(
        &self,
        count: u64,
        publish: &dyn Publish,
    ) -> Result<u64, (ErrorCode, String)> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Err((ErrorCode::UnknownServerError, "controller closed".into()));
        };
        self.ready_to_decide().await?;
        let start = self.meta.borrow().next_producer_id.max(FIRST_PRODUCER_ID);
        self.commit(vec![MetaRecord::ProducerIds(start + count)], publish)
            .await?;
        Ok(start)
    }

    /// Starts moving partitions to new replica sets (AlterPartitionReassignments): one
    /// outcome per (topic, partition, target broker ids) asked, all committed as one
    /// change. `None` as the target asks to cancel a move, which is refused.
    pub async fn reassign(
        &self,
        moves: Vec<(String, PartitionId, Option<Vec<i32>>)>,
        publish: &dyn Publish,
    ) -> Vec<Result<(), (ErrorCode, String)>> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return vec![
                Err((ErrorCode::UnknownServerError, "controller closed".into()));
                moves.len()
            ];
        };
        if let Err(e) = self.ready_to_decide().await {
            return vec![Err(e); moves.len()];
        }
        let meta = self.meta.borrow().clone();
        let mut records = Vec::new();
        let mut out = Vec::with_capacity(moves.len());
        for (topic, partition, target) in moves {
            match reassignment(&meta, &topic, partition, target, self.node, self.shards) {
                Ok(rec) => {
                    records.push(rec);
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if let Err(e) = self.commit(records, publish).await {
            for o in out.iter_mut().filter(|o| o.is_ok()) {
                *o = Err(e.clone());
            }
        }
        out
    }

    /// Ends the move of the partition whose raft group is `group` once its voters are
    /// the move's target (told by the group's leader): its replicas become the target,
    /// the first of them its preferred leader.
    pub async fn reassignment_done(
        &self,
        group: u64,
        voters: Vec<NodeId>,
        publish: &dyn Publish,
    ) -> Result<(), (ErrorCode, String)> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Ok(());
        };
        self.ready_to_decide().await?;
        let meta = self.meta.borrow().clone();
        let found = meta.reassignments.iter().find_map(|((t, p), target)| {
            let topic = meta.topics.get(t)?;
            (crate::metadata::raft_group(&topic.id, *p) == group).then_some((topic, *p, target))
        });
        let Some((topic, p, target)) = found else {
            return Ok(());
        };
        let mut wanted: Vec<NodeId> = target.iter().map(|r| r.node).collect();
        let mut have = voters;
        wanted.sort_unstable();
        have.sort_unstable();
        if wanted != have {
            return Ok(());
        }
        let mut t = topic.clone();
        let Some(a) = t
            .partitions
            .get_mut(usize::try_from(p).unwrap_or(usize::MAX))
        else {
            return Ok(());
        };
        a.replicas = target.clone();
        if !a.replicas.contains(&a.leader) {
            a.leader = target[0];
        }
        let origin = meta.origin_voters(topic, p);
        let done = MetaRecord::Reassignment {
            topic: t.name.clone(),
            partition: p,
            target: Vec::new(),
            origin,
            from: Vec::new(),
        };
        self.commit(vec![MetaRecord::PutTopic(t), done], publish)
            .await
    }

    /// The refusal of a change asked of a node that does not decide.
    fn not_controller(&self) -> (ErrorCode, String) {
        let leader = self.leader().map_or_else(
            || "none is known yet".to_string(),
            |n| format!("node {n} does"),
        );
        (
            ErrorCode::NotController,
            format!(
                "node {} does not lead the controller; {leader} (the controller in Metadata)",
                self.node
            ),
        )
    }

    /// Nodes placement may put replicas on: in a cluster those that registered (a node
    /// of `--peers` that never started gets none until it does).
    fn placement_nodes(&self, meta: &ClusterMetadata) -> Vec<NodeId> {
        if !self.cluster {
            return self.nodes.clone();
        }
        // Those `--peers` names first, in its order, then those that joined since.
        let registered: Vec<NodeId> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| meta.brokers.contains_key(n))
            .chain(
                meta.brokers
                    .keys()
                    .copied()
                    .filter(|n| !self.nodes.contains(n)),
            )
            .collect();
        if registered.is_empty() {
            self.nodes.clone()
        } else {
            registered
        }
    }

    /// Shard indexes placement may use: those every registered node has.
    fn placement_shards(&self, meta: &ClusterMetadata) -> usize {
        meta.brokers
            .values()
            .map(|b| usize::from(b.shards))
            .chain(std::iter::once(self.shards))
            .min()
            .unwrap_or(self.shards)
            .max(1)
    }

    /// Appends a change to the metadata log durably, off the shard's thread.
    async fn persist(&self, rec: &MetaRecord) -> std::io::Result<()> {
        let rec = rec.clone();
        self.with_store(move |store| store.append(&rec)).await
    }

    /// Creates topics: places partitions, commits them as one change, then has every
    /// shard apply it before answering, so the topics are usable everywhere on return.
    pub async fn create_topics(
        &self,
        topics: Vec<TopicSpec>,
        validate_only: bool,
        publish: &dyn Publish,
    ) -> Vec<CreateOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return vec![Err((
                ErrorCode::UnknownServerError,
                "controller closed".into(),
            ))];
        };
        if let Err(e) = self.ready_to_decide().await {
            return topics.iter().map(|_| Err(e.clone())).collect();
        }
        let mut meta = self.meta.borrow().clone();
        let nodes = self.placement_nodes(&meta);
        let mut counts = meta.replicas_per_shard(&nodes, self.placement_shards(&meta));
        let mut out = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        for spec in topics {
            let rf = match spec.replication_factor {
                -1 => self.default_replication_factor,
                rf => rf,
            };
            if rf < 1 || usize::try_from(rf).unwrap_or(usize::MAX) > nodes.len() {
                out.push(Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {rf}: the cluster has {} node(s)",
                        nodes.len()
                    ),
                )));
                continue;
            }
            if meta.topics.contains_key(&spec.name) {
                out.push(Err((
                    ErrorCode::TopicAlreadyExists,
                    format!("topic '{}' already exists", spec.name),
                )));
                continue;
            }
            let id = Uuid::new_v4();
            if validate_only {
                out.push(Ok(id));
                continue;
            }
            let topic = TopicMeta {
                name: spec.name.clone(),
                id,
                // Each topic starts its preferred leaders one node further, so that
                // topics of one partition spread too.
                partitions: place(
                    &mut counts,
                    spec.partitions.max(0) as usize,
                    &nodes,
                    rf as usize,
                    meta.topics.len(),
                ),
                configs: spec.configs,
            };
            let rec = MetaRecord::PutTopic(topic);
            // Applied to the copy too, so that a name given twice in one request is
            // refused the second time and placement counts the first.
            rec.apply(&mut meta);
            records.push(rec);
            out.push(Ok(id));
        }
        if let Err(e) = self.commit(records, publish).await {
            for o in out.iter_mut().filter(|o| o.is_ok()) {
                *o = Err(e.clone());
            }
        }
        out
    }

    /// Deletes topics and has every shard drop their partitions.
    pub async fn delete_topics(&self, names: Vec<String>, publish: &dyn Publish) -> Vec<ErrorCode> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return vec![ErrorCode::UnknownServerError; names.len()];
        };
        if let Err((code, _)) = self.ready_to_decide().await {
            return vec![code; names.len()];
        }
        let mut meta = self.meta.borrow().clone();
        let mut out = Vec::with_capacity(names.len());
        let mut records = Vec::new();
        for name in names {
            if !meta.topics.contains_key(&name) {
                out.push(ErrorCode::UnknownTopicOrPartition);
                continue;
            }
            if name == crate::group::OFFSETS_TOPIC {
                // Every group's committed offsets are in it.
                out.push(ErrorCode::InvalidTopicException);
                continue;
            }
            let rec = MetaRecord::DeleteTopic(name);
            rec.apply(&mut meta);
            records.push(rec);
            out.push(ErrorCode::None);
        }
        if let Err((code, _)) = self.commit(records, publish).await {
            for o in out.iter_mut().filter(|o| **o == ErrorCode::None) {
                *o = code;
            }
        }
        out
    }

    /// Changes a topic (configs or partition count) and has every shard apply the result
    /// before answering.
    pub async fn update_topic(
        &self,
        name: String,
        change: TopicChange,
        validate_only: bool,
        publish: &dyn Publish,
    ) -> Result<(), (ErrorCode, String)> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Err((ErrorCode::UnknownServerError, "controller closed".into()));
        };
        self.ready_to_decide().await?;
        let meta = self.meta.borrow().clone();
        let Some(mut topic) = meta.topics.get(&name).cloned() else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            ));
        };
        match change {
            TopicChange::SetConfigs(configs) => topic.configs = configs,
            TopicChange::GrowPartitions(count) => {
                let current = topic.partitions.len() as i32;
                if count <= current {
                    return Err((
                        ErrorCode::InvalidPartitions,
                        format!("topic '{name}' has {current} partitions; the new count must be larger, got {count}"),
                    ));
                }
                let nodes = self.placement_nodes(&meta);
                let mut counts = meta.replicas_per_shard(&nodes, self.placement_shards(&meta));
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
                let start = topic.partitions.len();
                topic.partitions.extend(place(
                    &mut counts,
                    (count - current) as usize,
                    &nodes,
                    rf.min(nodes.len()),
                    start,
                ));
            }
        }
        if validate_only {
            return Ok(());
        }
        self.commit(vec![MetaRecord::PutTopic(topic)], publish)
            .await
    }
}

/// Says what a change does, as it is applied (`offset`: its place in the controller log,
/// 0 on a single node).
fn log_change(rec: &MetaRecord, offset: i64) {
    match rec {
        MetaRecord::PutTopic(t) => {
            info!(topic = %t.name, partitions = t.partitions.len(), replicas = t.partitions.first().map_or(0, |p| p.replicas.len()), offset, "topic created or changed")
        }
        MetaRecord::DeleteTopic(name) => info!(topic = %name, offset, "topic deleted"),
        MetaRecord::PutBroker(node, b) => {
            info!(node, host = %b.host, port = b.port, offset, "node's Kafka listeners recorded")
        }
        MetaRecord::Revision(_) => {}
        MetaRecord::PutPeer(node, host, port) => {
            info!(node, host = %host, port, offset, "node's peer listener recorded")
        }
        MetaRecord::ProducerIds(next) => info!(next, offset, "producer ids handed out"),
        MetaRecord::Reassignment {
            topic,
            partition,
            target,
            ..
        } if target.is_empty() => info!(topic = %topic, partition, offset, "partition moved"),
        MetaRecord::Reassignment {
            topic,
            partition,
            target,
            ..
        } => info!(topic = %topic, partition, target = ?target, offset, "partition moving"),
    }
}

/// The record starting a move of partition `p` of `topic` to the brokers `target`, or
/// why it cannot start. A move keeps a partition on one shard index (a raft group's
/// replicas talk shard k to shard k) and on at least two replicas (its raft group).
fn reassignment(
    meta: &ClusterMetadata,
    topic: &str,
    p: PartitionId,
    target: Option<Vec<i32>>,
    me: NodeId,
    my_shards: usize,
) -> Result<MetaRecord, (ErrorCode, String)> {
    let invalid = |why: String| (ErrorCode::InvalidReplicaAssignment, why);
    let t = meta.topics.get(topic).ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic '{topic}'"),
        )
    })?;
    let a = t.partition(p).ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{topic}' has no partition {p}"),
        )
    })?;
    let key = (topic.to_string(), p);
    let Some(target) = target else {
        // Cancelling: the partition moves back to the replicas it had (Kafka reverts
        // too); those it keeps never left, those it had dropped rejoin as learners.
        let Some(from) = meta
            .moving_from
            .get(&key)
            .filter(|_| meta.reassignments.contains_key(&key))
        else {
            return Err((
                ErrorCode::NoReassignmentInProgress,
                format!("{topic}-{p} is not moving"),
            ));
        };
        return Ok(MetaRecord::Reassignment {
            topic: topic.to_string(),
            partition: p,
            target: from.clone(),
            origin: meta.origin_voters(t, p),
            from: from.clone(),
        });
    };
    if meta.reassignments.contains_key(&key) {
        return Err((
            ErrorCode::InvalidRequest,
            format!("{topic}-{p} is already moving; wait until that move is over"),
        ));
    }
    if !a.is_replicated() {
        return Err(invalid(format!(
            "{topic}-{p} has one replica and no raft group to move it with"
        )));
    }
    let shard = a.leader.shard;
    let per_node = crate::config::MAX_SHARDS as i32;
    let mut replicas: Vec<ShardAddr> = Vec::with_capacity(target.len());
    for id in target {
        let r = ShardAddr {
            node: id / per_node,
            shard: usize::try_from(id % per_node).unwrap_or(usize::MAX),
        };
        let shards = if r.node == me {
            Some(my_shards)
        } else {
            meta.brokers.get(&r.node).map(|b| usize::from(b.shards))
        };
        if shards.is_none_or(|n| r.shard >= n) {
            return Err(invalid(format!(
                "broker {id} is not a broker of the cluster"
            )));
        }
        if r.shard != shard {
            return Err(invalid(format!(
                "broker {id} is shard {} of its node; {topic}-{p} lives on shard {shard} of each node",
                r.shard
            )));
        }
        if replicas.iter().any(|x| x.node == r.node) {
            return Err(invalid(format!("node {} is named twice", r.node)));
        }
        replicas.push(r);
    }
    if replicas.len() < 2 {
        return Err(invalid(
            "a replicated partition keeps at least two replicas".into(),
        ));
    }
    Ok(MetaRecord::Reassignment {
        topic: topic.to_string(),
        partition: p,
        target: replicas,
        origin: meta.origin_voters(t, p),
        from: a.replicas.clone(),
    })
}
