//! Append-only direct-I/O writer for one segment file, with write-behind and group commit.
//!
//! Durability contract:
//! - `buffer(bytes)` copies bytes into the current aligned chunk and returns their end
//!   position. Nothing is on disk yet. It never awaits, so callers that assign offsets
//!   and buffer in the same synchronous step keep offsets and file order in agreement.
//! - `pump()` issues every filled chunk as an O_DIRECT write, keeping at most
//!   `max_inflight` writes in flight. When it returns, the bytes are *issued*.
//! - `wait_durable(pos)` returns once every byte below `pos` is written and covered by a
//!   completed `fdatasync`. Only one sync runs at a time; it covers everything buffered
//!   when it started, so concurrent callers share it (group commit).
//!
//! The partially filled last block stays in memory: a sync writes it padded to the block
//! size, and the next chunk starts with a copy of it, so the block is rewritten with more
//! data by a later write. That chunk is one block until more data comes: an idle
//! partition holds 4 KiB, not a chunk of a megabyte (4,000 partitions after a load held
//! 1.3 GiB that way). Two writes that touch the same block are never in flight
//! together. After any I/O error the writer is failed: every later call returns the
//! error and the owner must reopen the file at `durable_len()`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

/// Block size all writes are aligned to; a multiple of every O_DIRECT alignment we meet.
pub const BLOCK: u64 = 4096;

/// Rounds `v` down to a block boundary.
pub fn align_down(v: u64) -> u64 {
    v & !(BLOCK - 1)
}

/// Rounds `v` up to a block boundary.
pub fn align_up(v: u64) -> u64 {
    (v + BLOCK - 1) & !(BLOCK - 1)
}

/// Counters shared by every writer of a shard; read by benchmarks, tests and the
/// metrics endpoint (from another thread, hence atomics; only the shard writes them).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Completed sync rounds (group commits): an fdatasync each, or, with durable
    /// writes, the O_DSYNC writes that carried everything buffered.
    pub fsyncs: AtomicU64,
    /// Total time spent in sync rounds, in nanoseconds.
    pub fsync_nanos: AtomicU64,
    /// O_DIRECT writes issued.
    pub writes: AtomicU64,
    /// Bytes written to disk, padding and rewrites of partial blocks included.
    pub bytes_written: AtomicU64,
    /// Bytes of zeros written ahead of the data (small durable rounds, see
    /// `WriterOptions::zero_ahead_bytes`).
    pub zero_bytes_written: AtomicU64,
    /// Sync round duration distribution (writes, then the fdatasync if there is one).
    pub fsync_latency: crate::metrics::Histogram,
    /// Bytes reserved with fallocate past what the shard's writers have issued: disk
    /// allocated that holds no data yet (see `WriterOptions::shard_reserve_bytes`).
    pub reserved_ahead: AtomicU64,
}

impl IoStats {
    /// Completed sync rounds so far.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// The least reserved ahead at a time (see `ensure_preallocated`).
const PREALLOCATE_MIN: u64 = 256 << 10;

/// Tuning for one writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Size of each aligned chunk that is filled and then written whole.
    pub chunk_bytes: usize,
    /// Writes allowed in flight at once.
    pub max_inflight: usize,
    /// Most space reserved with fallocate ahead of the write position; a file reserves
    /// as much as it already holds (at least 256 KiB), up to this.
    pub preallocate_bytes: u64,
    /// Most space all of a shard's writers together hold reserved ahead of their data.
    /// Past it, a write reserves only its own range: with thousands of partitions a
    /// reserve per file left gigabytes allocated and empty (4,000 partitions held
    /// 6.6 GB of disk for 4.7 GB of data; 10,000 would reserve at least 2.6 GB).
    pub shard_reserve_bytes: u64,
    /// The file was opened `O_DSYNC`: each write is durable when it completes, so a sync
    /// is the writes alone, with no fdatasync after them (one round trip, not two).
    pub durable_writes: bool,
    /// With durable writes and small sync rounds: how far ahead of the data the file is
    /// kept written with zeros. A durable write into a fallocated, never-written extent
    /// must also convert the extent (a journal commit); into a written one it does not,
    /// which roughly halves a small round (docs/benchmarks.md, issue 15). 0 turns it off.
    pub zero_ahead_bytes: u64,
    /// A sync round that carried less than this is small: it is worth zeroing ahead for
    /// (large rounds amortise the conversion, and zeroing would double their writes).
    pub small_round_bytes: u64,
    /// Zero ahead only while the shard writes less than this many bytes per second:
    /// above it the zeros would compete with the data for the disk (the `latency` and
    /// `fan-out` workloads lost their tail to it at 320–640 MB/s).
    pub zero_below_bytes_per_sec: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_bytes: 1 << 20,
            max_inflight: 4,
            preallocate_bytes: 8 << 20,
            shard_reserve_bytes: 1 << 30,
            durable_writes: false,
            zero_ahead_bytes: 512 << 10,
            small_round_bytes: 256 << 10,
            zero_below_bytes_per_sec: 256 << 20,
        }
    }
}

