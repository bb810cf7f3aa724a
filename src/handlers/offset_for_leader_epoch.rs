//! OffsetForLeaderEpoch (KIP-101, KIP-320): for each partition, the largest leader
//! epoch at or below the one asked for, and the offset where it ends (where the next
//! epoch starts, or the log end for the newest, the leader's own). Consumers ask it after a leader change
//! to find out whether the log they were reading was truncated under them; the request's
//! `current_leader_epoch` is checked first, as for Fetch.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::dispatch::context::RequestContext;

use super::check_current_leader_epoch;

/// Kafka's "no such epoch" and "no such offset" in the answer.
const UNDEFINED: i32 = -1;

/// Handles OffsetForLeaderEpoch.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(UNDEFINED)
                .with_end_offset(i64::from(UNDEFINED));
            let answer = match ctx.partition(&name, p.partition) {
                Err(code) => base.with_error_code(code.code()),
                Ok(handle) => {
                    let replica = &handle.replica;
                    let current = replica.leader_epoch();
                    match check_current_leader_epoch(p.current_leader_epoch, current) {
                        Err(code) => base.with_error_code(code.code()),
                        // The leader's own epoch ends at its log end, whether or not a
                        // batch of it was written yet (Kafka records the epoch when the
                        // leader takes over).
                        Ok(()) if p.leader_epoch >= current => base
                            .with_leader_epoch(current)
                            .with_end_offset(replica.next_offset()),
                        Ok(()) => match replica.log().end_offset_for_epoch(p.leader_epoch) {
                            Some((epoch, end)) => {
                                base.with_leader_epoch(epoch).with_end_offset(end)
                            }
                            // An epoch older than the log's first: nothing to compare
                            // with, as Kafka answers.
                            None => base,
                        },
                    }
                }
            };
            ctx.stats().error_code(answer.error_code);
            partitions.push(answer);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
