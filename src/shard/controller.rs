//! Cluster-metadata changes, run on shard 0, and the handling of cross-shard requests.

use std::rc::Rc;
use std::sync::Arc;

use tracing::{info, warn};
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::metadata::store::MetaRecord;
use crate::metadata::{ShardId, TopicMeta};

use super::placement::place;
use super::router::{CreateOutcome, ShardRequest, ShardResponse, TopicChange, TopicSpec};
use super::state::Shard;

/// The controller as a handler sees it: topic changes (run on shard 0, the node's
/// controller today) and questions every shard answers.
pub struct Controller<'a> {
    shard: &'a Rc<Shard>,
}

impl<'a> Controller<'a> {
    /// The controller reached from `shard`.
    pub fn new(shard: &'a Rc<Shard>) -> Self {
        Controller { shard }
    }

    /// Creates topics; see [`create_topics`].
    pub async fn create_topics(
        &self,
        topics: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<CreateOutcome> {
        create_topics(self.shard, topics, validate_only).await
    }

    /// Deletes topics; see [`delete_topics`].
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<ErrorCode> {
        delete_topics(self.shard, names).await
    }

    /// Changes a topic; see [`update_topic`].
    pub async fn update_topic(
        &self,
        name: String,
        change: TopicChange,
        validate_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        update_topic(self.shard, name, change, validate_only).await
    }

    /// Every group of every shard of this node: (id, protocol type, state).
    pub async fn list_groups(&self) -> Vec<(String, String, String)> {
        let mut groups = Vec::new();
        for to in 0..self.shard.config.shards {
            if let ShardResponse::Groups(g) = call(self.shard, to, ShardRequest::ListGroups).await {
                groups.extend(g);
            }
        }
        groups
    }
}

/// Sends a request to shard `to`, handling it directly when that is this shard.
pub async fn call(shard: &Rc<Shard>, to: ShardId, request: ShardRequest) -> ShardResponse {
    if to == shard.id {
        // Boxed: a request handled here may itself call another shard.
        Box::pin(handle_request(shard.clone(), request)).await
    } else {
        shard.router.call(to, request).await
    }
}

/// Answers a request that arrived from another shard (or from this one).
pub async fn handle_request(shard: Rc<Shard>, request: ShardRequest) -> ShardResponse {
    match request {
        ShardRequest::CreateTopics {
            topics,
            validate_only,
        } => ShardResponse::Created(create_topics(&shard, topics, validate_only).await),
        ShardRequest::DeleteTopics(names) => {
            ShardResponse::Deleted(delete_topics(&shard, names).await)
        }
        ShardRequest::UpdateTopic {
            name,
            change,
            validate_only,
        } => ShardResponse::Updated(update_topic(&shard, name, change, validate_only).await),
        ShardRequest::ListGroups => ShardResponse::Groups(
            shard
                .coordinator
                .get()
                .map(|c| c.list())
                .unwrap_or_default(),
        ),
        ShardRequest::ApplyMetadata(meta) => match shard.apply_metadata(meta).await {
            Ok(()) => ShardResponse::Applied,
            Err(e) => {
                warn!(shard = shard.id, error = %e, "applying metadata failed");
                ShardResponse::Failed(e)
            }
        },
    }
}

/// Creates topics on shard 0: places partitions, persists, then has every shard apply
/// the new snapshot before answering, so the topic is usable everywhere on return.
pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<TopicSpec>,
    validate_only: bool,
) -> Vec<CreateOutcome> {
    if shard.id != 0 {
        return match call(
            shard,
            0,
            ShardRequest::CreateTopics {
                topics,
                validate_only,
            },
        )
        .await
        {
            ShardResponse::Created(r) => r,
            other => vec![Err((ErrorCode::UnknownServerError, format!("{other:?}")))],
        };
    }
    let Ok(_permit) = shard.controller_lock.acquire_permit(1).await else {
        return vec![Err((
            ErrorCode::UnknownServerError,
            "controller closed".into(),
        ))];
    };
    let mut meta = (*shard.meta()).clone();
    let mut counts = meta.replicas_per_shard(shard.config.node_id, shard.config.shards);
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
                shard.config.node_id,
            ),
            configs: spec.configs,
        };
        let rec = MetaRecord::PutTopic(topic);
        if let Err(e) = persist(shard, &rec) {
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
        broadcast(shard, Arc::new(meta)).await;
    }
    out
}

