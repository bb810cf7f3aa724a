//! raft-rs's `Storage` over a partition log: the raft-index table maps raft entries to
//! the log's batches (docs/architecture.md, "The partition log as a raft log"). Data
//! entries are stamped with their Kafka offsets and the entry's term as leader epoch —
//! on every replica alike, since each starts where the same prefix of the log ends — and
//! raft-only entries (a new leader's empty entry, configuration changes) become rows of
//! the table only, so Kafka offsets stay contiguous.
//!
//! Persisting is in two steps, as raft-rs's async API wants: [`RaftLog::stage`] takes a
//! ready's entries and HardState into the table and memory at once (raft reads them
//! back before they are durable), and [`RaftLog::persist`] writes them: batches to the
//! segment (and the shard's journal, for small ones), rows and states as raft records in
//! the journal, so one durable round covers every group of the shard. A sealed segment's
//! rows go to its `.raftindex` when it is sealed; a checkpoint saves the rest, with the
//! HardState and ConfState, to `raft.state` before the journal lets go of its records.
//! Without a journal, each persist saves `raft.state` itself.
//!
//! Recovery ([`RaftLog::open`]) joins the sealed tables and `raft.state`, replays the
//! journal's raft records over them, then keeps the table honest against the log: a data
//! row whose batches the log does not hold at that term goes, with every row after it
//! (its write never finished, so raft never heard it was persisted), and batches past
//! the last row go from the log. The commit index is capped at the last entry kept.
//!
//! Reads are synchronous, as raft-rs asks: recent entries are kept in memory (all that
//! are not yet applied, and up to 8 MiB more); an older entry is answered
//! `LogTemporarilyUnavailable` when raft allows it, remembered, read from disk by
//! [`RaftLog::fetch_missing`], and handed to raft through `on_entries_fetched`.

use std::cell::{Cell, Ref, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use bytes::{Bytes, BytesMut};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use tracing::warn;

use crate::log::format::{segment_path, RAFT_INDEX_SUFFIX};
use crate::log::raft_index::{EntryKind, Located, RaftIndex, RaftIndexError, Row};
use crate::log::raft_records::RaftCheckpoint;
use crate::log::{Log, LogError, LogResult, Offset, Recovered};
use crate::protocol::record_batch::{
    check_batch, parse_header, set_offset_and_epoch, BatchError, BatchHeader,
};
use crate::task::Semaphore;

use super::raft_producers::{Admission, AdmitError, RaftProducers};
use super::raft_snapshot::{SnapshotData, SnapshotPoint, SnapshotState};
use super::raft_state::{RaftRecord, SavedState};

/// Why entries could not be persisted or the group could not open.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The partition log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A state file or journal write failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The entries do not continue the table.
    #[error(transparent)]
    Index(#[from] RaftIndexError),
    /// A data entry does not hold whole, valid record batches.
    #[error("raft entry {index}: {source}")]
    Batch {
        /// The entry's raft index.
        index: u64,
        /// What was wrong with its batches.
        source: BatchError,
    },
    /// Raft asked to replace a committed entry (never done by a correct raft).
    #[error("raft entry {index} is committed (commit index {commit}) and cannot be replaced")]
    CommittedTruncation {
        /// The entry raft would replace.
        index: u64,
        /// The commit index.
        commit: u64,
    },
    /// A leader's snapshot could not be read or installed.
    #[error("raft snapshot: {0}")]
    Snapshot(String),
    /// Batches were staged for an offset the log is not at (a write before them failed).
    #[error("batches staged at offset {staged} but the log ends at {log_end}")]
    OutOfStep {
        /// Where the batches were stamped to go.
        staged: Offset,
        /// Where the log ends.
        log_end: Offset,
    },
}

/// Bytes of recent data entries a group keeps in memory beyond what it must (entries
/// not yet applied are always kept: raft reads them synchronously to apply them).
const RECENT_BYTES: usize = 8 << 20;

/// Bytes one disk fetch for raft reads at most (raft asks again for the rest).
const FETCH_BYTES: usize = 1 << 20;

/// The writes a ready needs, in order; see [`RaftLog::persist`].
#[derive(Default)]
pub struct Persist {
    ops: Vec<Op>,
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    /// False when the job only moves the commit index: raft does not need that durable
    /// before it goes on (a lower commit index after a crash is learned again), so the
    /// record rides with the next durable write instead of waiting for its own.
    must_sync: bool,
}

impl Persist {
    /// This job, then `next`'s writes (a snapshot, then the entries of the same ready).
    pub fn then(mut self, next: Persist) -> Persist {
        self.ops.extend(next.ops);
        self.hard_state = next.hard_state.or(self.hard_state);
        self.conf_state = next.conf_state.or(self.conf_state);
        self.must_sync |= next.must_sync;
        self
    }
}

enum Op {
    /// Install a leader's snapshot: its state (if any) first (for the group's owner to
    /// adopt, `raft_snapshot::load_state`), then the snapshot file,
    /// the journal record, the empty log at its offset, `raft.state`, and last the
    /// journal forgets what it held of the log before.
    Install {
        point: SnapshotPoint,
        producers: Vec<u8>,
        state: Vec<u8>,
    },
    /// Save `raft.state` now: a cut is about to delete sealed segments' tables that the
    /// last saved state relies on.
    SaveState,
    /// Drop batches from this offset on.
    Cut(Offset),
    /// Append these stamped batches, starting at `base`.
    Batches {
        base: Offset,
        data: Bytes,
        headers: Vec<BatchHeader>,
    },
    /// Write a raft record.
    Record(Vec<u8>),
}

/// The group's state as a checkpoint saves it: everything as raft sees it, staged or
/// durable. A checkpoint releases a journal file that may hold records of a job still
/// under way; what that job staged must be in the file that replaces them (saving a
/// term or vote early is safe; rows whose batches never became durable are dropped by
/// recovery, checked against the log).
struct Meta {
    dir: PathBuf,
    table: RefCell<RaftIndex>,
    /// Sealed segments whose `.raftindex` is on disk: (base offset, last raft index it
    /// holds), oldest first. `raft.state` holds the rows after the last of them.
    sealed: RefCell<Vec<(Offset, u64)>>,
    /// HardState and ConfState as raft sees them (staged).
    state: RefCell<RaftState>,
    /// The HardState of the last job made durable (what raft was told is persisted).
    durable_hs: RefCell<HardState>,
    /// One save of `raft.state` at a time (a checkpoint's and a job's could meet, and
    /// both write through the same temporary file).
    save_lock: Semaphore,
}

impl Meta {
    fn saved(&self) -> SavedState {
        let mut table = self.table.borrow().clone();
        if let Some(&(_, end)) = self.sealed.borrow().last() {
            table.truncate_before(end + 1);
        }
        let state = self.state.borrow();
        SavedState {
            hard_state: state.hard_state.clone(),
            conf_state: state.conf_state.clone(),
            table,
        }
    }

    async fn save(&self) -> LogResult<()> {
        self.save_with(None, None).await
    }

    /// Saves `raft.state`, with this HardState and ConfState instead of the durable
    /// ones when given (a job without a journal, whose states the file makes durable).
    async fn save_with(&self, hs: Option<&HardState>, cs: Option<&ConfState>) -> LogResult<()> {
        let _one_at_a_time = self
            .save_lock
            .acquire_permit(1)
            .await
            .map_err(std::io::Error::from)?;
        let mut saved = self.saved();
        if let Some(hs) = hs {
            saved.hard_state = hs.clone();
        }
        if let Some(cs) = cs {
            saved.conf_state = cs.clone();
        }
        Ok(saved.save(&self.dir).await?)
    }

    /// Writes the rows of the segment `[base, next)` being sealed: those after the last
    /// sealed segment's, up to the last entry whose records end before `next`.
    async fn seal(&self, base: Offset, next: Offset) -> LogResult<()> {
        let (sub, end) = {
            let t = self.table.borrow();
            let prev_end = self
                .sealed
                .borrow()
                .last()
                .map_or(t.first_index() - 1, |s| s.1);
            let last = t.rows().iter().rev().find_map(|r| match r.kind {
                EntryKind::Data { last_offset } if r.index > prev_end && last_offset < next => {
                    Some(r.index)
                }
                _ => None,
            });
            let Some(last) = last else {
                // Nothing of raft's in this segment (records written before the group).
                return Ok(());
            };
            let mut sub = t.clone();
            sub.truncate_before(prev_end + 1);
            sub.truncate_from(last + 1);
            (sub, last)
        };
        let path = segment_path(&self.dir, base, RAFT_INDEX_SUFFIX);
        crate::io::small_file::write_durably(&path, &sub.to_bytes()).await?;
        self.sealed.borrow_mut().push((base, end));
        Ok(())
    }
}

impl RaftCheckpoint for Meta {
    fn save(&self) -> Pin<Box<dyn Future<Output = LogResult<()>> + '_>> {
        Box::pin(Meta::save(self))
    }

    fn sealed(
        &self,
        base: Offset,
        next: Offset,
    ) -> Pin<Box<dyn Future<Output = LogResult<()>> + '_>> {
        Box::pin(self.seal(base, next))
    }
}

