//! Sparse offset index of one segment: offset -> byte position of a batch start.
//!
//! Format of `.index` (big-endian, 8 bytes an entry, as Kafka's):
//! `{ relative_offset: u32, position: u32 }*`, where relative_offset is the base offset
//! of the batch at `position` minus the segment's base offset. Entries are strictly
//! increasing in both fields. One entry is added every `index_interval_bytes` of log.

/// Bytes per entry on disk.
pub const ENTRY_LEN: usize = 8;

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

    /// Serializes in the on-disk format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parses an index file, refusing one that cannot belong to a segment of
    /// `segment_len` bytes: wrong length, entries out of order or past the end.
    pub fn from_bytes(data: &[u8], segment_len: u64) -> Option<OffsetIndex> {
        if !data.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for e in data.chunks_exact(ENTRY_LEN) {
            let o = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
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
        assert_eq!(OffsetIndex::from_bytes(&bytes, 10_000), Some(i));
        assert_eq!(OffsetIndex::from_bytes(&bytes, 8192), None);
        assert_eq!(OffsetIndex::from_bytes(&bytes[..7], 10_000), None);
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(OffsetIndex::from_bytes(&swapped, 10_000), None);
    }
}
