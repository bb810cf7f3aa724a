//! `meta/node.identity`: which node and cluster a data directory belongs to, and the
//! directory's own random id (its "disk identity", made when the directory is first
//! used). A node refuses to start on another node's or another cluster's directory;
//! peers learn the disk identity from its hello, so a node that comes back on an empty
//! disk under an old id is recognisably not the replica it was (KIP-903's lesson: such a
//! node must not vote as if it still held what it acknowledged).
//!
//! Format: `{ magic "CDNI", version: u16, checked payload { node: u64, disk_id: [u8; 16],
//! cluster_id: str16 } }`.

use std::path::Path;

use uuid::Uuid;

use crate::codec::{self, magic, FileHeader, Reader, Writer};

const VERSION: u16 = 1;
const FILE: &str = "node.identity";

/// A data directory's owner and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node the directory belongs to.
    pub node: u64,
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The directory's random id.
    pub disk_id: [u8; 16],
}

/// Why a node may not use a data directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory belongs to another node or cluster.
    #[error("{dir} belongs to node {found_node} of cluster {found_cluster:?}; this is node {node} of cluster {cluster:?}")]
    Foreign {
        /// The directory.
        dir: String,
        /// Its owner.
        found_node: u64,
        /// Its owner's cluster.
        found_cluster: String,
        /// This node.
        node: u64,
        /// This node's cluster.
        cluster: String,
    },
    /// The identity file is damaged.
    #[error("{file}: {source}")]
    Damaged {
        /// The file.
        file: String,
        /// What is wrong with it.
        source: codec::CodecError,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl NodeIdentity {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_u64(self.node);
        w.put_raw(&self.disk_id);
        w.put_str16(&self.cluster_id);
        codec::encode_checked_file(FileHeader::new(magic::NODE_IDENTITY, VERSION), &w.finish())
    }

    fn decode(data: &[u8]) -> codec::CodecResult<NodeIdentity> {
        let (_, payload) =
            codec::decode_checked_file(data, magic::NODE_IDENTITY, VERSION..=VERSION)?;
        let mut r = Reader::new(payload);
        let id = NodeIdentity {
            node: r.take_u64()?,
            disk_id: r
                .take_bytes(16)?
                .try_into()
                .map_err(|_| codec::CodecError::Invalid("disk id"))?,
            cluster_id: r.take_str16()?,
        };
        r.finish()?;
        Ok(id)
    }

    /// The identity of `meta_dir` for node `node` of `cluster_id`: read, and checked to
    /// be this node's; or made (a new disk id) and saved when the directory has none.
    /// Read once at start, before the shards (as the metadata log is).
    pub fn load_or_create(
        meta_dir: &Path,
        node: u64,
        cluster_id: &str,
    ) -> Result<NodeIdentity, IdentityError> {
        std::fs::create_dir_all(meta_dir)?;
        let path = meta_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let found =
                    NodeIdentity::decode(&bytes).map_err(|source| IdentityError::Damaged {
                        file: path.display().to_string(),
                        source,
                    })?;
                if found.node != node || found.cluster_id != cluster_id {
                    return Err(IdentityError::Foreign {
                        dir: meta_dir.display().to_string(),
                        found_node: found.node,
                        found_cluster: found.cluster_id,
                        node,
                        cluster: cluster_id.to_string(),
                    });
                }
                Ok(found)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = NodeIdentity {
                    node,
                    cluster_id: cluster_id.to_string(),
                    disk_id: *Uuid::new_v4().as_bytes(),
                };
                super::store::replace_durably(&path, &made.encode())?;
                Ok(made)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_made_one_nodes_and_refused_to_another() {
        let dir = tempfile::tempdir().unwrap();
        let made = NodeIdentity::load_or_create(dir.path(), 2, "prod").unwrap();
        let again = NodeIdentity::load_or_create(dir.path(), 2, "prod").unwrap();
        assert_eq!(made, again, "the disk id is kept");
        let other_node = NodeIdentity::load_or_create(dir.path(), 3, "prod").unwrap_err();
        assert!(
            other_node.to_string().contains("belongs to node 2"),
            "{other_node}"
        );
        let other_cluster = NodeIdentity::load_or_create(dir.path(), 2, "test").unwrap_err();
        assert!(
            other_cluster.to_string().contains("cluster \"prod\""),
            "{other_cluster}"
        );
    }

    #[test]
    fn identity_round_trips_and_damage_is_caught() {
        let id = NodeIdentity {
            node: 3,
            cluster_id: "prod".into(),
            disk_id: [9; 16],
        };
        let bytes = id.encode();
        assert_eq!(NodeIdentity::decode(&bytes).unwrap(), id);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(NodeIdentity::decode(&flipped).is_err());
    }
}
