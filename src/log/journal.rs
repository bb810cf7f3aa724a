//! The shard's journal: one sequential file that the partition logs of a shard write
//! their small appends to first, so that one durable write per group-commit round covers
//! every partition (a database's WAL; raft-engine does this for all raft groups of a
//! TiKV node). Without it a round that carries batches for 64 partitions is 64 durable
//! writes, and this machine's disk pays ~55 µs per write whatever its size (measured in
//! docs/architecture.md, "per-shard journal").
//!
//! Contract:
//! - A log in journal mode buffers a small append into its segment as usual (the
//!   segment is written in whole chunks and synced only at checkpoints) and into the
//!   journal; the append is durable when the journal's write is ([`JournalPos`]). Large
//!   appends skip the journal and are made durable in the segment itself: they are one
//!   write either way, and the journal would write their bytes twice.
//! - A record is `{ magic "CDJL", version u16, kind u8, 0u8, generation u64, key length
//!   u16, 0u16, payload length u32, crc32c u32 (of the 24 bytes before it, the key and the
//!   payload), key, payload }`; the key names the log (its directory's name). Kinds:
//!   batches (as written to the segment), a suffix truncation (the offset), a reset
//!   (the log's directory is being deleted: drop what came before), a raft record
//!   (the raft group over the log: its table rows and states, opaque here; see
//!   `log::raft_records`), and the end of a suffix truncation (the offset: the segment
//!   files are cut, so what they hold past it is newer; kind 5, since the issue-19
//!   work — a journal without it replays as before).
//! - Files are `<generation>.journal`. When the current file passes
//!   [`JournalOptions::file_bytes`] the journal moves to the next generation's file, and a
//!   checkpoint syncs every log that wrote into the old one; the old file is then recycled
//!   as the next spare (renamed; records of another generation in it are never read), so
//!   steady-state journal writes land in already-written blocks and need no extent
//!   conversion.
//! - On open every file is read: its records of its own generation, in order, oldest
//!   file first, grouped by key. Each log takes its own when it opens and re-applies what
//!   its segments lack ([`super::journal_replay`]). [`Journal::recovery_done`] deletes the
//!   old files once every log has done so.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use tracing::{info, warn};

use crate::codec::magic::JOURNAL;
use crate::io::dma_writer::{DmaWriter, IoStats, WriterOptions};
use crate::notify::Notify;
use crate::task::TaskSet;

use super::Offset;

/// What the journal needs of a log that wrote into it: to make everything it journaled
/// durable in its own files, so that the journal can let go of it.
pub trait Journaled {
    /// Syncs (or, after a write error, rebuilds and syncs) everything appended so far.
    fn checkpoint(&self) -> Pin<Box<dyn Future<Output = io::Result<()>> + '_>>;
}

/// A log as the journal holds it: weakly, so a closed log is simply skipped.
pub type JournaledRef = Weak<dyn Journaled>;

const VERSION: u16 = 1;
const HEADER_LEN: usize = 28;
const SUFFIX: &str = "journal";

/// What a journal record says about its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    /// Batches appended, exactly as written to the segment.
    Batches(Bytes),
    /// Every batch at or after this offset was dropped.
    Truncate(Offset),
    /// The truncation at this offset has reached the segment files: what they hold at
    /// or after it was written since (a batch too large for the journal, say).
    Truncated(Offset),
    /// A record of the raft group over the log, for it to replay.
    Raft(Bytes),
}

/// Record kinds on disk.
const KIND_BATCHES: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_RESET: u8 = 3;
const KIND_RAFT: u8 = 4;
const KIND_TRUNCATED: u8 = 5;

/// Tuning for a shard's journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Size at which the journal moves to its next file and checkpoints the old one.
    pub file_bytes: u64,
    /// Appends of at least this many bytes bypass the journal (see the module docs).
    pub direct_bytes: usize,
    /// Once the shard appends more than this many bytes per second, appends bypass the
    /// journal until the rate falls below two thirds of it: there the disk's bandwidth is
    /// the limit, and the journal would spend half of it writing every byte twice
    /// (docs/benchmarks.md, issue 15).
    pub max_bytes_per_sec: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            file_bytes: 64 << 20,
            direct_bytes: 256 << 10,
            max_bytes_per_sec: 320 << 20,
        }
    }
}

