//! Committed offsets of the groups a shard coordinates, kept in memory and made durable
//! in an internal partition log: on a single node one on that shard
//! (`<data>/__offsets-shard-<k>/`), in a cluster a partition of the replicated
//! `__consumer_offsets` topic, where a commit is acknowledged once a majority holds it.
//!
//! Each commit is one uncompressed batch appended with the `Durable` policy, so a commit
//! is acknowledged only once it is on disk, and concurrent commits share fsyncs. Record
//! values, version 2 (through [`crate::codec`]; big-endian; `str` = str16): a header
//! (magic `CDGO`, version u16), then `{ kind: u8, body }` with
//! - `1` commit: `{ group: str, topic: str, partition: i32, offset: i64,
//!   leader_epoch: i32, metadata: nullable str16, commit_ms: i64 }`
//! - `2` delete group: `{ group: str }`
//! - `3` delete offset: `{ group: str, topic: str, partition: i32 }`
//! - `4` (version 3 values, which hold nothing else) a group's generation and members
//!   (`group::stored_group`); a delete group removes it too
//!
//! Version 1 (releases up to 617d542) is the same without the header: its values start
//! with the kind byte, which is never the magic's first byte, and are still read. A
//! value of a newer version stops the load: skipping it would lose commits for good at
//! the next compaction.
//!
//! On start the log is replayed; when it holds far more records than live offsets it is
//! rewritten with only the live ones (compaction on restart).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use tracing::{info, warn};

use crate::codec::{magic, CodecError, CodecResult, FileHeader, Reader, Writer};
use crate::log::{LogConfig, LogEnv, LogError, LogResult};
use crate::notify::Notify;
use crate::protocol::record_batch::{build_batch, check_batch, uncompressed_records, Compression};
use crate::replica::{Partition, ReplicaError};

use super::stored_group::StoredGroup;

/// The version of the offsets record values this build writes.
pub const VERSION: u16 = 2;
/// The version of values that hold a group's members (kind 4): a node that reads only
/// version 2 stops at them rather than skipping what it does not know.
pub const GROUP_VERSION: u16 = 3;
const HEADER: FileHeader = FileHeader::new(magic::GROUP_OFFSETS, VERSION);
const GROUP_HEADER: FileHeader = FileHeader::new(magic::GROUP_OFFSETS, GROUP_VERSION);

const COMMIT: u8 = 1;
const DELETE_GROUP: u8 = 2;
const DELETE_OFFSET: u8 = 3;
const GROUP: u8 = 4;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset the group will read.
    pub offset: i64,
    /// Leader epoch the client saw, or -1.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
    /// When it was committed (ms since the epoch).
    pub commit_ms: i64,
}

/// (topic, partition) -> committed offset.
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// A change to committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// A commit.
    Commit {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What was committed.
        committed: Committed,
    },
    /// All offsets of a group removed.
    DeleteGroup(String),
    /// One offset removed.
    DeleteOffset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A group's generation and members.
    Group(StoredGroup),
}

/// What the offsets log holds, replayed: committed offsets and stored groups.
#[derive(Default)]
struct Replayed {
    offsets: HashMap<String, GroupOffsets>,
    groups: HashMap<String, StoredGroup>,
}

