//! A partition replica: the rules above storage. It assigns offsets and the leader
//! epoch, keeps the idempotent producers' state, owns the high watermark (what readers
//! may see) and wakes waiting readers when it moves. Today every partition has one
//! replica, its leader; the raft group per partition builds on this layer.

pub mod error;
pub mod partition;
pub mod producer_state;
pub mod raft_log;
pub mod raft_message;
pub mod raft_producers;
pub mod raft_shard;
pub mod raft_state;

pub use error::{ReplicaError, ReplicaResult};
pub use partition::{AppendResult, Partition};
