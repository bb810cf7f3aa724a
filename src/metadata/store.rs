//! The persistent metadata log under `<data>/meta/metadata.log`, written by shard 0.
//!
//! Format, version 4 (through [`crate::codec`]; big-endian): a file header (magic `CDMT`,
//! version u16) and then checked records `{ length: u32, crc32c: u32 (of payload),
//! payload }`. Payload: `{ kind: u8, body }` with
//! - kind 1, put topic: `{ name: str16, id: uuid, partitions: u32, partition *
//!   partitions, configs: u16, (key: str16, value: str16) * configs }`, where
//!   `partition = { leader_epoch: i32, leader: replica, replicas: u16, replica *
//!   replicas }` and `replica = { node: i32, shard: u32 }`; the leader is one of the
//!   replicas;
//! - kind 2, delete topic: `{ name: str16 }`;
//! - kind 3, put broker: `{ node: i32, host: str16, port: u16, shards: u16 }`, the Kafka
//!   listeners of a node of a cluster;
//! - kind 4, revision: `{ revision: u64 }`, the controller log's offset the metadata so
//!   far is the state at (a cluster's node keeps its copy of the controller's state
//!   here, `shard::controller`);
//! - kind 5, producer ids: `{ next: u64 }`, the first producer id a cluster's controller
//!   has not handed out;
//! - kind 6, reassignment: `{ topic: str16, partition: i32, target: u16, replica *
//!   target, origin: u16, node: i32 * origin, from: u16, replica * from }`: the
//!   partition moves from `from` to `target` (its replicas meanwhile are both), or, with
//!   no target, its move is over; `origin` is the voters its raft group started with,
//!   kept from the first move on;
//! - kind 7, put peer: `{ node: i32, host: str16, port: u16 }`, where a node of a
//!   cluster takes inter-node connections (its shard 0's peer listener).
//!
//! The same records also travel inside the controller log's record batches (one record
//! value each, `metadata::controller_log`).
//!
//! Versions 2 and 3 are version 4 without kinds 3 to 7 (2) or kinds 4 to 7 (3); opening one
//! rewrites it as version 4 (the same way as below), so an older build refuses it rather
//! than misreading a kind it does not know.
//!
//! Version 1 (every release up to 617d542) has no header, and its put-topic body holds
//! `partitions: u32, shard: u32 * partitions` in place of the partitions above: the
//! shard of this node holding the partition's only replica. Opening a version 1 log
//! converts it (replica = (this node, that shard), leader = that replica, epoch 0) and
//! replaces the file, before anything is appended, by a version 2 log of one put-topic
//! record per topic, written to `metadata.log.tmp`, synced and renamed over it (then
//! the directory is synced): a crash leaves either the old log or the new one. A newer
//! version than this build reads is refused, never truncated.
//!
//! Replay stops at the first torn or corrupt record, which is cut off.
//!
//! The store uses blocking `std::fs` calls: it is opened before the shards start, and
//! the controller service runs each append on a helper thread, never on a shard's.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::{
    BrokerEndpoint, ClusterMetadata, NodeId, PartitionAssignment, PartitionId, ShardAddr, TopicMeta,
};
use crate::codec::{magic, CodecError, CodecResult, FileHeader, Reader, Writer};

const PUT_TOPIC: u8 = 1;
const DELETE_TOPIC: u8 = 2;
const PUT_BROKER: u8 = 3;
const REVISION: u8 = 4;
const PRODUCER_IDS: u8 = 5;
const REASSIGNMENT: u8 = 6;
const PUT_PEER: u8 = 7;

/// The version this build writes.
pub const VERSION: u16 = 4;
/// The header of the files this build writes.
pub const HEADER: FileHeader = FileHeader::new(magic::METADATA_LOG, VERSION);
/// File name of the log within its directory.
pub const FILE_NAME: &str = "metadata.log";

/// Smallest encoded partition: epoch, leader, a replica count and one replica.
const MIN_PARTITION_LEN: usize = 4 + 8 + 2 + 8;
/// Encoded replica: node and shard.
const REPLICA_LEN: usize = 8;