impl OffsetRecord {
    /// The record value in the current version.
    pub fn encode(&self) -> Vec<u8> {
        if let OffsetRecord::Group(g) = self {
            let mut w = Writer::with_header(GROUP_HEADER);
            w.put_u8(GROUP);
            g.write_to(&mut w);
            return w.finish();
        }
        let mut w = Writer::with_header(HEADER);
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                w.put_u8(COMMIT);
                w.put_str16(group);
                w.put_str16(topic);
                w.put_i32(*partition);
                w.put_i64(committed.offset);
                w.put_i32(committed.leader_epoch);
                w.put_nullable_str16(committed.metadata.as_deref());
                w.put_i64(committed.commit_ms);
            }
            OffsetRecord::DeleteGroup(group) => {
                w.put_u8(DELETE_GROUP);
                w.put_str16(group);
            }
            OffsetRecord::DeleteOffset {
                group,
                topic,
                partition,
            } => {
                w.put_u8(DELETE_OFFSET);
                w.put_str16(group);
                w.put_str16(topic);
                w.put_i32(*partition);
            }
            OffsetRecord::Group(_) => {}
        }
        w.finish()
    }

    /// Decodes a record value of either version.
    pub fn decode(b: &[u8]) -> CodecResult<OffsetRecord> {
        let mut r = Reader::new(b);
        let mut version = 1;
        if FileHeader::has_magic(b, magic::GROUP_OFFSETS) {
            version = r.take_header(magic::GROUP_OFFSETS, VERSION..=GROUP_VERSION)?;
        }
        let kind = r.take_u8()?;
        // Version 3 values hold a group's members and nothing else; the other kinds
        // are version 2 (or headerless version 1) values.
        if (kind == GROUP) != (version == GROUP_VERSION) {
            return Err(CodecError::Invalid("offsets record kind for its version"));
        }
        let rec = match kind {
            GROUP => OffsetRecord::Group(StoredGroup::read_from(&mut r)?),
            COMMIT => OffsetRecord::Commit {
                group: r.take_str16()?,
                topic: r.take_str16()?,
                partition: r.take_i32()?,
                committed: Committed {
                    offset: r.take_i64()?,
                    leader_epoch: r.take_i32()?,
                    metadata: r.take_nullable_str16()?,
                    commit_ms: r.take_i64()?,
                },
            },
            DELETE_GROUP => OffsetRecord::DeleteGroup(r.take_str16()?),
            DELETE_OFFSET => OffsetRecord::DeleteOffset {
                group: r.take_str16()?,
                topic: r.take_str16()?,
                partition: r.take_i32()?,
            },
            _ => return Err(CodecError::Invalid("offsets record kind")),
        };
        r.finish()?;
        Ok(rec)
    }

    fn apply(self, into: &mut Replayed) {
        let map = &mut into.offsets;
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                map.entry(group)
                    .or_default()
                    .insert((topic, partition), committed);
            }
            OffsetRecord::DeleteGroup(group) => {
                map.remove(&group);
                into.groups.remove(&group);
            }
            OffsetRecord::DeleteOffset {
                group,
                topic,
                partition,
            } => {
                if let Some(g) = map.get_mut(&group) {
                    g.remove(&(topic, partition));
                    if g.is_empty() {
                        map.remove(&group);
                    }
                }
            }
            OffsetRecord::Group(g) => {
                into.groups.insert(g.group.clone(), g);
            }
        }
    }
}

/// The committed offsets of one shard's groups.
pub struct OffsetStore {
    log: Rc<Partition>,
    /// What the log holds: committed offsets, and each group's last stored generation
    /// and members.
    state: RefCell<Replayed>,
}

/// Replays the log into a map. Returns the map, the number of records, and whether the
/// replay stopped early at corrupt data (the log must then be rewritten).
async fn replay(log: &Partition) -> LogResult<(Replayed, usize, bool)> {
    let mut map = Replayed::default();
    let mut records = 0usize;
    let mut from = log.log_start_offset();
    while from < log.high_watermark() {
        let res = match log.read(from, 1 << 20).await {
            Ok(r) => r,
            Err(e @ crate::log::LogError::Corrupt { .. }) => {
                warn!(offset = from, error = %e, "offsets log is corrupt here; commits after it are dropped");
                return Ok((map, records, true));
            }
            Err(e) => return Err(e),
        };
        if res.batches.is_empty() {
            break;
        }
        for b in &res.batches {
            let h = check_batch(b)?;
            if h.last_offset() < from {
                continue;
            }
            for r in uncompressed_records(b)? {
                let Some(value) = r.value else { continue };
                match OffsetRecord::decode(value) {
                    Ok(rec) => {
                        rec.apply(&mut map);
                        records += 1;
                    }
                    Err(e @ CodecError::UnsupportedVersion { .. }) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} at offset {}: {e}", log.dir().display(), h.base_offset),
                        )
                        .into());
                    }
                    // As before versions: a record that does not decode is skipped.
                    Err(_) => {}
                }
            }
            from = h.last_offset() + 1;
        }
    }
    Ok((map, records, false))
}

