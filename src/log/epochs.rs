//! The leader-epoch table: for each epoch, the first offset written in it. It answers
//! raft's `term(index)` and is Kafka's leader-epoch cache (OffsetForLeaderEpoch).
//!
//! File `leader-epoch.checkpoint`, version 1: a file of [`crate::codec`] (magic `CEPO`,
//! version u16, one checked payload) whose payload is `{ count: u32, { epoch: i32,
//! start_offset: i64 } * count }`. It is saved when it changes by a truncation, a roll or a close; an epoch
//! first seen by an append since then is found again on recovery from the active
//! segment's batches. A directory without the file (written before epochs were kept)
//! starts at epoch 0 from the log start, which is what those releases stamped.

use std::path::Path;

use tracing::warn;

use crate::codec::{self, magic, FileHeader, Reader, Writer};

use super::error::LogResult;
use super::Offset;

const FILE: &str = "leader-epoch.checkpoint";
const VERSION: u16 = 1;

/// Epochs and the offsets they start at, both increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochTable {
    entries: Vec<(i32, Offset)>,
}

impl EpochTable {
    /// Loads the table of the log in `dir`, which spans `[start, next)`; `scanned` holds
    /// the (epoch, base offset) of every batch a recovery scan read (the active
    /// segment's), so epochs begun since the last save are found again exactly.
    pub async fn open(
        dir: &Path,
        start: Offset,
        next: Offset,
        scanned: &[(i32, Offset)],
    ) -> LogResult<EpochTable> {
        let bytes = crate::io::small_file::read_all(&dir.join(FILE)).await?;
        let mut table = match bytes.as_deref().map(EpochTable::from_bytes) {
            Some(Some(t)) => t,
            Some(None) => {
                warn!(dir = %dir.display(), "ignoring damaged leader-epoch checkpoint");
                EpochTable::default()
            }
            None => EpochTable::default(),
        };
        table.truncate_from(next);
        table.truncate_before(start);
        if table.entries.is_empty() && next > start {
            let first = scanned.first().map_or(0, |&(e, _)| e).max(0);
            table.entries.push((first, start));
        }
        for &(epoch, base) in scanned {
            table.observe(epoch, base);
        }
        Ok(table)
    }

    /// Records that a batch of `epoch` starts at `offset`; a newer epoch begins there.
    pub fn observe(&mut self, epoch: i32, offset: Offset) {
        if self.last_epoch().is_none_or(|l| epoch > l) {
            self.entries.push((epoch, offset));
        }
    }

    /// The newest epoch.
    pub fn last_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// The epoch of the batch holding `offset`.
    pub fn epoch_at(&self, offset: Offset) -> Option<i32> {
        let i = self.entries.partition_point(|&(_, s)| s <= offset);
        i.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// The largest epoch ≤ `epoch` and the offset where the epoch after it starts
    /// (`log_end` for the newest); `None` when every epoch is newer.
    pub fn end_offset_for(&self, epoch: i32, log_end: Offset) -> Option<(i32, Offset)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        Some((found, end))
    }

    /// Forgets epochs that start at or after `offset` (a truncated suffix).
    pub fn truncate_from(&mut self, offset: Offset) {
        self.entries.retain(|&(_, s)| s < offset);
    }

    /// The log now starts at `offset`: the epoch holding it starts there.
    pub fn truncate_before(&mut self, offset: Offset) {
        let keep = self.entries.partition_point(|&(_, s)| s <= offset);
        if keep > 0 {
            self.entries.drain(..keep - 1);
            if let Some(first) = self.entries.first_mut() {
                first.1 = first.1.max(offset);
            }
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_u32(self.entries.len() as u32);
        for &(e, s) in &self.entries {
            w.put_i32(e);
            w.put_i64(s);
        }
        codec::encode_checked_file(FileHeader::new(magic::LEADER_EPOCHS, VERSION), &w.finish())
    }

    fn from_bytes(b: &[u8]) -> Option<EpochTable> {
        let (_, payload) =
            codec::decode_checked_file(b, magic::LEADER_EPOCHS, VERSION..=VERSION).ok()?;
        let mut r = Reader::new(payload);
        let count = r.take_count(12).ok()?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push((r.take_i32().ok()?, r.take_i64().ok()?));
        }
        r.finish().ok()?;
        Some(EpochTable { entries })
    }
}

