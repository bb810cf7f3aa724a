//! What the log asks of the raft group over it (implemented in `replica::raft_log`): a
//! trait of its own, so that the log's state can name it without the log's raft-record
//! code and its state importing each other.

use std::future::Future;
use std::pin::Pin;

use super::error::LogResult;
use super::Offset;

/// What the log asks of the raft group over it: to save its state to the log's directory,
/// durably, at a checkpoint (so that the journal may drop the records it has written so
/// far), and to write a segment's raft-index table when the segment is sealed.
pub trait RaftCheckpoint {
    /// Saves the group's state (a write-to-temp, sync and rename).
    fn save(&self) -> Pin<Box<dyn Future<Output = LogResult<()>> + '_>>;

    /// Writes `<base>.raftindex` for the segment `[base, next)` being sealed (durably;
    /// the directory is synced by the roll).
    fn sealed(
        &self,
        base: Offset,
        next: Offset,
    ) -> Pin<Box<dyn Future<Output = LogResult<()>> + '_>>;
}