impl OffsetStore {
    /// Opens (creating) the offsets log in `dir`, replays it and compacts it if most of
    /// its records are superseded.
    pub async fn open(dir: &Path, env: LogEnv) -> LogResult<OffsetStore> {
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: 64 << 20,
            max_message_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let mut log =
            Partition::open(dir, config.clone(), env.clone(), Rc::new(Notify::default())).await?;
        let (map, records, corrupt) = replay(&log).await?;
        let live: usize = map.offsets.values().map(BTreeMap::len).sum::<usize>() + map.groups.len();
        if corrupt || (records > 1000 && records > 4 * live) {
            let tmp = with_suffix(dir, "compacting");
            let stale = tmp.clone();
            let _ = crate::task::blocking(move || std::fs::remove_dir_all(stale)).await;
            let fresh = Partition::open(
                &tmp,
                config.clone(),
                env.clone(),
                Rc::new(Notify::default()),
            )
            .await?;
            let store = OffsetStore {
                log: fresh,
                state: RefCell::new(Replayed::default()),
            };
            let stored: Vec<OffsetRecord> = map
                .groups
                .values()
                .cloned()
                .map(OffsetRecord::Group)
                .collect();
            store.append(&stored).await?;
            for (group, offsets) in &map.offsets {
                let recs: Vec<OffsetRecord> = offsets
                    .iter()
                    .map(|((topic, partition), c)| OffsetRecord::Commit {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        committed: c.clone(),
                    })
                    .collect();
                store.append(&recs).await?;
            }
            store.log.close().await?;
            log.close().await?;
            // The shard's journal must not replay either log's records into the other
            // once the directories swap names.
            store.log.log().forget().await?;
            log.log().forget().await?;
            drop(store);
            drop(log);
            let old = with_suffix(dir, "old");
            let (from, to, fresh) = (dir.to_path_buf(), old.clone(), tmp.clone());
            crate::task::blocking(move || -> std::io::Result<()> {
                let _ = std::fs::remove_dir_all(&to);
                std::fs::rename(&from, &to)?;
                std::fs::rename(&fresh, &from)
            })
            .await?;
            if let Some(parent) = dir.parent() {
                crate::io::small_file::sync_dir(parent).await?;
            }
            crate::task::blocking(move || std::fs::remove_dir_all(old)).await?;
            info!(dir = %dir.display(), records, live, "compacted offsets log");
            log = Partition::open(dir, config, env, Rc::new(Notify::default())).await?;
        }
        Ok(OffsetStore {
            log,
            state: RefCell::new(map),
        })
    }

    /// The offsets kept in a partition of the cluster's replicated offsets topic, which
    /// this replica leads: everything committed in it, replayed (no compaction: the log
    /// is the raft group's).
    pub async fn over(log: Rc<Partition>) -> LogResult<OffsetStore> {
        let (map, _, corrupt) = replay(&log).await?;
        if corrupt {
            return Err(LogError::Io(std::io::Error::other(format!(
                "{}: the offsets log is corrupt",
                log.dir().display()
            ))));
        }
        Ok(OffsetStore {
            log,
            state: RefCell::new(map),
        })
    }

    /// True when the offsets live in a replicated partition.
    pub fn is_replicated(&self) -> bool {
        self.log.is_replicated()
    }

    async fn append(&self, records: &[OffsetRecord]) -> LogResult<()> {
        for chunk in records.chunks(1000) {
            let values: Vec<Vec<u8>> = chunk.iter().map(OffsetRecord::encode).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let batch = build_batch(0, crate::clock::now_ms(), &refs, Compression::None);
            self.log
                .append(BytesMut::from(&batch[..]))
                .await
                .map_err(|e| match e {
                    ReplicaError::Log(e) => e,
                    // Offsets records carry no producer id: no sequence to refuse.
                    other => LogError::Io(std::io::Error::other(other.to_string())),
                })?;
        }
        Ok(())
    }

