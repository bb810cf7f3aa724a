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
//!
//! This file holds the types; each operation has its own file: `open.rs`, `append.rs`,
//! `read.rs`, `truncate.rs` (suffix, prefix, retention) and `replay.rs` (what a replica
//! rebuilds from).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::task::{Permit, Semaphore, TaskSet};
use bytes::Bytes;

use crate::io::dma_writer::{DmaWriter, IoStats, WriterOptions};
use crate::protocol::record_batch::BatchHeader;

use super::config::{FlushPolicy, LogConfig};
use super::epochs::EpochTable;
use super::error::LogResult;
use super::journal::{Journal, JournalPos};
use super::segment::Segment;
use super::tail_cache::{CacheBudget, TailCache};
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
    /// The shard's journal: under the `Durable` policy small appends are made durable
    /// there, one write for every partition of a round (`log::journal`). Without it each
    /// segment write is durable itself.
    pub journal: Option<Rc<Journal>>,
}

impl LogEnv {
    /// An environment with default writer options and a cache of `cache_bytes`.
    pub fn new(cache_bytes: usize) -> LogEnv {
        LogEnv {
            stats: std::sync::Arc::new(IoStats::default()),
            cache: CacheBudget::new(cache_bytes),
            writer: WriterOptions::default(),
            journal: None,
        }
    }
}

pub(super) struct LogState {
    pub(super) segments: Vec<Segment>,
    pub(super) tail: TailCache,
    /// Set after an I/O error; the next append reopens the active segment from disk.
    pub(super) failed: bool,
    pub(super) epochs: EpochTable,
    /// End, in the active segment, of the last append that bypassed the journal: a
    /// journaled append after it is durable only once the segment is durable up to here.
    pub(super) direct_end: u64,
}

impl LogState {
    pub(super) fn active(&self) -> &Segment {
        self.segments.last().expect("log has an active segment") // unwrap: open() and roll() always leave one
    }
    pub(super) fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("log has an active segment") // unwrap: open() and roll() always leave one
    }
    pub(super) fn next_offset(&self) -> Offset {
        self.active().next_offset
    }
    pub(super) fn log_start(&self) -> Offset {
        self.segments.first().map_or(0, |s| s.base_offset)
    }
    /// Index of the segment that holds `offset`.
    pub(super) fn segment_for(&self, offset: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }
    pub(super) fn evict_cache(&mut self) {
        let active_base = self.active().base_offset;
        let written = self.active().readable_len();
        self.tail
            .evict(|b| b.segment_base < active_base || b.end_position <= written);
    }
}

/// The storage of one partition. See the module docs for its contract.
pub struct Log {
    pub(super) dir: PathBuf,
    pub(super) config: RefCell<LogConfig>,
    pub(super) env: LogEnv,
    pub(super) state: RefCell<LogState>,
    pub(super) append_lock: Semaphore,
    pub(super) opened_clean: bool,
    /// The disk read started for where the last disk read ended (one per partition).
    pub(super) prefetch: RefCell<Option<Prefetch>>,
    /// The interval flusher, when the flush policy has one; stopped with the log.
    pub(super) tasks: TaskSet,
    /// What a checkpoint rebuilt after a write error, for the replica at its next append.
    pub(super) reopened: RefCell<Option<Recovered>>,
    /// This log, for the journal to sync it at a checkpoint.
    pub(super) me: super::journal::JournaledRef,
    /// The log's name in the shard's journal: its directory's name.
    pub(super) journal_key: String,
    /// Raft records the journal held for this log when it opened, until the raft group
    /// over it takes them (`log::raft_records`).
    pub(super) raft_records: RefCell<Vec<bytes::Bytes>>,
    /// What a checkpoint saves for the raft group before the journal drops its records.
    pub(super) raft_checkpoint:
        RefCell<Option<std::rc::Weak<dyn super::raft_hook::RaftCheckpoint>>>,
}

/// The right to append next, holding the log's append lock: see [`Log::reserve`].
pub struct AppendSlot<'a> {
    pub(super) log: &'a Log,
    pub(super) _permit: Permit<'a>,
    pub(super) reopened: Option<Recovered>,
}

/// Batches buffered by [`AppendSlot::write`], on their way to disk.
pub struct Pending {
    pub(super) writer: Rc<DmaWriter>,
    pub(super) end_pos: u64,
    /// Where the journal holds these batches, when they went there.
    pub(super) journal: Option<JournalPos>,
    /// Segment bytes that must be durable in the segment itself first (see
    /// `LogState::direct_end`).
    pub(super) direct_floor: u64,
}

impl Log {
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

    /// The shard's journal, when this log's durable appends go through it now.
    pub(super) fn journal(&self) -> Option<&Rc<Journal>> {
        let durable = matches!(self.config.borrow().flush, FlushPolicy::Durable);
        self.env.journal.as_ref().filter(|_| durable)
    }

    /// Takes the append lock: appends, rolls, truncations, retention and close run one at
    /// a time.
    pub(super) async fn lock_appends(&self) -> LogResult<Permit<'_>> {
        Ok(self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?)
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
}

/// A direct read started ahead of a consumer reading from disk.
pub(super) struct Prefetch {
    pub(super) segment_base: Offset,
    pub(super) pos: u64,
    pub(super) next_offset: Offset,
    pub(super) task: crate::task::JoinHandle<std::io::Result<Bytes>>,
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

/// The writer options of a log's segments: under the `Durable` policy every write is
/// durable on completion (`O_DSYNC`), which replaces the write-then-fdatasync round of
/// each group commit by the write alone (measured in docs/benchmarks.md, issue 15). With
/// a journal too: large appends still go to the segment durably, and plain writes with
/// an fdatasync per round cut them from 1,084 to 702 MB/s at 1 MiB batches.
pub(super) fn segment_writer_options(env: &LogEnv, config: &LogConfig) -> WriterOptions {
    WriterOptions {
        durable_writes: matches!(config.flush, FlushPolicy::Durable),
        ..env.writer
    }
}