/// The shard's append rate, measured over windows of 50 ms.
struct Rate {
    window_start: Instant,
    window_bytes: u64,
    /// Appends bypass the journal (the rate went above the limit and has not yet
    /// fallen below two thirds of it).
    bypass: bool,
}

const RATE_WINDOW: Duration = Duration::from_millis(100);

/// Where a journal record ends: durable once its writer is durable up to `end`.
pub struct JournalPos {
    pub(super) writer: Rc<DmaWriter>,
    pub(super) end: u64,
}

impl JournalPos {
    /// Resolves once the record, and every record before it, is on stable storage.
    pub async fn durable(&self) -> io::Result<()> {
        self.writer.pump().await?;
        self.writer.wait_durable(self.end).await
    }
}

/// A generation's file that logs may still need: it is released once they are synced.
struct OldFile {
    generation: u64,
    path: PathBuf,
    writer: Rc<DmaWriter>,
    dirty: Vec<JournaledRef>,
}

struct State {
    generation: u64,
    path: PathBuf,
    current: Rc<DmaWriter>,
    /// Logs with records in the current file (by address, to add each once).
    dirty: Vec<JournaledRef>,
    dirty_set: HashSet<usize>,
    /// A recycled file already named for the next generation, with its writer.
    spare: Option<(PathBuf, Rc<DmaWriter>)>,
    /// Files of earlier generations, oldest first, until their logs are synced.
    old: VecDeque<OldFile>,
    checkpointing: bool,
    /// Files left by the previous run, deleted by `recovery_done`.
    recovered_files: Vec<PathBuf>,
}

/// A shard's journal. See the module docs for its contract.
pub struct Journal {
    dir: PathBuf,
    opts: JournalOptions,
    writer_opts: WriterOptions,
    stats: Arc<IoStats>,
    state: RefCell<State>,
    /// What the previous run left, by log key, until each log takes its share.
    recovered: RefCell<HashMap<String, Vec<JournalOp>>>,
    /// Woken when a checkpoint releases a file.
    room: Notify,
    stopping: Cell<bool>,
    rate: RefCell<Rate>,
    tasks: TaskSet,
    me: Weak<Journal>,
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.{SUFFIX}"))
}

fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SUFFIX}"))?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

async fn open_file(path: &Path) -> io::Result<Rc<DmaFile>> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DSYNC);
    Ok(Rc::new(
        options.dma_open(path).await.map_err(io::Error::from)?,
    ))
}

/// The header of one record (the key and payload follow it): written apart from them,
/// so a journaled batch is copied once, straight into the journal's DMA chunk.
fn encode_header(
    generation: u64,
    kind: u8,
    key: &str,
    payload: &[u8],
) -> io::Result<[u8; HEADER_LEN]> {
    let key_len = u16::try_from(key.len()).map_err(|_| io::Error::other("journal key too long"))?;
    let payload_len =
        u32::try_from(payload.len()).map_err(|_| io::Error::other("journal record too large"))?;
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&JOURNAL);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[6] = kind;
    h[8..16].copy_from_slice(&generation.to_be_bytes());
    h[16..18].copy_from_slice(&key_len.to_be_bytes());
    h[20..24].copy_from_slice(&payload_len.to_be_bytes());
    let mut crc = crc32c::crc32c(&h[..24]);
    crc = crc32c::crc32c_append(crc, key.as_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    h[24..28].copy_from_slice(&crc.to_be_bytes());
    Ok(h)
}