/// The partition list of a version 2 record.
fn take_partitions(r: &mut Reader<'_>) -> CodecResult<Vec<PartitionAssignment>> {
    let n = r.take_count(MIN_PARTITION_LEN)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        let leader_epoch = r.take_i32()?;
        let leader = take_replica(r)?;
        let count = usize::from(r.take_u16()?);
        if count.saturating_mul(REPLICA_LEN) > r.remaining() {
            return Err(CodecError::Invalid("replica count"));
        }
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            replicas.push(take_replica(r)?);
        }
        if !replicas.contains(&leader) {
            return Err(CodecError::Invalid("leader not among the replicas"));
        }
        partitions.push(PartitionAssignment {
            replicas,
            leader,
            leader_epoch,
        });
    }
    Ok(partitions)
}

/// A change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRecord {
    /// Create (or replace) a topic.
    PutTopic(TopicMeta),
    /// Delete a topic.
    DeleteTopic(String),
    /// Record (or change) where a node of the cluster takes Kafka clients.
    PutBroker(NodeId, BrokerEndpoint),
    /// The metadata so far is the controller log's state at this offset.
    Revision(u64),
    /// Producer ids below this one have been handed out.
    ProducerIds(u64),
    /// A partition starts moving to `target`, or (no target) its move is over.
    Reassignment {
        /// Topic.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The replicas it moves to; empty when the move is over.
        target: Vec<ShardAddr>,
        /// The voters its raft group started with.
        origin: Vec<NodeId>,
        /// Its replicas when the move started.
        from: Vec<ShardAddr>,
    },
    /// Record (or change) where a node takes inter-node connections.
    PutPeer(NodeId, String, u16),
}

fn put_replica(w: &mut Writer, r: ShardAddr) {
    w.put_i32(r.node);
    w.put_u32(u32::try_from(r.shard).unwrap_or(u32::MAX));
}

fn take_replica(r: &mut Reader) -> CodecResult<ShardAddr> {
    Ok(ShardAddr {
        node: r.take_i32()?,
        shard: r.take_u32()? as usize,
    })
}

/// A `u16` count, then that many items of at least `item_len` bytes each.
fn take_list<T>(
    r: &mut Reader,
    item_len: usize,
    take: impl Fn(&mut Reader) -> CodecResult<T>,
) -> CodecResult<Vec<T>> {
    let n = usize::from(r.take_u16()?);
    if n.saturating_mul(item_len) > r.remaining() {
        return Err(CodecError::Invalid("list longer than the record"));
    }
    (0..n).map(|_| take(r)).collect()
}

fn take_configs(r: &mut Reader) -> CodecResult<std::collections::BTreeMap<String, String>> {
    let n = r.take_u16()?;
    let mut configs = std::collections::BTreeMap::new();
    for _ in 0..n {
        let k = r.take_str16()?;
        let v = r.take_str16()?;
        configs.insert(k, v);
    }
    Ok(configs)
}

impl MetaRecord {
    /// Applies the change to a snapshot.
    pub fn apply(&self, meta: &mut ClusterMetadata) {
        match self {
            MetaRecord::PutTopic(t) => {
                if let Some(old) = meta.topics.insert(t.name.clone(), t.clone()) {
                    meta.ids.remove(&old.id);
                }
                meta.ids.insert(t.id, t.name.clone());
            }
            MetaRecord::DeleteTopic(name) => {
                if let Some(old) = meta.topics.remove(name) {
                    meta.ids.remove(&old.id);
                }
                meta.reassignments.retain(|(t, _), _| t != name);
                meta.moving_from.retain(|(t, _), _| t != name);
                meta.origins.retain(|(t, _), _| t != name);
            }
            MetaRecord::Reassignment {
                topic,
                partition,
                target,
                origin,
                from,
            } => {
                let key = (topic.clone(), *partition);
                meta.origins
                    .entry(key.clone())
                    .or_insert_with(|| origin.clone());
                if target.is_empty() {
                    meta.reassignments.remove(&key);
                    meta.moving_from.remove(&key);
                } else {
                    meta.moving_from.insert(key.clone(), from.clone());
                    let assignment = meta.topics.get_mut(topic).and_then(|t| {
                        t.partitions
                            .get_mut(usize::try_from(*partition).unwrap_or(usize::MAX))
                    });
                    if let Some(a) = assignment {
                        for r in target {
                            if !a.replicas.contains(r) {
                                a.replicas.push(*r);
                            }
                        }
                    }
                    meta.reassignments.insert(key, target.clone());
                }
            }
            MetaRecord::PutBroker(node, endpoint) => {
                meta.brokers.insert(*node, endpoint.clone());
            }
            MetaRecord::Revision(revision) => meta.revision = *revision,
            MetaRecord::PutPeer(node, host, port) => {
                meta.peers.insert(*node, (host.clone(), *port));
            }
            MetaRecord::ProducerIds(next) => {
                meta.next_producer_id = meta.next_producer_id.max(*next);
            }
        }
        meta.version += 1;
    }

