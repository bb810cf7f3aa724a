//! The storage of one partition: batches appended at the offsets and epochs they carry,
//! read back from the tail cache or disk, a suffix truncated (a raft follower dropping a
//! conflicting tail) or a prefix (retention), and the epoch → first-offset table. No
//! replication policy lives here: offsets, the leader epoch, producer state and the high
//! watermark are decided by the replica above (`crate::replica`), which tells the log
//! where readers must stop.
//!
//! Appends are two steps so that the caller can assign offsets atomically with the
//! write: [`Log::reserve`] takes the append lock (rolling the segment first when it is
//! full), then [`AppendSlot::write`] checks that the batches continue the log and buffers
//! them, synchronously, so file order is offset order. Waiting for the disk
//! ([`Pending::written`], [`Pending::durable`]) happens after the lock is released, so
//! concurrent appends share each fdatasync.
//!
//! The log keeps the replica's state snapshots without reading them: one taken at each
//! roll (`<base>.snapshot`, the state as of that segment's base offset) and one in the
//! clean-shutdown marker. On open, and after a suffix truncation, it hands back the
//! newest snapshot and the headers of the batches after it ([`Recovered`]), which is all
//! a replica needs to rebuild its state.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::task::{Permit, Semaphore, TaskSet};
use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use crate::io::dma_writer::{DmaWriter, IoStats, WriterOptions};
use crate::protocol::record_batch::{check_batch, peek_batch_size, BatchHeader};

use super::clean_marker::CleanMarker;
use super::config::{FlushPolicy, LogConfig};
use super::epochs::EpochTable;
use super::error::{LogError, LogResult};
use super::format::{parse_segment_name, segment_path, SNAPSHOT_SUFFIX};
use super::segment::{rel_offset, write_indexes, CleanState, Segment};
use super::tail_cache::{CacheBudget, CachedBatch, TailCache};
use super::Offset;

/// What a shard provides to each of its partition logs.
#[derive(Clone)]
pub struct LogEnv {
    /// Shard-wide I/O counters.
    pub stats: std::sync::Arc<IoStats>,
    /// Shard-wide tail cache budget.
    pub cache: std::sync::Arc<CacheBudget>,
    /// Writer tuning.
    pub writer: WriterOptions,
}

impl LogEnv {
    /// An environment with default writer options and a cache of `cache_bytes`.
    pub fn new(cache_bytes: usize) -> LogEnv {
        LogEnv {
            stats: std::sync::Arc::new(IoStats::default()),
            cache: CacheBudget::new(cache_bytes),
            writer: WriterOptions::default(),
        }
    }
}

/// Batches returned by a read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole batches, in offset order; the first may start before the requested offset.
    pub batches: Vec<Bytes>,
    /// End of the visible log when the read ran.
    pub high_watermark: Offset,
    /// First offset in the log.
    pub log_start_offset: Offset,
}

impl ReadResult {
    /// Total bytes in the batches.
    pub fn byte_len(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// What a replica needs to rebuild its state after an open or a truncation: the newest
/// state snapshot the log holds at or before its end, and the headers of the idempotent
/// producers' batches after that snapshot, in log order.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The snapshot's bytes, as the replica gave them; `None` when there is none.
    pub snapshot: Option<Vec<u8>>,
    /// Offset the snapshot is as of (the log start when there is none).
    pub snapshot_offset: Offset,
    /// Headers of producer batches at or after `snapshot_offset`.
    pub replay: Vec<BatchHeader>,
}

struct LogState {
    segments: Vec<Segment>,
    tail: TailCache,
    /// Set after an I/O error; the next append reopens the active segment from disk.
    failed: bool,
    epochs: EpochTable,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.last().expect("log has an active segment") // unwrap: open() and roll() always leave one
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("log has an active segment") // unwrap: open() and roll() always leave one
    }
    fn next_offset(&self) -> Offset {
        self.active().next_offset
    }
    fn log_start(&self) -> Offset {
        self.segments.first().map_or(0, |s| s.base_offset)
    }
    /// Index of the segment that holds `offset`.
    fn segment_for(&self, offset: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }
    fn evict_cache(&mut self) {
        let active_base = self.active().base_offset;
        let written = self.active().readable_len();
        self.tail
            .evict(|b| b.segment_base < active_base || b.end_position <= written);
    }
}

