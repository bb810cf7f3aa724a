//! The log of one partition: validated appends with group commit, reads from the tail
//! cache or disk, lookups by timestamp, segment rolling, recovery and retention.
//!
//! Durability contract: `append` resolves according to the [`FlushPolicy`]. Under
//! `Durable`, the batch and every batch before it are on disk and synced when it
//! resolves. The *high watermark* is the end of what readers may see: under `Durable` it
//! only covers synced batches, so a consumer never sees a record that a crash could take
//! back; under `Interval` it is the log end, as in Kafka.
//!
//! A `PartitionLog` lives on one shard and is used through `Rc` by that shard's tasks
//! only. Offsets are assigned and bytes buffered in one synchronous step under the append
//! lock, so file order is offset order; waiting for the disk happens outside the lock so
//! that concurrent appends share each fdatasync.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use tracing::{info, warn};

use crate::io::dma_writer::{IoStats, WriterOptions};
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::protocol::record_batch::{
    check_batch, peek_batch_size, set_offset_and_epoch, validate_produced_batch, BatchError,
    BatchHeader,
};

use super::config::{FlushPolicy, LogConfig};
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

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset given to the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// First offset still in the log.
    pub log_start_offset: Offset,
    /// True when this was a producer's retry of a batch already in the log: nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
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

