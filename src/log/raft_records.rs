//! The raft group over a log keeps its own state durable through the shard's journal:
//! table rows, HardState and ConfState travel as raft records, in the same durable round
//! as the batches around them (one write for every group of the shard). This layer
//! stores them without reading them; before the journal lets go of a file, a checkpoint
//! asks the group to save its whole state beside the log ([`RaftCheckpoint`]), and on
//! open the records the journal still holds are handed back in order
//! ([`Log::take_raft_records`]).

use std::rc::Weak;

use bytes::Bytes;

use super::error::LogResult;
use super::journal::JournalPos;
pub use super::raft_hook::RaftCheckpoint;
use super::storage::Log;
use super::Offset;

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

    /// The raft records the journal held for this log when it opened, in the order they
    /// were written (each call takes them).
    pub fn take_raft_records(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.raft_records.borrow_mut())
    }

    /// Names the group whose state a checkpoint saves.
    pub fn set_raft_checkpoint(&self, group: Weak<dyn RaftCheckpoint>) {
        *self.raft_checkpoint.borrow_mut() = Some(group);
    }

    /// The raft group over this log, while it lives.
    fn raft_group(&self) -> Option<std::rc::Rc<dyn RaftCheckpoint>> {
        self.raft_checkpoint
            .borrow()
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Has the raft group write the table of the segment being sealed.
    pub(super) async fn raft_segment_sealed(&self, base: Offset, next: Offset) -> LogResult<()> {
        match self.raft_group() {
            Some(group) => group.sealed(base, next).await,
            None => Ok(()),
        }
    }

    /// Saves the raft group's state, when the log has a live one.
    pub(super) async fn save_raft_checkpoint(&self) -> LogResult<()> {
        match self.raft_group() {
            Some(group) => group.save().await,
            None => Ok(()),
        }
    }
}