#[cfg(test)]
fn encode(generation: u64, kind: u8, key: &str, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = encode_header(generation, kind, key, payload)?.to_vec();
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// One record read back.
#[derive(Debug)]
struct Record {
    kind: u8,
    key: String,
    payload: Bytes,
}

/// The records of `generation` at the start of `data`, in order: reading stops at the
/// first one that is torn, damaged or of another generation (a recycled file's old
/// content), which is where the last run stopped writing.
fn decode_all(data: &Bytes, generation: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + HEADER_LEN) {
        if header[..4] != JOURNAL || header[4..6] != VERSION.to_be_bytes() {
            break;
        }
        let be64 = |b: &[u8]| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        if be64(&header[8..16]) != generation {
            break;
        }
        let key_len = be64(&header[16..18]) as usize;
        let payload_len = be64(&header[20..24]) as usize;
        let crc = be64(&header[24..28]) as u32;
        let body = at + HEADER_LEN;
        let Some(key) = data.get(body..body + key_len) else {
            break;
        };
        let Some(payload) = data.get(body + key_len..body + key_len + payload_len) else {
            break;
        };
        let mut c = crc32c::crc32c(&header[..24]);
        c = crc32c::crc32c_append(c, key);
        c = crc32c::crc32c_append(c, payload);
        if c != crc {
            break;
        }
        let Ok(key) = std::str::from_utf8(key) else {
            break;
        };
        out.push(Record {
            kind: header[6],
            key: key.to_string(),
            payload: data.slice(body + key_len..body + key_len + payload_len),
        });
        at = body + key_len + payload_len;
    }
    out
}

/// A journal file on disk: its generation and path.
type JournalFile = (u64, PathBuf);

/// Reads every journal file in `dir` (blocking; off the shard's thread): the records of
/// each, oldest generation first, grouped by key, and the files with their generations.
fn read_dir_blocking(dir: &Path) -> io::Result<(Vec<JournalFile>, Vec<Record>)> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_file_name) {
            files.push((generation, entry.path()));
        }
    }
    files.sort();
    let mut records = Vec::new();
    for (generation, path) in &files {
        let data = Bytes::from(std::fs::read(path)?);
        records.extend(decode_all(&data, *generation));
    }
    Ok((files, records))
}

/// Every record of the journal files in `dir`, oldest first, with the key of its log
/// (blocking; for diagnostics and tests). Resets are left out.
pub fn records_blocking(dir: &Path) -> io::Result<Vec<(String, JournalOp)>> {
    let (_, records) = read_dir_blocking(dir)?;
    Ok(records
        .into_iter()
        .filter_map(|r| Some((r.key.clone(), op_of(r.kind, r.payload)?)))
        .collect())
}

/// Groups records by key, applying resets.
fn group(records: Vec<Record>) -> HashMap<String, Vec<JournalOp>> {
    let mut by_key: HashMap<String, Vec<JournalOp>> = HashMap::new();
    for r in records {
        let ops = by_key.entry(r.key).or_default();
        if r.kind == KIND_RESET {
            ops.clear();
        } else if let Some(op) = op_of(r.kind, r.payload) {
            ops.push(op);
        }
    }
    by_key.retain(|_, ops| !ops.is_empty());
    by_key
}

/// What a record of `kind` says (`None` for a reset or an unknown kind).
fn op_of(kind: u8, payload: Bytes) -> Option<JournalOp> {
    match kind {
        KIND_BATCHES => Some(JournalOp::Batches(payload)),
        KIND_TRUNCATE | KIND_TRUNCATED => {
            let b: [u8; 8] = payload.get(..8)?.try_into().ok()?;
            let at = i64::from_be_bytes(b);
            Some(if kind == KIND_TRUNCATE {
                JournalOp::Truncate(at)
            } else {
                JournalOp::Truncated(at)
            })
        }
        KIND_RAFT => Some(JournalOp::Raft(payload)),
        _ => None,
    }
}

