//! The controller service: it owns the cluster metadata and its log, decides every topic
//! change and publishes the result to every shard. One node today, so it is a service on
//! shard 0; the replication work makes it a raft group. Handlers reach it through
//! `controller_client::Controller`; it knows nothing of shards beyond [`Publish`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tracing::info;
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::metadata::store::{MetaRecord, MetaStore};
use crate::metadata::{ClusterMetadata, NodeId, ShardId, TopicMeta};
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
}

impl ControllerService {
    /// The service over the metadata log `store`, whose replay gave `meta`, for a node
    /// `node` of `shards` shards.
    pub fn new(
        store: MetaStore,
        meta: ClusterMetadata,
        node: NodeId,
        shards: usize,
    ) -> ControllerService {
        ControllerService {
            store: Arc::new(Mutex::new(store)),
            meta: RefCell::new(meta),
            lock: Semaphore::new(1),
            node,
            shards,
        }
    }

    /// Records an applied change as the new authoritative metadata and publishes it.
    async fn adopt(&self, meta: ClusterMetadata, publish: &dyn Publish) {
        *self.meta.borrow_mut() = meta.clone();
        publish.publish(Arc::new(meta)).await;
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
        let mut meta = self.meta.borrow().clone();
        let mut counts = meta.replicas_per_shard(self.node, self.shards);
        let mut out = Vec::with_capacity(topics.len());
        let mut changed = false;
        for spec in topics {
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
                partitions: place(
                    &mut counts,
                    spec.partitions.max(0) as usize,
                    &[self.node],
                    1,
                    0,
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
            info!(topic = %spec.name, partitions = spec.partitions, "created topic");
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
                let mut counts = meta.replicas_per_shard(self.node, self.shards);
                topic.partitions.extend(place(
                    &mut counts,
                    (count - current) as usize,
                    &[self.node],
                    1,
                    0,
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
