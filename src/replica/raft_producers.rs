//! Idempotent producers over a raft log: the producer state is part of the replicated
//! log (every replica derives it from the same batches), so exactly-once survives a
//! failover — the new leader knows every sequence its log holds.
//!
//! Three views of it, all in memory:
//! - `committed`: as of the last record of the commit index (advanced as entries apply);
//! - `head`: `committed` plus every entry after it that the raft-index table holds, plus
//!   the leader's own proposals not yet staged — what a new proposal is checked against;
//! - the proposals themselves, in order, with the offsets they will take.
//!
//! When the table's suffix is replaced (a deposed leader's entries, or proposals raft
//! dropped for a new leader's), `head` is rebuilt as `committed` plus the entries kept:
//! those after the commit index are always in memory (raft reads them to apply them), so
//! the rollback needs no disk read. At a restart both views are rebuilt from the log's
//! producer snapshot and the producer batches after it (`log::Recovered`).

use std::collections::VecDeque;

use crate::log::{Offset, Recovered};
use crate::protocol::record_batch::BatchHeader;

use super::producer_state::{ProducerBatch, ProducerError, ProducerStateTable, SequenceCheck};

/// What a leader does with a proposal's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New batches: propose them.
    Append,
    /// A producer's retry of batches already in the log (or proposed): answer with their
    /// offsets, `first` to `last`, once those are acknowledged.
    Duplicate {
        /// The original's first batch.
        first: ProducerBatch,
        /// The original's last batch.
        last: ProducerBatch,
    },
}

struct Proposed {
    index: u64,
    term: u64,
    /// The batches' headers, with the offsets they were given.
    headers: Vec<BatchHeader>,
}

/// A raft group's producer state. See the module docs.
#[derive(Default)]
pub struct RaftProducers {
    committed: ProducerStateTable,
    /// Offset after the last record `committed` covers.
    committed_end: Offset,
    head: ProducerStateTable,
    proposed: VecDeque<Proposed>,
    /// Offset the next proposal's first record will take.
    next_offset: Offset,
}

impl RaftProducers {
    /// The state at a restart: the log's snapshot and producer batches after it, those
    /// ending before `commit_end` committed, all of them in `head`; the log ends at
    /// `log_end`.
    /// (A snapshot holds only batches that were committed when it was written:
    /// [`RaftProducers::snapshot_at`].)
    pub fn recover(recovered: &Recovered, commit_end: Offset, log_end: Offset) -> RaftProducers {
        let base = recovered
            .snapshot
            .as_deref()
            .and_then(ProducerStateTable::from_bytes)
            .unwrap_or_default();
        let mut committed = base.clone();
        let mut head = base;
        let commit_end = commit_end.max(recovered.snapshot_offset);
        for h in &recovered.replay {
            if h.last_offset() < commit_end {
                committed.record(h, h.base_offset);
            }
            head.record(h, h.base_offset);
        }
        RaftProducers {
            committed,
            committed_end: commit_end,
            head,
            proposed: VecDeque::new(),
            next_offset: log_end,
        }
    }

