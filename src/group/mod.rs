//! Consumer groups: the coordinator state machine and committed offsets.
//!
//! On a single node each shard coordinates the groups that hash to it and keeps their
//! offsets in its own log. In a cluster the offsets live in the replicated internal topic
//! [`OFFSETS_TOPIC`]: a group belongs to one of its partitions, and the replica leading
//! that partition coordinates it (Kafka's design), so the group moves with leadership and
//! its commits survive the loss of any node.

pub mod coordinator;
pub mod offsets;
pub mod state;
pub mod stored_group;

use crate::metadata::{PartitionId, ShardId};

/// Kafka's internal topic of committed offsets, one partition per slice of the groups.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The shard that coordinates `group`: a stable hash of the id modulo the shard count.
pub fn coordinator_shard(group: &str, shards: usize) -> ShardId {
    (crc32c::crc32c(group.as_bytes()) as usize) % shards.max(1)
}

/// The partition of [`OFFSETS_TOPIC`] (of `partitions`) that keeps `group`.
pub fn offsets_partition(group: &str, partitions: usize) -> PartitionId {
    PartitionId::try_from(crc32c::crc32c(group.as_bytes()) as usize % partitions.max(1))
        .unwrap_or(0)
}