impl Journal {
    /// Opens the journal in `dir`: reads what the previous run left (for the logs to take
    /// as they open) and starts a new generation's file.
    pub async fn open(
        dir: &Path,
        opts: JournalOptions,
        writer_opts: WriterOptions,
        stats: Arc<IoStats>,
    ) -> io::Result<Rc<Journal>> {
        let listing = dir.to_path_buf();
        let (files, records) = crate::task::blocking(move || read_dir_blocking(&listing)).await?;
        crate::io::device_probe::ensure_probed(dir).await?;
        let recovered = group(records);
        let generation = files.last().map_or(1, |(g, _)| g + 1);
        if !recovered.is_empty() {
            info!(dir = %dir.display(), logs = recovered.len(), "journal holds appends to re-apply");
        }
        let writer_opts = WriterOptions {
            durable_writes: true,
            ..writer_opts
        };
        let path = file_path(dir, generation);
        let file = open_file(&path).await?;
        file.truncate(0).await.map_err(io::Error::from)?;
        crate::io::small_file::sync_dir(dir).await?;
        let current = Rc::new(DmaWriter::open(file, 0, writer_opts, stats.clone()).await?);
        let spare_path = file_path(dir, generation + 1);
        let spare_file = open_file(&spare_path).await?;
        spare_file.truncate(0).await.map_err(io::Error::from)?;
        crate::io::small_file::sync_dir(dir).await?;
        let spare = Rc::new(DmaWriter::open(spare_file, 0, writer_opts, stats.clone()).await?);
        Ok(Rc::new_cyclic(|me| Journal {
            dir: dir.to_path_buf(),
            opts,
            writer_opts,
            stats,
            state: RefCell::new(State {
                generation,
                path,
                current,
                dirty: Vec::new(),
                dirty_set: HashSet::new(),
                spare: Some((spare_path, spare)),
                old: VecDeque::new(),
                checkpointing: false,
                recovered_files: files.into_iter().map(|(_, p)| p).collect(),
            }),
            recovered: RefCell::new(recovered),
            room: Notify::default(),
            stopping: Cell::new(false),
            rate: RefCell::new(Rate {
                window_start: Instant::now(),
                window_bytes: 0,
                bypass: false,
            }),
            tasks: TaskSet::new(format!("journal {}", dir.display())),
            me: me.clone(),
        }))
    }

    /// The tuning this journal was opened with.
    pub fn options(&self) -> JournalOptions {
        self.opts
    }

