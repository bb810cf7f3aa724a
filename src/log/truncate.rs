//! Dropping data from a partition's storage: a suffix (a raft follower's conflicting
//! tail), a prefix (whole segments below an offset), and retention by time and size.

use tracing::info;

use crate::protocol::record_batch::{peek_batch_size, peek_offsets};

use super::error::{LogError, LogResult};
use super::format::{
    segment_path, INDEX_SUFFIX, RAFT_INDEX_SUFFIX, SNAPSHOT_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::read::read_bytes;
use super::segment::{rel_offset, Segment};
use super::storage::{Log, Recovered};
use super::Offset;

impl Log {
    /// Drops every batch at or after `offset` (a batch boundary) across segments,
    /// indexes, snapshots, the tail cache and the epoch table, durably; a raft follower
    /// does this when its tail conflicts with the leader's. Returns what the replica needs
    /// to rebuild its state as of `offset`. The caller must never truncate below what it
    /// has acknowledged as committed.
    pub async fn truncate_suffix(&self, offset: Offset) -> LogResult<Recovered> {
        let _permit = self.lock_appends().await?;
        let journal = self
            .journal()
            .cloned()
            .filter(|_| offset < self.next_offset());
        if let Some(journal) = &journal {
            // The journal may hold batches past the cut: it must know of the cut before
            // the file changes, so that a replay after a crash never puts them back.
            journal
                .append_truncate(&self.me, &self.journal_key, offset)?
                .durable()
                .await?;
        }
        self.cut_suffix(offset).await?;
        if let Some(journal) = &journal {
            // Appends after the cut may skip the journal (large ones, durable in the
            // segment alone): a replay must know the files were cut, or it would cut
            // those again.
            journal
                .append_truncated(&self.me, &self.journal_key, offset)?
                .durable()
                .await?;
        }
        self.recover_current().await
    }

    /// `truncate_suffix` without the lock, the journal record or the state to rebuild
    /// from (the caller holds the lock, or nobody else has the log yet).
    pub(super) async fn cut_suffix(&self, offset: Offset) -> LogResult<()> {
        let (start, next) = {
            let st = self.state.borrow();
            (st.log_start(), st.next_offset())
        };
        if offset < start || offset > next {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: next,
            });
        }
        if offset < next {
            // Everything buffered goes to disk first, so that nothing past the cut is
            // written after it.
            let writer = self.state.borrow().active().writer.clone();
            if let Some(w) = writer {
                w.sync().await?;
            }
            // Whole segments past the cut go; the one holding it becomes the active one.
            let doomed: Vec<Offset> = {
                let mut st = self.state.borrow_mut();
                let keep = st.segment_for(offset) + 1;
                let gone: Vec<Segment> = st.segments.drain(keep..).collect();
                gone.iter().map(|s| s.base_offset).collect()
            };
            for base in &doomed {
                self.remove_segment_files(*base).await?;
            }
            let (seg_base, pos) = self.position_of(offset).await?;
            // The sealed indexes no longer match; the segment is active again.
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, RAFT_INDEX_SUFFIX] {
                let path = segment_path(&self.dir, seg_base, suffix);
                crate::io::small_file::remove_if_exists(&path).await?;
            }
            self.reopen_active_at(pos).await?;
            crate::io::small_file::sync_dir(&self.dir).await?;
            self.state.borrow_mut().epochs.truncate_from(offset);
            self.save_epochs().await?;
            info!(dir = %self.dir.display(), offset, "truncated the log's suffix");
        }
        Ok(())
    }

    /// Byte position of the batch starting at `offset` in the last segment.
    async fn position_of(&self, offset: Offset) -> LogResult<(Offset, u64)> {
        let (file, base, from, limit) = {
            let st = self.state.borrow();
            let seg = st.active();
            let from = seg.offset_index.lookup(rel_offset(seg.base_offset, offset));
            (seg.file.clone(), seg.base_offset, u64::from(from), seg.size)
        };
        if offset == base {
            return Ok((base, 0));
        }
        let mut pos = from;
        while pos < limit {
            let head = read_bytes(&file, pos, crate::protocol::record_batch::HEADER_LEN).await?;
            let size = peek_batch_size(&head).ok_or_else(|| LogError::Corrupt {
                file: format!("{}/{:020}.log", self.dir.display(), base),
                position: pos,
                detail: "invalid batch length".into(),
            })?;
            // The header says where the batch starts and ends; its records need no read.
            let (first, last) = peek_offsets(&head).ok_or_else(|| LogError::Corrupt {
                file: format!("{}/{:020}.log", self.dir.display(), base),
                position: pos,
                detail: "batch header cut short".into(),
            })?;
            if first == offset {
                return Ok((base, pos));
            }
            if first > offset || last >= offset {
                return Err(LogError::NotABatchBoundary(offset));
            }
            pos += size as u64;
        }
        Err(LogError::NotABatchBoundary(offset))
    }

    /// Drops whole segments that end at or before `offset`: the log then starts at the
    /// first remaining segment's base. The active segment is never dropped.
    pub async fn truncate_prefix(&self, offset: Offset) -> LogResult<usize> {
        let _permit = self.lock_appends().await?;
        let n = {
            let st = self.state.borrow();
            let sealed = st.segments.len() - 1;
            st.segments
                .iter()
                .take(sealed)
                .take_while(|s| s.next_offset <= offset)
                .count()
        };
        self.remove_oldest(n).await
    }

    /// Saves `snapshot` as the replica's state at `base`, a segment's base offset, unless
    /// that segment has one: a replica's state taken at or after `base`, holding only
    /// committed batches (a restart replays the segment over it, skipping what it holds).
    /// A raft group does this when it cuts its log, so that the producers whose batches
    /// went with the cut are still known after a restart.
    pub async fn keep_snapshot_at(&self, base: Offset, snapshot: &[u8]) -> LogResult<()> {
        if snapshot.is_empty() || !self.segment_bases().contains(&base) {
            return Ok(());
        }
        let path = segment_path(&self.dir, base, SNAPSHOT_SUFFIX);
        if crate::io::small_file::read_all(&path).await?.is_none() {
            crate::io::small_file::write_durably(&path, snapshot).await?;
        }
        Ok(())
    }

    /// Deletes the files of the segment at `base` (its log, indexes and snapshots).
    async fn remove_segment_files(&self, base: Offset) -> LogResult<()> {
        for path in Segment::paths(&self.dir, base) {
            crate::io::small_file::remove_if_exists(&path).await?;
        }
        Ok(())
    }

    /// Deletes the `n` oldest segments (never the active one).
    async fn remove_oldest(&self, n: usize) -> LogResult<usize> {
        if n == 0 {
            return Ok(0);
        }
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            let n = n.min(st.segments.len() - 1);
            let removed: Vec<Segment> = st.segments.drain(..n).collect();
            let start = st.log_start();
            st.tail.drop_before(start);
            st.epochs.truncate_before(start);
            removed
        };
        for seg in &removed {
            self.remove_segment_files(seg.base_offset).await?;
            info!(dir = %self.dir.display(), base_offset = seg.base_offset, "deleted segment");
        }
        crate::io::small_file::sync_dir(&self.dir).await?;
        self.save_epochs().await?;
        Ok(removed.len())
    }

    /// Drops every segment and starts the log over, empty, at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a raft replica installing a leader's snapshot, whose
    /// log is wholly before (or beside) the leader's. The shard journal may still hold
    /// batches of the old log past `offset`, which a replay would put back: the caller
    /// has the journal forget them (`Log::forget`) once its own state no longer needs
    /// the log's earlier records, and its recovery cuts them until then. A non-empty
    /// `snapshot` is the replica's state for the new first segment (what a restart
    /// recovers from).
    pub async fn reset_to(&self, offset: Offset, snapshot: Vec<u8>) -> LogResult<()> {
        let _permit = self.lock_appends().await?;
        let writer = self.state.borrow().active().writer.clone();
        if let Some(w) = writer {
            // Nothing buffered may land in a file after it is deleted.
            w.sync().await?;
        }
        let doomed: Vec<Offset> = {
            let st = self.state.borrow();
            st.segments.iter().map(|s| s.base_offset).collect()
        };
        for base in &doomed {
            self.remove_segment_files(*base).await?;
        }
        if !snapshot.is_empty() {
            let path = segment_path(&self.dir, offset, SNAPSHOT_SUFFIX);
            crate::io::small_file::write_durably(&path, &snapshot).await?;
        }
        let interval = self.config.borrow().index_interval_bytes;
        let options = super::storage::segment_writer_options(&self.env, &self.config.borrow());
        let seg =
            Segment::create(&self.dir, offset, interval, options, self.env.stats.clone()).await?;
        crate::io::small_file::sync_dir(&self.dir).await?;
        {
            let mut st = self.state.borrow_mut();
            st.segments = vec![seg];
            st.tail.clear();
            st.direct_end = 0;
            st.epochs.truncate_from(Offset::MIN);
        }
        self.save_epochs().await?;
        info!(dir = %self.dir.display(), offset, "the log starts over, empty, at this offset");
        Ok(())
    }

    /// The offset the log would start at once retention (`retention_ms`, `retention_bytes`)
    /// took its sealed segments; the active segment is never counted. A raft group cuts
    /// its log there itself, with its own limits (see `replica::raft_log`).
    pub fn retention_point(&self, now_ms: i64) -> Offset {
        let n = self.segments_past_retention(now_ms);
        let st = self.state.borrow();
        match n.checked_sub(1) {
            Some(last) => st.segments[last].next_offset,
            None => st.log_start(),
        }
    }

    /// How many of the oldest sealed segments retention takes.
    fn segments_past_retention(&self, now_ms: i64) -> usize {
        let cfg = self.config.borrow().clone();
        let st = self.state.borrow();
        let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
        let mut n = 0;
        for seg in &st.segments[..st.segments.len() - 1] {
            let expired = cfg.retention_ms >= 0 && seg.max_timestamp < now_ms - cfg.retention_ms;
            let oversize =
                cfg.retention_bytes >= 0 && total - seg.size >= cfg.retention_bytes as u64;
            if !(expired || oversize) {
                break;
            }
            total -= seg.size;
            n += 1;
        }
        n
    }

    /// Deletes segments past `retention_ms` (by their newest record; an expired active
    /// segment is rolled first, saving `snapshot`) or beyond `retention_bytes` (oldest
    /// sealed first). Returns how many were deleted.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> LogResult<usize> {
        let _permit = self.lock_appends().await?;
        let cfg = self.config.borrow().clone();
        // As Kafka: when every record of the active segment is past retention, roll it so
        // that it can go too (the log then starts at its end).
        let active_expired = {
            let st = self.state.borrow();
            let a = st.active();
            a.size > 0 && cfg.retention_ms >= 0 && a.max_timestamp < now_ms - cfg.retention_ms
        };
        if active_expired {
            self.roll(snapshot()).await?;
        }
        let n = self.segments_past_retention(now_ms);
        self.remove_oldest(n).await
    }
}
