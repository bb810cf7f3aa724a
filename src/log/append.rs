//! Appending to a partition's storage: the append slot (the lock, a roll when the
//! segment is full, a reopen after an I/O error), buffering batches that continue the
//! log, waiting for them to be written or durable; flush and a clean close.

use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use crate::protocol::record_batch::BatchHeader;

use super::clean_marker::CleanMarker;
use super::error::{LogError, LogResult};
use super::format::{segment_path, SNAPSHOT_SUFFIX};
use super::segment::{write_indexes, CleanState, Segment};
use super::storage::{segment_writer_options, AppendSlot, Log, Pending, Recovered};
use super::tail_cache::CachedBatch;
use super::Offset;

impl Log {
    /// Takes the append lock, first reopening the active segment after an I/O error and
    /// rolling it when `bytes` more bytes or `offsets` more offsets would not fit.
    /// `snapshot` gives the replica's state as of the log end, saved with a roll.
    pub async fn reserve(
        &self,
        bytes: u64,
        offsets: i64,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> LogResult<AppendSlot<'_>> {
        if let Some(journal) = self.journal() {
            journal.admit().await?;
        }
        let permit = self.lock_appends().await?;
        let failed = self.state.borrow().failed;
        let reopened = if failed {
            Some(self.recover_from_failure().await?)
        } else {
            self.reopened.borrow_mut().take()
        };
        if reopened.is_none() && self.needs_roll(bytes, offsets) {
            self.roll(snapshot()).await?;
        }
        Ok(AppendSlot {
            log: self,
            _permit: permit,
            reopened,
        })
    }

    fn needs_roll(&self, incoming: u64, offsets: i64) -> bool {
        let cfg = self.config.borrow();
        let st = self.state.borrow();
        let active = st.active();
        if active.size == 0 {
            return false;
        }
        let too_big = active.size + incoming > cfg.segment_bytes;
        let too_old =
            active.opened_at.elapsed() > Duration::from_millis(cfg.segment_ms.max(0) as u64);
        let too_many = active.next_offset + offsets - active.base_offset > i64::from(u32::MAX);
        too_big || too_old || too_many
    }

    /// Seals the active segment and starts a new one at the log end; `snapshot` is the
    /// replica's state as of that offset (empty: none is saved).
    pub(super) async fn roll(&self, snapshot: Vec<u8>) -> LogResult<()> {
        let sealing = {
            let mut st = self.state.borrow_mut();
            let active = st.active_mut();
            active.writer.clone().map(|writer| {
                let (o, t) = active.sealed_indexes();
                (writer, active.base_offset, o, t)
            })
        };
        let Some((writer, base, offsets, times)) = sealing else {
            // Sealed by an earlier roll that could not start the next segment (a failed
            // open or directory fsync): start it now.
            return self.start_next_segment().await;
        };
        let next_base = self.state.borrow().active().next_offset;
        let snapshot_path = segment_path(&self.dir, next_base, SNAPSHOT_SUFFIX);
        // Appends to this partition wait for the roll, so the independent durable writes
        // run side by side (the epochs too: recovery rescans only the active segment).
        // The new segment is created only after all of them, so recovery never finds a
        // segment after an unfinished one.
        let ((len, indexes), (snapshot, epochs)) = futures_lite::future::zip(
            futures_lite::future::zip(
                writer.finish(),
                write_indexes(&self.dir, base, &offsets, &times),
            ),
            futures_lite::future::zip(
                async {
                    // An empty snapshot is none: the replica could not say its state at
                    // this offset, and recovery replays from the snapshot before.
                    if snapshot.is_empty() {
                        Ok(())
                    } else {
                        crate::io::small_file::write_durably(&snapshot_path, &snapshot).await
                    }
                },
                self.save_epochs(),
            ),
        )
        .await;
        let len = len?;
        indexes?;
        snapshot?;
        epochs?;
        // The raft group's rows for this segment, before the next segment exists.
        self.raft_segment_sealed(base, next_base).await?;
        {
            let mut st = self.state.borrow_mut();
            let active = st.active_mut();
            active.writer = None;
            active.size = len;
        }
        self.start_next_segment().await
    }

