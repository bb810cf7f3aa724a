//! Everything one shard owns: its metadata snapshot, its partition logs, its counters.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::task::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::raft_driver::GroupHandle;
use crate::config::Config;
use crate::error::ErrorCode;
use crate::io::dma_writer::IoStats;
use crate::log::tail_cache::CacheBudget;
use crate::log::{Journal, Log, LogEnv};
use crate::metadata::{raft_group, topic_config, ClusterMetadata, PartitionId, ShardAddr, ShardId};
use crate::metrics::{Histogram, PartitionMetrics, Registry};
use crate::replica::raft_shard::GroupId;
use crate::replica::Partition;

use super::cluster_state::{Awaiting, ClusterProducerIds, GroupCoordinators};
use super::controller::ControllerService;
use super::producer_ids::ProducerIds;
use super::router::{ApplyError, Transport};
use crate::cluster::node::ShardRaft;
use crate::group::coordinator::Coordinator;
use crate::notify::Notify;
use crate::task::TaskSet;

/// Per-shard counters, readable from any thread (tests, metrics). Only the owning shard
/// writes them, so relaxed atomics cost no contention.
#[derive(Debug)]
pub struct ShardStats {
    /// Disk I/O counters of the shard's logs.
    pub io: Arc<IoStats>,
    /// The shard's tail cache budget.
    pub cache: Arc<CacheBudget>,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Bytes of requests being read or handled now.
    pub request_bytes_in_flight: AtomicU64,
    /// Request latency by API key.
    pub request_latency: [Histogram; 70],
    /// Error codes returned, indexed by code + 1.
    pub errors: [AtomicU64; 130],
    /// Per-partition metrics and committed offsets.
    pub registry: Registry,
    /// Produce requests handled.
    pub produce_requests: AtomicU64,
    /// Record batch bytes appended.
    pub produce_bytes: AtomicU64,
    /// Produce requests whose batches were copied out of their frame (several
    /// partitions, or something else still held it) rather than taken over in place.
    pub produce_copied: AtomicU64,
    /// Fetch requests handled.
    pub fetch_requests: AtomicU64,
    /// Record batch bytes returned by fetches.
    pub fetch_bytes: AtomicU64,
    /// Partition requests refused because another shard owns the partition.
    pub not_leader: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Client connections closed unserved because the node is not registered with its
    /// cluster's controller yet.
    pub connections_refused: AtomicU64,
    /// Partitions opened after a clean shutdown (no scan needed) at start.
    pub opened_clean: AtomicU64,
    /// Partitions whose active segment was scanned at start.
    pub opened_scanned: AtomicU64,
}

