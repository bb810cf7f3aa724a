//! File names of a partition directory.
//!
//! A partition directory holds, per segment, three files named by the segment's base
//! offset in 20 zero-padded digits, so that names sort in offset order:
//! `00000000000000000000.log`, `.index`, `.timeindex`, and the producer-state snapshot
//! `.snapshot` taken when the previous segment was sealed.

use std::path::{Path, PathBuf};

use super::Offset;

/// Extension of segment data files.
pub const LOG_SUFFIX: &str = "log";
/// Extension of sparse offset index files.
pub const INDEX_SUFFIX: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Extension of idempotent-producer state snapshots (state as of the base offset).
pub const SNAPSHOT_SUFFIX: &str = "snapshot";
/// Extension of a sealed segment's raft-index table (`log::raft_index`), written by the
/// raft group over the log when the segment is sealed.
pub const RAFT_INDEX_SUFFIX: &str = "raftindex";

/// Path of a segment file with the given extension.
pub fn segment_path(dir: &Path, base_offset: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Parses the base offset out of a segment data file name (`<20 digits>.log`).
pub fn parse_segment_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Offsets near i64::MAX cannot hold a segment; such a name is damage, not data.
    stem.parse()
        .ok()
        .filter(|&b: &Offset| (0..=i64::MAX / 2).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        let p = segment_path(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
    }
}
