//! ElectLeaders (kafka-leader-election): a preferred-leader election hands each named
//! partition (or every partition) back to its preferred replica, the first of its
//! replicas, by raft leader transfer. An unclean election is refused: raft never elects
//! a replica that may lack acknowledged records.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::metadata::raft_group;

const PREFERRED: i8 = 0;

/// Handles ElectLeaders (v0 is always a preferred election).
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let meta = ctx.metadata();
    let wanted: Vec<(String, Vec<i32>)> = match &request.topic_partitions {
        Some(tps) => tps
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        None => meta
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect()))
            .collect(),
    };
    let unclean = ctx.version() >= 1 && request.election_type != PREFERRED;
    let mut groups = Vec::new();
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let t = meta.topics.get(&topic);
        let partition_result = partitions
            .into_iter()
            .map(|p| {
                let (code, message) = match t.and_then(|t| t.partition(p).map(|a| (t, a))) {
                    None => (ErrorCode::UnknownTopicOrPartition, None),
                    Some(_) if unclean => (
                        ErrorCode::InvalidRequest,
                        Some("unclean leader election is not possible: raft elects only replicas holding every acknowledged record"),
                    ),
                    Some((_, a)) if a.replicas.is_empty() => (ErrorCode::UnknownTopicOrPartition, None),
                    Some((t, a)) => {
                        let preferred = a.replicas[0];
                        let leader = ctx.partition_leader(&topic, p).and_then(|l| l.leader);
                        if leader == Some(preferred.broker_id()) {
                            (ErrorCode::ElectionNotNeeded, None)
                        } else if !ctx.node_is_up(preferred.node) {
                            (
                                ErrorCode::PreferredLeaderNotAvailable,
                                Some("the preferred replica's node is down"),
                            )
                        } else {
                            groups.push(raft_group(&t.id, p));
                            (ErrorCode::None, None)
                        }
                    }
                };
                ctx.stats().error(code);
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code.code())
                    .with_error_message(message.map(StrBytes::from_static_str))
            })
            .collect();
        results.push(
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partition_result),
        );
    }
    if !groups.is_empty() {
        ctx.controller().elect_preferred(groups).await;
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
