//! The raft-index table of a partition log: raft numbers entries one by one, Kafka
//! numbers records, and a batch holds many records. Each raft entry is one row: its
//! index, its term, and either the last Kafka offset of the batches it carried (a data
//! entry: the batches of one append, in the segment) or, for an entry that only raft
//! needs — a new leader's empty entry, a configuration change — its payload, with no
//! offset at all. So Kafka offsets stay contiguous from the log start, as clients and
//! Kafka's tools assume of a topic without transactions (Redpanda first let such entries
//! take offsets and found clients "not prepared for" it, its issue #1184).
//!
//! The table is the one translation between the two numberings: `term(index)` and
//! `entries(lo, hi)` of raft's storage read it, and a follower truncating at a raft
//! index learns the Kafka offset to cut the segment at.
//!
//! Invariants (checked on every change, so a caller's bug is an error, not a silent
//! gap): indexes are consecutive from `first_index`; terms never decrease; each data
//! row's offsets start right after the previous data row's (or at `start_offset`).
//!
//! File (one per sealed segment, `<base>.raftindex`, version 1): a file of
//! [`crate::codec`] (magic `CRIX`) whose checked payload is `{ prior_index: u64,
//! prior_term: u64, start_offset: i64, count: u32, rows }`, a row being `{ index: u64,
//! term: u64, kind: u8, then last_offset: i64 (kind 0) or payload: bytes32 (kind 1) }`.

use crate::codec::{self, magic, CodecError, CodecResult, FileHeader, Reader, Writer};

use super::Offset;

const VERSION: u16 = 1;
const KIND_DATA: u8 = 0;
const KIND_RAFT_ONLY: u8 = 1;

/// What a raft entry holds, as the table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Kafka batches in the segment, ending at this offset.
    Data {
        /// The last offset of the entry's last record.
        last_offset: Offset,
    },
    /// An entry only raft reads (its payload; empty for a new leader's entry): no offset.
    RaftOnly {
        /// The entry's bytes (a configuration change, or nothing).
        payload: Vec<u8>,
    },
}

/// One row: a raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Raft index.
    pub index: u64,
    /// Raft term (the partition leader epoch of its batches).
    pub term: u64,
    /// What the entry holds.
    pub kind: EntryKind,
}

/// Why a change to the table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftIndexError {
    /// The row's index does not follow the last one.
    #[error("raft index {got} does not follow {last}")]
    NotConsecutive {
        /// Last index in the table (or the prior index).
        last: u64,
        /// Index given.
        got: u64,
    },
    /// The row's term is older than the last one.
    #[error("raft term {got} is older than {last}")]
    TermWentBack {
        /// Last term in the table.
        last: u64,
        /// Term given.
        got: u64,
    },
    /// A data row's offsets do not start right after the previous data.
    #[error("entry ends at offset {last_offset}, but the log's next offset is {next}")]
    OffsetsNotContiguous {
        /// The log's next offset.
        next: Offset,
        /// The row's last offset.
        last_offset: Offset,
    },
}

/// Where a raft entry's records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Records `first..=last` of the segment.
    Records {
        /// First offset of the entry.
        first: Offset,
        /// Last offset of the entry.
        last: Offset,
    },
    /// A raft-only entry's payload.
    RaftOnly(Vec<u8>),
}

/// The raft-index table. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftIndex {
    /// Index and term of the entry before the first row (raft's compaction point).
    prior_index: u64,
    prior_term: u64,
    /// Kafka offset the first data row starts at.
    start_offset: Offset,
    rows: Vec<Row>,
}

impl RaftIndex {
    /// An empty table after the entry (`prior_index`, `prior_term`), whose first data
    /// entry starts at `start_offset`.
    pub fn new(prior_index: u64, prior_term: u64, start_offset: Offset) -> RaftIndex {
        RaftIndex {
            prior_index,
            prior_term,
            start_offset,
            rows: Vec::new(),
        }
    }

    /// First index in the table (raft's `first_index`).
    pub fn first_index(&self) -> u64 {
        self.prior_index + 1
    }

    /// Last index in the table, or the prior index when empty (raft's `last_index`).
    pub fn last_index(&self) -> u64 {
        self.prior_index + self.rows.len() as u64
    }

    /// The Kafka offset the next data entry starts at.
    pub fn next_offset(&self) -> Offset {
        self.offset_after(&self.rows)
    }

    /// The offset after the last data entry of `rows` (a prefix of the table's rows).
    fn offset_after(&self, rows: &[Row]) -> Offset {
        rows.iter()
            .rev()
            .find_map(|r| match r.kind {
                EntryKind::Data { last_offset } => Some(last_offset + 1),
                EntryKind::RaftOnly { .. } => None,
            })
            .unwrap_or(self.start_offset)
    }