/// A read raft asked for and memory could not answer.
struct Miss {
    context: GetEntriesContext,
    low: u64,
    high: u64,
}

/// A raft group's log and state over one partition log.
pub struct RaftLog {
    log: Rc<Log>,
    meta: Rc<Meta>,
    /// Recent data entries as stamped (raft index, bytes): the tail cache only holds
    /// batches until they are written, and raft reads entries synchronously.
    recent: RefCell<VecDeque<(u64, Bytes)>>,
    recent_bytes: Cell<usize>,
    applied: Cell<u64>,
    /// Entries read from disk for raft, until it has taken them.
    fetched: RefCell<BTreeMap<u64, Bytes>>,
    misses: RefCell<Vec<Miss>>,
    /// Idempotent producers, as the log and the leader's proposals have them.
    producers: RefCell<RaftProducers>,
    /// Where the log was last cut (compaction) or started over (an installed
    /// snapshot): what a replica behind the log's start is sent.
    point: RefCell<Option<SnapshotPoint>>,
    /// The state kept beside the log, for groups that have one (the controller).
    state: Option<Rc<dyn SnapshotState>>,
}

/// The entry type of a raft-only entry, as the first byte of its table payload.
fn entry_type_byte(t: EntryType) -> u8 {
    t as u8
}

fn entry_type_of(b: u8) -> EntryType {
    match b {
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    }
}

/// A term as the partition leader epoch stamped in batches.
fn epoch_of(term: u64) -> i32 {
    i32::try_from(term).unwrap_or(i32::MAX)
}

