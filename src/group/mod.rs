//! Consumer groups: the coordinator state machine and committed offsets.

pub mod coordinator;
pub mod offsets;
pub mod state;

use crate::metadata::ShardId;

/// The shard that coordinates `group`: a stable hash of the id modulo the shard count.
pub fn coordinator_shard(group: &str, shards: usize) -> ShardId {
    (crc32c::crc32c(group.as_bytes()) as usize) % shards.max(1)
}
