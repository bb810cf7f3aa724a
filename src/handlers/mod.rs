//! One module per Kafka API. Each exposes `handle(ctx, request) -> response`; the table
//! in `dispatch` ties them to their API keys and versions.

pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// A topic name for a response.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Kafka's check of a request's `current_leader_epoch` (KIP-320) against the epoch the
/// replica leads in: -1 (not given) passes; older is fenced (the client's metadata is
/// stale), newer is unknown (this replica is behind).
pub fn check_current_leader_epoch(given: i32, current: i32) -> Result<(), crate::error::ErrorCode> {
    use crate::error::ErrorCode;
    match given {
        e if e < 0 || e == current => Ok(()),
        e if e < current => Err(ErrorCode::FencedLeaderEpoch),
        _ => Err(ErrorCode::UnknownLeaderEpoch),
    }
}
