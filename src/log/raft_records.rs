//! The raft group over a log keeps its own state durable through the shard's journal:
//! table rows, HardState and ConfState travel as raft records, in the same durable round
//! as the batches around them (one write for every group of the shard). This layer
//! stores them without reading them; before the journal lets go of a file, a checkpoint
//! asks the group to save its whole state beside the log ([`RaftCheckpoint`]), and on
//! open the records the journal still holds are handed back in order
//! ([`Log::take_raft_records`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Weak;

use bytes::Bytes;

use super::error::LogResult;
use super::journal::JournalPos;
use super::storage::Log;
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

impl Log {
    /// Writes a raft record for this log into the shard's journal (durable at the
    /// returned position); `None` when the log has no journal, and the group must then
    /// save its state itself.
    pub fn journal_raft(&self, record: &[u8]) -> LogResult<Option<JournalPos>> {
        match self.env.journal.as_ref() {
            Some(journal) => Ok(Some(journal.append_raft(
                &self.me,
                &self.journal_key,
                record,
            )?)),
            None => Ok(None),
        }
    }

    /// True when raft records go to a journal.
    pub fn has_journal(&self) -> bool {
        self.env.journal.is_some()
    }

    /// The raft records the journal held for this log when it opened, in the order they
    /// were written (each call takes them).
    pub fn take_raft_records(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.raft_records.borrow_mut())
    }

    /// Names the group whose state a checkpoint saves.
    pub fn set_raft_checkpoint(&self, group: Weak<dyn RaftCheckpoint>) {
        *self.raft_checkpoint.borrow_mut() = Some(group);
    }

    /// Has the raft group write the table of the segment being sealed.
    pub(super) async fn raft_segment_sealed(&self, base: Offset, next: Offset) -> LogResult<()> {
        let group = self
            .raft_checkpoint
            .borrow()
            .as_ref()
            .and_then(Weak::upgrade);
        match group {
            Some(group) => group.sealed(base, next).await,
            None => Ok(()),
        }
    }

    /// Saves the raft group's state, when the log has a live one.
    pub(super) async fn save_raft_checkpoint(&self) -> LogResult<()> {
        let group = self
            .raft_checkpoint
            .borrow()
            .as_ref()
            .and_then(Weak::upgrade);
        match group {
            Some(group) => group.save().await,
            None => Ok(()),
        }
    }
}
