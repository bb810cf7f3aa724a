//! `meta/peer.disks`: the disk identity each peer had when this node first heard from
//! it. A peer that comes back with another one started on an empty data directory under
//! its old node id: it may have voted or acknowledged entries it no longer holds, so its
//! votes and acknowledgements would be lies (KIP-903). Its connections are refused until
//! an operator re-admits it (part 3 does this with a membership change; until then, by
//! deleting this file on every other node, which forgets every peer's disk).
//!
//! Format: `{ magic "CDPD", version: u16, checked payload { count: u32, (node: u64,
//! disk_id: [u8; 16]) * count } }`, replaced whole (temp file, sync, rename) at each new
//! peer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::{self, magic, FileHeader, Reader, Writer};

const VERSION: u16 = 1;
const FILE: &str = "peer.disks";

/// Why a peer's connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskRefusal {
    /// The peer's data directory is not the one it had.
    #[error("node {node} came back with another data directory (disk {found}, was {known}): it may have lost what it voted for and acknowledged, so it is kept out until re-admitted (delete meta/{FILE} on the other nodes)")]
    Replaced {
        /// The peer.
        node: u64,
        /// The disk id it had.
        known: String,
        /// The disk id it has now.
        found: String,
    },
    /// The file could not be written.
    #[error("recording node {node}'s disk failed: {reason}")]
    Io {
        /// The peer.
        node: u64,
        /// What failed.
        reason: String,
    },
}

/// The peers' disk identities, shared by the node's shards.
#[derive(Debug)]
pub struct PeerDisks {
    path: PathBuf,
    known: Mutex<BTreeMap<u64, [u8; 16]>>,
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(known: &BTreeMap<u64, [u8; 16]>) -> Vec<u8> {
    let mut payload = Writer::new();
    payload.put_u32(known.len() as u32);
    for (node, disk) in known {
        payload.put_u64(*node);
        payload.put_raw(disk);
    }
    let mut w = Writer::with_header(FileHeader::new(magic::PEER_DISKS, VERSION));
    w.put_checked(&payload.finish());
    w.finish()
}

fn decode(data: &[u8]) -> codec::CodecResult<BTreeMap<u64, [u8; 16]>> {
    let mut r = Reader::new(data);
    r.take_header(magic::PEER_DISKS, VERSION..=VERSION)?;
    let payload = r.take_checked()?;
    r.finish()?;
    let mut p = Reader::new(payload);
    let n = p.take_count(24)?;
    let mut known = BTreeMap::new();
    for _ in 0..n {
        let node = p.take_u64()?;
        let disk: [u8; 16] = p
            .take_bytes(16)?
            .try_into()
            .map_err(|_| codec::CodecError::Invalid("disk id"))?;
        known.insert(node, disk);
    }
    p.finish()?;
    Ok(known)
}

impl PeerDisks {
    /// Loads `meta_dir/peer.disks` (none yet: no peer known). Blocking; at start.
    pub fn load(meta_dir: &Path) -> std::io::Result<Arc<PeerDisks>> {
        let path = meta_dir.join(FILE);
        let known = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Arc::new(PeerDisks {
            path,
            known: Mutex::new(known),
        }))
    }

    /// Checks peer `node`'s disk identity: known and equal, or first seen (then recorded
    /// durably before this returns, on a helper thread); refused when it changed.
    pub async fn admit(self: &Arc<Self>, node: u64, disk: [u8; 16]) -> Result<(), DiskRefusal> {
        let this = self.clone();
        crate::task::blocking(move || this.admit_blocking(node, disk)).await
    }

    fn admit_blocking(&self, node: u64, disk: [u8; 16]) -> Result<(), DiskRefusal> {
        let mut known = match self.known.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        match known.get(&node) {
            Some(k) if *k == disk => Ok(()),
            Some(k) => Err(DiskRefusal::Replaced {
                node,
                known: hex(k),
                found: hex(&disk),
            }),
            None => {
                let mut next = known.clone();
                next.insert(node, disk);
                super::store::replace_durably(&self.path, &encode(&next)).map_err(|e| {
                    DiskRefusal::Io {
                        node,
                        reason: e.to_string(),
                    }
                })?;
                *known = next;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_back_on_another_disk_is_refused_and_the_first_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let disks = PeerDisks::load(dir.path()).unwrap();
        assert_eq!(disks.admit_blocking(2, [1; 16]), Ok(()));
        assert_eq!(disks.admit_blocking(2, [1; 16]), Ok(()));
        assert!(matches!(
            disks.admit_blocking(2, [9; 16]),
            Err(DiskRefusal::Replaced { node: 2, .. })
        ));
        // A restart remembers.
        let again = PeerDisks::load(dir.path()).unwrap();
        assert!(again.admit_blocking(2, [9; 16]).is_err());
        assert_eq!(again.admit_blocking(3, [3; 16]), Ok(()));
        let mut damaged = std::fs::read(dir.path().join(FILE)).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(dir.path().join(FILE), damaged).unwrap();
        assert!(PeerDisks::load(dir.path()).is_err());
    }
}
