//! The controller service: it owns the cluster metadata and its log, decides every topic
//! change and publishes the result to every shard. It is a service on shard 0 of every
//! node; in a cluster only the controller node's decides (the lowest id of `--peers`),
//! and the others adopt what it sends them (`shard::cluster`); part 3 makes it a raft
//! group. Handlers reach it through `controller_client::Controller`; it knows nothing of
//! shards beyond [`Publish`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tracing::info;
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::metadata::store::{MetaRecord, MetaStore};
use crate::metadata::{BrokerEndpoint, ClusterMetadata, NodeId, ShardId, TopicMeta};
use crate::notify::Notify;
use crate::task::Semaphore;

use super::placement::place;
use super::router::{CreateOutcome, TopicChange, TopicSpec};

/// The shard of each node that hosts the controller service.
pub const CONTROLLER_SHARD: ShardId = 0;

/// How the controller has every shard adopt a new metadata snapshot; resolves once all
/// of them did (or failed, which they log).
pub trait Publish {
    /// Sends `meta` to every shard and waits for them.
    fn publish(&self, meta: Arc<ClusterMetadata>) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

/// The controller service: the authoritative metadata, its log, and the lock that
/// serialises changes.
pub struct ControllerService {
    /// Behind a mutex only so that appends can run on a helper thread: the log is
    /// written with blocking calls, which must not stall the shard.
    store: Arc<Mutex<MetaStore>>,
    /// The metadata as of the log's end.
    meta: RefCell<ClusterMetadata>,
    lock: Semaphore,
    node: NodeId,
    shards: usize,
    /// Every node of the cluster, in order (this one alone on a single node).
    nodes: Vec<NodeId>,
    /// The node whose service decides.
    decider: NodeId,
    /// Replicas of a topic created with replication factor -1.
    default_replication_factor: i16,
    /// Woken whenever the metadata changes (a cluster's controller node then sends it).
    pub changed: Notify,
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
        let decider = place.nodes.iter().copied().min().unwrap_or(place.node);
        ControllerService {
            store: Arc::new(Mutex::new(store)),
            meta: RefCell::new(meta),
            lock: Semaphore::new(1),
            node: place.node,
            shards: place.shards,
            nodes: if place.nodes.is_empty() {
                vec![place.node]
            } else {
                place.nodes
            },
            decider,
            default_replication_factor: place.default_replication_factor,
            changed: Notify::default(),
        }
    }

    /// True when this node's service decides changes (always on a single node).
    pub fn decides(&self) -> bool {
        self.node == self.decider
    }

    /// The metadata as of the log's end.
    pub fn metadata(&self) -> ClusterMetadata {
        self.meta.borrow().clone()
    }

    /// Records an applied change as the new authoritative metadata and publishes it.
    async fn adopt(&self, meta: ClusterMetadata, publish: &dyn Publish) {
        *self.meta.borrow_mut() = meta.clone();
        publish.publish(Arc::new(meta)).await;
        self.changed.notify();
    }

