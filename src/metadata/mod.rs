//! Cluster metadata: topics, their ids, partition placement and configs.
//!
//! Shard 0 owns the authoritative copy and its persistent log (`store`); every shard
//! serves requests from an immutable snapshot (`Arc<ClusterMetadata>`) it received over
//! the cross-shard mesh.

pub mod store;
pub mod topic_config;

use std::collections::BTreeMap;

use uuid::Uuid;

/// Index of a shard within this node.
pub type ShardId = usize;
/// A partition number within a topic.
pub type PartitionId = i32;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic id, fixed at creation (Fetch v13+ and newer clients address topics by id).
    pub id: Uuid,
    /// Owning shard of each partition, by partition number.
    pub partitions: Vec<ShardId>,
    /// Topic-level config overrides, as given at creation.
    pub configs: BTreeMap<String, String>,
}

/// A snapshot of the cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Increases with every change.
    pub version: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

impl ClusterMetadata {
    /// Number of partitions each shard owns, for placement.
    pub fn partitions_per_shard(&self, shards: usize) -> Vec<usize> {
        let mut counts = vec![0; shards];
        for t in self.topics.values() {
            for &s in &t.partitions {
                if let Some(c) = counts.get_mut(s) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// Finds a topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }
}

/// Checks a topic name the way Kafka does: 1..=249 characters of `[a-zA-Z0-9._-]`, not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "topic name must be 1 to 249 characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name '{name}' contains characters other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}