struct Chunk {
    /// Its capacity is the writer's chunk size, or one block while it only holds the
    /// partial block a sync left (grown when data comes).
    buf: DmaBuffer,
    /// File position of `buf[0]`, block aligned.
    start: u64,
    /// Bytes of data in `buf`.
    len: usize,
}

struct Inflight {
    task: JoinHandle<io::Result<usize>>,
    /// End of the data (not the padding) this write carries.
    data_end: u64,
}

struct State {
    chunk: Option<Chunk>,
    /// Chunks waiting to be issued, in file order, with their data length.
    ready: VecDeque<Chunk>,
    inflight: VecDeque<Inflight>,
    /// End of the padded range of the last issued write.
    issued_end: u64,
    /// End of the data carried by the last issued write.
    issued_data_end: u64,
    /// Logical end of everything buffered.
    appended: u64,
    /// Every byte below this is on disk (not necessarily synced).
    written: u64,
    /// Every byte below this is on disk and synced.
    synced: u64,
    preallocated: u64,
    /// Every byte below this has been written at least once (data or zeros).
    zeroed: u64,
    /// The zero-filling write in flight: its range and task.
    zeroing: Option<Zeroing>,
    error: Option<String>,
}

/// A write of zeros ahead of the data, in flight.
struct Zeroing {
    start: u64,
    end: u64,
    task: JoinHandle<io::Result<usize>>,
}

/// Direct-I/O appender for one file. See the module docs for its contract.
pub struct DmaWriter {
    file: Rc<DmaFile>,
    opts: WriterOptions,
    state: RefCell<State>,
    pump_lock: Semaphore,
    sync_running: Cell<bool>,
    sync_generation: Cell<u64>,
    sync_waiters: RefCell<Vec<Waker>>,
    stats: Arc<IoStats>,
    /// When the last sync round ended and the shard's bytes written then: the shard's
    /// write rate since, for the zero-ahead decision.
    last_round: Cell<(Instant, u64)>,
    /// What this writer adds to `IoStats::reserved_ahead` now.
    reserve_counted: Cell<u64>,
}

impl Drop for DmaWriter {
    fn drop(&mut self) {
        self.stats
            .reserved_ahead
            .fetch_sub(self.reserve_counted.get(), Ordering::Relaxed);
    }
}

/// Resolves when the sync that was running at creation has ended.
struct SyncEnded<'a> {
    writer: &'a DmaWriter,
    generation: u64,
}

impl Future for SyncEnded<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.writer.sync_generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.writer
            .sync_waiters
            .borrow_mut()
            .push(cx.waker().clone());
        Poll::Pending
    }
}