impl RaftLog {
    /// Opens the raft group over `log`: recovers its state when it has one, or starts a
    /// new group of `voters` whose entries begin after what the log already holds.
    /// `state` is the state a group keeps beside its log, if it has one (snapshots
    /// carry it).
    pub async fn open(
        log: Rc<Log>,
        recovered: Recovered,
        voters: Vec<u64>,
        state: Option<Rc<dyn SnapshotState>>,
    ) -> Result<RaftLog, RaftLogError> {
        let dir = log.dir().to_path_buf();
        let records = log.take_raft_records();
        let point = SnapshotPoint::load(&dir).await?;
        if let Some(p) = &point {
            if log.log_start_offset() < p.start_offset {
                // A compaction was cut short: its segments go now, before their tables
                // are read.
                log.truncate_prefix(p.start_offset).await?;
            }
        }
        let saved = match SavedState::load(&dir).await? {
            Some(saved) => saved,
            None => {
                if !records.is_empty() {
                    warn!(dir = %dir.display(), count = records.len(), "raft records without a state file (a group created but never saved) dropped");
                }
                let fresh = SavedState {
                    hard_state: HardState::default(),
                    conf_state: ConfState {
                        voters,
                        ..ConfState::default()
                    },
                    table: RaftIndex::new(0, 0, log.next_offset()),
                };
                fresh.save(&dir).await?;
                // What the log held before the group is its committed past.
                let end = log.next_offset();
                let producers = RaftProducers::recover(&recovered, end, end);
                return Ok(RaftLog::with_state(
                    log,
                    fresh,
                    Vec::new(),
                    producers,
                    (point, state),
                ));
            }
        };
        let SavedState {
            mut hard_state,
            mut conf_state,
            table: tail,
        } = saved;
        let (mut table, mut sealed) = load_sealed(&log, tail).await?;
        // The saved state may be newer than the first records (a checkpoint saves what
        // is staged, and the file after the one it released holds records from before
        // the save): a row that no longer fits (after a gap, or older than the rows
        // around it) was replaced by a truncation the saved state already holds, and
        // is skipped; a HardState never goes back.
        for bytes in &records {
            match RaftRecord::decode(bytes) {
                Ok(RaftRecord::Row(row)) => {
                    let _replaced_since = table.set(row);
                }
                Ok(RaftRecord::HardState(hs)) => hard_state = newer_hard_state(hard_state, hs),
                Ok(RaftRecord::ConfState(cs)) => conf_state = cs,
                Ok(RaftRecord::Snapshot(p)) => {
                    if p.index + 1 >= table.first_index() {
                        table = RaftIndex::new(p.index, p.term, p.start_offset);
                        sealed.clear();
                        conf_state = p.conf_state;
                    }
                }
                Err(e) => {
                    // Records are CRC-checked by the journal: this is a bug or damage
                    // the check missed. What came before still stands.
                    warn!(dir = %dir.display(), error = %e, "undecodable raft record; replay stops");
                    break;
                }
            }
        }
        let mut recovered = recovered;
        if let Some(p) = &point {
            let prior = table.first_index() - 1;
            if p.index > prior && table.term(p.index) == Some(p.term) {
                // A compaction whose rows the tables still held.
                table.truncate_before(p.index + 1);
                sealed.retain(|&(_, end)| end > p.index);
            } else if p.index > prior {
                // An install cut short before its journal record or state file: finish it.
                warn!(dir = %dir.display(), index = p.index, "finishing the install of a leader's snapshot");
                table = RaftIndex::new(p.index, p.term, p.start_offset);
                sealed.clear();
                conf_state = p.conf_state.clone();
            }
        }
        // Where the table's records start: at the snapshot's offset when it starts at
        // the snapshot's entry.
        let start = table.end_offset_at(table.first_index() - 1);
        let at_point = point
            .as_ref()
            .is_some_and(|p| p.index == table.first_index() - 1);
        if start > log.next_offset() || (at_point && log.log_start_offset() > start) {
            // The log does not hold where the table starts: an install stopped before
            // its log started over (a checkpoint may also have saved the install's
            // staged table: checkpoints save the state as staged). It starts over now.
            warn!(dir = %dir.display(), start, log_end = log.next_offset(), "the raft table starts where the log holds nothing (an install cut short): the log starts over there");
            log.reset_to(start, Vec::new()).await?;
            recovered = Recovered {
                snapshot_offset: start,
                ..Recovered::default()
            };
        }
        let recovered = reconcile(&log, &mut table).await?.unwrap_or(recovered);
        let last = table.last_index();
        if hard_state.commit > last {
            warn!(dir = %dir.display(), commit = hard_state.commit, last, "commit index past the last entry kept (its entries were never persisted here); capped");
            hard_state.commit = last;
        }
        hard_state.commit = hard_state.commit.max(table.first_index() - 1);
        sealed.retain(|&(_, end)| end <= last);
        let producers = RaftProducers::recover(
            &recovered,
            table.end_offset_at(hard_state.commit),
            log.next_offset(),
        );
        let snapshot_state = state;
        let state = SavedState {
            hard_state,
            conf_state,
            table,
        };
        let raft_log = RaftLog::with_state(log, state, sealed, producers, (point, snapshot_state));
        // The journal's old files go once every log has opened: what they held of this
        // group must be in the state file first.
        raft_log.meta.save().await?;
        raft_log.load_unapplied().await?;
        Ok(raft_log)
    }

    /// Reads into memory the entries after the commit index: raft reads them
    /// synchronously to apply them once they commit.
    async fn load_unapplied(&self) -> Result<(), RaftLogError> {
        let (from, to) = {
            let t = self.meta.table.borrow();
            (self.applied.get() + 1, t.last_index())
        };
        for index in from..=to {
            let located = self.meta.table.borrow().locate(index);
            if let Some(Located::Records { first, last }) = located {
                let data = self.read_entry(first, last).await?;
                self.recent_bytes.set(self.recent_bytes.get() + data.len());
                self.recent.borrow_mut().push_back((index, data));
            }
        }
        Ok(())
    }

