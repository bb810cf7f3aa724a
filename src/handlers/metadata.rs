//! Metadata: brokers (one per ctx), topics and partition leaders; auto-creates topics.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::metadata::validate_topic_name;
use crate::shard::router::TopicSpec;

/// Kafka's "not requested" value for authorized-operation fields.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Bit field of Kafka ACL operation codes.
const fn ops(codes: &[u32]) -> i32 {
    let mut bits = 0u32;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits as i32
}

/// What a client may do to a topic. With no authorizer, Kafka answers every operation
/// the resource supports: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS.
pub const TOPIC_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]);
/// Group: READ, DELETE, DESCRIBE.
pub const GROUP_OPERATIONS: i32 = ops(&[3, 6, 8]);

/// Handles Metadata.
pub async fn handle(ctx: &RequestContext<'_>, request: MetadataRequest) -> MetadataResponse {
    let version = ctx.header.request_api_version;
    // None = every topic. In v0 an empty list also means every topic.
    let requested: Option<Vec<String>> = request.topics.map(|ts| {
        ts.into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect()
    });
    let requested = match requested {
        Some(v) if v.is_empty() && version == 0 => None,
        other => other,
    };
    let allow_create =
        ctx.config().auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let cluster_ops = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
    if let (Some(names), true) = (&requested, allow_create) {
        let meta = ctx.metadata();
        let missing: Vec<TopicSpec> = names
            .iter()
            .filter(|n| !meta.topics.contains_key(n.as_str()) && validate_topic_name(n).is_ok())
            .map(|n| TopicSpec {
                name: n.clone(),
                partitions: ctx.config().default_partitions,
                configs: Default::default(),
                replication_factor: -1,
            })
            .collect();
        if !missing.is_empty() {
            let forward: Vec<(String, i32, i16)> = missing
                .iter()
                .map(|t| (t.name.clone(), t.partitions, t.replication_factor))
                .collect();
            // On a node that does not decide, the controller node creates them and
            // sends the metadata back; the client asks again meanwhile.
            if !ctx.forward_creation(forward) {
                ctx.controller().create_topics(missing, false).await;
            }
        }
    }
    let meta = ctx.metadata();
    let brokers = ctx
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    let names: Vec<String> = match requested {
        Some(n) => n,
        None => meta.topics.keys().cloned().collect(),
    };
    let topics = names
        .iter()
        .map(|name| match meta.topics.get(name) {
            Some(t) => {
                let partitions = t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(p, _)| {
                        let out =
                            MetadataResponsePartition::default().with_partition_index(p as i32);
                        let Some(l) = ctx.partition_leader(name, p as i32) else {
                            return out.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                        };
                        let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
                        let out = out
                            .with_leader_epoch(l.epoch)
                            .with_isr_nodes(ids(l.in_sync))
                            .with_replica_nodes(ids(l.replicas));
                        match l.leader {
                            Some(id) => out.with_leader_id(BrokerId(id)),
                            // An election is under way: clients ask again.
                            None => out
                                .with_leader_id(BrokerId(-1))
                                .with_error_code(ErrorCode::LeaderNotAvailable.code()),
                        }
                    })
                    .collect();
                let topic = MetadataResponseTopic::default()
                    .with_name(Some(topic_name(name)))
                    .with_topic_id(t.id)
                    .with_is_internal(name == crate::group::OFFSETS_TOPIC)
                    .with_partitions(partitions);
                if version >= 8 && request.include_topic_authorized_operations {
                    topic.with_topic_authorized_operations(TOPIC_OPERATIONS)
                } else {
                    topic
                }
            }
            None => {
                let code = if validate_topic_name(name).is_err() {
                    ErrorCode::InvalidTopicException
                } else {
                    ErrorCode::UnknownTopicOrPartition
                };
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name(name)))
                    .with_error_code(code.code())
            }
        })
        .collect();
    let response = if cluster_ops {
        MetadataResponse::default().with_cluster_authorized_operations(CLUSTER_OPERATIONS)
    } else {
        MetadataResponse::default()
    };
    response
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id())))
        .with_controller_id(BrokerId(ctx.controller_broker()))
        .with_topics(topics)
}