/// The storage of one partition. See the module docs for its contract.
pub struct Log {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    env: LogEnv,
    state: RefCell<LogState>,
    append_lock: Semaphore,
    opened_clean: bool,
    /// The disk read started for where the last disk read ended (one per partition).
    prefetch: RefCell<Option<Prefetch>>,
    /// The interval flusher, when the flush policy has one; stopped with the log.
    tasks: TaskSet,
}

/// The right to append next, holding the log's append lock: see [`Log::reserve`].
pub struct AppendSlot<'a> {
    log: &'a Log,
    _permit: Permit<'a>,
    reopened: Option<Recovered>,
}

/// Batches buffered by [`AppendSlot::write`], on their way to disk.
pub struct Pending {
    writer: Rc<DmaWriter>,
    end_pos: u64,
}

/// A direct read started ahead of a consumer reading from disk.
struct Prefetch {
    segment_base: Offset,
    pos: u64,
    next_offset: Offset,
    task: crate::task::JoinHandle<std::io::Result<Bytes>>,
}

/// Batches read from a segment, and where the next read would continue.
struct DiskRead {
    batches: Vec<Bytes>,
    next_pos: u64,
    next_offset: Offset,
}

/// Bytes to read from disk for a request of `max_bytes`.
fn read_chunk(max_bytes: usize) -> u64 {
    let wanted = (max_bytes as u64).clamp(64 << 10, 16 << 20);
    wanted + (wanted / 8).max(64 << 10)
}

