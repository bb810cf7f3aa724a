//! A partition replica: the rules above storage. It assigns offsets and the leader
//! epoch, keeps the idempotent producers' state, owns the high watermark (what readers
//! may see) and wakes waiting readers when it moves. A partition of one replica does
//! this itself; a replicated one proposes its appends to its raft group and takes its
//! high watermark from the group's commit index (`replication`).

pub mod conf_change;
pub mod conf_state_codec;
pub mod error;
pub mod partition;
pub mod planted;
pub mod producer_state;
pub mod raft_log;
pub mod raft_message;
pub mod raft_producers;
pub mod raft_shard;
pub mod raft_snapshot;
pub mod raft_state;
pub mod replication;

pub use error::{ReplicaError, ReplicaResult};
pub use partition::{AppendResult, Partition};