    /// The record's payload in the current version.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            MetaRecord::PutTopic(t) => {
                w.put_u8(PUT_TOPIC);
                w.put_str16(&t.name);
                w.put_uuid(&t.id);
                w.put_u32(t.partitions.len() as u32);
                for p in &t.partitions {
                    w.put_i32(p.leader_epoch);
                    put_replica(&mut w, p.leader);
                    w.put_u16(p.replicas.len() as u16);
                    for &r in &p.replicas {
                        put_replica(&mut w, r);
                    }
                }
                w.put_u16(t.configs.len() as u16);
                for (k, v) in &t.configs {
                    w.put_str16(k);
                    w.put_str16(v);
                }
            }
            MetaRecord::DeleteTopic(name) => {
                w.put_u8(DELETE_TOPIC);
                w.put_str16(name);
            }
            MetaRecord::PutBroker(node, b) => {
                w.put_u8(PUT_BROKER);
                w.put_i32(*node);
                w.put_str16(&b.host);
                w.put_u16(b.port);
                w.put_u16(b.shards);
            }
            MetaRecord::Revision(revision) => {
                w.put_u8(REVISION);
                w.put_u64(*revision);
            }
            MetaRecord::ProducerIds(next) => {
                w.put_u8(PRODUCER_IDS);
                w.put_u64(*next);
            }
            MetaRecord::PutPeer(node, host, port) => {
                w.put_u8(PUT_PEER);
                w.put_i32(*node);
                w.put_str16(host);
                w.put_u16(*port);
            }
            MetaRecord::Reassignment {
                topic,
                partition,
                target,
                origin,
                from,
            } => {
                w.put_u8(REASSIGNMENT);
                w.put_str16(topic);
                w.put_i32(*partition);
                w.put_u16(u16::try_from(target.len()).unwrap_or(u16::MAX));
                for &r in target {
                    put_replica(&mut w, r);
                }
                w.put_u16(u16::try_from(origin.len()).unwrap_or(u16::MAX));
                for &n in origin {
                    w.put_i32(n);
                }
                w.put_u16(u16::try_from(from.len()).unwrap_or(u16::MAX));
                for &r in from {
                    put_replica(&mut w, r);
                }
            }
        }
        w.finish()
    }

    /// Decodes a payload of version 2 or later.
    pub fn decode(b: &[u8]) -> CodecResult<MetaRecord> {
        Self::decode_with(b, take_partitions)
    }

    /// Decodes a version 1 payload, whose partitions are shards of `node`.
    fn decode_v1(b: &[u8], node: NodeId) -> CodecResult<MetaRecord> {
        Self::decode_with(b, |r| {
            let n = r.take_count(4)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                let shard = r.take_u32()? as usize;
                partitions.push(PartitionAssignment::single(ShardAddr { node, shard }));
            }
            Ok(partitions)
        })
    }

    /// Decodes a payload whose partition list `partitions` reads (the versions differ
    /// only there).
    fn decode_with(
        b: &[u8],
        partitions: impl FnOnce(&mut Reader<'_>) -> CodecResult<Vec<PartitionAssignment>>,
    ) -> CodecResult<MetaRecord> {
        let mut r = Reader::new(b);
        let rec = match r.take_u8()? {
            PUT_TOPIC => {
                let name = r.take_str16()?;
                let id = r.take_uuid()?;
                let partitions = partitions(&mut r)?;
                let configs = take_configs(&mut r)?;
                MetaRecord::PutTopic(TopicMeta {
                    name,
                    id,
                    partitions,
                    configs,
                })
            }
            DELETE_TOPIC => MetaRecord::DeleteTopic(r.take_str16()?),
            PUT_BROKER => MetaRecord::PutBroker(
                r.take_i32()?,
                BrokerEndpoint {
                    host: r.take_str16()?,
                    port: r.take_u16()?,
                    shards: r.take_u16()?,
                },
            ),
            REVISION => MetaRecord::Revision(r.take_u64()?),
            PRODUCER_IDS => MetaRecord::ProducerIds(r.take_u64()?),
            PUT_PEER => MetaRecord::PutPeer(r.take_i32()?, r.take_str16()?, r.take_u16()?),
            REASSIGNMENT => {
                let topic = r.take_str16()?;
                let partition = r.take_i32()?;
                let target = take_list(&mut r, REPLICA_LEN, take_replica)?;
                let origin = take_list(&mut r, 4, |r| r.take_i32())?;
                let from = take_list(&mut r, REPLICA_LEN, take_replica)?;
                MetaRecord::Reassignment {
                    topic,
                    partition,
                    target,
                    origin,
                    from,
                }
            }
            _ => return Err(CodecError::Invalid("record kind")),
        };
        r.finish()?;
        Ok(rec)
    }
}

