//! OffsetCommit: store a group's consumed positions durably.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::group::offsets::Committed;

/// Handles OffsetCommit.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let code = match ctx.coordinator_for(&group) {
        Ok(c) => {
            let code = c.check_commit(
                &group,
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
            );
            if code == ErrorCode::None {
                let now = crate::clock::now_ms();
                let offsets: Vec<(String, i32, Committed)> = request
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (
                                t.name.0.to_string(),
                                p.partition_index,
                                Committed {
                                    offset: p.committed_offset,
                                    leader_epoch: p.committed_leader_epoch,
                                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                                    commit_ms: now,
                                },
                            )
                        })
                    })
                    .collect();
                match c.commit(&group, offsets).await {
                    Ok(()) => ErrorCode::None,
                    // A replicated commit fails when leadership of its offsets partition
                    // moved: the client finds the new coordinator and commits again.
                    Err(_) if c.offsets.is_replicated() => ErrorCode::NotCoordinator,
                    Err(_) => ErrorCode::KafkaStorageError,
                }
            } else {
                code
            }
        }
        Err(code) => code,
    };
    ctx.stats().error(code);
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
