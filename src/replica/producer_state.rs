//! Idempotent-producer state of one partition: per producer id, its epoch and the last
//! five batches' sequence ranges and offsets.
//!
//! Checked under the partition's append lock before offsets are assigned: a retried
//! batch (same producer, epoch and sequence range as one of the last five) is answered
//! with its original offsets and not written again; a gap in sequences is
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`; an older epoch is `INVALID_PRODUCER_EPOCH`.
//!
//! Snapshot format (`<base offset>.snapshot`, the state as of that offset; also the
//! replica state inside a clean-shutdown marker), version 2: a file of [`crate::codec`]
//! (magic `CDPS`, version u16, one checked payload) whose payload is `{ count: u32,
//! { producer_id: i64, epoch: i16, batches: u8, { first_seq: i32, last_seq: i32,
//! base_offset: i64, last_offset: i64 } * batches } * count }`. Version 1, written
//! before formats were versioned, is the same body without the header, followed by a
//! CRC32C of it; it is still read.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

use crate::codec::{self, magic, FileHeader, Reader, Writer};

use crate::log::Offset;
use crate::protocol::record_batch::BatchHeader;

/// Version of the snapshot format this build writes.
const VERSION: u16 = 2;

/// Batches remembered per producer for duplicate detection, as Kafka.
pub const REMEMBERED_BATCHES: usize = 5;

/// One appended batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProducerError {
    /// The batch's epoch is older than the producer's current one (a zombie producer).
    #[error("producer {producer_id} epoch {got} is older than current epoch {current}")]
    InvalidEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        got: i16,
        /// Current epoch.
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        /// Producer id.
        producer_id: i64,
        /// Sequence the next batch must start with.
        expected: i32,
        /// Sequence the batch starts with.
        got: i32,
    },
}

/// What to do with a checked batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// A new batch: append it.
    Append,
    /// A retry of a batch already in the log at these offsets.
    Duplicate(ProducerBatch),
}

/// Sequence after `seq`, wrapping as Kafka does.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

/// The idempotent-producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// Checks a batch against the producer's state. `lenient_unknown` accepts a first
    /// batch with a non-zero sequence from an unknown producer (its state may have gone
    /// with deleted segments).
    pub fn check(
        &self,
        h: &BatchHeader,
        lenient_unknown: bool,
    ) -> Result<SequenceCheck, ProducerError> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            if h.base_sequence == 0 || lenient_unknown {
                return Ok(SequenceCheck::Append);
            }
            return Err(ProducerError::OutOfOrder {
                producer_id: h.producer_id,
                expected: 0,
                got: h.base_sequence,
            });
        };
        if h.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: h.producer_id,
                got: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            if h.base_sequence != 0 {
                return Err(ProducerError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last = last_seq(h);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence != expected {
            return Err(ProducerError::OutOfOrder {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch appended at `base_offset` (its header may still carry the
    /// producer's offsets).
    pub fn record(&mut self, h: &BatchHeader, base_offset: Offset) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            });
        if entry
            .batches
            .back()
            .is_some_and(|b| b.last_offset >= base_offset)
        {
            // A batch the state already holds, or one before it: a replay over a state
            // taken further on (a leader's snapshot is newer than the log it starts).
            return;
        }
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(ProducerBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset,
            last_offset: base_offset + i64::from(h.last_offset_delta),
        });
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Serializes a snapshot (the current version).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_u32(self.producers.len() as u32);
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            w.put_i64(id);
            w.put_u16(e.epoch as u16);
            w.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                w.put_i32(b.first_seq);
                w.put_i32(b.last_seq);
                w.put_i64(b.base_offset);
                w.put_i64(b.last_offset);
            }
        }
        codec::encode_checked_file(
            FileHeader::new(magic::PRODUCER_SNAPSHOT, VERSION),
            &w.finish(),
        )
    }

    /// Parses a snapshot of either version; `None` if it is damaged or newer.
    pub fn from_bytes(data: &[u8]) -> Option<ProducerStateTable> {
        let body = if FileHeader::has_magic(data, magic::PRODUCER_SNAPSHOT) {
            codec::decode_checked_file(data, magic::PRODUCER_SNAPSHOT, VERSION..=VERSION)
                .ok()?
                .1
        } else {
            let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
            if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
                return None;
            }
            body
        };
        let mut r = Reader::new(body);
        let count = r.take_count(11).ok()?;
        let mut t = ProducerStateTable::default();
        for _ in 0..count {
            let id = r.take_i64().ok()?;
            let epoch = r.take_u16().ok()? as i16;
            let n = r.take_u8().ok()?;
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_seq: r.take_i32().ok()?,
                    last_seq: r.take_i32().ok()?,
                    base_offset: r.take_i64().ok()?,
                    last_offset: r.take_i64().ok()?,
                });
            }
            t.producers.insert(id, ProducerEntry { epoch, batches });
        }
        r.finish().ok()?;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            size: 100,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_out_of_order() {
        let mut t = ProducerStateTable::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(t.check(&a, false), Ok(SequenceCheck::Append));
        t.record(&a, 100);
        let b = header(7, 0, 3, 2);
        assert_eq!(t.check(&b, false), Ok(SequenceCheck::Append));
        t.record(&b, 103);
        // A retry of `a` is a duplicate with its original offsets.
        assert_eq!(
            t.check(&a, false),
            Ok(SequenceCheck::Duplicate(ProducerBatch {
                first_seq: 0,
                last_seq: 2,
                base_offset: 100,
                last_offset: 102
            }))
        );
        assert!(matches!(
            t.check(&header(7, 0, 9, 1), false),
            Err(ProducerError::OutOfOrder { expected: 5, .. })
        ));
        assert!(matches!(
            t.check(&header(7, -1, 5, 1), false),
            Err(ProducerError::InvalidEpoch { .. })
        ));
        // A new epoch starts again at sequence 0.
        assert_eq!(
            t.check(&header(7, 1, 0, 1), false),
            Ok(SequenceCheck::Append)
        );
        assert!(t.check(&header(7, 1, 4, 1), false).is_err());
        // Unknown producers start at 0 unless lenient.
        assert!(t.check(&header(8, 0, 4, 1), false).is_err());
        assert_eq!(
            t.check(&header(8, 0, 4, 1), true),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(&header(1, 0, i * 2, 2), i64::from(i) * 2);
        }
        t.record(&header(2, 3, 0, 1), 50);
        let bytes = t.to_bytes();
        assert_eq!(ProducerStateTable::from_bytes(&bytes), Some(t.clone()));
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        assert_eq!(ProducerStateTable::from_bytes(&bad), None);
        assert_eq!(ProducerStateTable::from_bytes(&bytes[..3]), None);
    }

    #[test]
    fn a_snapshot_of_the_unversioned_release_is_read() {
        // Version 1: count, one producer (id 9, epoch 3) with one batch, then a CRC.
        let mut old = Vec::new();
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend_from_slice(&9i64.to_be_bytes());
        old.extend_from_slice(&3i16.to_be_bytes());
        old.push(1);
        for v in [0i32, 4] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10i64, 14] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_be_bytes());
        let t = ProducerStateTable::from_bytes(&old).expect("version 1 snapshot");
        assert_eq!(t.len(), 1);
        let again = ProducerStateTable::from_bytes(&t.to_bytes()).expect("version 2");
        assert_eq!(again, t);
        assert!(t.to_bytes().starts_with(b"CDPS"));
    }
}
