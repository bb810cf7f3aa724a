//! DescribeQuorum (kafka-metadata-quorum): the controller quorum, Kafka's
//! `__cluster_metadata` partition 0, as this node sees it: its leader and epoch, the
//! committed offset, and each voter (by the broker id of its shard 0) with how far its
//! copy reaches when this node leads. Nodes outside the quorum are its observers.

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;

/// Kafka's name of the controller log.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Handles DescribeQuorum.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let quorum = match ctx.controller().quorum().await {
        Ok(q) => q,
        Err((code, message)) => {
            ctx.stats().error(code);
            return DescribeQuorumResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message)));
        }
    };
    let broker = |node: i32| BrokerId(crate::config::broker_id(node, 0));
    let state = |node: i32, end: i64| {
        ReplicaState::default()
            .with_replica_id(broker(node))
            .with_log_end_offset(end)
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let voters: Vec<i32> = quorum.voters.iter().map(|(n, _)| *n).collect();
    let observers: Vec<ReplicaState> = ctx
        .brokers()
        .into_iter()
        .map(|(id, _, _)| id / crate::config::MAX_SHARDS as i32)
        .filter(|n| !voters.contains(n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|n| state(n, -1))
        .collect();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return out.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    }
                    match quorum.leader {
                        None => out
                            .with_error_code(ErrorCode::LeaderNotAvailable.code())
                            .with_leader_id(BrokerId(-1)),
                        Some(leader) => out
                            .with_leader_id(broker(leader))
                            .with_leader_epoch(i32::try_from(quorum.term).unwrap_or(i32::MAX))
                            .with_high_watermark(quorum.high_watermark)
                            .with_current_voters(
                                quorum
                                    .voters
                                    .iter()
                                    .map(|&(n, end)| state(n, end))
                                    .collect(),
                            )
                            .with_observers(observers.clone()),
                    }
                })
                .collect();
            TopicData::default()
                .with_topic_name(TopicName(t.topic_name.0.clone()))
                .with_partitions(partitions)
        })
        .collect();
    // v2 names where each voter listens.
    let nodes =
        voters
            .iter()
            .filter_map(|&n| {
                let (host, port) = ctx.endpoint(crate::config::broker_id(n, 0))?;
                Some(Node::default().with_node_id(broker(n)).with_listeners(
                    vec![Listener::default()
                    .with_name(StrBytes::from_static_str("PLAINTEXT"))
                    .with_host(StrBytes::from_string(host))
                    .with_port(u16::try_from(port).unwrap_or(0))],
                ))
            })
            .collect();
    DescribeQuorumResponse::default()
        .with_topics(topics)
        .with_nodes(nodes)
}
