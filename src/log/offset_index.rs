//! Sparse offset index of one segment: offset -> byte position of a batch start.
//!
//! Format of `.index`, version 2: a file of [`crate::codec`] (magic `CDOI`, version u16,
//! then one checked payload) whose payload is the entries, 8 bytes each, big-endian as
//! Kafka's: `{ relative_offset: u32, position: u32 }*`, where relative_offset is the base
//! offset of the batch at `position` minus the segment's base offset. Entries are
//! strictly increasing in both fields. One entry is added every `index_interval_bytes`
//! of log.
//!
//! Version 1 (releases up to 617d542) is the entries alone, with no header or CRC; it
//! is still read, so the indexes of segments sealed by those releases stay in use.

use crate::codec::{self, magic, FileHeader, Reader, Writer};

/// Bytes per entry on disk.
pub const ENTRY_LEN: usize = 8;
/// The version this build writes.
pub const VERSION: u16 = 2;

/// In-memory sparse offset index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Adds an entry; ignored unless it is past the last one in both fields.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            if relative_offset <= o || position <= p {
                return;
            }
        }
        self.entries.push((relative_offset, position));
    }

    /// Position of the last indexed batch starting at or before `relative_offset`
    /// (0 when none is), from which a forward scan finds the batch holding it.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serializes in the on-disk format (the current version).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for &(o, p) in &self.entries {
            w.put_u32(o);
            w.put_u32(p);
        }
        codec::encode_checked_file(FileHeader::new(magic::OFFSET_INDEX, VERSION), &w.finish())
    }

    /// Parses an index file of either version, refusing one that cannot belong to a
    /// segment of `segment_len` bytes: damaged, of a newer version, wrong length, entries
    /// out of order or past the end.
    pub fn from_bytes(data: &[u8], segment_len: u64) -> Option<OffsetIndex> {
        let entries = if FileHeader::has_magic(data, magic::OFFSET_INDEX) {
            codec::decode_checked_file(data, magic::OFFSET_INDEX, VERSION..=VERSION)
                .ok()?
                .1
        } else {
            data
        };
        if !entries.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut r = Reader::new(entries);
        let mut index = OffsetIndex::default();
        while !r.is_empty() {
            let o = r.take_u32().ok()?;
            let p = r.take_u32().ok()?;
            if u64::from(p) >= segment_len {
                return None;
            }
            if let Some(&(lo, lp)) = index.entries.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_returns_last_entry_at_or_before() {
        let mut i = OffsetIndex::default();
        i.push(10, 4096);
        i.push(20, 8192);
        assert_eq!(i.lookup(5), 0);
        assert_eq!(i.lookup(10), 4096);
        assert_eq!(i.lookup(19), 4096);
        assert_eq!(i.lookup(1000), 8192);
    }

    #[test]
    fn refuses_unordered_or_out_of_bounds_files() {
        let mut i = OffsetIndex::default();
        i.push(10, 4096);
        i.push(20, 8192);
        let bytes = i.to_bytes();
        assert_eq!(OffsetIndex::from_bytes(&bytes, 10_000), Some(i.clone()));
        assert_eq!(OffsetIndex::from_bytes(&bytes, 8192), None);
        for n in 1..bytes.len() {
            assert_eq!(OffsetIndex::from_bytes(&bytes[..n], 10_000), None, "{n}");
        }
        let v1 = &[0, 0, 0, 10, 0, 0, 0x10, 0, 0, 0, 0, 20, 0, 0, 0x20, 0];
        assert_eq!(OffsetIndex::from_bytes(v1, 10_000), Some(i));
        assert_eq!(OffsetIndex::from_bytes(&v1[..7], 10_000), None);
        let mut swapped = v1[8..].to_vec();
        swapped.extend_from_slice(&v1[..8]);
        assert_eq!(OffsetIndex::from_bytes(&swapped, 10_000), None);
    }

    #[test]
    fn writes_a_versioned_file_and_reads_the_headerless_one_of_older_releases() {
        let mut i = OffsetIndex::default();
        i.push(3, 100);
        let bytes = i.to_bytes();
        assert!(bytes.starts_with(b"CDOI\x00\x02"));
        // Version 1: the bare entries, as releases up to 617d542 wrote them.
        assert_eq!(
            OffsetIndex::from_bytes(&[0, 0, 0, 3, 0, 0, 0, 100], 200),
            Some(i.clone())
        );
        assert_eq!(
            OffsetIndex::from_bytes(&[], 200),
            Some(OffsetIndex::default())
        );
        let mut newer = bytes.clone();
        newer[5] = 3;
        assert_eq!(OffsetIndex::from_bytes(&newer, 200), None);
    }
}