/// Deletes topics on shard 0 and has every shard drop their partitions.
pub async fn delete_topics(shard: &Rc<Shard>, names: Vec<String>) -> Vec<ErrorCode> {
    if shard.id != 0 {
        return match call(shard, 0, ShardRequest::DeleteTopics(names.clone())).await {
            ShardResponse::Deleted(r) => r,
            _ => vec![ErrorCode::UnknownServerError; names.len()],
        };
    }
    let Ok(_permit) = shard.controller_lock.acquire_permit(1).await else {
        return vec![ErrorCode::UnknownServerError; names.len()];
    };
    let mut meta = (*shard.meta()).clone();
    let mut out = Vec::with_capacity(names.len());
    let mut changed = false;
    for name in names {
        if !meta.topics.contains_key(&name) {
            out.push(ErrorCode::UnknownTopicOrPartition);
            continue;
        }
        let rec = MetaRecord::DeleteTopic(name.clone());
        if persist(shard, &rec).is_err() {
            out.push(ErrorCode::KafkaStorageError);
            continue;
        }
        info!(topic = %name, "deleted topic");
        rec.apply(&mut meta);
        changed = true;
        out.push(ErrorCode::None);
    }
    if changed {
        broadcast(shard, Arc::new(meta)).await;
    }
    out
}

/// Changes a topic on shard 0 (configs or partition count) and has every shard apply
/// the result before answering.
pub async fn update_topic(
    shard: &Rc<Shard>,
    name: String,
    change: TopicChange,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    if shard.id != 0 {
        return match call(
            shard,
            0,
            ShardRequest::UpdateTopic {
                name,
                change,
                validate_only,
            },
        )
        .await
        {
            ShardResponse::Updated(r) => r,
            other => Err((ErrorCode::UnknownServerError, format!("{other:?}"))),
        };
    }
    let Ok(_permit) = shard.controller_lock.acquire_permit(1).await else {
        return Err((ErrorCode::UnknownServerError, "controller closed".into()));
    };
    let mut meta = (*shard.meta()).clone();
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
            let mut counts = meta.replicas_per_shard(shard.config.node_id, shard.config.shards);
            topic.partitions.extend(place(
                &mut counts,
                (count - current) as usize,
                shard.config.node_id,
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    let rec = MetaRecord::PutTopic(topic);
    persist(shard, &rec)
        .map_err(|e| (ErrorCode::KafkaStorageError, format!("metadata log: {e}")))?;
    info!(topic = %name, "updated topic");
    rec.apply(&mut meta);
    broadcast(shard, Arc::new(meta)).await;
    Ok(())
}

fn persist(shard: &Shard, rec: &MetaRecord) -> std::io::Result<()> {
    match &shard.store {
        Some(store) => store.borrow_mut().append(rec),
        None => Err(std::io::Error::other("only shard 0 holds the metadata log")),
    }
}

/// Has every shard apply `meta`, all at once, and waits for all of them.
async fn broadcast(shard: &Rc<Shard>, meta: Arc<crate::metadata::ClusterMetadata>) {
    let mut tasks = Vec::new();
    for to in 0..shard.config.shards {
        let shard = shard.clone();
        let meta = meta.clone();
        tasks.push(crate::task::spawn(async move {
            (
                to,
                call(&shard, to, ShardRequest::ApplyMetadata(meta)).await,
            )
        }));
    }
    for t in tasks {
        let (to, resp) = t.await;
        if !matches!(resp, ShardResponse::Applied) {
            warn!(shard = to, response = ?resp, "shard did not apply metadata");
        }
    }
}