    /// The offset after the data entries up to and including entry `index` (the high
    /// watermark when `index` is the commit index); the table's end past its last entry.
    pub fn end_offset_at(&self, index: u64) -> Offset {
        let upto = index
            .saturating_sub(self.prior_index)
            .min(self.rows.len() as u64);
        self.offset_after(&self.rows[..upto as usize])
    }

    /// The rows, oldest first.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    fn row(&self, index: u64) -> Option<&Row> {
        let i = index.checked_sub(self.first_index())?;
        self.rows.get(usize::try_from(i).ok()?)
    }

    /// The term of entry `index` (the prior entry's too); `None` outside the table.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.prior_index {
            return Some(self.prior_term);
        }
        self.row(index).map(|r| r.term)
    }

    /// Where entry `index` is: its records' offsets, or its raft-only payload.
    pub fn locate(&self, index: u64) -> Option<Located> {
        let i = usize::try_from(index.checked_sub(self.first_index())?).ok()?;
        let row = self.rows.get(i)?;
        Some(match &row.kind {
            EntryKind::RaftOnly { payload } => Located::RaftOnly(payload.clone()),
            EntryKind::Data { last_offset } => Located::Records {
                first: self.offset_after(&self.rows[..i]),
                last: *last_offset,
            },
        })
    }

    /// The index of the data entry that holds `offset`, if the table has it.
    pub fn index_of_offset(&self, offset: Offset) -> Option<u64> {
        if offset < self.start_offset {
            return None;
        }
        let data: Vec<(usize, Offset)> = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.kind {
                EntryKind::Data { last_offset } => Some((i, last_offset)),
                EntryKind::RaftOnly { .. } => None,
            })
            .collect();
        let at = data.partition_point(|(_, last)| *last < offset);
        data.get(at).map(|(i, _)| self.first_index() + *i as u64)
    }

    /// Adds the next entry.
    pub fn append(&mut self, row: Row) -> Result<(), RaftIndexError> {
        let last = self.last_index();
        if row.index != last + 1 {
            return Err(RaftIndexError::NotConsecutive {
                last,
                got: row.index,
            });
        }
        let last_term = self.term(last).unwrap_or(self.prior_term);
        if row.term < last_term {
            return Err(RaftIndexError::TermWentBack {
                last: last_term,
                got: row.term,
            });
        }
        if let EntryKind::Data { last_offset } = row.kind {
            let next = self.next_offset();
            if last_offset < next {
                return Err(RaftIndexError::OffsetsNotContiguous { next, last_offset });
            }
        }
        self.rows.push(row);
        Ok(())
    }

    /// Drops every entry from `index` on (a follower's conflicting suffix). Returns the
    /// Kafka offset the segment must be cut at: the next offset after what remains.
    pub fn truncate_from(&mut self, index: u64) -> Offset {
        let keep = index
            .saturating_sub(self.first_index())
            .min(self.rows.len() as u64);
        self.rows.truncate(keep as usize);
        self.next_offset()
    }

    /// Drops every entry before `index` (raft log compaction, retention): the entry
    /// before it becomes the prior one. Returns false (and changes nothing) when `index`
    /// is past the last entry + 1.
    pub fn truncate_before(&mut self, index: u64) -> bool {
        if index <= self.first_index() {
            return true;
        }
        if index > self.last_index() + 1 {
            return false;
        }
        let drop = (index - self.first_index()) as usize;
        let new_start = self.offset_after(&self.rows[..drop]);
        let prior = &self.rows[drop - 1];
        self.prior_index = prior.index;
        self.prior_term = prior.term;
        self.start_offset = new_start;
        self.rows.drain(..drop);
        true
    }

    /// Sets entry `row.index` to `row`, dropping every entry after it: what a journal
    /// record of the row says, so replaying records over a newer table converges to the
    /// same table (see `replica::raft_log`).
    /// Nothing changes when the row does not fit after the rows before it.
    pub fn set(&mut self, row: Row) -> Result<(), RaftIndexError> {
        let last = self.last_index();
        if row.index > last + 1 || row.index < self.first_index() {
            return Err(RaftIndexError::NotConsecutive {
                last,
                got: row.index,
            });
        }
        let before = row.index - 1;
        let term_before = self.term(before).unwrap_or(self.prior_term);
        if row.term < term_before {
            return Err(RaftIndexError::TermWentBack {
                last: term_before,
                got: row.term,
            });
        }
        if let EntryKind::Data { last_offset } = row.kind {
            let next = self.end_offset_at(before);
            if last_offset < next {
                return Err(RaftIndexError::OffsetsNotContiguous { next, last_offset });
            }
        }
        self.truncate_from(row.index);
        self.append(row)
    }

    /// The table's file bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = Writer::new();
        self.write_to(&mut p);
        codec::encode_checked_file(FileHeader::new(magic::RAFT_INDEX, VERSION), &p.finish())
    }

    /// Writes the table's fields (the payload of its file) into `p`.
    pub fn write_to(&self, p: &mut Writer) {
        p.put_u64(self.prior_index);
        p.put_u64(self.prior_term);
        p.put_i64(self.start_offset);
        p.put_u32(self.rows.len() as u32);
        for r in &self.rows {
            write_row(p, r);
        }
    }

    /// Reads a table written by [`RaftIndex::to_bytes`], checking its invariants.
    pub fn from_bytes(data: &[u8]) -> CodecResult<RaftIndex> {
        let (_, payload) = codec::decode_checked_file(data, magic::RAFT_INDEX, VERSION..=VERSION)?;
        let mut r = Reader::new(payload);
        let table = RaftIndex::read_from(&mut r)?;
        r.finish()?;
        Ok(table)
    }

    /// Reads the fields [`RaftIndex::write_to`] wrote, checking the invariants.
    pub fn read_from(r: &mut Reader<'_>) -> CodecResult<RaftIndex> {
        let mut table = RaftIndex::new(r.take_u64()?, r.take_u64()?, r.take_i64()?);
        // The smallest row is 17 bytes (a data row without its offset is impossible).
        let count = r.take_count(17)?;
        for _ in 0..count {
            table
                .append(read_row(r)?)
                .map_err(|_| CodecError::Invalid("raft index row"))?;
        }
        Ok(table)
    }
}