impl ShardStats {
    /// Counters for a shard with this I/O and cache accounting.
    pub fn new(io: Arc<IoStats>, cache: Arc<CacheBudget>) -> ShardStats {
        ShardStats {
            io,
            cache,
            open_connections: AtomicU64::new(0),
            request_bytes_in_flight: AtomicU64::new(0),
            request_latency: std::array::from_fn(|_| Histogram::default()),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            registry: Registry::default(),
            produce_requests: AtomicU64::new(0),
            produce_bytes: AtomicU64::new(0),
            produce_copied: AtomicU64::new(0),
            fetch_requests: AtomicU64::new(0),
            fetch_bytes: AtomicU64::new(0),
            not_leader: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            opened_clean: AtomicU64::new(0),
            opened_scanned: AtomicU64::new(0),
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error code returned to a client.
    pub fn error(&self, code: ErrorCode) {
        self.error_code(code.code());
    }

    /// Counts a raw error code returned to a client (0 is not an error).
    pub fn error_code(&self, code: i16) {
        if code != 0 {
            if let Some(c) = usize::try_from(i64::from(code) + 1)
                .ok()
                .and_then(|i| self.errors.get(i))
            {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records how long a request of `api` took.
    pub fn request_done(&self, api: i16, took: std::time::Duration) {
        if let Some(h) = self.request_latency.get(api as usize) {
            h.record(took);
        }
    }

    /// Metrics of a partition, registered on first use.
    pub fn partition(&self, topic: &str, partition: PartitionId) -> Arc<PartitionMetrics> {
        let mut map = match self.registry.partitions.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Drops a deleted partition's metrics.
    pub fn forget_partition(&self, topic: &str, partition: PartitionId) {
        if let Ok(mut map) = self.registry.partitions.lock() {
            map.remove(&(topic.to_string(), partition));
        }
    }
}

/// One partition this shard serves.
pub struct LocalPartition {
    /// Id of the topic it belongs to (a recreated topic gets a new id).
    pub topic_id: Uuid,
    /// Its log.
    pub log: Rc<Partition>,
    /// Its metrics, registered once when it opened.
    pub metrics: Arc<PartitionMetrics>,
    /// Its raft group, when it is replicated.
    pub group: Option<GroupId>,
}

/// A partition this shard leads, as a handler uses it: its replica and its metrics
/// (no registry lookup on the data path).
#[derive(Clone)]
pub struct PartitionHandle {
    /// The replica.
    pub replica: Rc<Partition>,
    /// Its metrics.
    pub metrics: Arc<PartitionMetrics>,
}

impl PartitionHandle {
    /// Copies the replica's offsets and size into its metrics.
    pub fn publish(&self) {
        publish(&self.metrics, &self.replica);
    }
}

/// The state of one shard. Lives on its executor, shared by its tasks through `Rc`.
pub struct Shard {
    /// This shard's index.
    pub id: ShardId,
    /// Broker settings.
    pub config: Arc<Config>,
    /// Metadata snapshot requests are served from.
    meta: RefCell<Arc<ClusterMetadata>>,
    /// Partitions this shard holds a replica of, by (topic, partition).
    partitions: RefCell<HashMap<(String, PartitionId), LocalPartition>>,
    /// Storage environment shared by this shard's logs.
    pub env: LogEnv,
    /// Counters.
    pub stats: Arc<ShardStats>,
    /// Carries requests to the other shards.
    pub mesh: Rc<dyn Transport>,
    /// The controller, on the shard that hosts it (shard 0 of this node today).
    pub controller: Option<ControllerService>,
    /// The shard's raft groups and peer connections, on a node of a cluster.
    pub raft: Option<ShardRaft>,
    /// Serialises snapshot application.
    apply_lock: Semaphore,
    /// Fired when a partition's high watermark moves, for long-polling fetches.
    pub data_arrived: Rc<Notify>,
    /// Bytes of requests this shard may hold in memory at once.
    pub request_budget: Rc<Semaphore>,
    /// Coordinator of the groups that hash to this shard (a single node); set once its
    /// offsets are loaded.
    pub coordinator: OnceCell<Rc<Coordinator>>,
    /// Coordinators of the offsets partitions this shard leads (a node of a cluster).
    pub group_coordinators: GroupCoordinators,
    /// Producer ids handed out by this shard (a single node); set at start.
    pub producer_ids: OnceCell<ProducerIds>,
    /// Producer ids handed out by this shard from the controller's blocks (a cluster).
    pub cluster_producer_ids: ClusterProducerIds,
    /// Shard 0's requests for producer id blocks waiting for the controller leader.
    pub producer_id_requests: Awaiting<u64>,
    /// Shard 0's topic changes handed to the controller leader, waiting for its answer
    /// (error code and message).
    pub topic_answers: Awaiting<(i16, String)>,
    /// Fired once when the shard starts shutting down.
    pub shutdown: Notify,
    /// The shard's long-lived tasks (mesh servers, retention, connections), stopped at
    /// shutdown.
    pub tasks: TaskSet,
    stopping: Cell<bool>,
    open_connections: Cell<usize>,
    requests_in_flight: Cell<usize>,
}

impl Shard {
    /// A shard with no partitions open yet.
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        stats: Arc<ShardStats>,
        mesh: Rc<dyn Transport>,
        controller: Option<ControllerService>,
        raft: Option<ShardRaft>,
        journal: Option<Rc<Journal>>,
    ) -> Shard {
        let env = LogEnv {
            stats: stats.io.clone(),
            cache: stats.cache.clone(),
            writer: Default::default(),
            journal,
        };
        let budget = config
            .request_budget_bytes
            .max(config.socket_request_max_bytes) as u64;
        Shard {
            id,
            meta: RefCell::new(Arc::new(ClusterMetadata::default())),
            partitions: RefCell::new(HashMap::new()),
            env,
            stats,
            mesh,
            controller,
            raft,
            apply_lock: Semaphore::new(1),
            data_arrived: Rc::new(Notify::default()),
            request_budget: Rc::new(Semaphore::new(budget)),
            coordinator: OnceCell::new(),
            group_coordinators: GroupCoordinators::default(),
            producer_ids: OnceCell::new(),
            cluster_producer_ids: ClusterProducerIds::default(),
            producer_id_requests: Awaiting::default(),
            topic_answers: Awaiting::default(),
            shutdown: Notify::default(),
            tasks: TaskSet::new(format!("shard {id}")),
            stopping: Cell::new(false),
            open_connections: Cell::new(0),
            requests_in_flight: Cell::new(0),
            config,
        }
    }

    /// The current metadata snapshot.
    pub fn meta(&self) -> Arc<ClusterMetadata> {
        self.meta.borrow().clone()
    }

    /// Broker id of shard `k` of this node.
    pub fn broker_id(&self, shard: ShardId) -> i32 {
        self.config.broker_id(shard)
    }

    /// This shard's address: (this node, this shard). Also what it is as a replica.
    pub fn addr(&self) -> ShardAddr {
        self.addr_of(self.id)
    }

    /// The address of shard `k` of this node.
    pub fn addr_of(&self, k: ShardId) -> ShardAddr {
        ShardAddr {
            node: self.config.node_id,
            shard: k,
        }
    }

    /// The log of a partition this shard leads, or the error code to answer with.
    pub fn local_partition(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<PartitionHandle, ErrorCode> {
        let meta = self.meta.borrow();
        let Some(t) = meta.topics.get(topic) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        let Some(assignment) = t.partition(partition) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        if assignment.is_replicated() {
            // Raft, not the metadata, says who leads.
            let local = self.partitions.borrow();
            return match local.get(&(topic.to_string(), partition)) {
                Some(p) if p.log.is_leader() => Ok(PartitionHandle {
                    replica: p.log.clone(),
                    metrics: p.metrics.clone(),
                }),
                _ => {
                    ShardStats::add(&self.stats.not_leader, 1);
                    Err(ErrorCode::NotLeaderOrFollower)
                }
            };
        }
        if assignment.leader != self.addr() {
            ShardStats::add(&self.stats.not_leader, 1);
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        match self
            .partitions
            .borrow()
            .get(&(topic.to_string(), partition))
        {
            Some(p) => Ok(PartitionHandle {
                replica: p.log.clone(),
                metrics: p.metrics.clone(),
            }),
            None => Err(ErrorCode::NotLeaderOrFollower),
        }
    }

    /// Every partition this shard serves, with its topic and number.
    pub fn local_partitions(&self) -> Vec<(String, PartitionId, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|((t, p), lp)| (t.clone(), *p, lp.log.clone()))
            .collect()
    }

    /// Every partition this shard serves.
    pub fn local_logs(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .map(|p| p.log.clone())
            .collect()
    }

    /// Directory of a partition's log.
    pub fn partition_dir(&self, topic: &str, partition: PartitionId) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Adopts a newer metadata snapshot: opens the logs of partitions this shard holds a
    /// replica of, closes and deletes the logs of topics that are gone, updates configs.
    pub async fn apply_metadata(&self, meta: Arc<ClusterMetadata>) -> Result<(), ApplyError> {
        let _permit = self
            .apply_lock
            .acquire_permit(1)
            .await
            .map_err(|_| ApplyError::Closed)?;
        if meta.version <= self.meta.borrow().version && meta.version != 0 {
            return Ok(());
        }
        if let Some(raft) = self.raft.as_ref() {
            for (&node, (host, port)) in &meta.peers {
                raft.transport.add_peer(&crate::config::Peer {
                    node: u64::try_from(node).unwrap_or(0),
                    host: host.clone(),
                    port: *port,
                });
            }
        }
        // Drop partitions whose topic is gone or was recreated under a new id, and those
        // moved off this shard.
        let me = self.addr();
        let stale: Vec<(String, PartitionId)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|((name, index), p)| {
                meta.topics.get(name).is_none_or(|t| {
                    t.id != p.topic_id || t.partition(*index).is_none_or(|a| !a.has_replica(me))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(p) = removed {
                let _ = p.log.close().await;
                if let (Some(group), Some(raft)) = (p.group, self.raft.as_ref()) {
                    if let Err(e) = raft.driver.close_group(group).await {
                        warn!(topic = %key.0, partition = key.1, error = %e, "closing a deleted partition's raft group failed; keeping its directory");
                        continue;
                    }
                }
                // Before the directory goes: a topic recreated under this name must never
                // be given the old one's journaled batches.
                if let Err(e) = p.log.log().forget().await {
                    warn!(topic = %key.0, partition = key.1, error = %e, "could not tell the journal a partition is deleted; keeping its directory");
                    continue;
                }
                let dir = p.log.dir().to_path_buf();
                drop(p);
                // Unlinking gigabytes of segments takes the file system a while: off the
                // shard's thread, so its other partitions keep being served meanwhile.
                let target = dir.clone();
                let removed = crate::task::blocking(move || std::fs::remove_dir_all(&target)).await;
                if let Err(e) = removed {
                    warn!(dir = %dir.display(), error = %e, "could not delete partition directory");
                }
                self.stats.forget_partition(&key.0, key.1);
                info!(topic = %key.0, partition = key.1, "deleted partition");
            }
        }
        for t in meta.topics.values() {
            let log_config = topic_config::log_config(&t.configs, self.config.flush);
            for (p, assignment) in t.partitions.iter().enumerate() {
                if !assignment.has_replica(self.addr()) {
                    continue;
                }
                let key = (t.name.clone(), p as PartitionId);
                let moving_to = meta.reassignments.get(&key);
                if let (Some(raft), true) = (self.raft.as_ref(), assignment.is_replicated()) {
                    // While it moves, the target's first replica is the one to lead.
                    let first = moving_to
                        .and_then(|t| t.first())
                        .unwrap_or(&assignment.replicas[0]);
                    raft.driver.assign(
                        GroupId(raft_group(&t.id, p as PartitionId)),
                        u64::try_from(first.node).ok(),
                        moving_to.map(|t| {
                            t.iter()
                                .map(|r| u64::try_from(r.node).unwrap_or(0))
                                .collect()
                        }),
                    );
                }
                let existing = self.partitions.borrow().get(&key).map(|lp| lp.log.clone());
                if let Some(log) = existing {
                    log.set_config(log_config.clone());
                    adopt_epoch(&log, assignment.leader_epoch);
                    continue;
                }
                let dir = self.partition_dir(&t.name, p as PartitionId);
                let (log, group) = if assignment.is_replicated() {
                    let Some(raft) = self.raft.as_ref() else {
                        warn!(topic = %t.name, partition = p, "a replicated partition on a node started without --peers is not served");
                        continue;
                    };
                    let (log, recovered) = Log::open(&dir, log_config.clone(), self.env.clone())
                        .await
                        .map_err(|source| ApplyError::Open {
                            dir: dir.clone(),
                            source,
                        })?;
                    let group = GroupId(raft_group(&t.id, p as PartitionId));
                    // A group starts with the voters it was created with; a replica added
                    // by a move follows every membership change since from the log.
                    let voters = meta
                        .origin_voters(t, p as PartitionId)
                        .into_iter()
                        .map(|n| u64::try_from(n).unwrap_or(0))
                        .collect();
                    raft.driver
                        .open_group(group, log.clone(), recovered, voters, None)
                        .await
                        .map_err(|reason| ApplyError::Raft {
                            dir: dir.clone(),
                            reason,
                        })?;
                    // The preferred leader stands first; with pre-vote, a campaign
                    // while a leader is heard from changes nothing.
                    if assignment.leader == self.addr() && moving_to.is_none() {
                        raft.driver.campaign(group);
                    }
                    let handle = Rc::new(GroupHandle {
                        driver: raft.driver.clone(),
                        group,
                    });
                    (
                        Partition::replicated(log, handle, self.data_arrived.clone()),
                        Some(group),
                    )
                } else {
                    let log = Partition::open(
                        &dir,
                        log_config.clone(),
                        self.env.clone(),
                        self.data_arrived.clone(),
                    )
                    .await
                    .map_err(|source| ApplyError::Open {
                        dir: dir.clone(),
                        source,
                    })?;
                    (log, None)
                };
                adopt_epoch(&log, assignment.leader_epoch);
                let metrics = self.stats.partition(&t.name, p as PartitionId);
                publish(&metrics, &log);
                if log.opened_clean() {
                    ShardStats::add(&self.stats.opened_clean, 1);
                } else if log.next_offset() > 0 {
                    ShardStats::add(&self.stats.opened_scanned, 1);
                }
                self.partitions.borrow_mut().insert(
                    key,
                    LocalPartition {
                        topic_id: t.id,
                        log,
                        metrics,
                        group,
                    },
                );
            }
        }
        *self.meta.borrow_mut() = meta;
        Ok(())
    }

    /// Deletes old segments of every local partition per its retention settings.
    pub async fn apply_retention(&self) {
        let now = crate::clock::now_ms();
        for (topic, partition, log) in self.local_partitions() {
            if topic == crate::group::OFFSETS_TOPIC {
                // Committed offsets are replayed from it: Kafka compacts it by key, and
                // until that exists here it is kept whole.
                continue;
            }
            if let Err(e) = log.apply_retention(now).await {
                warn!(dir = %log.dir().display(), error = %e, "retention failed");
            }
            publish(&self.stats.partition(&topic, partition), &log);
        }
    }

    /// The group coordinator if `group` hashes to this shard and it is loaded, else the
    /// error to answer with.
    pub fn coordinator_for(&self, group: &str) -> Result<Rc<Coordinator>, ErrorCode> {
        if self.in_cluster() {
            return self.cluster_coordinator_for(group);
        }
        if crate::group::coordinator_shard(group, self.config.shards) != self.id {
            return Err(ErrorCode::NotCoordinator);
        }
        self.coordinator
            .get()
            .cloned()
            .ok_or(ErrorCode::CoordinatorNotAvailable)
    }

    /// True once shutdown has begun: no new connections or requests are taken.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Begins shutdown: readers stop after their current frame, long polls return.
    pub fn begin_shutdown(&self) {
        self.stopping.set(true);
        self.shutdown.notify();
        self.data_arrived.notify();
    }

    /// Counts a new connection.
    pub fn connection_opened(&self) {
        self.open_connections.set(self.open_connections.get() + 1);
        ShardStats::add(&self.stats.connections, 1);
        ShardStats::add(&self.stats.open_connections, 1);
    }

    /// Counts a closed connection.
    pub fn connection_closed(&self) {
        self.open_connections
            .set(self.open_connections.get().saturating_sub(1));
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.open_connections.get()
    }

    /// Counts a request being handled.
    pub fn request_started(&self) {
        self.requests_in_flight
            .set(self.requests_in_flight.get() + 1);
    }

    /// Counts a request answered.
    pub fn request_finished(&self) {
        self.requests_in_flight
            .set(self.requests_in_flight.get().saturating_sub(1));
    }

    /// Requests being handled now.
    pub fn requests_in_flight(&self) -> usize {
        self.requests_in_flight.get()
    }

    /// Syncs and closes every local partition.
    pub async fn close_all(&self) {
        let mut clean = true;
        self.group_coordinators.resign_all();
        if let Some(c) = self.coordinator.get() {
            if let Err(e) = c.close().await {
                clean = false;
                warn!(error = %e, "closing offsets log failed");
            }
        }
        for log in self.local_logs() {
            if let Err(e) = log.close().await {
                clean = false;
                warn!(dir = %log.dir().display(), error = %e, "closing partition failed");
            }
        }
        if let Some(raft) = self.raft.as_ref() {
            if let Err(e) = raft.driver.close().await {
                clean = false;
                warn!(error = %e, "closing the raft groups failed");
            }
        }
        // Only when every log is synced may the journal let go of its records; otherwise
        // the next start re-applies them.
        if let Some(journal) = self.env.journal.as_ref().filter(|_| clean) {
            if let Err(e) = journal.close().await {
                warn!(error = %e, "closing the journal failed");
            }
        }
    }
}

/// Stamps appends with the leader epoch of the metadata when it is newer than the one
/// the log recovered: an epoch never goes back, even under a stale snapshot.
fn adopt_epoch(log: &Partition, epoch: i32) {
    if epoch > log.leader_epoch() {
        log.set_leader_epoch(epoch);
    }
}

/// Copies a log's offsets and size into its metrics.
pub fn publish(m: &PartitionMetrics, log: &Partition) {
    m.high_watermark
        .store(log.high_watermark(), Ordering::Relaxed);
    m.log_start_offset
        .store(log.log_start_offset(), Ordering::Relaxed);
    m.size_bytes
        .store(log.size_bytes() as i64, Ordering::Relaxed);
}