/// One direct read, copied out of the DMA buffer.
async fn read_bytes(file: &crate::io::DmaFile, pos: u64, len: usize) -> std::io::Result<Bytes> {
    let data = file.read_at(pos, len).await.map_err(std::io::Error::from)?;
    Ok(Bytes::copy_from_slice(&data))
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it from whatever a crash
    /// left behind; also returns what the replica above needs to rebuild its state.
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        env: LogEnv,
    ) -> LogResult<(Rc<Log>, Recovered)> {
        let listing = dir.to_path_buf();
        // Creating and listing the directory are blocking calls: off the shard's thread.
        let mut bases = crate::task::blocking(move || -> std::io::Result<Vec<Offset>> {
            std::fs::create_dir_all(&listing)?;
            let mut bases = Vec::new();
            for entry in std::fs::read_dir(&listing)? {
                if let Some(base) = entry?.file_name().to_str().and_then(parse_segment_name) {
                    bases.push(base);
                }
            }
            Ok(bases)
        })
        .await?;
        crate::io::device_probe::ensure_probed(dir).await?;
        bases.sort_unstable();
        let interval = config.index_interval_bytes;
        let marker = super::clean_marker::read(dir).await?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut active_batches = Vec::new();
        let mut clean_snapshot = None;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(&next) = bases.get(i + 1) {
                segments.push(Segment::open_sealed(dir, base, next, interval).await?);
                continue;
            }
            if let Some(m) = marker.as_ref().filter(|m| m.active_base == base) {
                let seg = Segment::open_clean(
                    dir,
                    base,
                    m.state,
                    interval,
                    env.writer,
                    env.stats.clone(),
                )
                .await?;
                if let Some(seg) = seg {
                    segments.push(seg);
                    clean_snapshot = Some(m.replica_state.clone());
                    continue;
                }
            }
            let (seg, batches) =
                Segment::recover_active(dir, base, interval, env.writer, env.stats.clone()).await?;
            segments.push(seg);
            active_batches = batches;
        }
        super::clean_marker::remove(dir).await?;
        let opened_clean = clean_snapshot.is_some();
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, interval, env.writer, env.stats.clone()).await?);
        }
        let start = segments.first().map_or(0, |s| s.base_offset);
        let next = segments.last().map_or(0, |s| s.next_offset);
        let last_epoch = active_batches.last().map(|h| h.partition_leader_epoch);
        let epochs = EpochTable::open(dir, start, next, last_epoch).await?;
        let recovered = match clean_snapshot {
            Some(snapshot) => Recovered {
                snapshot: Some(snapshot),
                snapshot_offset: next,
                replay: Vec::new(),
            },
            None => recover_state(dir, &segments, active_batches, interval).await?,
        };
        let flush = config.flush;
        let log = Rc::new(Log {
            dir: dir.to_path_buf(),
            config: RefCell::new(config),
            state: RefCell::new(LogState {
                segments,
                tail: TailCache::new(env.cache.clone()),
                failed: false,
                epochs,
            }),
            env,
            append_lock: Semaphore::new(1),
            opened_clean,
            prefetch: RefCell::new(None),
            tasks: TaskSet::new(format!("log {}", dir.display())),
        });
        if let FlushPolicy::Interval(every) = flush {
            log.tasks.spawn(
                "interval flush",
                interval_flusher(Rc::downgrade(&log), every),
            );
        }
        Ok((log, recovered))
    }

    /// True when this log was opened after a clean shutdown, without scanning.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// Directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current settings.
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Replaces the settings (retention and roll limits take effect at the next check).
    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start()
    }

    /// Offset after the last batch in the log (buffered or on disk).
    pub fn next_offset(&self) -> Offset {
        self.state.borrow().next_offset()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// The newest leader epoch in the log, if any batch carries one.
    pub fn last_epoch(&self) -> Option<i32> {
        self.state.borrow().epochs.last_epoch()
    }

    /// The epoch of the batch holding `offset` (raft's `term(index)`).
    pub fn epoch_at(&self, offset: Offset) -> Option<i32> {
        self.state.borrow().epochs.epoch_at(offset)
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch ≤ `epoch` in the log and the
    /// offset where the next epoch starts (the log end for the newest).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        let st = self.state.borrow();
        st.epochs.end_offset_for(epoch, st.next_offset())
    }

    /// Takes the append lock, first reopening the active segment after an I/O error and
    /// rolling it when `bytes` more bytes or `offsets` more offsets would not fit.
    /// `snapshot` gives the replica's state as of the log end, saved with a roll.
    pub async fn reserve(
        &self,
        bytes: u64,
        offsets: i64,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> LogResult<AppendSlot<'_>> {
        let permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
        let mut reopened = None;
        if self.state.borrow().failed {
            self.reopen_active().await?;
            reopened = Some(self.recover_current().await?);
        }
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
    /// replica's state as of that offset.
    async fn roll(&self, snapshot: Vec<u8>) -> LogResult<()> {
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
        // Appends to this partition wait for the roll, so the three independent durable
        // writes run side by side. The new segment is created only after all of them,
        // so recovery never finds a segment after an unfinished one.
        let ((len, indexes), snapshot) = futures_lite::future::zip(
            futures_lite::future::zip(
                writer.finish(),
                write_indexes(&self.dir, base, &offsets, &times),
            ),
            crate::io::small_file::write_durably(&snapshot_path, &snapshot),
        )
        .await;
        let len = len?;
        indexes?;
        snapshot?;
        {
            let mut st = self.state.borrow_mut();
            let active = st.active_mut();
            active.writer = None;
            active.size = len;
        }
        self.start_next_segment().await
    }

    /// Creates the segment after the sealed active one, at the log end.
    async fn start_next_segment(&self) -> LogResult<()> {
        let next = self.state.borrow().active().next_offset;
        let interval = self.config.borrow().index_interval_bytes;
        let seg = Segment::create(
            &self.dir,
            next,
            interval,
            self.env.writer,
            self.env.stats.clone(),
        )
        .await?;
        info!(dir = %self.dir.display(), base_offset = next, "rolled to a new segment");
        let mut st = self.state.borrow_mut();
        st.segments.push(seg);
        st.evict_cache();
        Ok(())
    }

    /// After an I/O error: reopens the active segment from what is durable on disk,
    /// dropping what was buffered but not synced.
    async fn reopen_active(&self) -> LogResult<()> {
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
    async fn reopen_active_at(&self, len: u64) -> LogResult<()> {
        let (base, file) = {
            let st = self.state.borrow();
            (st.active().base_offset, st.active().file.clone())
        };
        file.truncate(len).await.map_err(std::io::Error::from)?;
        let interval = self.config.borrow().index_interval_bytes;
        let (seg, _) = Segment::recover_active(
            &self.dir,
            base,
            interval,
            self.env.writer,
            self.env.stats.clone(),
        )
        .await?;
        let mut st = self.state.borrow_mut();
        let next = seg.next_offset;
        st.active_mut().writer = None;
        if let Some(last) = st.segments.last_mut() {
            *last = seg;
        }
        st.tail.clear();
        st.epochs.truncate_from(next);
        drop(st);
        *self.prefetch.borrow_mut() = None;
        warn!(dir = %self.dir.display(), next_offset = next, "reopened the active segment");
        Ok(())
    }

    /// Drops every batch at or after `offset` (a batch boundary) across segments,
    /// indexes, snapshots, the tail cache and the epoch table, durably; a raft follower
    /// does this when its tail conflicts with the leader's. Returns what the replica needs
    /// to rebuild its state as of `offset`. The caller must never truncate below what it
    /// has acknowledged as committed.
    pub async fn truncate_suffix(&self, offset: Offset) -> LogResult<Recovered> {
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
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
                for path in Segment::paths(&self.dir, *base) {
                    crate::io::small_file::remove_if_exists(&path).await?;
                }
            }
            let (seg_base, pos) = self.position_of(offset).await?;
            for path in Segment::paths(&self.dir, seg_base)
                .into_iter()
                .skip(1)
                .take(2)
            {
                // The sealed indexes no longer match; the segment is active again.
                crate::io::small_file::remove_if_exists(&path).await?;
            }
            self.reopen_active_at(pos).await?;
            crate::io::small_file::sync_dir(&self.dir).await?;
            self.state.borrow_mut().epochs.truncate_from(offset);
            self.save_epochs().await?;
            info!(dir = %self.dir.display(), offset, "truncated the log's suffix");
        }
        self.recover_current().await
    }

    /// The newest state snapshot and the producer batches after it, as of now.
    async fn recover_current(&self) -> LogResult<Recovered> {
        let interval = self.config.borrow().index_interval_bytes;
        let (sealed, active) = {
            let st = self.state.borrow();
            let (active, sealed) = st.segments.split_last().expect("log has an active segment"); // unwrap: never empty
            (sealed_refs(sealed), sealed_ref(active))
        };
        let scan =
            super::recovery::scan_segment(&active.file, active.size, active.base_offset, interval)
                .await?;
        recover_state_from(
            &self.dir,
            &sealed,
            active.base_offset,
            scan.producer_batches,
            interval,
        )
        .await
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
            let whole = read_bytes(&file, pos, size).await?;
            let h = crate::protocol::record_batch::parse_header(&whole).map_err(|e| {
                LogError::Corrupt {
                    file: format!("{}/{:020}.log", self.dir.display(), base),
                    position: pos,
                    detail: e.to_string(),
                }
            })?;
            if h.base_offset == offset {
                return Ok((base, pos));
            }
            if h.base_offset > offset || h.last_offset() >= offset {
                return Err(LogError::NotABatchBoundary(offset));
            }
            pos += size as u64;
        }
        Err(LogError::NotABatchBoundary(offset))
    }

    /// Drops whole segments that end at or before `offset`: the log then starts at the
    /// first remaining segment's base. The active segment is never dropped.
    pub async fn truncate_prefix(&self, offset: Offset) -> LogResult<usize> {
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
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
            for path in Segment::paths(&self.dir, seg.base_offset) {
                crate::io::small_file::remove_if_exists(&path).await?;
            }
            info!(dir = %self.dir.display(), base_offset = seg.base_offset, "deleted segment");
        }
        crate::io::small_file::sync_dir(&self.dir).await?;
        self.save_epochs().await?;
        Ok(removed.len())
    }

    /// Writes the epoch table durably (only when it changed: a new epoch or a truncation).
    async fn save_epochs(&self) -> LogResult<()> {
        let bytes = self.state.borrow().epochs.to_bytes();
        super::epochs::save(&self.dir, &bytes).await
    }

    /// Reads whole batches from the one holding `from`, up to about `max_bytes` and
    /// not past `end` (the replica's high watermark: what readers may see). At least one
    /// batch is returned when any is available, as Kafka does.
    pub async fn read(&self, from: Offset, max_bytes: usize, end: Offset) -> LogResult<ReadResult> {
        let (file, pos, limit, hw, start, seg_name) = {
            let st = self.state.borrow();
            let hw = end.min(st.next_offset());
            let start = st.log_start();
            if from < start || from > hw {
                return Err(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start: start,
                    log_end: hw,
                });
            }
            let mut res = ReadResult {
                batches: Vec::new(),
                high_watermark: hw,
                log_start_offset: start,
            };
            if from == hw {
                return Ok(res);
            }
            if let Some(batches) = st.tail.read(from, hw, max_bytes) {
                res.batches = batches;
                return Ok(res);
            }
            let seg = &st.segments[st.segment_for(from)];
            let pos = seg.offset_index.lookup(rel_offset(seg.base_offset, from));
            (
                seg.file.clone(),
                u64::from(pos),
                seg.readable_len(),
                hw,
                start,
                seg.base_offset,
            )
        };
        // A consumer reading on from where the last disk read ended finds the next
        // stretch already read ahead.
        let prefetch = self
            .prefetch
            .borrow_mut()
            .take()
            .filter(|p| p.segment_base == seg_name && p.next_offset == from);
        let pos = prefetch.as_ref().map_or(pos, |p| p.pos);
        let read = match self
            .read_disk(&file, seg_name, pos, limit, from, hw, max_bytes, prefetch)
            .await
        {
            // A damaged index can point into the middle of a batch: read from the
            // segment start instead (slower, but correct) before calling the data corrupt.
            Err(LogError::Corrupt { detail, .. }) if pos > 0 => {
                warn!(dir = %self.dir.display(), segment = seg_name, position = pos, %detail, "index entry looks wrong; reading from the segment start");
                self.read_disk(&file, seg_name, 0, limit, from, hw, max_bytes, None)
                    .await?
            }
            other => other?,
        };
        if !read.batches.is_empty() && read.next_pos < limit {
            let len = read_chunk(max_bytes).min(limit - read.next_pos) as usize;
            let (task_file, at) = (file.clone(), read.next_pos);
            let task =
                crate::task::spawn(async move { read_bytes(&task_file, at, len).await }).detach();
            *self.prefetch.borrow_mut() = Some(Prefetch {
                segment_base: seg_name,
                pos: read.next_pos,
                next_offset: read.next_offset,
                task,
            });
        }
        Ok(ReadResult {
            batches: read.batches,
            high_watermark: hw,
            log_start_offset: start,
        })
    }

    /// Reads batches from a segment file starting the scan at `pos`, skipping batches
    /// before `from`, stopping at `limit` bytes, offset `end` or about `max_bytes`.
    /// `first` is a read already under way for `pos` (read-ahead), used if it matches.
    #[allow(clippy::too_many_arguments)]
    async fn read_disk(
        &self,
        file: &Rc<crate::io::DmaFile>,
        segment_base: Offset,
        mut pos: u64,
        limit: u64,
        from: Offset,
        end: Offset,
        max_bytes: usize,
        mut first: Option<Prefetch>,
    ) -> LogResult<DiskRead> {
        let corrupt = |position: u64, detail: String| LogError::Corrupt {
            file: format!("{}/{:020}.log", self.dir.display(), segment_base),
            position,
            detail,
        };
        let mut read = DiskRead {
            batches: Vec::new(),
            next_pos: pos,
            next_offset: from,
        };
        let mut total = 0usize;
        // Read enough for the requested bytes, plus room for the skip from the index entry
        // and for the first batch to run past `max_bytes` (it is returned whole), so one
        // read usually suffices.
        let chunk = read_chunk(max_bytes);
        'reads: while pos < limit {
            let want = chunk.min(limit - pos) as usize;
            let buf = match first.take().filter(|p| p.pos == pos) {
                Some(p) => match p.task.await {
                    Some(Ok(b)) if !b.is_empty() => b,
                    _ => read_bytes(file, pos, want).await?,
                },
                None => read_bytes(file, pos, want).await?,
            };
            let mut at = 0usize;
            loop {
                let rest = &buf[at..];
                let Some(size) = peek_batch_size(rest) else {
                    if rest.len() >= 12 {
                        return Err(corrupt(pos + at as u64, "invalid batch length".into()));
                    }
                    break;
                };
                let (batch, batch_pos) = if size > rest.len() {
                    if at != 0 {
                        break;
                    }
                    // One batch larger than the read: fetch exactly it.
                    let whole = read_bytes(file, pos, size).await?;
                    if whole.len() < size {
                        return Err(corrupt(pos, "batch runs past end of file".into()));
                    }
                    (whole.slice(..size), pos)
                } else {
                    (buf.slice(at..at + size), pos + at as u64)
                };
                let h = check_batch(&batch).map_err(|e| corrupt(batch_pos, e.to_string()))?;
                if h.base_offset >= end {
                    break 'reads;
                }
                if h.last_offset() >= from {
                    if !read.batches.is_empty() && total + size > max_bytes {
                        break 'reads;
                    }
                    total += size;
                    read.batches.push(batch);
                    read.next_offset = h.last_offset() + 1;
                }
                read.next_pos = batch_pos + size as u64;
                if size > rest.len() {
                    at = size;
                    break;
                }
                at += size;
                if total >= max_bytes {
                    break 'reads;
                }
            }
            if at == 0 {
                break;
            }
            pos += at as u64;
        }
        Ok(read)
    }

    /// Finds the first record whose timestamp is at least `timestamp`: its offset and
    /// timestamp. `None` when no visible record is that new.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
        end: Offset,
    ) -> LogResult<Option<(Offset, i64)>> {
        let start = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            seg.base_offset + i64::from(seg.time_index.lookup(timestamp))
        };
        let mut from = start.max(self.log_start_offset());
        loop {
            let res = match self.read(from, 1 << 20, end).await {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if res.batches.is_empty() {
                return Ok(None);
            }
            for b in &res.batches {
                let h = check_batch(b)?;
                if h.max_timestamp >= timestamp && h.last_offset() >= from {
                    // The first record of the batch at or after the target, as Kafka
                    // answers (decompressing if needed; this is not the data path).
                    let limit = self.config.borrow().max_message_bytes.max(1 << 20) * 64;
                    let records = crate::protocol::record_batch::record_timestamps(b, limit)?;
                    let found = records
                        .iter()
                        .map(|&(delta, ts)| (h.base_offset + delta, ts))
                        .find(|&(offset, ts)| ts >= timestamp && offset >= from);
                    return Ok(Some(
                        found.unwrap_or((h.base_offset.max(from), h.max_timestamp)),
                    ));
                }
                from = from.max(h.last_offset() + 1);
            }
        }
    }

    /// Deletes segments past `retention_ms` (by their newest record; an expired active
    /// segment is rolled first, saving `snapshot`) or beyond `retention_bytes` (oldest
    /// sealed first). Returns how many were deleted.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> LogResult<usize> {
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
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
        let n = {
            let st = self.state.borrow();
            let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
            let mut n = 0;
            for seg in &st.segments[..st.segments.len() - 1] {
                let expired =
                    cfg.retention_ms >= 0 && seg.max_timestamp < now_ms - cfg.retention_ms;
                let oversize =
                    cfg.retention_bytes >= 0 && total - seg.size >= cfg.retention_bytes as u64;
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size;
                n += 1;
            }
            n
        };
        self.remove_oldest(n).await
    }

    /// Writes and syncs everything appended so far.
    pub async fn flush(&self) -> LogResult<()> {
        let writer = self.state.borrow().active().writer.clone();
        if let Some(w) = writer {
            w.sync().await?;
        }
        Ok(())
    }

    /// Syncs the active segment, writes its indexes, the epoch table and a
    /// clean-shutdown marker holding `replica_state` (so the next open skips the scan);
    /// the log should not be used after.
    pub async fn close(&self, replica_state: Vec<u8>) -> LogResult<()> {
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
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
    /// written when they do not.
    pub fn write(&self, records: BytesMut, headers: &[BatchHeader]) -> LogResult<Pending> {
        let log = self.log;
        let mut st = log.state.borrow_mut();
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
        let end_pos = match writer.buffer(&records) {
            Ok(p) => p,
            Err(e) => {
                st.failed = true;
                return Err(e.into());
            }
        };
        let data = records.freeze();
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
        Ok(Pending { writer, end_pos })
    }
}

