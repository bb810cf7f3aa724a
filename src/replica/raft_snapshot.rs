//! A raft group's snapshot. The partition log is the group's state machine, so a
//! snapshot of a data partition is only a position: the raft index and term its log was
//! cut after, the configuration then, and the Kafka offset its records start at. A
//! replica too far behind (the leader's log starts past its end) installs one by
//! dropping its log and starting it empty at that offset, as a Kafka follower does when
//! its fetch offset is below the leader's log start. A group whose state lives beside
//! the log (the controller's metadata) adds that state's bytes ([`SnapshotState`]); the
//! receiver keeps them in `raft.snapshot.state` for its owner to adopt ([`load_state`]).
//!
//! `raft.snapshot`, version 1: a file of [`crate::codec`] (magic `CRSN`) whose checked
//! payload is `{ index: u64, term: u64, conf_state, start_offset: i64 }` (the conf state
//! as `replica::raft_state` writes it). It is written before the log's prefix goes
//! (compaction) and before a leader's snapshot replaces the log (install), so recovery
//! can always finish what was begun. A snapshot message's data is the same encoding of
//! `{ start_offset: i64, producers: bytes32, producers_end: i64, state: bytes32 }`: the
//! sender's committed idempotent-producer state goes with it (and becomes the producer
//! snapshot of the receiver's new first segment), so a producer's retry of a batch
//! before the cut is still known for one.

use std::path::Path;

use raft::eraftpb::ConfState;

use crate::codec::{self, magic, CodecResult, FileHeader, Reader, Writer};
use crate::log::Offset;

use super::conf_state_codec::{put_conf_state, take_conf_state};

/// The snapshot file's name in a partition's directory.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";
const VERSION: u16 = 1;
const DATA_VERSION: u16 = 1;

/// Where a group's log begins: the entry before its first (index and term), the
/// configuration as of that entry, and the offset its records start at.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPoint {
    /// Raft index of the last entry the snapshot covers.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// Voters and learners as of that entry.
    pub conf_state: ConfState,
    /// The Kafka offset of the first record after that entry.
    pub start_offset: Offset,
}

impl SnapshotPoint {
    /// Writes the point's fields (the file's payload; also a journal raft record's body).
    pub fn write_to(&self, p: &mut Writer) {
        p.put_u64(self.index);
        p.put_u64(self.term);
        put_conf_state(p, &self.conf_state);
        p.put_i64(self.start_offset);
    }

    /// Reads fields written by [`SnapshotPoint::write_to`].
    pub fn read_from(r: &mut Reader<'_>) -> CodecResult<SnapshotPoint> {
        Ok(SnapshotPoint {
            index: r.take_u64()?,
            term: r.take_u64()?,
            conf_state: take_conf_state(r)?,
            start_offset: r.take_i64()?,
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::new();
        self.write_to(&mut p);
        codec::encode_checked_file(FileHeader::new(magic::RAFT_SNAPSHOT, VERSION), &p.finish())
    }

    /// Reads a file written by [`SnapshotPoint::encode`].
    pub fn decode(data: &[u8]) -> CodecResult<SnapshotPoint> {
        let (_, payload) =
            codec::decode_checked_file(data, magic::RAFT_SNAPSHOT, VERSION..=VERSION)?;
        let mut r = Reader::new(payload);
        let point = SnapshotPoint::read_from(&mut r)?;
        r.finish()?;
        Ok(point)
    }

    /// Reads the file in `dir`, if there is one.
    pub async fn load(dir: &Path) -> std::io::Result<Option<SnapshotPoint>> {
        match crate::io::small_file::read_all(&dir.join(SNAPSHOT_FILE)).await? {
            None => Ok(None),
            Some(bytes) => SnapshotPoint::decode(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{SNAPSHOT_FILE}: {e}"))),
        }
    }

    /// Writes the file in `dir` durably.
    pub async fn save(&self, dir: &Path) -> std::io::Result<()> {
        crate::io::small_file::write_durably(&dir.join(SNAPSHOT_FILE), &self.encode()).await?;
        crate::io::small_file::sync_dir(dir).await
    }
}

/// A snapshot message's data: where the receiver's log starts, the idempotent
/// producers as the sender has them committed, and the state kept beside the log (empty
/// for a data partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    /// The Kafka offset the receiver's log starts at.
    pub start_offset: Offset,
    /// The sender's committed producer state (`ProducerStateTable` bytes; empty: none).
    pub producers: Vec<u8>,
    /// The offset after the last record that state covers (at or past `start_offset`).
    pub producers_end: Offset,
    /// The [`SnapshotState`]'s bytes.
    pub state: Vec<u8>,
}

impl SnapshotData {
    /// The data's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::new();
        p.put_i64(self.start_offset);
        p.put_bytes32(&self.producers);
        p.put_i64(self.producers_end);
        p.put_bytes32(&self.state);
        codec::encode_checked_file(
            FileHeader::new(magic::RAFT_SNAPSHOT, DATA_VERSION),
            &p.finish(),
        )
    }

    /// Reads data written by [`SnapshotData::encode`] (from a peer: checked, never
    /// trusted).
    pub fn decode(data: &[u8]) -> CodecResult<SnapshotData> {
        let (_, payload) =
            codec::decode_checked_file(data, magic::RAFT_SNAPSHOT, DATA_VERSION..=DATA_VERSION)?;
        let mut r = Reader::new(payload);
        let out = SnapshotData {
            start_offset: r.take_i64()?,
            producers: r.take_bytes32()?.to_vec(),
            producers_end: r.take_i64()?,
            state: r.take_bytes32()?.to_vec(),
        };
        r.finish()?;
        Ok(out)
    }
}

/// The state a group keeps beside its log (the controller's metadata), for snapshots.
pub trait SnapshotState {
    /// The state now, as of a position at or past the log's start: a replica that
    /// installs it skips the entries it already covers.
    fn take(&self) -> Vec<u8>;
}

/// The file an installed snapshot's state is kept in, in the group's directory, until
/// the group's owner adopts it (see [`load_state`]).
pub const STATE_FILE: &str = "raft.snapshot.state";

/// Keeps an installed snapshot's state in `dir`, durably.
pub async fn save_state(dir: &Path, state: &[u8]) -> std::io::Result<()> {
    crate::io::small_file::write_durably(&dir.join(STATE_FILE), state).await?;
    crate::io::small_file::sync_dir(dir).await
}

/// The state of the last snapshot installed in `dir`, if one was: what the group's owner
/// adopts when its own state is behind the log's start. The raft loop never waits for
/// the owner (the owner's work can need the loop: the controller's metadata opens
/// partitions' groups), so the state is handed over in this file.
pub async fn load_state(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    crate::io::small_file::read_all(&dir.join(STATE_FILE)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_point_and_data_round_trip_and_reject_damage() {
        let point = SnapshotPoint {
            index: 41,
            term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                ..ConfState::default()
            },
            start_offset: 9_000,
        };
        let bytes = point.encode();
        assert_eq!(SnapshotPoint::decode(&bytes).unwrap(), point);
        for cut in 0..bytes.len() {
            assert!(SnapshotPoint::decode(&bytes[..cut]).is_err());
        }
        let data = SnapshotData {
            start_offset: 9_000,
            producers: b"producers".to_vec(),
            producers_end: 9_100,
            state: b"metadata".to_vec(),
        };
        let mut bytes = data.encode();
        assert_eq!(SnapshotData::decode(&bytes).unwrap(), data);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(SnapshotData::decode(&bytes).is_err());
    }
}