struct LogState {
    segments: Vec<Segment>,
    high_watermark: Offset,
    tail: TailCache,
    leader_epoch: i32,
    /// Set after an I/O error; the next append reopens the active segment from disk.
    failed: bool,
    /// Idempotent-producer state, as of the log end.
    producers: ProducerStateTable,
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

/// What the locked part of an append decided.
enum Step {
    /// Buffered: wait for the writer up to this position.
    Appended(Rc<crate::io::dma_writer::DmaWriter>, u64, AppendResult),
    /// A retry of batches already in the log.
    Duplicate(Option<Rc<crate::io::dma_writer::DmaWriter>>, AppendResult),
}

/// The log of one partition. See the module docs for its contract.
pub struct PartitionLog {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    env: LogEnv,
    state: RefCell<LogState>,
    append_lock: Semaphore,
    opened_clean: bool,
    /// The disk read started for where the last disk read ended (one per partition).
    prefetch: RefCell<Option<Prefetch>>,
}

/// A direct read started ahead of a consumer reading from disk.
struct Prefetch {
    segment_base: Offset,
    pos: u64,
    next_offset: Offset,
    task: glommio::task::JoinHandle<std::io::Result<Bytes>>,
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
async fn read_bytes(file: &glommio::io::DmaFile, pos: u64, len: usize) -> std::io::Result<Bytes> {
    let data = file.read_at(pos, len).await.map_err(std::io::Error::from)?;
    Ok(Bytes::copy_from_slice(&data))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, recovering it from whatever a crash
    /// left behind.
    pub async fn open(dir: &Path, config: LogConfig, env: LogEnv) -> LogResult<Rc<PartitionLog>> {
        std::fs::create_dir_all(dir)?;
        crate::io::device_probe::ensure_probed(dir).await?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let interval = config.index_interval_bytes;
        let marker = read_clean_marker(dir).await?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut active_batches = Vec::new();
        let mut clean_producers = None;
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
                    clean_producers = Some(m.producers.clone());
                    continue;
                }
            }
            let (seg, batches) =
                Segment::recover_active(dir, base, interval, env.writer, env.stats.clone()).await?;
            segments.push(seg);
            active_batches = batches;
        }
        if dir.join(CLEAN_MARKER).exists() {
            // From here on a crash must lead to a full scan again.
            crate::io::small_file::remove_if_exists(&dir.join(CLEAN_MARKER)).await?;
            crate::io::small_file::sync_dir(dir).await?;
        }
        let opened_clean = clean_producers.is_some();
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, interval, env.writer, env.stats.clone()).await?);
        }
        let next = segments.last().map_or(0, |s| s.next_offset);
        let producers = match clean_producers {
            Some(p) => p,
            None => rebuild_producers(dir, &segments, active_batches, interval).await?,
        };
        let flush = config.flush;
        let log = Rc::new(PartitionLog {
            dir: dir.to_path_buf(),
            config: RefCell::new(config),
            state: RefCell::new(LogState {
                segments,
                high_watermark: next,
                tail: TailCache::new(env.cache.clone()),
                leader_epoch: 0,
                failed: false,
                producers,
            }),
            env,
            append_lock: Semaphore::new(1),
            opened_clean,
            prefetch: RefCell::new(None),
        });
        if let FlushPolicy::Interval(every) = flush {
            spawn_interval_flusher(Rc::downgrade(&log), every);
        }
        Ok(log)
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

    /// Sets the leader epoch stamped into appended batches.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.state.borrow_mut().leader_epoch = epoch;
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start()
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> Offset {
        self.state.borrow().next_offset()
    }

    /// End of what readers may see.
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().high_watermark
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

    /// Validates `records` (one or more v2 batches, as in a Produce request), assigns
    /// them offsets and appends them. Resolves per the flush policy. On a validation
    /// error nothing is written.
    pub async fn append(&self, mut records: BytesMut) -> LogResult<AppendResult> {
        let headers = self.validate(&records)?;
        let step = {
            let _permit = self
                .append_lock
                .acquire_permit(1)
                .await
                .map_err(std::io::Error::from)?;
            if self.state.borrow().failed {
                self.reopen_active().await?;
            }
            let total = records.len() as u64;
            let offsets: i64 = headers.iter().map(BatchHeader::offset_count).sum();
            if self.needs_roll(total, offsets) {
                self.roll().await?;
            }
            let mut st = self.state.borrow_mut();
            let lenient = st.log_start() > 0;
            let mut duplicates = Vec::new();
            for h in &headers {
                match st.producers.check(h, lenient)? {
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate(b) => duplicates.push(b),
                }
            }
            if !duplicates.is_empty() {
                if duplicates.len() != headers.len() {
                    return Err(
                        BatchError::InvalidHeader("request mixes retried and new batches").into(),
                    );
                }
                let (first, last) = (duplicates[0], duplicates[duplicates.len() - 1]);
                let writer = st.active().writer.clone();
                let result = AppendResult {
                    base_offset: first.base_offset,
                    last_offset: last.last_offset,
                    log_start_offset: st.log_start(),
                    duplicate: true,
                };
                Step::Duplicate(writer, result)
            } else {
                let epoch = st.leader_epoch;
                let base_offset = st.next_offset();
                let segment_base = st.active().base_offset;
                let Some(writer) = st.active().writer.clone() else {
                    return Err(std::io::Error::other("active segment has no writer").into());
                };
                let mut next = base_offset;
                let mut at = 0usize;
                for h in &headers {
                    set_offset_and_epoch(&mut records[at..], next, epoch);
                    next += h.offset_count();
                    at += h.size;
                }
                let end_pos = match writer.buffer(&records) {
                    Ok(p) => p,
                    Err(e) => {
                        st.failed = true;
                        return Err(e.into());
                    }
                };
                let data = records.freeze();
                let mut next = base_offset;
                let mut at = 0usize;
                for h in &headers {
                    let last = next + h.offset_count() - 1;
                    st.producers.record(h, next);
                    st.active_mut()
                        .on_append(next, last, h.size as u64, h.max_timestamp);
                    let end_position = st.active().size;
                    st.tail.push(CachedBatch {
                        base_offset: next,
                        last_offset: last,
                        segment_base,
                        end_position,
                        data: data.slice(at..at + h.size),
                    });
                    next = last + 1;
                    at += h.size;
                }
                if matches!(self.config.borrow().flush, FlushPolicy::Interval(_)) {
                    st.high_watermark = next;
                }
                st.evict_cache();
                let result = AppendResult {
                    base_offset,
                    last_offset: next - 1,
                    log_start_offset: st.log_start(),
                    duplicate: false,
                };
                Step::Appended(writer, end_pos, result)
            }
        };
        let (writer, end_pos, result) = match step {
            Step::Appended(w, e, r) => (w, e, r),
            Step::Duplicate(writer, result) => {
                // The original may still be on its way to disk: answer once it is there.
                if let Some(w) = writer {
                    w.sync().await?;
                }
                return Ok(result);
            }
        };
        let durable = matches!(self.config.borrow().flush, FlushPolicy::Durable);
        let outcome = match writer.pump().await {
            Ok(()) if durable => writer.wait_durable(end_pos).await,
            other => other,
        };
        if let Err(e) = outcome {
            warn!(dir = %self.dir.display(), error = %e, "append failed on disk");
            self.state.borrow_mut().failed = true;
            return Err(e.into());
        }
        if durable {
            let mut st = self.state.borrow_mut();
            st.high_watermark = st.high_watermark.max(result.last_offset + 1);
            st.evict_cache();
        }
        Ok(result)
    }

    fn validate(&self, records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
        let limit = self.config.borrow().max_message_bytes;
        let mut headers = Vec::new();
        let mut rest = records;
        if rest.is_empty() {
            return Err(BatchError::Truncated {
                available: 0,
                needed: crate::protocol::record_batch::HEADER_LEN,
            });
        }
        while !rest.is_empty() {
            let h = validate_produced_batch(rest)?;
            if h.size > limit {
                return Err(BatchError::TooLarge {
                    size: h.size,
                    limit,
                });
            }
            rest = &rest[h.size..];
            headers.push(h);
        }
        Ok(headers)
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

    /// Seals the active segment and starts a new one at the log end.
    async fn roll(&self) -> LogResult<()> {
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
        let (snapshot, next_base) = {
            let st = self.state.borrow();
            (st.producers.to_bytes(), st.active().next_offset)
        };
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
        let (base, durable) = {
            let st = self.state.borrow();
            let a = st.active();
            (
                a.base_offset,
                a.writer.as_ref().map_or(a.size, |w| w.durable_len()),
            )
        };
        let file = self.state.borrow().active().file.clone();
        file.truncate(durable).await.map_err(std::io::Error::from)?;
        let interval = self.config.borrow().index_interval_bytes;
        let (seg, active_batches) = Segment::recover_active(
            &self.dir,
            base,
            interval,
            self.env.writer,
            self.env.stats.clone(),
        )
        .await?;
        let sealed = {
            let st = self.state.borrow();
            sealed_refs(&st.segments[..st.segments.len() - 1])
        };
        let producers =
            rebuild_producers_from(&self.dir, &sealed, base, active_batches, interval).await?;
        let mut st = self.state.borrow_mut();
        st.producers = producers;
        let next = seg.next_offset;
        st.active_mut().writer = None;
        if let Some(last) = st.segments.last_mut() {
            *last = seg;
        }
        st.tail.clear();
        st.high_watermark = st.high_watermark.min(next);
        st.failed = false;
        warn!(dir = %self.dir.display(), next_offset = next, "reopened log after I/O error");
        Ok(())
    }

    /// Reads whole batches from the one holding `from`, up to about `max_bytes` (at least
    /// one batch is returned when any is available, as Kafka does).
    pub async fn read(&self, from: Offset, max_bytes: usize) -> LogResult<ReadResult> {
        let (file, pos, limit, hw, start, seg_name) = {
            let st = self.state.borrow();
            let hw = st.high_watermark;
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
                glommio::spawn_local(async move { read_bytes(&task_file, at, len).await }).detach();
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
        file: &Rc<glommio::io::DmaFile>,
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
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> LogResult<Option<(Offset, i64)>> {
        let start = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            seg.base_offset + i64::from(seg.time_index.lookup(timestamp))
        };
        let mut from = start.max(self.log_start_offset());
        loop {
            let res = match self.read(from, 1 << 20).await {
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
    /// segment is rolled first) or beyond `retention_bytes` (oldest sealed first).
    /// Returns how many were deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> LogResult<usize> {
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
            self.roll().await?;
        }
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
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
            let removed: Vec<Segment> = st.segments.drain(..n).collect();
            let start = st.log_start();
            st.tail.drop_before(start);
            removed
        };
        for seg in &removed {
            for path in Segment::paths(&self.dir, seg.base_offset) {
                crate::io::small_file::remove_if_exists(&path).await?;
            }
            info!(dir = %self.dir.display(), base_offset = seg.base_offset, "retention deleted segment");
        }
        if !removed.is_empty() {
            crate::io::small_file::sync_dir(&self.dir).await?;
        }
        Ok(removed.len())
    }

    /// Writes and syncs everything appended so far.
    pub async fn flush(&self) -> LogResult<()> {
        let writer = self.state.borrow().active().writer.clone();
        if let Some(w) = writer {
            w.sync().await?;
        }
        Ok(())
    }

    /// Syncs the active segment, writes its indexes and a clean-shutdown marker (so the
    /// next open skips the scan); the log should not be used after.
    pub async fn close(&self) -> LogResult<()> {
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
                producers: st.producers.clone(),
            }
        };
        crate::io::small_file::write_durably(&self.dir.join(CLEAN_MARKER), &marker.to_bytes())
            .await?;
        crate::io::small_file::sync_dir(&self.dir).await?;
        Ok(())
    }
}

