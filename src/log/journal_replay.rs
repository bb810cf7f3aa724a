//! A log's side of the shard's journal: re-applying what the journal holds and its
//! segments lack (on open, and after a segment write error), syncing at a checkpoint,
//! and the reset written before the log's directory is deleted.

use std::future::Future;
use std::pin::Pin;

use tracing::{info, warn};

use crate::protocol::record_batch::check_batch;

use super::error::LogResult;
use super::journal::{JournalOp, Journaled};
use super::storage::{Log, Recovered};

impl Log {
    /// Re-applies journal records in order: batches the segments lack are appended (those
    /// they hold are skipped), truncations are redone (one below the log's start drops
    /// what the replay appended before it), raft records are kept for the
    /// group to replay. Batches that do not continue the log are skipped: either a
    /// truncation later in the journal already took the segment below them (it holds
    /// the rewritten tail, and the files with the batches before them were released),
    /// or they followed an append that bypassed the journal and was lost with its
    /// segment write, so neither was acknowledged. Either way the records after them
    /// still count: a truncation brings the log back to where later batches continue
    /// it, and a raft group's HardState is durable whatever became of the batches
    /// around it. Syncs what changed; true when anything did.
    pub(super) async fn apply_journal(&self, ops: Vec<JournalOp>) -> LogResult<bool> {
        let mut changed = false;
        // After a damaged batch (a bug or damage the records' checksums missed) the
        // offsets that follow cannot be trusted: only raft records are still taken.
        let mut damaged = false;
        let mut gaps = 0usize;
        // Below this offset the log holds what its segment files held at open, not what
        // this replay put back.
        let mut held = self.next_offset();
        // Which truncations reached the segment files before the crash.
        let cut_on_disk: Vec<bool> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                JournalOp::Truncate(at) => ops[i + 1..]
                    .iter()
                    .take_while(|later| !matches!(later, JournalOp::Truncate(_)))
                    .any(|later| later == &JournalOp::Truncated(*at)),
                _ => false,
            })
            .collect();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                JournalOp::Raft(record) => self.raft_records.borrow_mut().push(record),
                JournalOp::Truncated(_) => {}
                JournalOp::Truncate(_) | JournalOp::Batches(_) if damaged => {}
                JournalOp::Truncate(at) => {
                    // A truncation voids the batches journaled before it at or past its
                    // offset. What the segment files hold there is stale only if the
                    // crash came before the cut reached them; once it had (its end is
                    // recorded, or a prefix cut came after it and took its segment),
                    // they hold newer batches, and only what this replay put back goes.
                    let to = if cut_on_disk[i] || at < self.log_start_offset() {
                        at.max(held)
                    } else {
                        at
                    };
                    if to < self.next_offset() {
                        self.cut_suffix(to).await?;
                        changed = true;
                    }
                    held = held.min(to);
                }
                JournalOp::Batches(mut rest) => {
                    while !rest.is_empty() {
                        let h = match check_batch(&rest) {
                            Ok(h) => h,
                            Err(e) => {
                                warn!(dir = %self.dir.display(), error = %e, "damaged batch in a journal record; the log's batches are not replayed past it");
                                damaged = true;
                                break;
                            }
                        };
                        let batch = rest.split_to(h.size);
                        let next = self.next_offset();
                        if h.last_offset() < next {
                            continue;
                        }
                        if h.base_offset != next {
                            gaps += 1;
                            break;
                        }
                        self.buffer(batch, &[h])?;
                        changed = true;
                    }
                }
            }
        }
        if gaps > 0 {
            info!(dir = %self.dir.display(), records = gaps, "journal batches past the log's end skipped (truncated since, or never acknowledged)");
        }
        if changed {
            self.flush().await?;
        }
        Ok(changed)
    }

    /// After a write error (with the append lock held): reopens the active segment at
    /// what is durable in it, re-applies the journal's durable records, and returns what
    /// the replica rebuilds from.
    pub(super) async fn recover_from_failure(&self) -> LogResult<Recovered> {
        self.reopen_active().await?;
        if let Some(journal) = self.journal().cloned() {
            let reapplied = match journal.read_back(&self.journal_key).await {
                Ok(ops) => self.apply_journal(ops).await,
                Err(e) => Err(e.into()),
            };
            // The raft group's own state never went away: only the segment is rebuilt.
            self.raft_records.borrow_mut().clear();
            if let Err(e) = reapplied {
                self.state.borrow_mut().failed = true;
                return Err(e);
            }
        }
        self.recover_current().await
    }

    /// Makes everything this log has journaled durable in its segments, so the journal
    /// can let go of it: a sync, or, after a write error, the recovery an append would do.
    async fn checkpoint_log(&self) -> LogResult<()> {
        self.sync_for_checkpoint().await?;
        self.save_raft_checkpoint().await
    }

    async fn sync_for_checkpoint(&self) -> LogResult<()> {
        if !self.state.borrow().failed {
            return self.flush().await;
        }
        let _permit = self.lock_appends().await?;
        if self.state.borrow().failed {
            // The replica learns of the rebuilt tail at its next append (`reserve`).
            let recovered = self.recover_from_failure().await?;
            *self.reopened.borrow_mut() = Some(recovered);
            return Ok(());
        }
        self.flush().await
    }

    /// Before the log's directory is deleted: the journal drops what it holds for it, so
    /// that a new log in the same directory never replays it.
    pub async fn forget(&self) -> LogResult<()> {
        if let Some(journal) = self.env.journal.as_ref() {
            journal
                .append_reset(&self.me, &self.journal_key)?
                .durable()
                .await?;
        }
        Ok(())
    }
}

impl Journaled for Log {
    fn checkpoint(&self) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + '_>> {
        Box::pin(async move {
            self.checkpoint_log()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }
}
