//! raft-rs's `Storage` over a partition log: the raft-index table maps raft entries to
//! the log's batches (docs/architecture.md, "The partition log as a raft log"). Data
//! entries are stamped with their Kafka offsets and the entry's term as leader epoch when
//! they are persisted — on every replica alike, since each starts where the same prefix
//! of the log ends — and raft-only entries (a new leader's empty entry, configuration
//! changes) become rows of the table only, so Kafka offsets stay contiguous.
//!
//! Reads are synchronous, as raft-rs asks: recent entries are kept in memory (all that
//! are not yet applied, and up to 8 MiB more); an older entry is answered
//! `LogTemporarilyUnavailable` (when raft allows it) for the caller to fetch from disk
//! and retry (the fetch comes with the cluster data path, issue 17). This part keeps the table, HardState and ConfState in memory; making
//! them durable through the shard journal is the next step of issue 16.

use std::cell::{Cell, Ref, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::log::raft_index::{EntryKind, Located, RaftIndex, RaftIndexError, Row};
use crate::log::{Log, LogError, Offset};
use crate::protocol::record_batch::{check_batch, set_offset_and_epoch, BatchError};

/// Why entries could not be persisted.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The partition log failed.
    #[error(transparent)]
    Log(#[from] LogError),
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
}

/// Bytes of recent data entries a group keeps in memory beyond what it must (entries
/// not yet applied are always kept: raft reads them synchronously to apply them).
const RECENT_BYTES: usize = 8 << 20;

/// A raft group's log and state over one partition log.
pub struct RaftLog {
    log: Rc<Log>,
    table: RefCell<RaftIndex>,
    state: RefCell<RaftState>,
    /// Recent data entries as stamped (raft index, bytes): the tail cache only holds
    /// batches until they are written, and raft reads entries synchronously.
    recent: RefCell<VecDeque<(u64, Bytes)>>,
    recent_bytes: Cell<usize>,
    applied: Cell<u64>,
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

impl RaftLog {
    /// A new group whose voters are `voters`, its entries starting after what `log`
    /// already holds.
    pub fn new(log: Rc<Log>, voters: Vec<u64>) -> RaftLog {
        let table = RaftIndex::new(0, 0, log.next_offset());
        let state = RaftState {
            hard_state: HardState::default(),
            conf_state: ConfState {
                voters,
                ..ConfState::default()
            },
        };
        RaftLog {
            log,
            table: RefCell::new(table),
            state: RefCell::new(state),
            recent: RefCell::new(VecDeque::new()),
            recent_bytes: Cell::new(0),
            applied: Cell::new(0),
        }
    }

    /// Records that entries up to `index` are applied: older recent entries may go.
    pub fn set_applied(&self, index: u64) {
        self.applied.set(self.applied.get().max(index));
        self.trim_recent();
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
    }

    /// The partition log.
    pub fn log(&self) -> &Rc<Log> {
        &self.log
    }

    /// The raft-index table.
    pub fn table(&self) -> Ref<'_, RaftIndex> {
        self.table.borrow()
    }

    /// Records the HardState a ready carried.
    pub fn set_hard_state(&self, hs: HardState) {
        self.state.borrow_mut().hard_state = hs;
    }

    /// The offset after the last committed data entry: the partition's high watermark.
    pub fn committed_offset(&self) -> Offset {
        let commit = self.state.borrow().hard_state.commit;
        self.table.borrow().end_offset_at(commit)
    }

    /// Persists the entries of a ready, in order: an entry at an index the table already
    /// has replaces it and everything after it (raft only does this to uncommitted
    /// entries); data entries are stamped and appended durably, raft-only entries
    /// become rows of the table.
    pub async fn append(&self, entries: &[Entry]) -> Result<(), RaftLogError> {
        for e in entries {
            if e.index <= self.table.borrow().last_index() {
                self.forget_recent_from(e.index);
                let cut = self.table.borrow_mut().truncate_from(e.index);
                if cut < self.log.next_offset() {
                    self.log.truncate_suffix(cut).await?;
                }
            }
            let kind = if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                let last_offset = self.append_batches(e).await?;
                EntryKind::Data { last_offset }
            } else {
                let mut payload = Vec::with_capacity(1 + e.data.len());
                payload.push(entry_type_byte(e.entry_type));
                payload.extend_from_slice(&e.data);
                EntryKind::RaftOnly { payload }
            };
            self.table.borrow_mut().append(Row {
                index: e.index,
                term: e.term,
                kind,
            })?;
        }
        Ok(())
    }

    /// Stamps a data entry's batches with the next offsets and the entry's term, appends
    /// them durably, and returns the last offset.
    async fn append_batches(&self, e: &Entry) -> Result<Offset, RaftLogError> {
        let mut data = BytesMut::from(&e.data[..]);
        let epoch = i32::try_from(e.term).unwrap_or(i32::MAX);
        let base = self.log.next_offset();
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
        let slot = self
            .log
            .reserve(data.len() as u64, next - base, Vec::new)
            .await?;
        let stamped = data.clone().freeze();
        let pending = slot.write(data, &headers)?;
        drop(slot);
        pending.durable(&self.log).await?;
        self.recent_bytes
            .set(self.recent_bytes.get() + stamped.len());
        self.recent.borrow_mut().push_back((e.index, stamped));
        self.trim_recent();
        Ok(next - 1)
    }

    fn entry_at(&self, t: &RaftIndex, index: u64, can_async: bool) -> raft::Result<Entry> {
        let term = t
            .term(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        let (entry_type, data) = match t.locate(index) {
            Some(Located::RaftOnly(payload)) => match payload.split_first() {
                Some((&ty, rest)) => (entry_type_of(ty), Bytes::copy_from_slice(rest)),
                None => (EntryType::EntryNormal, Bytes::new()),
            },
            Some(Located::Records { .. }) if self.recent_entry(index).is_some() => (
                EntryType::EntryNormal,
                self.recent_entry(index).unwrap_or_default(),
            ),
            Some(Located::Records { first, last }) => {
                let Some(batches) = self.log.read_cached(first, last + 1, usize::MAX) else {
                    return Err(raft::Error::Store(if can_async {
                        StorageError::LogTemporarilyUnavailable
                    } else {
                        StorageError::Unavailable
                    }));
                };
                let mut data = BytesMut::new();
                for b in batches {
                    data.extend_from_slice(&b);
                }
                (EntryType::EntryNormal, data.freeze())
            }
            None => return Err(raft::Error::Store(StorageError::Unavailable)),
        };
        Ok(Entry {
            entry_type,
            term,
            index,
            data,
            ..Entry::default()
        })
    }
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.state.borrow().clone())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let t = self.table.borrow();
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
            let e = self.entry_at(&t, index, context.can_async())?;
            size += e.data.len() as u64 + 16;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let t = self.table.borrow();
        if idx + 1 < t.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        t.term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.table.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.table.borrow().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots (a replica behind the leader's log start) come with issue 18.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