    /// Creates the segment after the sealed active one, at the log end.
    pub(super) async fn start_next_segment(&self) -> LogResult<()> {
        let next = self.state.borrow().active().next_offset;
        let interval = self.config.borrow().index_interval_bytes;
        let writer = segment_writer_options(&self.env, &self.config.borrow());
        let seg =
            Segment::create(&self.dir, next, interval, writer, self.env.stats.clone()).await?;
        info!(dir = %self.dir.display(), base_offset = next, "rolled to a new segment");
        let mut st = self.state.borrow_mut();
        st.segments.push(seg);
        st.direct_end = 0;
        st.evict_cache();
        Ok(())
    }

    /// After an I/O error: reopens the active segment from what is durable on disk,
    /// dropping what was buffered but not synced.
    pub(super) async fn reopen_active(&self) -> LogResult<()> {
        let durable = {
            let st = self.state.borrow();
            let a = st.active();
            a.writer.as_ref().map_or(a.size, |w| w.durable_len())
        };
        self.reopen_active_at(durable).await?;
        self.state.borrow_mut().failed = false;
        Ok(())
    }

    /// Cuts the active segment's file at byte `len` and reopens it from a scan.
    pub(super) async fn reopen_active_at(&self, len: u64) -> LogResult<()> {
        let (base, file) = {
            let st = self.state.borrow();
            (st.active().base_offset, st.active().file.clone())
        };
        // Zeros being written ahead of the data must land before the cut, not after it.
        let writer = self.state.borrow().active().writer.clone();
        if let Some(w) = writer {
            w.settle().await;
        }
        file.truncate(len).await.map_err(std::io::Error::from)?;
        let interval = self.config.borrow().index_interval_bytes;
        let writer = segment_writer_options(&self.env, &self.config.borrow());
        let (seg, _, _) =
            Segment::recover_active(&self.dir, base, interval, writer, self.env.stats.clone())
                .await?;
        let mut st = self.state.borrow_mut();
        let next = seg.next_offset;
        st.active_mut().writer = None;
        if let Some(last) = st.segments.last_mut() {
            *last = seg;
        }
        st.tail.clear();
        st.direct_end = 0;
        st.epochs.truncate_from(next);
        drop(st);
        *self.prefetch.borrow_mut() = None;
        warn!(dir = %self.dir.display(), next_offset = next, "reopened the active segment");
        Ok(())
    }

    /// Writes the epoch table durably (only when it changed: a new epoch or a truncation).
    pub(super) async fn save_epochs(&self) -> LogResult<()> {
        let bytes = self.state.borrow().epochs.to_bytes();
        super::epochs::save(&self.dir, &bytes).await
    }

    /// Writes and syncs everything appended so far.
    pub async fn flush(&self) -> LogResult<()> {
        let writer = self.state.borrow().active().writer.clone();
        if let Some(w) = writer {
            w.sync().await?;
        }
        // What the sync wrote may now leave the cache. Under the interval policy the
        // batches still in a partial chunk cannot, so a shard ends a load over its
        // budget; without this it stayed there until the partition's next append.
        self.state.borrow_mut().evict_cache();
        Ok(())
    }

    /// Syncs the active segment, writes its indexes, the epoch table and a
    /// clean-shutdown marker holding `replica_state` (so the next open skips the scan);
    /// the log should not be used after.
    pub async fn close(&self, replica_state: Vec<u8>) -> LogResult<()> {
        let _permit = self.lock_appends().await?;
        let (writer, base, offsets, times, failed) = {
            let mut st = self.state.borrow_mut();
            let failed = st.failed;
            let a = st.active_mut();
            let (o, t) = (a.offset_index.clone(), a.time_index.clone());
            (a.writer.take(), a.base_offset, o, t, failed)
        };
        let Some(w) = writer else { return Ok(()) };
        if failed || w.failure().is_some() {
            // What was buffered may not be on disk: leave it to the next start's scan.
            return Ok(());
        }
        let size = w.finish().await?;
        write_indexes(&self.dir, base, &offsets, &times).await?;
        self.save_epochs().await?;
        let marker = {
            let st = self.state.borrow();
            let a = st.active();
            CleanMarker {
                active_base: base,
                state: CleanState {
                    size,
                    next_offset: a.next_offset,
                    max_timestamp: a.max_timestamp,
                },
                replica_state,
            }
        };
        super::clean_marker::write(&self.dir, &marker).await
    }
}