    /// Applies changes after making them durable.
    pub async fn write(&self, records: Vec<OffsetRecord>) -> LogResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.append(&records).await?;
        let mut state = self.state.borrow_mut();
        for r in records {
            r.apply(&mut state);
        }
        Ok(())
    }

    /// The committed offsets of a group.
    pub fn group(&self, group: &str) -> GroupOffsets {
        self.state
            .borrow()
            .offsets
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Each group's last stored generation and members.
    pub fn stored_groups(&self) -> Vec<StoredGroup> {
        self.state.borrow().groups.values().cloned().collect()
    }

    /// What is stored of `group`'s generation and members (`StoredGroup::signature`).
    pub fn stored_signature(&self, group: &str) -> Option<(i32, bool)> {
        self.state
            .borrow()
            .groups
            .get(group)
            .map(StoredGroup::signature)
    }

    /// Groups with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.state.borrow().offsets.keys().cloned().collect()
    }

    /// Syncs and closes the log.
    pub async fn close(&self) -> LogResult<()> {
        self.log.close().await
    }
}

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group g commits offset 42 of t-3, with no epoch or metadata, at time 7.
    fn commit_42() -> OffsetRecord {
        OffsetRecord::Commit {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            committed: Committed {
                offset: 42,
                leader_epoch: -1,
                metadata: None,
                commit_ms: 7,
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            commit_42(),
            OffsetRecord::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 4,
                committed: Committed {
                    offset: 1,
                    leader_epoch: 2,
                    metadata: Some("m".into()),
                    commit_ms: 7,
                },
            },
            OffsetRecord::DeleteGroup("g".into()),
            OffsetRecord::DeleteOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
            },
        ];
        for r in recs {
            let bytes = r.encode();
            assert!(bytes.starts_with(b"CDGO\x00\x02"));
            assert_eq!(OffsetRecord::decode(&bytes), Ok(r));
        }
        assert!(OffsetRecord::decode(&[9]).is_err());
        assert!(OffsetRecord::decode(&[1, 0]).is_err());
    }

    #[test]
    fn reads_the_headerless_values_of_older_releases() {
        // A commit as releases up to 617d542 wrote it: the kind byte first.
        let mut v1 = vec![1, 0, 1, b'g', 0, 1, b't'];
        v1.extend_from_slice(&3i32.to_be_bytes());
        v1.extend_from_slice(&42i64.to_be_bytes());
        v1.extend_from_slice(&(-1i32).to_be_bytes());
        v1.extend_from_slice(&[0xff, 0xff]);
        v1.extend_from_slice(&7i64.to_be_bytes());
        let expected = commit_42();
        assert_eq!(OffsetRecord::decode(&v1), Ok(expected.clone()));
        assert_eq!(&expected.encode()[6..], &v1[..]);
    }

    #[test]
    fn a_value_of_a_newer_version_is_refused_by_name() {
        let mut newer = OffsetRecord::DeleteGroup("g".into()).encode();
        newer[5] = 4;
        assert!(matches!(
            OffsetRecord::decode(&newer),
            Err(CodecError::UnsupportedVersion { found: 4, .. })
        ));
    }

    #[test]
    fn a_groups_members_round_trip_in_a_version_3_value_only() {
        use super::super::stored_group::StoredMember;
        let g = OffsetRecord::Group(StoredGroup {
            group: "g".into(),
            generation: 7,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            members: vec![StoredMember {
                id: "m-1".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                subscription: bytes::Bytes::from_static(b"sub"),
                assignment: bytes::Bytes::from_static(b"assign"),
            }],
        });
        let bytes = g.encode();
        assert!(bytes.starts_with(b"CDGO\x00\x03"));
        assert_eq!(OffsetRecord::decode(&bytes), Ok(g));
        for cut in 0..bytes.len() {
            assert!(OffsetRecord::decode(&bytes[..cut]).is_err());
        }
        // Kind 4 in a version 2 value is not a group (version 2 never held one).
        let mut v2 = bytes.clone();
        v2[5] = 2;
        assert!(OffsetRecord::decode(&v2).is_err());
    }
}