    fn with_state(
        log: Rc<Log>,
        saved: SavedState,
        sealed: Vec<(Offset, u64)>,
        producers: RaftProducers,
        (point, state): (Option<SnapshotPoint>, Option<Rc<dyn SnapshotState>>),
    ) -> RaftLog {
        let commit = saved.hard_state.commit;
        let meta = Rc::new(Meta {
            dir: log.dir().to_path_buf(),
            table: RefCell::new(saved.table),
            sealed: RefCell::new(sealed),
            state: RefCell::new(RaftState {
                hard_state: saved.hard_state.clone(),
                conf_state: saved.conf_state.clone(),
            }),
            durable_hs: RefCell::new(saved.hard_state),
            save_lock: Semaphore::new(1),
        });
        let hook: Rc<dyn RaftCheckpoint> = meta.clone();
        log.set_raft_checkpoint(Rc::downgrade(&hook) as Weak<dyn RaftCheckpoint>);
        RaftLog {
            log,
            meta,
            recent: RefCell::new(VecDeque::new()),
            recent_bytes: Cell::new(0),
            applied: Cell::new(commit),
            fetched: RefCell::new(BTreeMap::new()),
            misses: RefCell::new(Vec::new()),
            producers: RefCell::new(producers),
            point: RefCell::new(point),
            state,
        }
    }

