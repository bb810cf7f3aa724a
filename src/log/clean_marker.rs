//! The clean-shutdown marker: what a clean close knew about the active segment, so that
//! the next open trusts it instead of scanning, plus the replica's state as of the end.
//!
//! Format (big-endian): `{ magic "CCLN", version: u16 = 1, active_base: i64, size: u64,
//! next_offset: i64, max_timestamp: i64, state_len: u32, state, crc32c: u32 of
//! everything before it }`. A marker without the magic was written by releases before
//! formats were versioned: the same fixed fields, then the producer snapshot, then the
//! CRC; it is read the same way, its snapshot handed up as the replica state.

use std::path::Path;

use tracing::warn;

use super::error::LogResult;
use super::segment::CleanState;
use super::Offset;

/// File a clean shutdown leaves in a partition directory.
const FILE: &str = "clean-shutdown";
const MAGIC: &[u8; 4] = b"CCLN";
const VERSION: u16 = 1;

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
        let mut out = Vec::with_capacity(48 + self.replica_state.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.active_base.to_be_bytes());
        out.extend_from_slice(&self.state.size.to_be_bytes());
        out.extend_from_slice(&self.state.next_offset.to_be_bytes());
        out.extend_from_slice(&self.state.max_timestamp.to_be_bytes());
        out.extend_from_slice(&(self.replica_state.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.replica_state);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn from_bytes(b: &[u8]) -> Option<CleanMarker> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let (versioned, body) = match body.strip_prefix(MAGIC) {
            Some(rest) => {
                let (version, rest) = rest.split_at_checked(2)?;
                if u16::from_be_bytes([version[0], version[1]]) != VERSION {
                    return None;
                }
                (true, rest)
            }
            None => (false, body),
        };
        let (fixed, rest) = body.split_at_checked(32)?;
        let word = |i: usize| -> Option<[u8; 8]> { fixed.get(i * 8..i * 8 + 8)?.try_into().ok() };
        let replica_state = if versioned {
            let (len, rest) = rest.split_at_checked(4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            (rest.len() == len).then(|| rest.to_vec())?
        } else {
            rest.to_vec()
        };
        Some(CleanMarker {
            active_base: i64::from_be_bytes(word(0)?),
            state: CleanState {
                size: u64::from_be_bytes(word(1)?),
                next_offset: i64::from_be_bytes(word(2)?),
                max_timestamp: i64::from_be_bytes(word(3)?),
            },
            replica_state,
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
