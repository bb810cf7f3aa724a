//! The clean-shutdown marker: what a clean close knew about the active segment, so that
//! the next open trusts it instead of scanning, plus the replica's state as of the end.
//!
//! Format, version 2: a file of [`crate::codec`] (magic `CCLN`, version u16, one checked
//! payload) whose payload is `{ active_base: i64, size: u64, next_offset: i64,
//! max_timestamp: i64, replica_state: bytes32 }`. A marker without the magic is version
//! 1, written by releases before formats were versioned: the same four fields, then the
//! producer snapshot, then a CRC32C of everything before it; it is read too, its
//! snapshot handed up as the replica state.

use std::path::Path;

use tracing::warn;

use crate::codec::{self, magic, FileHeader, Reader, Writer};

use super::error::LogResult;
use super::segment::CleanState;
use super::Offset;

/// File a clean shutdown leaves in a partition directory.
const FILE: &str = "clean-shutdown";
const VERSION: u16 = 2;

/// What a clean close recorded.
pub struct CleanMarker {
    /// Base offset of the active segment.
    pub active_base: Offset,
    /// The active segment's length, next offset and newest timestamp.
    pub state: CleanState,
    /// The replica's state as of the log end, opaque to the log.
    pub replica_state: Vec<u8>,
}

impl CleanMarker {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_i64(self.active_base);
        w.put_u64(self.state.size);
        w.put_i64(self.state.next_offset);
        w.put_i64(self.state.max_timestamp);
        w.put_bytes32(&self.replica_state);
        codec::encode_checked_file(FileHeader::new(magic::CLEAN_MARKER, VERSION), &w.finish())
    }

    fn from_bytes(b: &[u8]) -> Option<CleanMarker> {
        if FileHeader::has_magic(b, magic::CLEAN_MARKER) {
            let (_, payload) =
                codec::decode_checked_file(b, magic::CLEAN_MARKER, VERSION..=VERSION).ok()?;
            let mut r = Reader::new(payload);
            let marker = CleanMarker {
                active_base: r.take_i64().ok()?,
                state: CleanState {
                    size: r.take_u64().ok()?,
                    next_offset: r.take_i64().ok()?,
                    max_timestamp: r.take_i64().ok()?,
                },
                replica_state: r.take_bytes32().ok()?.to_vec(),
            };
            r.finish().ok()?;
            return Some(marker);
        }
        // Version 1: fixed fields, the producer snapshot, a CRC of all before it.
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader::new(body);
        Some(CleanMarker {
            active_base: r.take_i64().ok()?,
            state: CleanState {
                size: r.take_u64().ok()?,
                next_offset: r.take_i64().ok()?,
                max_timestamp: r.take_i64().ok()?,
            },
            replica_state: r.rest().to_vec(),
        })
    }
}

/// The marker in `dir`, if there is a readable one.
pub async fn read(dir: &Path) -> LogResult<Option<CleanMarker>> {
    let bytes = crate::io::small_file::read_all(&dir.join(FILE)).await?;
    Ok(match bytes {
        Some(b) => {
            let m = CleanMarker::from_bytes(&b);
            if m.is_none() {
                warn!(dir = %dir.display(), "ignoring damaged clean-shutdown marker; scanning");
            }
            m
        }
        None => None,
    })
}

/// Removes the marker once the log is open: from then on a crash must lead to a scan.
pub async fn remove(dir: &Path) -> LogResult<()> {
    if dir.join(FILE).exists() {
        crate::io::small_file::remove_if_exists(&dir.join(FILE)).await?;
        crate::io::small_file::sync_dir(dir).await?;
    }
    Ok(())
}

/// Writes the marker durably.
pub async fn write(dir: &Path, marker: &CleanMarker) -> LogResult<()> {
    crate::io::small_file::write_durably(&dir.join(FILE), &marker.to_bytes()).await?;
    crate::io::small_file::sync_dir(dir).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> CleanMarker {
        CleanMarker {
            active_base: 7,
            state: CleanState {
                size: 4096,
                next_offset: 42,
                max_timestamp: 1234,
            },
            replica_state: vec![1, 2, 3],
        }
    }

    #[test]
    fn marker_round_trips_and_refuses_damage() {
        let bytes = marker().to_bytes();
        let back = CleanMarker::from_bytes(&bytes).unwrap();
        assert_eq!((back.active_base, back.state.next_offset), (7, 42));
        assert_eq!(back.replica_state, vec![1, 2, 3]);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(CleanMarker::from_bytes(&bad).is_none());
        assert!(CleanMarker::from_bytes(&bytes[..5]).is_none());
    }

    #[test]
    fn marker_of_the_unversioned_release_is_read() {
        let m = marker();
        let mut old = Vec::new();
        old.extend_from_slice(&m.active_base.to_be_bytes());
        old.extend_from_slice(&m.state.size.to_be_bytes());
        old.extend_from_slice(&m.state.next_offset.to_be_bytes());
        old.extend_from_slice(&m.state.max_timestamp.to_be_bytes());
        old.extend_from_slice(&[9, 9]);
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_be_bytes());
        let back = CleanMarker::from_bytes(&old).unwrap();
        assert_eq!(back.state.size, 4096);
        assert_eq!(back.replica_state, vec![9, 9]);
    }
}