    /// Checks a proposal's batches against `head`. `lenient` accepts an unknown
    /// producer's first batch at any sequence (its state may have gone with deleted
    /// segments).
    pub fn admit(&self, headers: &[BatchHeader], lenient: bool) -> Result<Admission, AdmitError> {
        let mut duplicates = Vec::new();
        for h in headers {
            match self.head.check(h, lenient)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(b) => duplicates.push(b),
            }
        }
        match (duplicates.first(), duplicates.last()) {
            (Some(&first), Some(&last)) if duplicates.len() == headers.len() => {
                Ok(Admission::Duplicate { first, last })
            }
            (Some(_), _) => Err(AdmitError::MixedRetry),
            _ => Ok(Admission::Append),
        }
    }

    /// Records the leader's proposal of `headers` at raft `index` in `term`: they take
    /// the next offsets. Returns the offset of the first record.
    pub fn proposed(&mut self, index: u64, term: u64, headers: &[BatchHeader]) -> Offset {
        let base = self.next_offset;
        let mut stamped = headers.to_vec();
        let mut next = base;
        for h in &mut stamped {
            h.base_offset = next;
            next += h.offset_count();
            self.head.record(h, h.base_offset);
        }
        self.next_offset = next;
        self.proposed.push_back(Proposed {
            index,
            term,
            headers: stamped,
        });
        base
    }

    /// A data entry staged at `index` in `term` with its stamped `headers`: the leader's
    /// own proposal (already in `head`) or another leader's entry. `kept` gives the
    /// staged entries after the commit index and before this one, should `head` have to
    /// be rebuilt (this replica's own proposals were replaced).
    pub fn staged(
        &mut self,
        index: u64,
        term: u64,
        headers: &[BatchHeader],
        kept: impl FnOnce() -> Vec<Vec<BatchHeader>>,
    ) {
        let own = self.proposed.front().is_some_and(|p| {
            p.index == index
                && p.term == term
                && p.headers.len() == headers.len()
                && p.headers
                    .iter()
                    .zip(headers)
                    .all(|(a, b)| a.base_offset == b.base_offset)
        });
        if own {
            self.proposed.pop_front();
            return;
        }
        if !self.proposed.is_empty() {
            self.rebuild_head(kept());
        }
        for h in headers {
            self.head.record(h, h.base_offset);
        }
        if let Some(h) = headers.last() {
            self.next_offset = self.next_offset.max(h.last_offset() + 1);
        }
    }

    /// The table's suffix was cut: `kept` are the staged entries after the commit index
    /// that remain (their headers, in order), and the log's records end at `end`.
    pub fn truncated(&mut self, kept: Vec<Vec<BatchHeader>>, end: Offset) {
        self.rebuild_head(kept);
        self.next_offset = end;
    }

    fn rebuild_head(&mut self, kept: Vec<Vec<BatchHeader>>) {
        self.proposed.clear();
        self.head = self.committed.clone();
        let mut next = self.committed_end;
        for headers in kept {
            for h in &headers {
                self.head.record(h, h.base_offset);
                next = h.last_offset() + 1;
            }
        }
        self.next_offset = next;
    }

    /// Entries up to one whose records end at `end` are committed: `headers` are theirs
    /// (after the last commit), in order.
    pub fn committed(&mut self, headers: &[BatchHeader], end: Offset) {
        for h in headers {
            self.committed.record(h, h.base_offset);
        }
        self.committed_end = self.committed_end.max(end);
    }

    /// The committed state, for a producer snapshot at `end` (a roll, or a clean
    /// close), when the commit point is exactly there; `None` otherwise. A snapshot may
    /// hold only committed batches: a restart counts everything in it as committed, and
    /// a batch that was not could be replaced later while its producer's retry would be
    /// taken for a duplicate of it. Without one, a restart replays from the snapshot
    /// before (or the log's start).
    pub fn snapshot_at(&self, end: Offset) -> Option<Vec<u8>> {
        (self.committed_end == end).then(|| self.committed.to_bytes())
    }

    /// The committed state and the offset after the last record it covers (sent with a
    /// snapshot: the receiver's log starts before that offset, and the batches it then
    /// takes up to there are already in the state).
    pub fn committed_state(&self) -> (Vec<u8>, Offset) {
        (self.committed.to_bytes(), self.committed_end)
    }

    /// Offset the next proposal will take.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }
}

/// Why a proposal's batches were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// A sequence or epoch problem of an idempotent producer.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// Some batches of the request are retries and some new.
    #[error("request mixes retried and new batches")]
    MixedRetry,
    /// The proposal is not whole, valid record batches.
    #[error("invalid record batch: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            size: 61,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
            records_count: records,
        }
    }

    #[test]
    fn a_retry_of_a_proposal_is_a_duplicate_with_its_offsets_and_a_gap_is_refused() {
        let mut p = RaftProducers::default();
        let h = [header(7, 0, 3)];
        assert_eq!(p.admit(&h, false), Ok(Admission::Append));
        assert_eq!(p.proposed(1, 1, &h), 0);
        match p.admit(&h, false) {
            Ok(Admission::Duplicate { first, last }) => {
                assert_eq!((first.base_offset, last.last_offset), (0, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(p.admit(&[header(7, 5, 1)], false).is_err());
        assert_eq!(p.proposed(2, 1, &[header(7, 3, 2)]), 3);
        assert_eq!(p.next_offset(), 5);
    }

    #[test]
    fn replaced_proposals_are_forgotten_and_the_new_leaders_entries_count() {
        let mut p = RaftProducers::default();
        p.proposed(1, 1, &[header(7, 0, 2)]);
        p.proposed(2, 1, &[header(7, 2, 2)]);
        // Entry 1 was staged as proposed; entry 2 is replaced by another leader's.
        let mut staged = header(7, 0, 2);
        staged.base_offset = 0;
        p.staged(1, 1, &[staged], Vec::new);
        let mut other = header(9, 0, 1);
        other.base_offset = 2;
        p.staged(2, 2, &[other], || vec![vec![staged]]);
        // Producer 7's second batch is gone: its retry is new again, at offset 3.
        assert_eq!(p.admit(&[header(7, 2, 2)], false), Ok(Admission::Append));
        assert_eq!(p.next_offset(), 3);
        assert!(matches!(
            p.admit(&[header(9, 0, 1)], false),
            Ok(Admission::Duplicate { .. })
        ));
    }

    #[test]
    fn a_truncation_rolls_head_back_to_the_commit_point_plus_what_is_kept() {
        let mut p = RaftProducers::default();
        let mut a = header(7, 0, 1);
        a.base_offset = 0;
        let mut b = header(7, 1, 1);
        b.base_offset = 1;
        p.staged(1, 1, &[a], Vec::new);
        p.staged(2, 1, &[b], Vec::new);
        p.committed(&[a], 1);
        p.truncated(Vec::new(), 1);
        assert_eq!(p.admit(&[header(7, 1, 1)], false), Ok(Admission::Append));
        assert_eq!(p.next_offset(), 1);
        assert_eq!(p.snapshot_at(1), Some(p.committed.to_bytes()));
        // Past the commit point the log holds batches that may yet be replaced.
        p.staged(3, 1, &[b], Vec::new);
        assert_eq!(p.snapshot_at(2), None);
    }
}