/// File a clean shutdown leaves in a partition directory.
const CLEAN_MARKER: &str = "clean-shutdown";

/// Format: `{ active_base: i64, size: u64, next_offset: i64, max_timestamp: i64,
/// producer snapshot (see producer_state), crc32c: u32 of everything before it }`.
struct CleanMarker {
    active_base: Offset,
    state: CleanState,
    producers: ProducerStateTable,
}

impl CleanMarker {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.active_base.to_be_bytes());
        out.extend_from_slice(&self.state.size.to_be_bytes());
        out.extend_from_slice(&self.state.next_offset.to_be_bytes());
        out.extend_from_slice(&self.state.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producers.to_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn from_bytes(b: &[u8]) -> Option<CleanMarker> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let (fixed, snapshot) = body.split_at_checked(32)?;
        let word = |i: usize| -> Option<[u8; 8]> { fixed.get(i * 8..i * 8 + 8)?.try_into().ok() };
        Some(CleanMarker {
            active_base: i64::from_be_bytes(word(0)?),
            state: CleanState {
                size: u64::from_be_bytes(word(1)?),
                next_offset: i64::from_be_bytes(word(2)?),
                max_timestamp: i64::from_be_bytes(word(3)?),
            },
            producers: ProducerStateTable::from_bytes(snapshot)?,
        })
    }
}

