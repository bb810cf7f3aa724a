//! The persistent metadata log under `<data>/meta/metadata.log`, written by shard 0.
//!
//! Format: a sequence of records `{ length: u32, crc32c: u32 (of payload), payload }`.
//! Payload: `{ kind: u8, body }` with kind 1 = put topic
//! `{ name: str16, id: [u8;16], partitions: u32, shard: u32 * partitions,
//!    configs: u16, (key: str16, value: str16) * configs }` and kind 2 = delete topic
//! `{ name: str16 }`, where `str16` is a u16 length and UTF-8 bytes. All big-endian.
//! Replay stops at the first torn or corrupt record, which is cut off.
//!
//! Appends use blocking `std::fs` writes with `sync_data`: they happen only on topic
//! changes, on shard 0, and are small.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;
use uuid::Uuid;

use super::{ClusterMetadata, TopicMeta};

const PUT_TOPIC: u8 = 1;
const DELETE_TOPIC: u8 = 2;

/// A change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRecord {
    /// Create (or replace) a topic.
    PutTopic(TopicMeta),
    /// Delete a topic.
    DeleteTopic(String),
}

impl MetaRecord {
    /// Applies the change to a snapshot.
    pub fn apply(&self, meta: &mut ClusterMetadata) {
        match self {
            MetaRecord::PutTopic(t) => {
                meta.topics.insert(t.name.clone(), t.clone());
            }
            MetaRecord::DeleteTopic(name) => {
                meta.topics.remove(name);
            }
        }
        meta.version += 1;
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            MetaRecord::PutTopic(t) => {
                out.push(PUT_TOPIC);
                put_str(&mut out, &t.name);
                out.extend_from_slice(t.id.as_bytes());
                out.extend_from_slice(&(t.partitions.len() as u32).to_be_bytes());
                for &s in &t.partitions {
                    out.extend_from_slice(&(s as u32).to_be_bytes());
                }
                out.extend_from_slice(&(t.configs.len() as u16).to_be_bytes());
                for (k, v) in &t.configs {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
            MetaRecord::DeleteTopic(name) => {
                out.push(DELETE_TOPIC);
                put_str(&mut out, name);
            }
        }
        out
    }

    fn decode(mut b: &[u8]) -> Option<MetaRecord> {
        let kind = take(&mut b, 1)?[0];
        let rec = match kind {
            PUT_TOPIC => {
                let name = take_str(&mut b)?;
                let id = Uuid::from_slice(take(&mut b, 16)?).ok()?;
                let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
                if n > b.len() / 4 {
                    return None;
                }
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    partitions.push(u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize);
                }
                let c = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
                let mut configs = std::collections::BTreeMap::new();
                for _ in 0..c {
                    let k = take_str(&mut b)?;
                    let v = take_str(&mut b)?;
                    configs.insert(k, v);
                }
                MetaRecord::PutTopic(TopicMeta {
                    name,
                    id,
                    partitions,
                    configs,
                })
            }
            DELETE_TOPIC => MetaRecord::DeleteTopic(take_str(&mut b)?),
            _ => return None,
        };
        b.is_empty().then_some(rec)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_str(b: &mut &[u8]) -> Option<String> {
    let n = u16::from_be_bytes(take(b, 2)?.try_into().ok()?) as usize;
    String::from_utf8(take(b, n)?.to_vec()).ok()
}

/// The metadata log, open for appends.
pub struct MetaStore {
    path: PathBuf,
    file: File,
}

impl MetaStore {
    /// Opens (creating) the log in `dir`, replays it, cuts off a torn tail, and returns
    /// the store with the metadata it holds.
    pub fn open(dir: &Path) -> io::Result<(MetaStore, ClusterMetadata)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("metadata.log");
        let mut data = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut data)?;
        }
        let mut meta = ClusterMetadata::default();
        let mut pos = 0usize;
        while let Some(header) = data.get(pos..pos + 8) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let Some(payload) = data.get(pos + 8..(pos + 8).saturating_add(len)) else {
                break;
            };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let Some(rec) = MetaRecord::decode(payload) else {
                break;
            };
            rec.apply(&mut meta);
            pos += 8 + len;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        if pos < data.len() {
            warn!(
                file = %path.display(),
                position = pos,
                dropped_bytes = data.len() - pos,
                "truncating torn or corrupt tail of metadata log"
            );
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
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
        let payload = rec.encode();
        let mut buf = Vec::with_capacity(payload.len() + 8);
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        buf.extend_from_slice(&payload);
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_changes_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let topic = TopicMeta {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: vec![0, 1, 0],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        };
        {
            let (mut store, meta) = MetaStore::open(dir.path()).unwrap();
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
        let path = dir.path().join("metadata.log");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let (_, meta) = MetaStore::open(dir.path()).unwrap();
        assert_eq!(meta.topics.len(), 1);
        assert_eq!(meta.topics["t"], topic);
        assert!(std::fs::metadata(&path).unwrap().len() < len - 3);
    }
}
