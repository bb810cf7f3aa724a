//! The durable forms of a raft group's own state (beyond the batches in its log): the
//! records it writes into the shard's journal and the `raft.state` file a checkpoint
//! saves beside the log.
//!
//! A record is `{ tag: u8, body }`: tag 1 a table row (`log::raft_index::write_row`),
//! 2 a HardState `{ term: u64, vote: u64, commit: u64 }`, 3 a ConfState `{ voters,
//! learners, voters_outgoing, learners_next: (count u32, u64 each), auto_leave: u8 }`,
//! 4 an installed snapshot `{ index: u64, term: u64, conf_state, start_offset: i64 }`.
//! A row record *sets* its index (dropping any later rows), so replaying records over a
//! table that already holds some of them converges to the table they describe.
//!
//! `raft.state`, version 1: a file of [`crate::codec`] (magic `CRST`) whose checked
//! payload is `{ hard_state, conf_state, table }`, the table as `RaftIndex::write_to`
//! writes it.

use std::path::Path;

use raft::eraftpb::{ConfState, HardState};

use crate::codec::{self, magic, CodecError, CodecResult, FileHeader, Reader, Writer};
use crate::log::raft_index::{read_row, write_row, RaftIndex, Row};

use super::conf_state_codec::{put_conf_state, take_conf_state};
use super::raft_snapshot::SnapshotPoint;

/// The state file's name in a partition's directory.
pub const STATE_FILE: &str = "raft.state";
const VERSION: u16 = 1;

const TAG_ROW: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_CONF_STATE: u8 = 3;
const TAG_SNAPSHOT: u8 = 4;

/// One raft record, as written into the journal.
#[derive(Debug, Clone, PartialEq)]
pub enum RaftRecord {
    /// Entry `row.index` is `row`; later entries are gone.
    Row(Row),
    /// The group's HardState.
    HardState(HardState),
    /// The group's ConfState.
    ConfState(ConfState),
    /// A leader's snapshot was installed: the table starts over after it (every row
    /// before goes), and the configuration is the snapshot's.
    Snapshot(SnapshotPoint),
}

/// Everything a group needs to restart, as the state file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Voters and learners.
    pub conf_state: ConfState,
    /// The raft-index table.
    pub table: RaftIndex,
}

fn put_hard_state(p: &mut Writer, hs: &HardState) {
    p.put_u64(hs.term);
    p.put_u64(hs.vote);
    p.put_u64(hs.commit);
}

fn take_hard_state(r: &mut Reader<'_>) -> CodecResult<HardState> {
    Ok(HardState {
        term: r.take_u64()?,
        vote: r.take_u64()?,
        commit: r.take_u64()?,
        ..HardState::default()
    })
}

impl RaftRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::new();
        match self {
            RaftRecord::Row(row) => {
                p.put_u8(TAG_ROW);
                write_row(&mut p, row);
            }
            RaftRecord::HardState(hs) => {
                p.put_u8(TAG_HARD_STATE);
                put_hard_state(&mut p, hs);
            }
            RaftRecord::ConfState(cs) => {
                p.put_u8(TAG_CONF_STATE);
                put_conf_state(&mut p, cs);
            }
            RaftRecord::Snapshot(point) => {
                p.put_u8(TAG_SNAPSHOT);
                point.write_to(&mut p);
            }
        }
        p.finish()
    }

    /// Reads a record written by [`RaftRecord::encode`].
    pub fn decode(data: &[u8]) -> CodecResult<RaftRecord> {
        let mut r = Reader::new(data);
        let record = match r.take_u8()? {
            TAG_ROW => RaftRecord::Row(read_row(&mut r)?),
            TAG_HARD_STATE => RaftRecord::HardState(take_hard_state(&mut r)?),
            TAG_CONF_STATE => RaftRecord::ConfState(take_conf_state(&mut r)?),
            TAG_SNAPSHOT => RaftRecord::Snapshot(SnapshotPoint::read_from(&mut r)?),
            _ => return Err(CodecError::Invalid("raft record tag")),
        };
        r.finish()?;
        Ok(record)
    }
}

impl SavedState {
    /// The state file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::new();
        put_hard_state(&mut p, &self.hard_state);
        put_conf_state(&mut p, &self.conf_state);
        self.table.write_to(&mut p);
        codec::encode_checked_file(FileHeader::new(magic::RAFT_STATE, VERSION), &p.finish())
    }

    /// Reads a state file written by [`SavedState::encode`].
    pub fn decode(data: &[u8]) -> CodecResult<SavedState> {
        let (_, payload) = codec::decode_checked_file(data, magic::RAFT_STATE, VERSION..=VERSION)?;
        let mut r = Reader::new(payload);
        let state = SavedState {
            hard_state: take_hard_state(&mut r)?,
            conf_state: take_conf_state(&mut r)?,
            table: RaftIndex::read_from(&mut r)?,
        };
        r.finish()?;
        Ok(state)
    }

    /// Reads the state file in `dir`, if there is one.
    pub async fn load(dir: &Path) -> std::io::Result<Option<SavedState>> {
        match crate::io::small_file::read_all(&dir.join(STATE_FILE)).await? {
            None => Ok(None),
            Some(bytes) => SavedState::decode(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{STATE_FILE}: {e}"))),
        }
    }

    /// Writes the state file in `dir` durably (write to a temporary file, sync, rename,
    /// sync the directory: the vote in it must survive a power cut).
    pub async fn save(&self, dir: &Path) -> std::io::Result<()> {
        crate::io::small_file::write_durably(&dir.join(STATE_FILE), &self.encode()).await?;
        crate::io::small_file::sync_dir(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::raft_index::EntryKind;

    #[test]
    fn records_and_state_round_trip() {
        let records = [
            RaftRecord::Row(Row {
                index: 7,
                term: 3,
                kind: EntryKind::Data { last_offset: 41 },
            }),
            RaftRecord::Row(Row {
                index: 8,
                term: 4,
                kind: EntryKind::RaftOnly {
                    payload: vec![1, 2, 3],
                },
            }),
            RaftRecord::HardState(HardState {
                term: 4,
                vote: 2,
                commit: 7,
                ..HardState::default()
            }),
            RaftRecord::ConfState(ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                auto_leave: true,
                ..ConfState::default()
            }),
            RaftRecord::Snapshot(SnapshotPoint {
                index: 90,
                term: 5,
                conf_state: ConfState {
                    voters: vec![1, 2, 3],
                    ..ConfState::default()
                },
                start_offset: 700,
            }),
        ];
        for r in &records {
            assert_eq!(&RaftRecord::decode(&r.encode()).unwrap(), r);
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                assert!(RaftRecord::decode(&bytes[..cut]).is_err());
            }
        }
        let mut table = RaftIndex::new(0, 0, 0);
        table
            .append(Row {
                index: 1,
                term: 1,
                kind: EntryKind::Data { last_offset: 9 },
            })
            .unwrap();
        let state = SavedState {
            hard_state: HardState {
                term: 1,
                vote: 1,
                commit: 1,
                ..HardState::default()
            },
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..ConfState::default()
            },
            table,
        };
        assert_eq!(SavedState::decode(&state.encode()).unwrap(), state);
        let mut torn = state.encode();
        torn.pop();
        assert!(SavedState::decode(&torn).is_err());
    }
}