    /// The index raft may start applying after: the recovered commit index (the log is
    /// the state machine, so what was committed is applied). Give it to raft's
    /// `Config::applied`.
    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// Applies committed `entries` (in order, after the last applied): the log is the
    /// state machine, so this only moves the producers' committed state and lets older
    /// recent entries go.
    pub fn apply_committed(&self, entries: &[Entry]) {
        let Some(last) = entries.last() else {
            return;
        };
        let mut headers = Vec::new();
        for e in entries.iter().filter(|e| e.index > self.applied.get()) {
            if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                headers.extend(batch_headers(&e.data));
            }
        }
        let end = self.meta.table.borrow().end_offset_at(last.index);
        self.producers.borrow_mut().committed(&headers, end);
        self.applied.set(self.applied.get().max(last.index));
        self.trim_recent();
    }

    /// Checks a proposal's batches — whole, with valid checksums (every replica stamps
    /// them, and a batch that fails there stops the group) — and the idempotent
    /// producers' sequences: their headers, and whether they are new or a retry.
    pub fn admit(&self, batches: &[u8]) -> Result<(Vec<BatchHeader>, Admission), AdmitError> {
        let mut headers = Vec::new();
        let mut at = 0usize;
        while at < batches.len() {
            let h = check_batch(&batches[at..]).map_err(|e| AdmitError::Invalid(e.to_string()))?;
            at += h.size;
            headers.push(h);
        }
        let lenient = self.log.log_start_offset() > 0;
        let admission = self.producers.borrow().admit(&headers, lenient)?;
        Ok((headers, admission))
    }

    /// Records the leader's proposal of `headers` at raft `index` in `term`; returns
    /// the offset its first record will take.
    pub fn proposed(&self, index: u64, term: u64, headers: &[BatchHeader]) -> Offset {
        self.producers.borrow_mut().proposed(index, term, headers)
    }

    /// Closes the group's log cleanly: saves `raft.state`, then closes the log with a
    /// clean-shutdown marker holding the producer state as of its end, so the next open
    /// skips the scan — when everything in the log is committed; otherwise the log is
    /// only flushed, and the next open scans it (a marker's state counts as committed).
    /// No job of the group may be under way.
    pub async fn close(&self) -> Result<(), RaftLogError> {
        self.meta.save().await?;
        let snapshot = self.producer_snapshot(self.log.next_offset());
        if snapshot.is_empty() {
            self.log.flush().await?;
            return Ok(());
        }
        self.log.close(snapshot).await?;
        Ok(())
    }

    /// The headers of the recent entries after the last applied and before `index`.
    fn unapplied_headers_before(&self, index: u64) -> Vec<Vec<BatchHeader>> {
        let applied = self.applied.get();
        self.recent
            .borrow()
            .iter()
            .filter(|(i, _)| *i > applied && *i < index)
            .map(|(_, data)| batch_headers(data))
            .collect()
    }

    /// The producer snapshot for the log's end `end` (a roll or a clean close): empty
    /// unless everything up to `end` is committed (see `RaftProducers::snapshot_at`);
    /// the log then saves none.
    fn producer_snapshot(&self, end: Offset) -> Vec<u8> {
        self.producers.borrow().snapshot_at(end).unwrap_or_default()
    }

    fn trim_recent(&self) {
        let mut recent = self.recent.borrow_mut();
        while self.recent_bytes.get() > RECENT_BYTES {
            match recent.front() {
                Some((index, data)) if *index <= self.applied.get() => {
                    self.recent_bytes.set(self.recent_bytes.get() - data.len());
                    recent.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops recent entries from `index` on (a truncated suffix).
    fn forget_recent_from(&self, index: u64) {
        let mut recent = self.recent.borrow_mut();
        while recent.back().is_some_and(|(i, _)| *i >= index) {
            if let Some((_, data)) = recent.pop_back() {
                self.recent_bytes.set(self.recent_bytes.get() - data.len());
            }
        }
    }

    fn recent_entry(&self, index: u64) -> Option<Bytes> {
        let recent = self.recent.borrow();
        let at = recent.partition_point(|(i, _)| *i < index);
        recent
            .get(at)
            .filter(|(i, _)| *i == index)
            .map(|(_, d)| d.clone())
            .or_else(|| self.fetched.borrow().get(&index).cloned())
    }

    /// The partition log.
    pub fn log(&self) -> &Rc<Log> {
        &self.log
    }

    /// The raft-index table.
    pub fn table(&self) -> Ref<'_, RaftIndex> {
        self.meta.table.borrow()
    }

    /// The HardState last made durable.
    pub fn durable_hard_state(&self) -> HardState {
        self.meta.durable_hs.borrow().clone()
    }

    /// Takes a ready's entries and HardState: the table and the recent entries show them
    /// at once (a conflicting suffix replaced), and the returned writes make them
    /// durable. Data entries are stamped with the next offsets and their term as epoch.
    pub fn stage(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Persist, RaftLogError> {
        let mut job = Persist::default();
        let commit = self.meta.state.borrow().hard_state.commit;
        for e in entries {
            let mut table = self.meta.table.borrow_mut();
            if e.index <= table.last_index() {
                if e.index <= commit {
                    return Err(RaftLogError::CommittedTruncation {
                        index: e.index,
                        commit,
                    });
                }
                let before = table.next_offset();
                let cut = table.truncate_from(e.index);
                self.forget_recent_from(e.index);
                let kept = self.unapplied_headers_before(e.index);
                self.producers.borrow_mut().truncated(kept, cut);
                if cut < before {
                    // The cut deletes the tables of the segments it reaches: the state
                    // file must stop relying on them first.
                    let mut sealed = self.meta.sealed.borrow_mut();
                    let kept = sealed.partition_point(|&(_, end)| end < e.index);
                    if kept < sealed.len() {
                        sealed.truncate(kept);
                        job.ops.push(Op::SaveState);
                    }
                    job.ops.push(Op::Cut(cut));
                }
            }
            let kind = if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                let base = table.next_offset();
                let (data, headers) = stamp(e, base)?;
                self.producers
                    .borrow_mut()
                    .staged(e.index, e.term, &headers, || {
                        self.unapplied_headers_before(e.index)
                    });
                // One copy of the entry: the recent window and the log write share it.
                let data = data.freeze();
                let count: i64 = headers.iter().map(BatchHeader::offset_count).sum();
                self.recent_bytes.set(self.recent_bytes.get() + data.len());
                self.recent.borrow_mut().push_back((e.index, data.clone()));
                job.ops.push(Op::Batches {
                    base,
                    data,
                    headers,
                });
                EntryKind::Data {
                    last_offset: base + count - 1,
                }
            } else {
                let mut payload = Vec::with_capacity(1 + e.data.len());
                payload.push(entry_type_byte(e.entry_type));
                payload.extend_from_slice(&e.data);
                EntryKind::RaftOnly { payload }
            };
            let row = Row {
                index: e.index,
                term: e.term,
                kind,
            };
            job.ops
                .push(Op::Record(RaftRecord::Row(row.clone()).encode()));
            table.append(row)?;
        }
        self.trim_recent();
        job.must_sync = !entries.is_empty();
        if let Some(hs) = hard_state {
            let prev = self.meta.state.borrow().hard_state.clone();
            job.must_sync |= prev.term != hs.term || prev.vote != hs.vote;
            self.meta.state.borrow_mut().hard_state = hs.clone();
            job.ops
                .push(Op::Record(RaftRecord::HardState(hs.clone()).encode()));
            job.hard_state = Some(hs.clone());
        }
        Ok(job)
    }

    /// Takes a leader's snapshot (raft restored it: this replica's log does not hold its
    /// last entry): the table, producers and recent entries start over after it at once,
    /// and the returned job installs it — the snapshot's state, the snapshot file, the
    /// journal record, the log started over, empty, at its offset, and `raft.state`.
    /// Entries of the same ready are staged after it ([`Persist::then`]).
    pub fn stage_snapshot(&self, snapshot: &Snapshot) -> Result<Persist, RaftLogError> {
        let md = snapshot.get_metadata();
        let data = SnapshotData::decode(&snapshot.data)
            .map_err(|e| RaftLogError::Snapshot(format!("unreadable snapshot data: {e}")))?;
        let point = SnapshotPoint {
            index: md.index,
            term: md.term,
            conf_state: md.get_conf_state().clone(),
            start_offset: data.start_offset,
        };
        let commit = self.meta.state.borrow().hard_state.commit;
        if point.index < commit {
            return Err(RaftLogError::CommittedTruncation {
                index: point.index,
                commit,
            });
        }
        *self.meta.table.borrow_mut() = RaftIndex::new(point.index, point.term, point.start_offset);
        self.meta.sealed.borrow_mut().clear();
        self.recent.borrow_mut().clear();
        self.recent_bytes.set(0);
        self.fetched.borrow_mut().clear();
        self.misses.borrow_mut().clear();
        {
            let mut state = self.meta.state.borrow_mut();
            state.conf_state = point.conf_state.clone();
            state.hard_state.commit = point.index;
        }
        self.applied.set(point.index);
        let start = Recovered {
            snapshot: (!data.producers.is_empty()).then(|| data.producers.clone()),
            snapshot_offset: data.producers_end.max(point.start_offset),
            replay: Vec::new(),
        };
        *self.producers.borrow_mut() =
            RaftProducers::recover(&start, point.start_offset, point.start_offset);
        *self.point.borrow_mut() = Some(point.clone());
        Ok(Persist {
            conf_state: Some(point.conf_state.clone()),
            ops: vec![Op::Install {
                point,
                producers: data.producers,
                state: data.state,
            }],
            hard_state: None,
            must_sync: true,
        })
    }

    /// Drops the log's oldest sealed segments whose records all end before `target` and
    /// whose entries are all applied, and raft's entries with them (a replica behind the
    /// new start gets a snapshot). Only as far as the configuration at the cut is known:
    /// no configuration change may be applied after it (the snapshot must say the
    /// voters as of its entry). Returns the new log start when anything was cut.
    pub async fn compact(&self, target: Offset) -> Result<Option<Offset>, RaftLogError> {
        let applied = self.applied.get();
        let point = {
            let t = self.meta.table.borrow();
            let sealed = self.meta.sealed.borrow();
            let cut = sealed
                .iter()
                .map(|&(_, end)| end)
                .take_while(|&end| end <= applied && t.end_offset_at(end) <= target)
                .last();
            let Some(index) = cut else {
                return Ok(None);
            };
            let changed_after = t
                .rows()
                .iter()
                .any(|r| r.index > index && r.index <= applied && is_conf_change(&r.kind));
            let Some(term) = t.term(index) else {
                return Ok(None);
            };
            if changed_after {
                return Ok(None);
            }
            SnapshotPoint {
                index,
                term,
                conf_state: self.meta.state.borrow().conf_state.clone(),
                start_offset: t.end_offset_at(index),
            }
        };
        // The file first: a crash after it finishes the cut at the next open.
        point.save(&self.meta.dir).await?;
        let start = point.start_offset;
        let index = point.index;
        *self.point.borrow_mut() = Some(point);
        let (producers, _) = self.producers.borrow().committed_state();
        self.log.keep_snapshot_at(start, &producers).await?;
        self.log.truncate_prefix(start).await?;
        self.meta.table.borrow_mut().truncate_before(index + 1);
        self.meta
            .sealed
            .borrow_mut()
            .retain(|&(_, end)| end > index);
        Ok(Some(self.log.log_start_offset()))
    }

    /// Takes a new ConfState (after a configuration change was applied) into `job`,
    /// ahead of what it already writes: the change is committed (by a majority), so its
    /// result may be durable before the entry is here.
    pub fn stage_conf_state_into(&self, cs: ConfState, job: &mut Persist) {
        let staged = self.stage_conf_state(cs);
        let mut ops = staged.ops;
        ops.append(&mut job.ops);
        job.ops = ops;
        job.conf_state = staged.conf_state;
        job.must_sync = true;
    }

    /// Takes a new ConfState (after a configuration change was applied); the returned
    /// write makes it durable.
    pub fn stage_conf_state(&self, cs: ConfState) -> Persist {
        self.meta.state.borrow_mut().conf_state = cs.clone();
        Persist {
            ops: vec![Op::Record(RaftRecord::ConfState(cs.clone()).encode())],
            hard_state: None,
            conf_state: Some(cs),
            must_sync: true,
        }
    }

    /// Makes what [`RaftLog::stage`] took durable, in order. A group's jobs must run one
    /// after another; jobs of different groups may run together, and then share the
    /// journal's durable writes.
    pub async fn persist(&self, job: Persist) -> Result<(), RaftLogError> {
        let mut pending = Vec::new();
        // Every record's position is awaited, not just the last: the journal may have
        // moved to its next file between them, and one file's durability says nothing
        // of the other's.
        let mut records = Vec::new();
        let mut save_file = false;
        for op in job.ops {
            match op {
                Op::Install {
                    point,
                    producers,
                    state,
                } => self.install(point, producers, state).await?,
                Op::SaveState => self.meta.save().await?,
                Op::Cut(at) => {
                    if at < self.log.next_offset() {
                        self.log.truncate_suffix(at).await?;
                    }
                }
                Op::Batches {
                    base,
                    data,
                    headers,
                } => {
                    let log_end = self.log.next_offset();
                    if log_end != base {
                        return Err(RaftLogError::OutOfStep {
                            staged: base,
                            log_end,
                        });
                    }
                    let count: i64 = headers.iter().map(BatchHeader::offset_count).sum();
                    let slot = self
                        .log
                        .reserve(data.len() as u64, count, || self.producer_snapshot(base))
                        .await?;
                    pending.push(slot.write(data, &headers)?);
                }
                Op::Record(record) => match self.log.journal_raft(&record)? {
                    Some(pos) => records.push(pos),
                    None => save_file = true,
                },
            }
        }
        for p in pending {
            p.durable(&self.log).await?;
        }
        if job.must_sync {
            for pos in records {
                pos.durable().await?;
            }
        }
        if save_file {
            // Without a journal the state file is the record: saved with this job's
            // states before they count as durable.
            self.meta
                .save_with(job.hard_state.as_ref(), job.conf_state.as_ref())
                .await?;
        }
        if let Some(hs) = job.hard_state {
            *self.meta.durable_hs.borrow_mut() = hs;
        }
        Ok(())
    }

    /// The durable steps of an installed snapshot, each finished by recovery when a crash
    /// cuts the install short (see [`RaftLog::open`]).
    async fn install(
        &self,
        point: SnapshotPoint,
        producers: Vec<u8>,
        state: Vec<u8>,
    ) -> Result<(), RaftLogError> {
        if !state.is_empty() {
            super::raft_snapshot::save_state(&self.meta.dir, &state).await?;
        }
        point.save(&self.meta.dir).await?;
        if let Some(pos) = self
            .log
            .journal_raft(&RaftRecord::Snapshot(point.clone()).encode())?
        {
            pos.durable().await?;
        }
        self.log.reset_to(point.start_offset, producers).await?;
        self.meta.save().await?;
        // Only now may the journal forget this log's records from before: the batches
        // of the old log (a replay would put those past the offset back), and the rows
        // and states that `raft.state` now holds.
        self.log.forget().await?;
        warn!(dir = %self.meta.dir.display(), index = point.index, start_offset = point.start_offset, "installed a leader's snapshot: this replica's log starts over at its offset");
        Ok(())
    }

    /// True when raft asked for entries that must be read from disk.
    pub fn has_missing(&self) -> bool {
        !self.misses.borrow().is_empty()
    }

    /// Reads from disk the entries raft asked for and memory lacked; returns the
    /// contexts to hand to raft's `on_entries_fetched`, after which it reads them again
    /// (then call [`RaftLog::clear_fetched`]).
    /// Reads about `budget` bytes at most, and stops once `deadline` has passed (one
    /// entry past either at worst; at least one entry). Every context is returned, read
    /// for or not: raft asks again for what it still lacks, from where its follower is
    /// now. Keeping the unread ones instead let stale asks pile up while a slow disk
    /// fed a follower, each round reading entries the follower already had. Returns the
    /// bytes read too.
    pub async fn fetch_missing(
        &self,
        budget: usize,
        deadline: std::time::Instant,
    ) -> Result<(Vec<GetEntriesContext>, usize), RaftLogError> {
        let misses = std::mem::take(&mut *self.misses.borrow_mut());
        let mut contexts = Vec::with_capacity(misses.len());
        let mut total = 0usize;
        let spent = |total: usize| total >= budget || std::time::Instant::now() >= deadline;
        for miss in misses {
            let mut bytes = 0usize;
            for index in miss.low..miss.high {
                if bytes >= FETCH_BYTES || (total > 0 && spent(total)) {
                    break;
                }
                let located = self.meta.table.borrow().locate(index);
                let Some(Located::Records { first, last }) = located else {
                    continue;
                };
                if self.recent_entry(index).is_some() {
                    continue;
                }
                let data = self.read_entry(first, last).await?;
                bytes += data.len();
                total += data.len();
                self.fetched.borrow_mut().insert(index, data);
            }
            contexts.push(miss.context);
        }
        Ok((contexts, total))
    }

    /// Drops what [`RaftLog::fetch_missing`] read, once raft has taken it.
    pub fn clear_fetched(&self) {
        self.fetched.borrow_mut().clear();
    }

    /// The batches of records `first..=last`, from the log.
    async fn read_entry(&self, first: Offset, last: Offset) -> Result<Bytes, RaftLogError> {
        let mut out = BytesMut::new();
        let mut from = first;
        while from <= last {
            let read = self.log.read(from, FETCH_BYTES, last + 1).await?;
            if read.batches.is_empty() {
                return Err(RaftLogError::Log(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start: read.log_start_offset,
                    log_end: read.high_watermark,
                }));
            }
            for b in read.batches {
                let h =
                    check_batch(&b).map_err(|source| RaftLogError::Batch { index: 0, source })?;
                if h.last_offset() < from {
                    continue;
                }
                if h.base_offset > last {
                    break;
                }
                from = h.last_offset() + 1;
                out.extend_from_slice(&b);
            }
        }
        Ok(out.freeze())
    }

    fn entry_at(&self, t: &RaftIndex, index: u64) -> Option<Entry> {
        let term = t.term(index)?;
        let (entry_type, data) = match t.locate(index)? {
            Located::RaftOnly(payload) => match payload.split_first() {
                Some((&ty, rest)) => (entry_type_of(ty), Bytes::copy_from_slice(rest)),
                None => (EntryType::EntryNormal, Bytes::new()),
            },
            Located::Records { first, last } => {
                let data = match self.recent_entry(index) {
                    Some(data) => data,
                    None => {
                        let batches = self.log.read_cached(first, last + 1, usize::MAX)?;
                        let mut data = BytesMut::new();
                        for b in batches {
                            data.extend_from_slice(&b);
                        }
                        data.freeze()
                    }
                };
                (EntryType::EntryNormal, data)
            }
        };
        Some(Entry {
            entry_type,
            term,
            index,
            data,
            ..Entry::default()
        })
    }
}

/// True for the row of a configuration change.
fn is_conf_change(kind: &EntryKind) -> bool {
    match kind {
        EntryKind::RaftOnly { payload } => payload.first().is_some_and(|&b| {
            matches!(
                entry_type_of(b),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2
            )
        }),
        EntryKind::Data { .. } => false,
    }
}

/// The later of two HardStates: terms never go back, a vote once cast in a term stays,
/// and the commit index only grows.
fn newer_hard_state(current: HardState, record: HardState) -> HardState {
    match record.term.cmp(&current.term) {
        std::cmp::Ordering::Greater => record,
        std::cmp::Ordering::Less => current,
        std::cmp::Ordering::Equal => HardState {
            vote: if current.vote != 0 {
                current.vote
            } else {
                record.vote
            },
            commit: current.commit.max(record.commit),
            ..current
        },
    }
}

/// Stamps a data entry's batches with offsets from `base` and the entry's term.
fn stamp(e: &Entry, base: Offset) -> Result<(BytesMut, Vec<BatchHeader>), RaftLogError> {
    let mut data = BytesMut::from(&e.data[..]);
    let epoch = epoch_of(e.term);
    let mut next = base;
    let mut headers = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let mut h = check_batch(&data[at..]).map_err(|source| RaftLogError::Batch {
            index: e.index,
            source,
        })?;
        set_offset_and_epoch(&mut data[at..], next, epoch);
        h.base_offset = next;
        h.partition_leader_epoch = epoch;
        next += h.offset_count();
        at += h.size;
        headers.push(h);
    }
    Ok((data, headers))
}

