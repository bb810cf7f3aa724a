//! Time index of one segment: timestamp -> the offset from which to scan.
//!
//! Format of `.timeindex` (big-endian, 12 bytes an entry):
//! `{ timestamp: i64, relative_offset: u32 }*`. An entry `(t, r)` promises that every
//! batch before relative offset `r` in the segment has a max timestamp of at most `t`.
//! Timestamps strictly increase from entry to entry. When a segment is sealed a last
//! entry `(segment max timestamp, next offset)` is written, so the segment's max
//! timestamp is known without reading it.

/// Bytes per entry on disk.
pub const ENTRY_LEN: usize = 12;

/// In-memory time index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry; ignored unless its timestamp and offset are past the last one's.
    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        if let Some(&(t, o)) = self.entries.last() {
            if timestamp <= t || relative_offset <= o {
                return;
            }
        }
        self.entries.push((timestamp, relative_offset));
    }

    /// Relative offset from which a forward scan finds the first batch whose max
    /// timestamp is at least `timestamp`.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// The largest timestamp recorded, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    /// Serializes in the on-disk format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Parses a time index file, refusing a malformed or unordered one.
    pub fn from_bytes(data: &[u8]) -> Option<TimeIndex> {
        if !data.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut index = TimeIndex::default();
        for e in data.chunks_exact(ENTRY_LEN) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(t);
            let o = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if let Some(&(lt, lo)) = index.entries.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_starts_before_first_newer_batch() {
        let mut i = TimeIndex::default();
        i.push(100, 10);
        i.push(200, 20);
        assert_eq!(i.lookup(50), 0);
        assert_eq!(i.lookup(100), 0);
        assert_eq!(i.lookup(101), 10);
        assert_eq!(i.lookup(500), 20);
        assert_eq!(TimeIndex::from_bytes(&i.to_bytes()), Some(i));
    }
}
