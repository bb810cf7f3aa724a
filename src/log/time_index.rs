//! Time index of one segment: timestamp -> the offset from which to scan.
//!
//! Format of `.timeindex`, version 2: a file of [`crate::codec`] (magic `CDTI`, version
//! u16, then one checked payload) whose payload is the entries, 12 bytes each,
//! big-endian: `{ timestamp: i64, relative_offset: u32 }*`. An entry `(t, r)` promises
//! that every batch before relative offset `r` in the segment has a max timestamp of at
//! most `t`. Timestamps strictly increase from entry to entry. When a segment is sealed
//! a last entry `(segment max timestamp, next offset)` is written, so the segment's max
//! timestamp is known without reading it.
//!
//! Version 1 (releases up to 617d542) is the entries alone, with no header or CRC; it
//! is still read.

use crate::codec::{self, magic, FileHeader, Reader, Writer};

/// Bytes per entry on disk.
pub const ENTRY_LEN: usize = 12;
/// The version this build writes.
pub const VERSION: u16 = 2;

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

    /// Serializes in the on-disk format (the current version).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for &(t, o) in &self.entries {
            w.put_i64(t);
            w.put_u32(o);
        }
        codec::encode_checked_file(FileHeader::new(magic::TIME_INDEX, VERSION), &w.finish())
    }

    /// Parses a time index file of either version, refusing a damaged, newer, malformed
    /// or unordered one.
    pub fn from_bytes(data: &[u8]) -> Option<TimeIndex> {
        let entries = if FileHeader::has_magic(data, magic::TIME_INDEX) {
            codec::decode_checked_file(data, magic::TIME_INDEX, VERSION..=VERSION)
                .ok()?
                .1
        } else {
            data
        };
        if !entries.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut r = Reader::new(entries);
        let mut index = TimeIndex::default();
        while !r.is_empty() {
            let t = r.take_i64().ok()?;
            let o = r.take_u32().ok()?;
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

    #[test]
    fn writes_a_versioned_file_and_reads_the_headerless_one_of_older_releases() {
        let mut i = TimeIndex::default();
        i.push(1_700_000_000_000, 7);
        let bytes = i.to_bytes();
        assert!(bytes.starts_with(b"CDTI\x00\x02"));
        let mut v1 = 1_700_000_000_000i64.to_be_bytes().to_vec();
        v1.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(TimeIndex::from_bytes(&v1), Some(i));
        assert_eq!(TimeIndex::from_bytes(&v1[..11]), None);
        for n in 1..bytes.len() {
            assert_eq!(TimeIndex::from_bytes(&bytes[..n]), None, "{n}");
        }
    }
}