impl Pending {
    /// Resolves once the batches are written (not necessarily synced).
    pub async fn written(&self, log: &Log) -> LogResult<()> {
        self.check(log, self.writer.pump().await)
    }

    /// Resolves once the batches, and every batch before them, are written and synced.
    pub async fn durable(&self, log: &Log) -> LogResult<()> {
        let outcome = match self.writer.pump().await {
            Ok(()) => self.writer.wait_durable(self.end_pos).await,
            e => e,
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

/// Syncs the log every `every` (the `Interval` flush policy).
async fn interval_flusher(log: Weak<Log>, every: Duration) {
    loop {
        crate::task::sleep(every).await;
        let Some(log) = log.upgrade() else { return };
        if let Err(e) = log.flush().await {
            warn!(dir = %log.dir.display(), error = %e, "periodic flush failed");
            log.state.borrow_mut().failed = true;
        }
    }
}

/// What a state rebuild needs of a segment, without borrowing it.
struct SegmentRef {
    base_offset: Offset,
    file: Rc<crate::io::DmaFile>,
    size: u64,
}

fn sealed_ref(s: &Segment) -> SegmentRef {
    SegmentRef {
        base_offset: s.base_offset,
        file: s.file.clone(),
        size: s.size,
    }
}

fn sealed_refs(segments: &[Segment]) -> Vec<SegmentRef> {
    segments.iter().map(sealed_ref).collect()
}

/// The newest snapshot and the producer batches after it: the snapshot taken when the
/// active segment was created when there is one, else the newest usable one of a sealed
/// segment with every sealed segment after it scanned; the active segment's batches on
/// top.
async fn recover_state(
    dir: &Path,
    segments: &[Segment],
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<Recovered> {
    let Some((active, sealed)) = segments.split_last() else {
        return Ok(Recovered::default());
    };
    recover_state_from(
        dir,
        &sealed_refs(sealed),
        active.base_offset,
        active_batches,
        interval,
    )
    .await
}

async fn recover_state_from(
    dir: &Path,
    sealed: &[SegmentRef],
    active_base: Offset,
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<Recovered> {
    let load = |base: Offset| {
        let path = segment_path(dir, base, SNAPSHOT_SUFFIX);
        async move { crate::io::small_file::read_all(&path).await }
    };
    let mut recovered = Recovered {
        snapshot: load(active_base).await?,
        snapshot_offset: active_base,
        replay: Vec::new(),
    };
    if recovered.snapshot.is_none() {
        // Walk back to the newest snapshot, then replay the segments after it. A snapshot
        // the replica cannot read is found out there, which then asks for a full replay
        // by calling this again without it (see `Recovered`).
        let mut start = 0;
        recovered.snapshot_offset = sealed.first().map_or(active_base, |s| s.base_offset);
        for (i, seg) in sealed.iter().enumerate().rev() {
            if let Some(t) = load(seg.base_offset).await? {
                recovered.snapshot = Some(t);
                recovered.snapshot_offset = seg.base_offset;
                start = i;
                break;
            }
        }
        for seg in &sealed[start..] {
            let scan =
                super::recovery::scan_segment(&seg.file, seg.size, seg.base_offset, interval)
                    .await?;
            recovered.replay.extend(scan.producer_batches);
        }
    }
    recovered.replay.extend(active_batches);
    Ok(recovered)
}