    /// Adopts the metadata the controller node sent (on any other node): kept in this
    /// node's log, so that it restarts with it, and applied on every shard. Nothing
    /// happens when nothing changed.
    pub async fn adopt_sent(
        &self,
        sent: ClusterMetadata,
        publish: &dyn Publish,
    ) -> std::io::Result<()> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Ok(());
        };
        if self.decides() || self.meta.borrow().same_content(&sent) {
            return Ok(());
        }
        // A log with topics but no brokers is a single node's: its topics are not the
        // cluster's, and adopting the cluster's metadata would delete them. Refused, so
        // nothing is lost; the operator moves the data directory away (or keeps the
        // node alone).
        let own: Vec<String> = {
            let meta = self.meta.borrow();
            if meta.brokers.is_empty() {
                meta.topics
                    .keys()
                    .filter(|t| !sent.topics.contains_key(*t))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            }
        };
        if !own.is_empty() {
            return Err(std::io::Error::other(format!(
                "this node's data directory holds topics of a single node ({}) that the cluster does not have; it does not take the cluster's metadata, which would delete them: start it on an empty data directory to join, or without --peers to serve them",
                own.join(", ")
            )));
        }
        let store = self.store.clone();
        let kept = sent.clone();
        crate::task::blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| std::io::Error::other("metadata log lock poisoned"))?;
            store.replace(&kept)
        })
        .await?;
        let mut meta = sent;
        // Versions are this node's own: shards take a snapshot only when it is newer.
        meta.version = self.meta.borrow().version + 1;
        info!(
            topics = meta.topics.len(),
            brokers = meta.brokers.len(),
            "adopted the controller node's metadata"
        );
        self.adopt(meta, publish).await;
        Ok(())
    }

    /// Records where node `node` takes Kafka clients (on the controller node).
    pub async fn register_broker(
        &self,
        node: NodeId,
        endpoint: BrokerEndpoint,
        publish: &dyn Publish,
    ) -> std::io::Result<()> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return Ok(());
        };
        if !self.decides() || self.meta.borrow().brokers.get(&node) == Some(&endpoint) {
            return Ok(());
        }
        if usize::from(endpoint.shards) != self.shards {
            tracing::warn!(node, shards = endpoint.shards, expected = self.shards, "a node runs another shard count than the controller node: partitions are placed on the shards every node has");
        }
        let rec = MetaRecord::PutBroker(node, endpoint);
        self.persist(&rec).await?;
        info!(node, "registered a node's Kafka listeners");
        let mut meta = self.meta.borrow().clone();
        rec.apply(&mut meta);
        self.adopt(meta, publish).await;
        Ok(())
    }

    /// The refusal of a change asked of a node that does not decide.
    fn not_controller(&self) -> (ErrorCode, String) {
        (
            ErrorCode::NotController,
            format!(
                "node {} does not decide topic changes; node {} does (the controller in Metadata)",
                self.node, self.decider
            ),
        )
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
        let store = self.store.clone();
        let rec = rec.clone();
        crate::task::blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| std::io::Error::other("metadata log lock poisoned"))?;
            store.append(&rec)
        })
        .await
    }

    /// Creates topics: places partitions, persists, then has every shard apply the new
    /// snapshot before answering, so the topic is usable everywhere on return.
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
        if !self.decides() {
            return topics.iter().map(|_| Err(self.not_controller())).collect();
        }
        let mut meta = self.meta.borrow().clone();
        let mut counts = meta.replicas_per_shard(&self.nodes, self.placement_shards(&meta));
        let mut out = Vec::with_capacity(topics.len());
        let mut changed = false;
        for spec in topics {
            let rf = match spec.replication_factor {
                -1 => self.default_replication_factor,
                rf => rf,
            };
            if rf < 1 || usize::try_from(rf).unwrap_or(usize::MAX) > self.nodes.len() {
                out.push(Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {rf}: the cluster has {} node(s)",
                        self.nodes.len()
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
                    &self.nodes,
                    rf as usize,
                    meta.topics.len(),
                ),
                configs: spec.configs,
            };
            let rec = MetaRecord::PutTopic(topic);
            if let Err(e) = self.persist(&rec).await {
                out.push(Err((
                    ErrorCode::KafkaStorageError,
                    format!("metadata log: {e}"),
                )));
                continue;
            }
            info!(topic = %spec.name, partitions = spec.partitions, replicas = rf, "created topic");
            rec.apply(&mut meta);
            changed = true;
            out.push(Ok(id));
        }
        if changed {
            self.adopt(meta, publish).await;
        }
        out
    }

    /// Deletes topics and has every shard drop their partitions.
    pub async fn delete_topics(&self, names: Vec<String>, publish: &dyn Publish) -> Vec<ErrorCode> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return vec![ErrorCode::UnknownServerError; names.len()];
        };
        if !self.decides() {
            return vec![ErrorCode::NotController; names.len()];
        }
        let mut meta = self.meta.borrow().clone();
        let mut out = Vec::with_capacity(names.len());
        let mut changed = false;
        for name in names {
            if !meta.topics.contains_key(&name) {
                out.push(ErrorCode::UnknownTopicOrPartition);
                continue;
            }
            let rec = MetaRecord::DeleteTopic(name.clone());
            if self.persist(&rec).await.is_err() {
                out.push(ErrorCode::KafkaStorageError);
                continue;
            }
            info!(topic = %name, "deleted topic");
            rec.apply(&mut meta);
            changed = true;
            out.push(ErrorCode::None);
        }
        if changed {
            self.adopt(meta, publish).await;
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
        if !self.decides() {
            return Err(self.not_controller());
        }
        let mut meta = self.meta.borrow().clone();
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
                let mut counts = meta.replicas_per_shard(&self.nodes, self.placement_shards(&meta));
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
                let start = topic.partitions.len();
                topic.partitions.extend(place(
                    &mut counts,
                    (count - current) as usize,
                    &self.nodes,
                    rf.min(self.nodes.len()),
                    start,
                ));
            }
        }
        if validate_only {
            return Ok(());
        }
        let rec = MetaRecord::PutTopic(topic);
        self.persist(&rec)
            .await
            .map_err(|e| (ErrorCode::KafkaStorageError, format!("metadata log: {e}")))?;
        info!(topic = %name, "updated topic");
        rec.apply(&mut meta);
        self.adopt(meta, publish).await;
        Ok(())
    }
}