async fn read_clean_marker(dir: &Path) -> LogResult<Option<CleanMarker>> {
    let bytes = crate::io::small_file::read_all(&dir.join(CLEAN_MARKER)).await?;
    Ok(match bytes {
        Some(b) => {
            let m = CleanMarker::from_bytes(&b);
            if m.is_none() {
                warn!(dir = %dir.display(), "ignoring damaged clean-shutdown marker; scanning");
            }
            m
        }
        None => None,
    })
}

fn spawn_interval_flusher(log: Weak<PartitionLog>, every: Duration) {
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(every).await;
            let Some(log) = log.upgrade() else { return };
            if let Err(e) = log.flush().await {
                warn!(dir = %log.dir.display(), error = %e, "periodic flush failed");
                log.state.borrow_mut().failed = true;
            }
        }
    })
    .detach();
}

/// Rebuilds the idempotent-producer state: from the snapshot taken when the active
/// segment was created when there is one, else from a scan of every sealed segment
/// after the newest snapshot found; then the active segment's batches on top.
async fn rebuild_producers(
    dir: &Path,
    segments: &[Segment],
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<ProducerStateTable> {
    let Some((active, sealed)) = segments.split_last() else {
        return Ok(ProducerStateTable::default());
    };
    rebuild_producers_from(
        dir,
        &sealed_refs(sealed),
        active.base_offset,
        active_batches,
        interval,
    )
    .await
}

/// What a producer-state rebuild needs of a sealed segment, without borrowing it.
struct SealedRef {
    base_offset: Offset,
    file: Rc<glommio::io::DmaFile>,
    size: u64,
}

fn sealed_refs(segments: &[Segment]) -> Vec<SealedRef> {
    segments
        .iter()
        .map(|s| SealedRef {
            base_offset: s.base_offset,
            file: s.file.clone(),
            size: s.size,
        })
        .collect()
}

async fn rebuild_producers_from(
    dir: &Path,
    sealed: &[SealedRef],
    active_base: Offset,
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<ProducerStateTable> {
    let load = |base: Offset| {
        let path = segment_path(dir, base, SNAPSHOT_SUFFIX);
        async move {
            crate::io::small_file::read_all(&path)
                .await
                .map(|b| b.and_then(|b| ProducerStateTable::from_bytes(&b)))
        }
    };
    let mut table = load(active_base).await?;
    if table.is_none() {
        // Walk back to the newest usable snapshot, then replay the segments after it.
        let mut start = 0;
        let mut found = ProducerStateTable::default();
        for (i, seg) in sealed.iter().enumerate().rev() {
            if let Some(t) = load(seg.base_offset).await? {
                found = t;
                start = i;
                break;
            }
        }
        for seg in &sealed[start..] {
            let scan =
                super::recovery::scan_segment(&seg.file, seg.size, seg.base_offset, interval)
                    .await?;
            for h in scan.producer_batches {
                found.record(&h, h.base_offset);
            }
        }
        table = Some(found);
    }
    let mut table = table.unwrap_or_default();
    for h in &active_batches {
        table.record(h, h.base_offset);
    }
    Ok(table)
}