    /// Counts a durable append of `bytes` and says whether it should go through the
    /// journal (small, and the shard's append rate not over `max_bytes_per_sec`).
    pub(super) fn takes(&self, bytes: usize) -> bool {
        let mut r = self.rate.borrow_mut();
        r.window_bytes += bytes as u64;
        let elapsed = r.window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            let rate = (r.window_bytes as f64 / elapsed.as_secs_f64()) as u64;
            let limit = self.opts.max_bytes_per_sec;
            if rate > limit {
                r.bypass = true;
            } else if rate < limit / 3 * 2 {
                r.bypass = false;
            }
            r.window_bytes = 0;
            r.window_start = Instant::now();
        }
        bytes < self.opts.direct_bytes && !r.bypass
    }

    /// Takes what the previous run left for the log named `key`.
    pub(super) fn take_recovered(&self, key: &str) -> Vec<JournalOp> {
        self.recovered.borrow_mut().remove(key).unwrap_or_default()
    }

    /// Called once every log of the shard has opened (and so re-applied and synced what
    /// the journal held for it): the previous run's files are no longer needed. Records
    /// no log claimed belong to logs deleted since; they are dropped.
    pub async fn recovery_done(&self) -> io::Result<()> {
        let unclaimed: Vec<String> = self
            .recovered
            .borrow_mut()
            .drain()
            .map(|(k, _)| k)
            .collect();
        if !unclaimed.is_empty() {
            warn!(dir = %self.dir.display(), logs = ?unclaimed, "journal records for logs that no longer exist dropped");
        }
        let files = std::mem::take(&mut self.state.borrow_mut().recovered_files);
        for path in files {
            crate::io::small_file::remove_if_exists(&path).await?;
        }
        crate::io::small_file::sync_dir(&self.dir).await
    }

    /// Waits while the journal is far past its size because checkpoints lag (so memory
    /// held by unsynced segment data stays bounded), and replaces a failed writer.
    pub(super) async fn admit(&self) -> io::Result<()> {
        if self.state.borrow().current.failure().is_some() {
            self.replace_failed_writer().await?;
        }
        loop {
            let generation = self.room.generation();
            let over = {
                let st = self.state.borrow();
                st.current.appended_len() > 4 * self.opts.file_bytes && !st.old.is_empty()
            };
            if !over || self.stopping.get() {
                return Ok(());
            }
            self.room.changed_since(generation).await;
        }
    }

    /// After a write error: the current file keeps what became durable and moves to the
    /// checkpoint queue; appends go on in a new file.
    async fn replace_failed_writer(&self) -> io::Result<()> {
        let next = self.state.borrow().generation + 1;
        let path = file_path(&self.dir, next);
        let file = open_file(&path).await?;
        file.truncate(0).await.map_err(io::Error::from)?;
        crate::io::small_file::sync_dir(&self.dir).await?;
        let writer = Rc::new(DmaWriter::open(file, 0, self.writer_opts, self.stats.clone()).await?);
        if self.state.borrow().current.failure().is_none() {
            return Ok(()); // replaced meanwhile by another appender
        }
        // The spare was named for `next`; it is now stale and would be a generation late.
        let spare = self.state.borrow_mut().spare.take();
        if let Some((p, _)) = spare {
            if p != path {
                crate::io::small_file::remove_if_exists(&p).await?;
            }
        }
        self.switch_to(path, writer);
        Ok(())
    }

    /// Writes a record for `log` (synchronously buffered; durable at the returned
    /// position) and moves to the next file when this one is full and a spare is ready.
    pub(super) fn append(
        &self,
        log: &JournaledRef,
        kind: u8,
        key: &str,
        payload: &[u8],
    ) -> io::Result<JournalPos> {
        let (writer, end) = {
            let mut st = self.state.borrow_mut();
            let header = encode_header(st.generation, kind, key, payload)?;
            st.current.buffer(&header)?;
            st.current.buffer(key.as_bytes())?;
            let end = st.current.buffer(payload)?;
            let addr = Weak::as_ptr(log) as *const () as usize;
            if st.dirty_set.insert(addr) {
                st.dirty.push(log.clone());
            }
            (st.current.clone(), end)
        };
        let full = end >= self.opts.file_bytes && self.state.borrow().spare.is_some();
        if full {
            let spare = self.state.borrow_mut().spare.take();
            if let Some((path, spare)) = spare {
                self.switch_to(path, spare);
            }
        }
        Ok(JournalPos { writer, end })
    }

    /// Appends batches (the bytes just buffered into `log`'s segment).
    pub(super) fn append_batches(
        &self,
        log: &JournaledRef,
        key: &str,
        batches: &[u8],
    ) -> io::Result<JournalPos> {
        self.append(log, KIND_BATCHES, key, batches)
    }

    /// Records that `log` dropped every batch from `offset` on.
    pub(super) fn append_truncate(
        &self,
        log: &JournaledRef,
        key: &str,
        offset: Offset,
    ) -> io::Result<JournalPos> {
        self.append(log, KIND_TRUNCATE, key, &offset.to_be_bytes())
    }

    /// Records that `log`'s truncation at `offset` has reached its segment files.
    pub(super) fn append_truncated(
        &self,
        log: &JournaledRef,
        key: &str,
        offset: Offset,
    ) -> io::Result<JournalPos> {
        self.append(log, KIND_TRUNCATED, key, &offset.to_be_bytes())
    }

    /// Writes a record of the raft group over `log`.
    pub(super) fn append_raft(
        &self,
        log: &JournaledRef,
        key: &str,
        record: &[u8],
    ) -> io::Result<JournalPos> {
        self.append(log, KIND_RAFT, key, record)
    }

    /// Records that `log`'s directory is being deleted.
    pub(super) fn append_reset(&self, log: &JournaledRef, key: &str) -> io::Result<JournalPos> {
        self.append(log, KIND_RESET, key, &[])
    }

    /// Makes `writer` (on `path`) the next generation's file and starts checkpointing
    /// the one it replaces.
    fn switch_to(&self, path: PathBuf, writer: Rc<DmaWriter>) {
        let start = {
            let mut st = self.state.borrow_mut();
            let old_path = std::mem::replace(&mut st.path, path);
            let old_writer = std::mem::replace(&mut st.current, writer);
            let dirty = std::mem::take(&mut st.dirty);
            st.dirty_set.clear();
            let generation = st.generation;
            st.generation += 1;
            st.old.push_back(OldFile {
                generation,
                path: old_path,
                writer: old_writer,
                dirty,
            });
            !std::mem::replace(&mut st.checkpointing, true)
        };
        if start {
            if let Some(me) = self.me.upgrade() {
                self.tasks.spawn("checkpoint", checkpoint_loop(me));
            }
        }
    }

    /// Syncs the current file and every log with records in any file, and releases the
    /// files (a clean shutdown; the logs are closed after this).
    pub async fn close(&self) -> io::Result<()> {
        self.stopping.set(true);
        self.room.notify();
        let (current, dirty, old) = {
            let mut st = self.state.borrow_mut();
            let dirty = std::mem::take(&mut st.dirty);
            st.dirty_set.clear();
            (st.current.clone(), dirty, std::mem::take(&mut st.old))
        };
        let _ = current.sync().await;
        current.settle().await;
        let mut logs: Vec<JournaledRef> = dirty;
        for f in &old {
            logs.extend(f.dirty.iter().cloned());
        }
        sync_logs(&logs).await?;
        self.tasks.stop_all();
        // Every record is now in its log's segments: nothing for the next start to read.
        let mut paths: Vec<PathBuf> = old.into_iter().map(|f| f.path).collect();
        {
            let mut st = self.state.borrow_mut();
            paths.push(st.path.clone());
            if let Some((p, _)) = st.spare.take() {
                paths.push(p);
            }
        }
        for path in paths {
            crate::io::small_file::remove_if_exists(&path).await?;
        }
        crate::io::small_file::sync_dir(&self.dir).await
    }

    /// Stops the journal's background work, as a crash would, for tests that crash a
    /// shard inside one process: the checkpoint step under way finishes (cancelled
    /// halfway, its file operations would still land, after the restart has read the
    /// files), and none starts after it. The next `open` finds the files as they are.
    pub async fn halt(&self) {
        self.stopping.set(true);
        self.room.notify();
        while self.state.borrow().checkpointing {
            crate::task::sleep(Duration::from_millis(1)).await;
        }
        self.tasks.stop_all();
    }

    /// Number of files of earlier generations still waiting for their checkpoint.
    pub fn pending_checkpoints(&self) -> usize {
        self.state.borrow().old.len()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    /// Reads back, from the files on disk, every durable record of the log named `key`
    /// (after a segment write error the log re-applies them; see `journal_replay`).
    pub(super) async fn read_back(&self, key: &str) -> io::Result<Vec<JournalOp>> {
        let files: Vec<(u64, PathBuf, u64)> = {
            let st = self.state.borrow();
            let mut v: Vec<(u64, PathBuf, u64)> = st
                .old
                .iter()
                .map(|f| (f.generation, f.path.clone(), f.writer.durable_len()))
                .collect();
            v.push((st.generation, st.path.clone(), st.current.durable_len()));
            v
        };
        let key = key.to_string();
        crate::task::blocking(move || -> io::Result<Vec<JournalOp>> {
            let mut records = Vec::new();
            for (generation, path, durable) in files {
                let mut data = std::fs::read(&path)?;
                data.truncate(durable as usize);
                records.extend(
                    decode_all(&Bytes::from(data), generation)
                        .into_iter()
                        .filter(|r| r.key == key),
                );
            }
            Ok(group(records).remove(&key).unwrap_or_default())
        })
        .await
    }
}