/// The table from the sealed segments' `.raftindex` files (oldest first, while they
/// continue each other) followed by `tail`, the rows `raft.state` holds; and the sealed
/// segments' coverage.
async fn load_sealed(
    log: &Log,
    tail: RaftIndex,
) -> Result<(RaftIndex, Vec<(Offset, u64)>), RaftLogError> {
    let dir = log.dir();
    let bases = log.segment_bases();
    let mut acc: Option<RaftIndex> = None;
    let mut sealed = Vec::new();
    for &base in &bases[..bases.len().saturating_sub(1)] {
        let path = segment_path(dir, base, RAFT_INDEX_SUFFIX);
        let Some(bytes) = crate::io::small_file::read_all(&path).await? else {
            continue;
        };
        let sub = match RaftIndex::from_bytes(&bytes) {
            Ok(sub) => sub,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "damaged raft index; the tables after it are not used");
                break;
            }
        };
        let joined = match acc.as_mut() {
            None => {
                acc = Some(sub.clone());
                true
            }
            // A later segment's table may start inside an earlier one's (after a
            // restart saved rows that a seal had covered): files are true for their
            // rows (a truncation that reaches a segment deletes its file), so the later
            // one's rows are set over the earlier ones'.
            Some(a)
                if sub.first_index() <= a.last_index() + 1
                    && sub.first_index() >= a.first_index() =>
            {
                a.truncate_from(sub.first_index());
                sub.rows().iter().all(|r| a.append(r.clone()).is_ok())
            }
            Some(_) => false,
        };
        if !joined {
            warn!(file = %path.display(), "raft index does not continue the one before it; the tables from it on are not used");
            break;
        }
        sealed.push((base, sub.last_index()));
    }
    let Some(mut table) = acc else {
        return Ok((tail, Vec::new()));
    };
    let prior = tail.first_index() - 1;
    if prior + 1 < table.first_index() {
        // The state file reaches further back than every sealed table: it alone counts.
        return Ok((tail, Vec::new()));
    }
    if prior > table.last_index() {
        return Err(RaftLogError::Io(std::io::Error::other(format!(
            "{}: raft.state starts after raft index {prior} but the sealed segments' tables end at {}",
            dir.display(),
            table.last_index()
        ))));
    }
    table.truncate_from(prior + 1);
    for r in tail.rows() {
        table.append(r.clone())?;
    }
    Ok((table, sealed))
}