/// Writes the table's bytes durably.
pub async fn save(dir: &Path, bytes: &[u8]) -> LogResult<()> {
    crate::io::small_file::write_durably(&dir.join(FILE), bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> EpochTable {
        let mut t = EpochTable::default();
        t.observe(0, 0);
        t.observe(0, 5);
        t.observe(2, 10);
        t.observe(5, 30);
        t
    }

    #[test]
    fn epoch_lookups_answer_raft_and_kafka() {
        let t = table();
        assert_eq!(t.epoch_at(0), Some(0));
        assert_eq!(t.epoch_at(9), Some(0));
        assert_eq!(t.epoch_at(10), Some(2));
        assert_eq!(t.epoch_at(99), Some(5));
        assert_eq!(t.end_offset_for(0, 40), Some((0, 10)));
        assert_eq!(t.end_offset_for(1, 40), Some((0, 10)));
        assert_eq!(t.end_offset_for(2, 40), Some((2, 30)));
        assert_eq!(t.end_offset_for(7, 40), Some((5, 40)));
        assert_eq!(t.end_offset_for(-1, 40), None);
    }

    #[test]
    fn truncations_keep_the_table_consistent() {
        let mut t = table();
        t.truncate_from(30);
        assert_eq!(t.last_epoch(), Some(2));
        t.truncate_before(12);
        assert_eq!(t.entries, vec![(2, 12)]);
        let back = EpochTable::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(back, t);
        let mut bad = t.to_bytes();
        bad[7] ^= 1;
        assert!(EpochTable::from_bytes(&bad).is_none());
    }

    /// The model: every batch of the log as (base offset, epoch), contiguous, and where
    /// the log ends.
    struct Model {
        batches: Vec<(Offset, i32)>,
        end: Offset,
    }

    impl Model {
        fn epoch_at(&self, o: Offset) -> Option<i32> {
            if o >= self.end {
                return self.batches.last().map(|b| b.1);
            }
            self.batches.iter().rev().find(|b| b.0 <= o).map(|b| b.1)
        }

        fn end_offset_for(&self, epoch: i32) -> Option<(i32, Offset)> {
            let found = self
                .batches
                .iter()
                .map(|b| b.1)
                .filter(|e| *e <= epoch)
                .max()?;
            let end = self
                .batches
                .iter()
                .find(|b| b.1 > found)
                .map_or(self.end, |b| b.0);
            Some((found, end))
        }
    }

    #[test]
    fn epoch_table_matches_a_model_through_appends_truncations_and_restarts() {
        use rand::{Rng, SeedableRng};
        for seed in 0..2000u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut model = Model {
                batches: Vec::new(),
                end: 0,
            };
            let mut t = EpochTable::default();
            let mut epoch = 0i32;
            for _ in 0..60 {
                match rng.gen_range(0..10) {
                    0..=5 => {
                        // An append: a batch of 1-5 records, sometimes in a new epoch.
                        if rng.gen_bool(0.2) {
                            epoch += rng.gen_range(1..3);
                        }
                        let n = rng.gen_range(1..6);
                        t.observe(epoch, model.end);
                        model.batches.push((model.end, epoch));
                        model.end += n;
                    }
                    6 if !model.batches.is_empty() => {
                        // A suffix truncation at a batch boundary.
                        let i = rng.gen_range(0..model.batches.len());
                        let at = model.batches[i].0;
                        model.batches.truncate(i);
                        model.end = at;
                        t.truncate_from(at);
                    }
                    7 if model.batches.len() > 1 => {
                        // Retention: the log starts at a later batch.
                        let i = rng.gen_range(1..model.batches.len());
                        let at = model.batches[i].0;
                        model.batches.drain(..i);
                        t.truncate_before(at);
                    }
                    _ => {
                        t = EpochTable::from_bytes(&t.to_bytes()).unwrap();
                    }
                }
                for o in model.batches.first().map_or(0, |b| b.0)..model.end {
                    assert_eq!(
                        t.epoch_at(o),
                        model.epoch_at(o),
                        "seed {seed}: epoch at {o}"
                    );
                }
                for e in -1..=epoch + 1 {
                    assert_eq!(
                        t.end_offset_for(e, model.end),
                        model.end_offset_for(e),
                        "seed {seed}: end offset for epoch {e}"
                    );
                }
            }
        }
    }
}