impl AppendSlot<'_> {
    /// When the log had to reopen its active segment after an I/O error (dropping what
    /// was not durable), the state to rebuild from; the caller takes it once.
    pub fn take_reopened(&mut self) -> Option<Recovered> {
        self.reopened.take()
    }

    /// Offset the next batch must start at.
    pub fn next_offset(&self) -> Offset {
        self.log.next_offset()
    }

    /// Buffers `records` — whole batches, already stamped with their offsets and epochs,
    /// described by `headers` — after checking that they continue the log. Nothing is
    /// written when they do not. Under the `Durable` policy with a journal, small appends
    /// also go to the journal, which makes them durable.
    pub fn write(&self, records: impl Into<Bytes>, headers: &[BatchHeader]) -> LogResult<Pending> {
        let log = self.log;
        let records: Bytes = records.into();
        let journal = log.journal().cloned();
        let journaled = journal.as_ref().is_some_and(|j| j.takes(records.len()));
        let mut pending = log.buffer(records.clone(), headers)?;
        match journal {
            Some(j) if journaled => match j.append_batches(&log.me, &log.journal_key, &records) {
                Ok(pos) => pending.journal = Some(pos),
                Err(e) => {
                    // The segment holds bytes the journal does not: drop them at the next
                    // append, as after any write error.
                    log.state.borrow_mut().failed = true;
                    return Err(e.into());
                }
            },
            Some(_) => log.state.borrow_mut().direct_end = pending.end_pos,
            None => {}
        }
        Ok(pending)
    }
}

impl Log {
    /// Checks that `records` continue the log and buffers them into the active segment
    /// (the tail cache holds them until they are written).
    pub(super) fn buffer(&self, data: bytes::Bytes, headers: &[BatchHeader]) -> LogResult<Pending> {
        let mut st = self.state.borrow_mut();
        let mut expected = st.next_offset();
        for h in headers {
            if h.base_offset != expected {
                return Err(LogError::NotContiguous {
                    expected,
                    got: h.base_offset,
                });
            }
            expected = h.last_offset() + 1;
        }
        let segment_base = st.active().base_offset;
        let Some(writer) = st.active().writer.clone() else {
            return Err(std::io::Error::other("active segment has no writer").into());
        };
        let end_pos = match writer.buffer(&data) {
            Ok(p) => p,
            Err(e) => {
                st.failed = true;
                return Err(e.into());
            }
        };
        let mut at = 0usize;
        for h in headers {
            let last = h.last_offset();
            st.epochs.observe(h.partition_leader_epoch, h.base_offset);
            st.active_mut()
                .on_append(h.base_offset, last, h.size as u64, h.max_timestamp);
            let end_position = st.active().size;
            st.tail.push(CachedBatch {
                base_offset: h.base_offset,
                last_offset: last,
                segment_base,
                end_position,
                data: data.slice(at..at + h.size),
            });
            at += h.size;
        }
        st.evict_cache();
        let direct_floor = st.direct_end;
        Ok(Pending {
            writer,
            end_pos,
            journal: None,
            direct_floor,
        })
    }
}

impl Pending {
    /// Resolves once the batches are written (not necessarily synced).
    pub async fn written(&self, log: &Log) -> LogResult<()> {
        self.check(log, self.writer.pump().await)
    }

    /// Resolves once the batches, and every batch before them, are written and synced
    /// (in the journal or in the segment).
    pub async fn durable(&self, log: &Log) -> LogResult<()> {
        let outcome = match (&self.journal, self.writer.pump().await) {
            (Some(pos), Ok(())) => match pos.durable().await {
                Ok(()) if self.direct_floor > self.writer.durable_len() => {
                    self.writer.wait_durable(self.direct_floor).await
                }
                r => r,
            },
            (None, Ok(())) => self.writer.wait_durable(self.end_pos).await,
            (_, e) => e,
        };
        self.check(log, outcome)?;
        log.state.borrow_mut().evict_cache();
        Ok(())
    }

    fn check(&self, log: &Log, outcome: std::io::Result<()>) -> LogResult<()> {
        if let Err(e) = outcome {
            warn!(dir = %log.dir.display(), error = %e, "append failed on disk");
            log.state.borrow_mut().failed = true;
            return Err(e.into());
        }
        Ok(())
    }
}