/// Makes the table and the log agree after a restart: rows go from the first data row
/// the log does not hold at its term, and batches past the table's last row go.
async fn reconcile(log: &Log, table: &mut RaftIndex) -> Result<Option<Recovered>, RaftLogError> {
    let log_end = log.next_offset();
    let bad = table.rows().iter().find(|r| match r.kind {
        EntryKind::Data { last_offset } => {
            last_offset >= log_end || log.epoch_at(last_offset) != Some(epoch_of(r.term))
        }
        EntryKind::RaftOnly { .. } => false,
    });
    if let Some(row) = bad {
        let index = row.index;
        warn!(dir = %log.dir().display(), index, "raft entries whose batches were never durable dropped");
        table.truncate_from(index);
    }
    let end = table.next_offset();
    if end < log_end && end >= log.log_start_offset() {
        warn!(dir = %log.dir().display(), from = end, to = log_end, "batches no raft entry names (never persisted) dropped");
        return Ok(Some(log.truncate_suffix(end).await?));
    }
    Ok(None)
}

/// The headers of the batches of one data entry (stamped, and checked when staged: the
/// checksums are not computed again).
fn batch_headers(data: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Ok(h) = parse_header(&data[at..]) {
        at += h.size;
        out.push(h);
        if at >= data.len() {
            break;
        }
    }
    out
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.meta.state.borrow().clone())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let t = self.meta.table.borrow();
        if low < t.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > t.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for index in low..high {
            let Some(e) = self.entry_at(&t, index) else {
                if !out.is_empty() {
                    // A shorter answer is allowed; the rest comes in a later append.
                    break;
                }
                if context.can_async() {
                    self.misses.borrow_mut().push(Miss { context, low, high });
                    return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
                }
                return Err(raft::Error::Store(StorageError::Unavailable));
            };
            size += e.data.len() as u64 + 16;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let t = self.meta.table.borrow();
        if idx + 1 < t.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        t.term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.meta.table.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.meta.table.borrow().last_index())
    }

    /// The last cut of the log (see [`RaftLog::compact`]), with the state beside the log
    /// as it is now (its position is at or past the cut, so the receiver skips the
    /// entries it covers).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let t = self.meta.table.borrow();
        let point = self.point.borrow();
        let Some(p) = point
            .as_ref()
            .filter(|p| p.index + 1 >= t.first_index() && p.index <= t.last_index())
            .filter(|p| p.index >= request_index)
        else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let (producers, producers_end) = self.producers.borrow().committed_state();
        let data = SnapshotData {
            start_offset: p.start_offset,
            producers,
            producers_end,
            state: self.state.as_ref().map(|s| s.take()).unwrap_or_default(),
        };
        let mut md = SnapshotMetadata {
            index: p.index,
            term: p.term,
            ..SnapshotMetadata::default()
        };
        let mut conf_state = p.conf_state.clone();
        let known = conf_state
            .voters
            .iter()
            .chain(&conf_state.learners)
            .chain(&conf_state.voters_outgoing)
            .any(|&id| id == to);
        if !known {
            // A replica added after the cut (a partition moving to it): raft-rs refuses
            // a snapshot whose configuration lacks the receiver, so it is named a
            // learner here. Adding it is idempotent, so the change that really added it,
            // which follows in the log, changes nothing when it applies there.
            conf_state.learners.push(to);
        }
        md.set_conf_state(conf_state);
        let mut snapshot = Snapshot {
            data: data.encode().into(),
            ..Snapshot::default()
        };
        snapshot.set_metadata(md);
        Ok(snapshot)
    }
}