/// Replays the records of `r` until its end or the first torn or corrupt one. Returns
/// the metadata and the position where replay stopped.
fn replay(
    mut r: Reader,
    decode: impl Fn(&[u8]) -> CodecResult<MetaRecord>,
) -> (ClusterMetadata, usize) {
    let mut meta = ClusterMetadata::default();
    loop {
        let pos = r.position();
        if r.is_empty() {
            return (meta, pos);
        }
        match r.take_checked().and_then(&decode) {
            Ok(rec) => rec.apply(&mut meta),
            Err(_) => return (meta, pos),
        }
    }
}

/// The records that rebuild `meta` from nothing: one put-broker record per broker, one
/// put-topic record per topic, and its revision when it has one.
pub fn records_of(meta: &ClusterMetadata) -> Vec<MetaRecord> {
    let mut out: Vec<MetaRecord> = meta
        .brokers
        .iter()
        .map(|(&node, b)| MetaRecord::PutBroker(node, b.clone()))
        .chain(
            meta.peers
                .iter()
                .map(|(&node, (host, port))| MetaRecord::PutPeer(node, host.clone(), *port)),
        )
        .chain(
            meta.topics
                .values()
                .map(|t| MetaRecord::PutTopic(t.clone())),
        )
        .collect();
    if meta.next_producer_id > 0 {
        out.push(MetaRecord::ProducerIds(meta.next_producer_id));
    }
    for (key, origin) in &meta.origins {
        out.push(MetaRecord::Reassignment {
            topic: key.0.clone(),
            partition: key.1,
            target: meta.reassignments.get(key).cloned().unwrap_or_default(),
            origin: origin.clone(),
            from: meta.moving_from.get(key).cloned().unwrap_or_default(),
        });
    }
    if meta.revision > 0 {
        out.push(MetaRecord::Revision(meta.revision));
    }
    out
}

/// A log of the current version holding `meta` ([`records_of`]). Also what a cluster's
/// controller leader sends the nodes outside the controller quorum
/// (`cluster::wire`'s metadata message).
pub fn snapshot(meta: &ClusterMetadata) -> Vec<u8> {
    let mut w = Writer::with_header(HEADER);
    for rec in records_of(meta) {
        w.put_checked(&rec.encode());
    }
    w.finish()
}

/// Reads a [`snapshot`] received from another node: all of it, or an error (never a
/// prefix, which would look like deleted topics).
pub fn decode_snapshot(data: &[u8]) -> CodecResult<ClusterMetadata> {
    let mut r = Reader::new(data);
    r.take_header(magic::METADATA_LOG, VERSION..=VERSION)?;
    let mut meta = ClusterMetadata::default();
    while !r.is_empty() {
        let rec = r.take_checked().and_then(MetaRecord::decode)?;
        rec.apply(&mut meta);
    }
    Ok(meta)
}

/// Replaces `path` by `data` so that a crash leaves the old file or the new one: a temp
/// file, synced, renamed over it, the directory synced.
pub(super) fn replace_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => crate::io::small_file::sync_dir_blocking(dir),
        None => Ok(()),
    }
}