/// Syncs the logs still alive, 64 at a time.
async fn sync_logs(logs: &[JournaledRef]) -> io::Result<()> {
    let alive: Vec<Rc<dyn Journaled>> = logs.iter().filter_map(Weak::upgrade).collect();
    let mut first_error = None;
    for group in alive.chunks(64) {
        let tasks: Vec<_> = group
            .iter()
            .map(|l| {
                let l = l.clone();
                crate::task::spawn(async move { l.checkpoint().await.map_err(|e| e.to_string()) })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(io::Error::other(e)),
        None => Ok(()),
    }
}

/// Releases old files one by one, oldest first: waits for the file's own writes, syncs
/// every log that wrote into it, then recycles it as the spare (or deletes it when a
/// spare exists). A failed sync (a full disk) is retried until it succeeds or the
/// journal closes; the files wait meanwhile.
async fn checkpoint_loop(journal: Rc<Journal>) {
    loop {
        if journal.stopping.get() {
            journal.state.borrow_mut().checkpointing = false;
            return;
        }
        let next = journal.state.borrow().old.front().map(|f| {
            (
                f.generation,
                f.path.clone(),
                f.writer.clone(),
                f.dirty.clone(),
            )
        });
        let Some((generation, path, writer, dirty)) = next else {
            journal.state.borrow_mut().checkpointing = false;
            return;
        };
        let _ = writer.sync().await;
        writer.settle().await;
        let mut delay = Duration::from_millis(10);
        while let Err(e) = sync_logs(&dirty).await {
            if journal.stopping.get() {
                journal.state.borrow_mut().checkpointing = false;
                return;
            }
            warn!(dir = %journal.dir.display(), generation, error = %e, "journal checkpoint failed; retrying");
            crate::task::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        // A failed writer may have left writes in flight: never write that file again.
        let reusable = writer.failure().is_none();
        drop(writer);
        if let Err(e) = recycle(&journal, &path, reusable).await {
            warn!(file = %path.display(), error = %e, "could not recycle a journal file");
        }
        journal.state.borrow_mut().old.pop_front();
        journal.room.notify();
    }
}

/// Renames a checkpointed file to the next generation's name and opens it as the
/// spare; deletes it when there is a spare already or its writer failed.
async fn recycle(journal: &Journal, path: &Path, reusable: bool) -> io::Result<()> {
    let (has_spare, next) = {
        let st = journal.state.borrow();
        (st.spare.is_some(), st.generation + 1)
    };
    if has_spare || !reusable {
        crate::io::small_file::remove_if_exists(path).await?;
        if has_spare {
            return Ok(());
        }
    }
    let target = file_path(&journal.dir, next);
    if reusable {
        glommio::io::rename(path, &target)
            .await
            .map_err(io::Error::from)?;
    }
    crate::io::small_file::sync_dir(&journal.dir).await?;
    let file = open_file(&target).await?;
    let size = file.file_size().await.map_err(io::Error::from)?;
    let writer = DmaWriter::open(file, 0, journal.writer_opts, journal.stats.clone()).await?;
    // The old records are written blocks: writing over them needs no extent conversion.
    writer.assume_written(size);
    let mut st = journal.state.borrow_mut();
    if st.generation + 1 == next && st.spare.is_none() {
        st.spare = Some((target, Rc::new(writer)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_another_generation_or_torn_are_not_read() {
        let mut data = encode(7, KIND_BATCHES, "t-0", b"abc").unwrap();
        data.extend(encode(7, KIND_TRUNCATE, "t-0", &5i64.to_be_bytes()).unwrap());
        data.extend(encode(6, KIND_BATCHES, "t-0", b"stale").unwrap());
        let all = decode_all(&Bytes::from(data.clone()), 7);
        assert_eq!(all.len(), 2);
        assert_eq!(&all[0].payload[..], b"abc");
        let torn = Bytes::from(data[..data.len() - 40].to_vec());
        assert_eq!(decode_all(&torn, 7).len(), 1);
        let mut flipped = data.clone();
        flipped[HEADER_LEN + 4] ^= 1;
        assert!(decode_all(&Bytes::from(flipped), 7).is_empty());
    }

    #[test]
    fn a_reset_drops_what_came_before_it_for_its_key_only() {
        let rec = |kind, key: &str, p: &[u8]| Record {
            kind,
            key: key.to_string(),
            payload: Bytes::copy_from_slice(p),
        };
        let grouped = group(vec![
            rec(KIND_BATCHES, "a-0", b"old"),
            rec(KIND_BATCHES, "b-0", b"keep"),
            rec(KIND_RESET, "a-0", b""),
            rec(KIND_BATCHES, "a-0", b"new"),
        ]);
        assert_eq!(
            grouped["a-0"],
            vec![JournalOp::Batches(Bytes::from_static(b"new"))]
        );
        assert_eq!(
            grouped["b-0"],
            vec![JournalOp::Batches(Bytes::from_static(b"keep"))]
        );
    }
}
