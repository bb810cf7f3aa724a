//! AlterPartitionReassignments (kafka-reassign-partitions --execute): moves partitions
//! to new replica sets. The controller records each move; the partition's raft leader
//! then adds the new replicas as learners, promotes them once caught up and removes the
//! old ones (joint consensus), never losing a majority, and the move ends when its
//! voters are the target.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;

/// Handles AlterPartitionReassignments.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let moves: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>()),
                )
            })
        })
        .collect();
    let mut outcomes = ctx.controller().reassign(moves).await.into_iter();
    let responses = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match outcomes.next() {
                        Some(Ok(())) => out,
                        Some(Err((code, message))) => {
                            ctx.stats().error(code);
                            out.with_error_code(code.code())
                                .with_error_message(Some(StrBytes::from_string(message)))
                        }
                        None => {
                            out.with_error_code(crate::error::ErrorCode::UnknownServerError.code())
                        }
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}
