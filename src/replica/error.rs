//! Errors of a replica's operations.

use thiserror::Error;

use super::producer_state::ProducerError;
use crate::log::LogError;

/// Why an append or another replica operation failed.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The storage refused: a bad batch, an offset out of range, a disk error.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An idempotent producer's batch is out of sequence or from a fenced epoch.
    #[error("{0}")]
    Producer(#[from] ProducerError),
    /// The partition's raft group did not take the append (not the leader, outcome
    /// unknown after a leader change, refused batches).
    #[error(transparent)]
    Raft(#[from] super::raft_shard::ProposeError),
}

impl From<crate::protocol::record_batch::BatchError> for ReplicaError {
    fn from(e: crate::protocol::record_batch::BatchError) -> Self {
        ReplicaError::Log(LogError::InvalidBatch(e))
    }
}

impl From<std::io::Error> for ReplicaError {
    fn from(e: std::io::Error) -> Self {
        ReplicaError::Log(LogError::Io(e))
    }
}

/// Result of a replica operation.
pub type ReplicaResult<T> = Result<T, ReplicaError>;