impl DmaWriter {
    /// Starts appending to `file` at `pos`, the end of its valid data. The partial block
    /// before `pos`, if any, is read back so that the next write carries it again.
    pub async fn open(
        file: Rc<DmaFile>,
        pos: u64,
        opts: WriterOptions,
        stats: Arc<IoStats>,
    ) -> io::Result<DmaWriter> {
        let chunk_bytes = align_up(opts.chunk_bytes.max(BLOCK as usize) as u64) as usize;
        let opts = WriterOptions {
            chunk_bytes,
            max_inflight: opts.max_inflight.max(1),
            ..opts
        };
        let start = align_down(pos);
        let partial = (pos - start) as usize;
        let mut buf = file.alloc_dma_buffer(BLOCK as usize);
        if partial > 0 {
            let head = file.read_at_aligned(start, BLOCK as usize).await?;
            if head.len() < partial {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its recovered length",
                ));
            }
            buf.as_bytes_mut()[..partial].copy_from_slice(&head[..partial]);
        }
        Ok(DmaWriter {
            file,
            opts,
            state: RefCell::new(State {
                chunk: Some(Chunk {
                    buf,
                    start,
                    len: partial,
                }),
                ready: VecDeque::new(),
                inflight: VecDeque::new(),
                issued_end: align_up(pos),
                issued_data_end: pos,
                appended: pos,
                written: pos,
                synced: pos,
                preallocated: 0,
                zeroed: align_up(pos),
                zeroing: None,
                error: None,
            }),
            pump_lock: Semaphore::new(1),
            sync_running: Cell::new(false),
            sync_generation: Cell::new(0),
            sync_waiters: RefCell::new(Vec::new()),
            last_round: Cell::new((Instant::now(), stats.bytes_written.load(Ordering::Relaxed))),
            reserve_counted: Cell::new(0),
            stats,
        })
    }

    /// Logical end of everything buffered so far.
    pub fn appended_len(&self) -> u64 {
        self.state.borrow().appended
    }

    /// End of the bytes that are on disk, readable with direct reads.
    pub fn written_len(&self) -> u64 {
        self.state.borrow().written
    }

    /// End of the bytes that are on disk and synced.
    pub fn durable_len(&self) -> u64 {
        self.state.borrow().synced
    }

    /// Bytes of memory held by this writer's buffers: its current chunk and the chunks
    /// waiting to be written.
    pub fn held_bytes(&self) -> usize {
        let st = self.state.borrow();
        let current = st.chunk.as_ref().map_or(0, |c| c.buf.len());
        current + st.ready.iter().map(|c| c.buf.len()).sum::<usize>()
    }

    /// The error that failed this writer, if any.
    pub fn failure(&self) -> Option<String> {
        self.state.borrow().error.clone()
    }

    fn check(&self) -> io::Result<()> {
        match &self.state.borrow().error {
            Some(e) => Err(io::Error::other(format!("writer failed earlier: {e}"))),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &io::Error) {
        let mut st = self.state.borrow_mut();
        if st.error.is_none() {
            st.error = Some(e.to_string());
        }
    }

    /// Copies `data` into the write buffer and returns the file position after it.
    /// Synchronous: the bytes are not issued until `pump` or `wait_durable` runs.
    pub fn buffer(&self, mut data: &[u8]) -> io::Result<u64> {
        self.check()?;
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        while !data.is_empty() {
            let chunk_bytes = self.opts.chunk_bytes;
            let appended = st.appended;
            let chunk = st.chunk.get_or_insert_with(|| Chunk {
                buf: self.file.alloc_dma_buffer(chunk_bytes),
                start: appended,
                len: 0,
            });
            if chunk.buf.len() < chunk_bytes && chunk.len + data.len() >= chunk.buf.len() {
                // A block-sized chunk would fill: grow it to a whole chunk first.
                let mut grown = self.file.alloc_dma_buffer(chunk_bytes);
                grown.as_bytes_mut()[..chunk.len]
                    .copy_from_slice(&chunk.buf.as_bytes()[..chunk.len]);
                chunk.buf = grown;
            }
            let room = chunk.buf.len() - chunk.len;
            let n = room.min(data.len());
            chunk.buf.as_bytes_mut()[chunk.len..chunk.len + n].copy_from_slice(&data[..n]);
            chunk.len += n;
            data = &data[n..];
            let full = chunk.len == chunk_bytes;
            st.appended += n as u64;
            if full {
                if let Some(full) = st.chunk.take() {
                    st.ready.push_back(full);
                }
            }
        }
        Ok(guard.appended)
    }

    /// Issues every filled chunk as a write, waiting for room when `max_inflight`
    /// writes are already in flight.
    pub async fn pump(&self) -> io::Result<()> {
        self.check()?;
        let _permit = self
            .pump_lock
            .acquire_permit(1)
            .await
            .map_err(io::Error::from)?;
        let res = self.pump_locked().await;
        if let Err(e) = &res {
            self.fail(e);
        }
        res
    }

    async fn pump_locked(&self) -> io::Result<()> {
        loop {
            let next = self.state.borrow_mut().ready.pop_front();
            let Some(chunk) = next else { return Ok(()) };
            // A chunk that begins inside the block the previous write ended in must not
            // race that write: the older, shorter copy of the block could land last.
            let overlaps = chunk.start < self.state.borrow().issued_end;
            if overlaps {
                self.drain_inflight(0).await?;
            } else {
                self.drain_inflight(self.opts.max_inflight - 1).await?;
            }
            // Reserve for the bytes this write carries, not the chunk buffer's capacity:
            // a partial chunk of a small sync would otherwise reserve a whole megabyte.
            self.ensure_preallocated(chunk.start + align_up(chunk.len as u64))
                .await?;
            // Zeros landing after data would erase it: a chunk that reaches into the range
            // being zeroed waits for that write.
            let end = chunk.start + align_up(chunk.len as u64);
            let overlaps_zeroing = self
                .state
                .borrow()
                .zeroing
                .as_ref()
                .is_some_and(|z| end > z.start && chunk.start < z.end);
            if overlaps_zeroing {
                self.settle().await;
            }
            self.issue(chunk);
        }
    }

    fn issue(&self, mut chunk: Chunk) {
        let padded = align_up(chunk.len as u64) as usize;
        chunk.buf.trim_to_size(padded);
        for b in &mut chunk.buf.as_bytes_mut()[chunk.len..padded] {
            *b = 0;
        }
        let data_end = chunk.start + chunk.len as u64;
        let pos = chunk.start;
        let file = self.file.clone();
        let stats = self.stats.clone();
        let task = glommio::spawn_local(async move {
            let n = file.write_at(chunk.buf, pos).await?;
            if n < padded {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short direct write: {n} of {padded} bytes"),
                ));
            }
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        })
        .detach();
        {
            let mut st = self.state.borrow_mut();
            st.issued_end = pos + padded as u64;
            st.issued_data_end = data_end;
            st.inflight.push_back(Inflight { task, data_end });
        }
        self.recount_reserve();
    }

    /// Brings this writer's share of the shard's reserved-ahead bytes up to date.
    fn recount_reserve(&self) {
        let now = {
            let st = self.state.borrow();
            st.preallocated.saturating_sub(st.issued_end)
        };
        let before = self.reserve_counted.replace(now);
        if now >= before {
            self.stats
                .reserved_ahead
                .fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.stats
                .reserved_ahead
                .fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Waits until at most `keep` writes are in flight, oldest first.
    async fn drain_inflight(&self, keep: usize) -> io::Result<()> {
        loop {
            let oldest = {
                let mut st = self.state.borrow_mut();
                if st.inflight.len() <= keep {
                    return Ok(());
                }
                st.inflight.pop_front()
            };
            let Some(w) = oldest else { return Ok(()) };
            match w.task.await {
                Some(Ok(_)) => {
                    let mut st = self.state.borrow_mut();
                    st.written = st.written.max(w.data_end);
                }
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("write task was cancelled")),
            }
        }
    }

    async fn ensure_preallocated(&self, end: u64) -> io::Result<()> {
        if self.opts.preallocate_bytes == 0 || end <= self.state.borrow().preallocated {
            return Ok(());
        }
        // Reserve ahead in proportion to what this file has taken, up to the maximum: a
        // partition that writes little holds little unused disk (4,000 partitions held
        // 36 GB for 1.5 GB of data with a fixed 8 MiB), a busy one few fallocate calls.
        let wanted = end.clamp(
            PREALLOCATE_MIN,
            self.opts.preallocate_bytes.max(PREALLOCATE_MIN),
        );
        // The shard's other writers' reserves count against the bound; this writer's
        // own is about to be replaced.
        let others = self
            .stats
            .reserved_ahead
            .load(Ordering::Relaxed)
            .saturating_sub(self.reserve_counted.get());
        let ahead = wanted.min(self.opts.shard_reserve_bytes.saturating_sub(others));
        // With the shard's reserve spent, a write still reserves its own range: writes
        // that extend the file cost more (4,000 partitions: 256–263 MB/s, against
        // 274–304 MB/s reserving each write's range, docs/benchmarks.md).
        let target = align_up(end + ahead);
        // Counted while the fallocate runs, so that writers reserving at the same time
        // see each other's share.
        self.stats
            .reserved_ahead
            .fetch_add(ahead, Ordering::Relaxed);
        // The file grows to the preallocated length, so writes never extend it: extending
        // direct writes are serialised by ext4. Recovery stops at the first zero header and
        // `finish` cuts the file back to its data.
        let res = self.file.pre_allocate(target, false).await;
        self.stats
            .reserved_ahead
            .fetch_sub(ahead, Ordering::Relaxed);
        res.map_err(io::Error::from)?;
        self.state.borrow_mut().preallocated = target;
        self.recount_reserve();
        Ok(())
    }

    /// Moves the partial chunk to the ready queue, keeping a copy of its last partial
    /// block as the start of the next chunk.
    fn seal_partial_chunk(&self) {
        let mut st = self.state.borrow_mut();
        let Some(chunk) = st.chunk.take() else { return };
        if chunk.len == 0 {
            st.chunk = Some(chunk);
            return;
        }
        let end = chunk.start + chunk.len as u64;
        let tail_start = align_down(end);
        let tail_len = (end - tail_start) as usize;
        if tail_len > 0 {
            let mut next = self.file.alloc_dma_buffer(BLOCK as usize);
            let from = (tail_start - chunk.start) as usize;
            next.as_bytes_mut()[..tail_len]
                .copy_from_slice(&chunk.buf.as_bytes()[from..from + tail_len]);
            st.chunk = Some(Chunk {
                buf: next,
                start: tail_start,
                len: tail_len,
            });
        }
        st.ready.push_back(chunk);
    }

    /// Returns once every byte below `pos` is on disk and synced, running a sync (which
    /// covers everything buffered so far) if no running sync already covers `pos`.
    pub async fn wait_durable(&self, pos: u64) -> io::Result<()> {
        loop {
            self.check()?;
            if self.state.borrow().synced >= pos {
                return Ok(());
            }
            if self.sync_running.get() {
                // Every waiter wakes when the running sync ends; the first to find its
                // bytes still unsynced leads the next one.
                let generation = self.sync_generation.get();
                SyncEnded {
                    writer: self,
                    generation,
                }
                .await;
                continue;
            }
            self.sync_running.set(true);
            // Let appenders that are already runnable buffer their bytes first, so this
            // sync covers them too.
            futures_lite::future::yield_now().await;
            let res = self.sync_now().await;
            self.sync_running.set(false);
            self.sync_generation.set(self.sync_generation.get() + 1);
            for w in self.sync_waiters.borrow_mut().drain(..) {
                w.wake();
            }
            if let Err(e) = res {
                self.fail(&e);
                return Err(e);
            }
        }
    }

    /// Writes and syncs everything buffered so far. Only one runs at a time.
    async fn sync_now(&self) -> io::Result<()> {
        let (target, before) = {
            let st = self.state.borrow();
            (st.appended, st.synced)
        };
        if self.chunk_has_unissued_data() {
            self.seal_partial_chunk();
        }
        let started = Instant::now();
        {
            let _permit = self
                .pump_lock
                .acquire_permit(1)
                .await
                .map_err(io::Error::from)?;
            self.pump_locked().await?;
            self.drain_inflight(0).await?;
        }
        // With O_DSYNC the completed writes are already durable: that is the round.
        if !self.opts.durable_writes {
            self.file.fdatasync().await.map_err(io::Error::from)?;
        }
        let took = started.elapsed();
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fsync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.stats.fsync_latency.record(took);
        {
            let mut st = self.state.borrow_mut();
            st.written = st.written.max(target);
            st.synced = st.synced.max(target);
            st.zeroed = st.zeroed.max(align_up(target));
        }
        let shard_bytes = self.stats.bytes_written.load(Ordering::Relaxed);
        let (then, bytes_then) = self.last_round.replace((Instant::now(), shard_bytes));
        let rate = (shard_bytes - bytes_then) as f64 / then.elapsed().as_secs_f64().max(1e-6);
        if self.opts.durable_writes
            && target - before < self.opts.small_round_bytes
            && rate < self.opts.zero_below_bytes_per_sec as f64
        {
            self.zero_ahead();
        }
        Ok(())
    }

    /// Starts writing zeros ahead of the data when less than half the zero-ahead window
    /// is left, within the preallocated length (so the file never grows by it).
    fn zero_ahead(&self) {
        let window = self.opts.zero_ahead_bytes;
        let mut st = self.state.borrow_mut();
        if window == 0 || st.zeroing.is_some() || st.error.is_some() {
            return;
        }
        let data_end = align_up(st.appended);
        let start = st.zeroed.max(data_end);
        let end = (data_end + window).min(st.preallocated);
        if start >= end || start > data_end + window / 2 {
            return;
        }
        let len = (end - start) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        let file = self.file.clone();
        let stats = self.stats.clone();
        let task = glommio::spawn_local(async move {
            let n = file.write_at(buf, start).await.map_err(io::Error::from)?;
            stats
                .zero_bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        })
        .detach();
        st.zeroing = Some(Zeroing { start, end, task });
    }

    /// Declares that every block below `len` has been written before (a recycled file):
    /// durable writes there need no zeros ahead of them.
    pub fn assume_written(&self, len: u64) {
        let mut st = self.state.borrow_mut();
        st.zeroed = st.zeroed.max(align_down(len));
    }

    /// Waits for the zero-filling write in flight, if any. Its failure is not the data's:
    /// the range is still preallocated, and the data writes that follow report errors.
    pub async fn settle(&self) {
        let zeroing = self.state.borrow_mut().zeroing.take();
        if let Some(z) = zeroing {
            if let Some(Ok(n)) = z.task.await {
                if n as u64 == z.end - z.start {
                    let mut st = self.state.borrow_mut();
                    st.zeroed = st.zeroed.max(z.end);
                }
            }
        }
    }

    /// True when the current chunk holds bytes no write has carried yet (a chunk that
    /// only holds the copy of an already written partial block does not).
    fn chunk_has_unissued_data(&self) -> bool {
        let st = self.state.borrow();
        st.chunk
            .as_ref()
            .is_some_and(|c| c.start + c.len as u64 > st.issued_data_end)
    }

    /// Writes and syncs everything buffered so far.
    pub async fn sync(&self) -> io::Result<()> {
        let end = self.appended_len();
        self.wait_durable(end).await
    }

    /// Syncs, then cuts the file to the exact data length (dropping preallocated space
    /// and block padding). Used when a segment is sealed or closed.
    pub async fn finish(&self) -> io::Result<u64> {
        self.sync().await?;
        // A zero write landing after the truncation would grow the file again.
        self.settle().await;
        let len = self.appended_len();
        self.file.truncate(len).await.map_err(io::Error::from)?;
        self.state.borrow_mut().preallocated = align_up(len);
        self.recount_reserve();
        self.file.fdatasync().await.map_err(io::Error::from)?;
        Ok(len)
    }
}