fn invalid_data(path: &Path, e: CodecError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// The metadata log, open for appends.
pub struct MetaStore {
    path: PathBuf,
    file: File,
}

impl MetaStore {
    /// Opens (creating) the log in `dir`, replays it, cuts off a torn tail, upgrades a
    /// version 1 log (whose replicas are on `node`), and returns the store with the
    /// metadata it holds.
    pub fn open(dir: &Path, node: NodeId) -> io::Result<(MetaStore, ClusterMetadata)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let meta = if FileHeader::has_magic(&data, magic::METADATA_LOG) {
            let mut r = Reader::new(&data);
            let version = r
                .take_header(magic::METADATA_LOG, 2..=VERSION)
                .map_err(|e| invalid_data(&path, e))?;
            let (meta, pos) = replay(r, MetaRecord::decode);
            if version < VERSION {
                // Same records, newer header: a build that knows only version 2 must not
                // read kinds it does not know, so it is told by the version.
                replace_durably(&path, &snapshot(&meta))?;
                info!(file = %path.display(), "upgraded metadata log from version {version} to {VERSION}");
            }
            if pos < data.len() {
                warn!(
                    file = %path.display(),
                    position = pos,
                    dropped_bytes = data.len() - pos,
                    "truncating torn or corrupt tail of metadata log"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(pos as u64)?;
                file.sync_all()?;
            }
            meta
        } else {
            // No header: a new log, or one written before versions existed.
            let (old, pos) = replay(Reader::new(&data), |b| MetaRecord::decode_v1(b, node));
            if pos < data.len() {
                warn!(
                    file = %path.display(),
                    position = pos,
                    dropped_bytes = data.len() - pos,
                    "dropping torn or corrupt tail of version 1 metadata log"
                );
            }
            let upgraded = snapshot(&old);
            replace_durably(&path, &upgraded)?;
            if !data.is_empty() {
                info!(
                    file = %path.display(),
                    topics = old.topics.len(),
                    "upgraded metadata log from version 1 to {VERSION}"
                );
            }
            // What a replay of the new file gives, so every start sees the same
            // snapshot version for the same file.
            let (meta, _) = replay(
                Reader::new(upgraded.get(crate::codec::HEADER_LEN..).unwrap_or_default()),
                MetaRecord::decode,
            );
            meta
        };
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut store = MetaStore { path, file };
        store.seek_end()?;
        crate::io::small_file::sync_dir_blocking(dir)?;
        Ok((store, meta))
    }

    fn seek_end(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::End(0)).map(|_| ())
    }

    /// Appends a change durably.
    pub fn append(&mut self, rec: &MetaRecord) -> io::Result<()> {
        let mut w = Writer::new();
        w.put_checked(&rec.encode());
        self.file.write_all(&w.finish())?;
        self.file.sync_data()
    }

    /// Replaces the whole log by `meta` (a snapshot the cluster's controller node sent),
    /// so that a crash leaves the old log or the new one.
    pub fn replace(&mut self, meta: &ClusterMetadata) -> io::Result<()> {
        replace_durably(&self.path, &snapshot(meta))?;
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.seek_end()
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str, shards: &[usize]) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: shards
                .iter()
                .map(|&shard| PartitionAssignment::single(ShardAddr { node: 3, shard }))
                .collect(),
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        }
    }

    #[test]
    fn topics_are_found_by_id_through_recreation_and_deletion() {
        let mut meta = ClusterMetadata::default();
        let first = topic("t", &[0]);
        MetaRecord::PutTopic(first.clone()).apply(&mut meta);
        assert_eq!(
            meta.topic_by_id(&first.id).map(|t| &t.name),
            Some(&first.name)
        );
        // Deleted and created again under the same name: a new id, the old one unknown.
        let again = topic("t", &[1]);
        MetaRecord::PutTopic(again.clone()).apply(&mut meta);
        assert!(meta.topic_by_id(&first.id).is_none());
        assert_eq!(
            meta.topic_by_id(&again.id).map(|t| t.partitions.len()),
            Some(1)
        );
        MetaRecord::DeleteTopic("t".into()).apply(&mut meta);
        assert!(meta.topic_by_id(&again.id).is_none());
    }

    #[test]
    fn replays_changes_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let topic = topic("t", &[0, 1, 0]);
        {
            let (mut store, meta) = MetaStore::open(dir.path(), 3).unwrap();
            assert!(meta.topics.is_empty());
            store.append(&MetaRecord::PutTopic(topic.clone())).unwrap();
            store
                .append(&MetaRecord::DeleteTopic("gone".into()))
                .unwrap();
            store
                .append(&MetaRecord::PutTopic(TopicMeta {
                    name: "u".into(),
                    ..topic.clone()
                }))
                .unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let (_, meta) = MetaStore::open(dir.path(), 3).unwrap();
        assert_eq!(meta.topics.len(), 1);
        assert_eq!(meta.topics["t"], topic);
        assert!(std::fs::metadata(&path).unwrap().len() < len - 3);
    }

    #[test]
    fn keeps_replica_sets_leaders_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = topic("t", &[0]);
        let (a, b) = (
            ShardAddr { node: 1, shard: 2 },
            ShardAddr { node: 4, shard: 0 },
        );
        t.partitions.push(PartitionAssignment {
            replicas: vec![a, b],
            leader: b,
            leader_epoch: 17,
        });
        {
            let (mut store, _) = MetaStore::open(dir.path(), 3).unwrap();
            store.append(&MetaRecord::PutTopic(t.clone())).unwrap();
        }
        let (_, meta) = MetaStore::open(dir.path(), 3).unwrap();
        assert_eq!(meta.topics["t"], t);
        let data = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(data.starts_with(b"CDMT\x00\x04"));
    }

    /// A version 1 log as releases up to 617d542 wrote it.
    fn v1_log(records: &[(u8, &str, Uuid, &[u32])]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(kind, name, id, shards) in records {
            let mut p = Writer::new();
            p.put_u8(kind);
            p.put_str16(name);
            if kind == PUT_TOPIC {
                p.put_uuid(&id);
                p.put_u32(shards.len() as u32);
                for &s in shards {
                    p.put_u32(s);
                }
                p.put_u16(1);
                p.put_str16("retention.ms");
                p.put_str16("-1");
            }
            let mut w = Writer::new();
            w.put_checked(&p.finish());
            out.extend(w.finish());
        }
        out
    }

    #[test]
    fn a_version_1_log_is_converted_and_rewritten_as_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut old = v1_log(&[
            (PUT_TOPIC, "a", a, &[0, 1, 0]),
            (PUT_TOPIC, "b", b, &[1]),
            (DELETE_TOPIC, "b", b, &[]),
            (PUT_TOPIC, "c", b, &[1]),
        ]);
        old.extend_from_slice(&[0, 0, 0, 9, 1]); // a torn record
        std::fs::write(&path, &old).unwrap();

        let (mut store, meta) = MetaStore::open(dir.path(), 5).unwrap();
        let names: Vec<_> = meta.topics.keys().cloned().collect();
        assert_eq!(names, ["a", "c"]);
        let shards: Vec<_> = meta.topics["a"]
            .partitions
            .iter()
            .map(|p| {
                assert_eq!(p.replicas, vec![p.leader]);
                assert_eq!((p.leader.node, p.leader_epoch), (5, 0));
                p.leader.shard
            })
            .collect();
        assert_eq!(shards, [0, 1, 0]);
        assert_eq!(meta.topics["a"].id, a);
        assert_eq!(meta.topics["a"].configs["retention.ms"], "-1");
        let data = std::fs::read(&path).unwrap();
        assert!(data.starts_with(b"CDMT\x00\x04"));
        assert!(!dir.path().join("metadata.log.tmp").exists());

        // Appends go after the upgraded records, and a restart reads both.
        store.append(&MetaRecord::DeleteTopic("c".into())).unwrap();
        drop(store);
        let (_, again) = MetaStore::open(dir.path(), 5).unwrap();
        assert_eq!(again.topics.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(again.topics["a"], meta.topics["a"]);
    }

    #[test]
    fn an_empty_or_missing_log_starts_versioned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
        let (_, meta) = MetaStore::open(dir.path(), 0).unwrap();
        assert!(meta.topics.is_empty());
        let data = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(data, b"CDMT\x00\x04");
        let fresh = tempfile::tempdir().unwrap();
        MetaStore::open(fresh.path(), 0).unwrap();
        let data = std::fs::read(fresh.path().join(FILE_NAME)).unwrap();
        assert_eq!(data, b"CDMT\x00\x04");
    }

    #[test]
    fn a_log_of_a_newer_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let newer = b"CDMT\x00\x05whatever comes next".to_vec();
        std::fs::write(&path, &newer).unwrap();
        let err = MetaStore::open(dir.path(), 0).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("version 5"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), newer);
    }

    #[test]
    fn a_version_2_log_is_rewritten_as_version_4_with_the_same_topics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let t = topic("t", &[0, 1]);
        let mut w = Writer::with_header(FileHeader::new(magic::METADATA_LOG, 2));
        w.put_checked(&MetaRecord::PutTopic(t.clone()).encode());
        std::fs::write(&path, w.finish()).unwrap();
        let (_, meta) = MetaStore::open(dir.path(), 3).unwrap();
        assert_eq!(meta.topics["t"], t);
        assert!(std::fs::read(&path).unwrap().starts_with(b"CDMT\x00\x04"));
    }

    #[test]
    fn a_copy_of_the_controllers_state_keeps_its_revision_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = MetaStore::open(dir.path(), 2).unwrap();
        let mut meta = ClusterMetadata::default();
        MetaRecord::PutTopic(topic("t", &[0])).apply(&mut meta);
        meta.revision = 42;
        meta.next_producer_id = 7 << 48;
        MetaRecord::PutPeer(4, "10.0.0.4".into(), 9192).apply(&mut meta);
        MetaRecord::Reassignment {
            topic: "t".into(),
            partition: 0,
            target: vec![ShardAddr { node: 4, shard: 0 }],
            origin: vec![3],
            from: vec![ShardAddr { node: 3, shard: 0 }],
        }
        .apply(&mut meta);
        store.replace(&meta).unwrap();
        drop(store);
        let (_, reopened) = MetaStore::open(dir.path(), 2).unwrap();
        assert_eq!(reopened.revision, 42);
        assert_eq!(reopened.next_producer_id, 7 << 48);
        assert_eq!(reopened.peers[&4], ("10.0.0.4".to_string(), 9192));
        assert_eq!(
            reopened.topics["t"].partitions[0].replicas,
            [
                ShardAddr { node: 3, shard: 0 },
                ShardAddr { node: 4, shard: 0 }
            ],
            "a moving partition has its old and new replicas"
        );
        assert_eq!(reopened.origins[&("t".to_string(), 0)], [3]);
        assert_eq!(
            reopened.moving_from[&("t".to_string(), 0)],
            [ShardAddr { node: 3, shard: 0 }]
        );
        assert!(reopened.same_content(&meta));
        assert_eq!(decode_snapshot(&snapshot(&meta)).unwrap().revision, 42);
    }

    #[test]
    fn a_snapshot_carries_brokers_and_topics_and_refuses_a_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = ClusterMetadata::default();
        let b = BrokerEndpoint {
            host: "10.0.0.2".into(),
            port: 9092,
            shards: 2,
        };
        MetaRecord::PutBroker(2, b.clone()).apply(&mut meta);
        MetaRecord::PutTopic(topic("t", &[1])).apply(&mut meta);
        let bytes = snapshot(&meta);
        let back = decode_snapshot(&bytes).unwrap();
        assert!(back.same_content(&meta));
        assert_eq!(back.brokers[&2], b);
        assert!(back.topic_by_id(&meta.topics["t"].id).is_some());
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_snapshot(&damaged).is_err());
        assert!(decode_snapshot(&bytes[..bytes.len() - 2]).is_err());
        // A node keeps what it was sent, and a restart reads it back.
        let (mut store, _) = MetaStore::open(dir.path(), 2).unwrap();
        store.replace(&meta).unwrap();
        store.append(&MetaRecord::DeleteTopic("t".into())).unwrap();
        let (_, again) = MetaStore::open(dir.path(), 2).unwrap();
        assert_eq!(again.brokers[&2], b);
        assert!(again.topics.is_empty());
    }

    #[test]
    fn a_leader_outside_the_replica_set_is_corrupt() {
        let mut t = topic("t", &[0]);
        t.partitions[0].leader = ShardAddr { node: 9, shard: 9 };
        let payload = MetaRecord::PutTopic(t).encode();
        assert!(MetaRecord::decode(&payload).is_err());
    }
}