/// Writes one row: `{ index: u64, term: u64, kind: u8, last_offset: i64 | payload: bytes32 }`.
pub fn write_row(p: &mut Writer, r: &Row) {
    p.put_u64(r.index);
    p.put_u64(r.term);
    match &r.kind {
        EntryKind::Data { last_offset } => {
            p.put_u8(KIND_DATA);
            p.put_i64(*last_offset);
        }
        EntryKind::RaftOnly { payload } => {
            p.put_u8(KIND_RAFT_ONLY);
            p.put_bytes32(payload);
        }
    }
}

/// Reads one row written by [`write_row`].
pub fn read_row(r: &mut Reader<'_>) -> CodecResult<Row> {
    let index = r.take_u64()?;
    let term = r.take_u64()?;
    let kind = match r.take_u8()? {
        KIND_DATA => EntryKind::Data {
            last_offset: r.take_i64()?,
        },
        KIND_RAFT_ONLY => EntryKind::RaftOnly {
            payload: r.take_bytes32()?.to_vec(),
        },
        _ => return Err(CodecError::Invalid("raft entry kind")),
    };
    Ok(Row { index, term, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The model: every entry ever kept, as (index, term, records or payload).
    #[derive(Clone, Debug)]
    struct Model {
        prior: (u64, u64),
        start: Offset,
        entries: Vec<(u64, u64, Option<i64>, Vec<u8>)>,
    }

    impl Model {
        fn next_offset(&self) -> Offset {
            self.start + self.entries.iter().map(|e| e.2.unwrap_or(0)).sum::<i64>()
        }
        fn first_offset_of(&self, i: usize) -> Offset {
            self.start
                + self.entries[..i]
                    .iter()
                    .map(|e| e.2.unwrap_or(0))
                    .sum::<i64>()
        }
    }

    fn check(table: &RaftIndex, model: &Model, rng: &mut rand::rngs::StdRng) {
        assert_eq!(table.first_index(), model.prior.0 + 1);
        assert_eq!(
            table.last_index(),
            model.prior.0 + model.entries.len() as u64
        );
        assert_eq!(table.next_offset(), model.next_offset());
        assert_eq!(table.term(model.prior.0), Some(model.prior.1));
        for (i, (index, term, records, payload)) in model.entries.iter().enumerate() {
            assert_eq!(table.term(*index), Some(*term));
            let first = model.first_offset_of(i);
            let want = match records {
                Some(n) => Located::Records {
                    first,
                    last: first + n - 1,
                },
                None => Located::RaftOnly(payload.clone()),
            };
            assert_eq!(table.locate(*index), Some(want));
        }
        assert_eq!(table.term(table.last_index() + 1), None);
        // Every offset maps back to the entry that holds it.
        if model.next_offset() > model.start {
            let o = rng.gen_range(model.start..model.next_offset());
            let want = model
                .entries
                .iter()
                .enumerate()
                .find(|(i, e)| {
                    e.2.is_some_and(|n| {
                        let f = model.first_offset_of(*i);
                        (f..f + n).contains(&o)
                    })
                })
                .map(|(_, e)| e.0);
            assert_eq!(table.index_of_offset(o), want);
        }
        assert_eq!(&RaftIndex::from_bytes(&table.to_bytes()).unwrap(), table);
    }

    #[test]
    fn the_table_agrees_with_a_model_through_appends_elections_and_truncations() {
        for seed in 0..2_000u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let prior = (rng.gen_range(0..5u64), rng.gen_range(0..3u64));
            let start = rng.gen_range(0..100i64);
            let mut table = RaftIndex::new(prior.0, prior.1, start);
            let mut model = Model {
                prior,
                start,
                entries: Vec::new(),
            };
            let mut term = prior.1;
            for _ in 0..rng.gen_range(1..60) {
                match rng.gen_range(0..10) {
                    0..=5 => {
                        let n = rng.gen_range(1..20i64);
                        let index = table.last_index() + 1;
                        let last_offset = model.next_offset() + n - 1;
                        table
                            .append(Row {
                                index,
                                term,
                                kind: EntryKind::Data { last_offset },
                            })
                            .unwrap();
                        model.entries.push((index, term, Some(n), Vec::new()));
                    }
                    6 | 7 => {
                        // An election (a new term starts with an empty raft-only entry)
                        // or a configuration change (a raft-only entry with a payload).
                        let payload: Vec<u8> = if rng.gen_bool(0.5) {
                            term += 1;
                            Vec::new()
                        } else {
                            (0..rng.gen_range(1..8)).map(|_| rng.gen()).collect()
                        };
                        let index = table.last_index() + 1;
                        table
                            .append(Row {
                                index,
                                term,
                                kind: EntryKind::RaftOnly {
                                    payload: payload.clone(),
                                },
                            })
                            .unwrap();
                        model.entries.push((index, term, None, payload));
                    }
                    8 => {
                        let at = rng.gen_range(table.first_index()..=table.last_index() + 1);
                        let keep = (at - table.first_index()) as usize;
                        model.entries.truncate(keep);
                        let cut = table.truncate_from(at);
                        assert_eq!(
                            cut,
                            model.next_offset(),
                            "the segment is cut after what remains"
                        );
                    }
                    _ => {
                        let at = rng.gen_range(table.first_index()..=table.last_index() + 1);
                        let drop = (at - table.first_index()) as usize;
                        if drop > 0 {
                            let new_start = model.first_offset_of(drop);
                            let p = &model.entries[drop - 1];
                            model.prior = (p.0, p.1);
                            model.start = new_start;
                            model.entries.drain(..drop);
                        }
                        assert!(table.truncate_before(at));
                    }
                }
                check(&table, &model, &mut rng);
            }
        }
    }

    #[test]
    fn rows_that_break_the_invariants_are_refused() {
        let mut t = RaftIndex::new(0, 0, 0);
        let data = |index, term, last_offset| Row {
            index,
            term,
            kind: EntryKind::Data { last_offset },
        };
        t.append(data(1, 1, 9)).unwrap();
        assert_eq!(
            t.append(data(3, 1, 19)),
            Err(RaftIndexError::NotConsecutive { last: 1, got: 3 })
        );
        assert_eq!(
            t.append(data(2, 0, 19)),
            Err(RaftIndexError::TermWentBack { last: 1, got: 0 })
        );
        assert_eq!(
            t.append(data(2, 1, 5)),
            Err(RaftIndexError::OffsetsNotContiguous {
                next: 10,
                last_offset: 5
            })
        );
        assert!(!t.truncate_before(5));
        let mut damaged = t.to_bytes();
        let n = damaged.len();
        damaged[n - 1] ^= 1;
        assert!(RaftIndex::from_bytes(&damaged).is_err());
    }

    #[test]
    fn set_replaces_a_suffix_or_changes_nothing() {
        let data = |index, term, last_offset| Row {
            index,
            term,
            kind: EntryKind::Data { last_offset },
        };
        let mut t = RaftIndex::new(0, 0, 0);
        for (i, term) in [(1, 1), (2, 1), (3, 2), (4, 2)] {
            t.append(data(i, term, i as i64 * 10 - 1)).unwrap();
        }
        let before = t.clone();
        // After a gap, older than the row before it, or offsets that do not follow.
        assert!(t.set(data(6, 2, 59)).is_err());
        assert!(t.set(data(3, 0, 29)).is_err());
        assert!(t.set(data(3, 2, 15)).is_err());
        assert_eq!(t, before, "a refused row changes nothing");
        // A row that fits replaces its index and drops what came after it.
        t.set(data(3, 3, 24)).unwrap();
        assert_eq!(t.last_index(), 3);
        assert_eq!(t.term(3), Some(3));
        assert_eq!(t.next_offset(), 25);
        t.set(data(4, 3, 30)).unwrap();
        assert_eq!(t.last_index(), 4);
    }
}
