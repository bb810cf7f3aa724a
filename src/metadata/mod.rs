//! Cluster metadata: topics, their ids, configs, and each partition's replicas and leader.
//!
//! Shard 0 owns the authoritative copy and its persistent log (`store`); every shard
//! serves requests from an immutable snapshot (`Arc<ClusterMetadata>`) it received over
//! the cross-shard mesh.

pub mod controller_log;
pub mod node_identity;
pub mod peer_disks;
pub mod store;
pub mod topic_config;

use std::collections::BTreeMap;

use uuid::Uuid;

/// Index of a shard within its node.
pub type ShardId = usize;
/// A partition number within a topic.
pub type PartitionId = i32;
/// A node (one broker process) of the cluster; `--node-id`.
pub type NodeId = i32;

/// A shard of a node: where a partition's replica lives, and where cross-shard and (next)
/// inter-node messages are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardAddr {
    /// The node.
    pub node: NodeId,
    /// The shard within that node.
    pub shard: ShardId,
}

impl std::fmt::Display for ShardAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} shard {}", self.node, self.shard)
    }
}

impl ShardAddr {
    /// The broker id clients know this shard by (`node * 1024 + shard`).
    pub fn broker_id(&self) -> i32 {
        crate::config::broker_id(self.node, self.shard)
    }
}

/// Where one partition lives: its replicas, which of them leads, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// Every replica of the partition, the preferred leader first.
    pub replicas: Vec<ShardAddr>,
    /// The replica that takes produces and serves fetches.
    pub leader: ShardAddr,
    /// Bumped at every change of leader; stamped into the batches the leader appends.
    pub leader_epoch: i32,
}

impl PartitionAssignment {
    /// A partition with one replica, which leads, at epoch 0: every partition today.
    pub fn single(replica: ShardAddr) -> PartitionAssignment {
        PartitionAssignment {
            replicas: vec![replica],
            leader: replica,
            leader_epoch: 0,
        }
    }

    /// True when `replica` holds a copy of the partition.
    pub fn has_replica(&self, replica: ShardAddr) -> bool {
        self.replicas.contains(&replica)
    }

    /// True when the partition has more than one replica: a raft group keeps them.
    pub fn is_replicated(&self) -> bool {
        self.replicas.len() > 1
    }
}

/// The raft group of partition `partition` of the topic with id `topic`: the same on
/// every node, derived rather than stored. A topic id is random (v4), so its first 8
/// bytes tell topics apart and the partition number tells a topic's partitions apart.
pub fn raft_group(topic: &Uuid, partition: PartitionId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&topic.as_bytes()[..8]);
    u64::from_be_bytes(head) ^ u64::from(partition as u32)
}

/// Where clients reach a node's Kafka listeners: shard k at `port + k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// The host the node advertises.
    pub host: String,
    /// Port of its shard 0.
    pub port: u16,
    /// Its number of shards.
    pub shards: u16,
}

impl BrokerEndpoint {
    /// Port of shard `shard`.
    pub fn shard_port(&self, shard: ShardId) -> u16 {
        self.port
            .saturating_add(u16::try_from(shard).unwrap_or(u16::MAX))
    }
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic id, fixed at creation (Fetch v13+ and newer clients address topics by id).
    pub id: Uuid,
    /// Replicas and leader of each partition, by partition number.
    pub partitions: Vec<PartitionAssignment>,
    /// Topic-level config overrides, as given at creation.
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// The assignment of partition `p`, if the topic has it.
    pub fn partition(&self, p: PartitionId) -> Option<&PartitionAssignment> {
        usize::try_from(p).ok().and_then(|p| self.partitions.get(p))
    }
}

/// A change to an existing topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    /// Replace the topic's config overrides (already validated).
    SetConfigs(BTreeMap<String, String>),
    /// Grow the topic to this many partitions.
    GrowPartitions(i32),
}

/// A snapshot of the cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Increases with every change this node applies (its shards take a snapshot only
    /// when it is newer than theirs); local to the node.
    pub version: u64,
    /// In a cluster, the controller log's offset after the last record this metadata
    /// applied: the same on every node for the same state. 0 on a single node.
    pub revision: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// Topic names by id (Fetch v13+ names topics by id on every request), kept by
    /// `MetaRecord::apply`, the one place topics change.
    pub(crate) ids: BTreeMap<Uuid, String>,
    /// The Kafka listeners of every node of a cluster, by node (empty on a single node:
    /// its own listeners come from its settings).
    pub brokers: BTreeMap<NodeId, BrokerEndpoint>,
    /// In a cluster, the first producer id the controller has not handed out (0: none
    /// handed out yet).
    pub next_producer_id: u64,
    /// Partitions moving to another replica set (AlterPartitionReassignments), with the
    /// set they move to; their `replicas` meanwhile hold the old and new ones.
    pub reassignments: BTreeMap<(String, PartitionId), Vec<ShardAddr>>,
    /// The replicas each moving partition had when its move started.
    pub moving_from: BTreeMap<(String, PartitionId), Vec<ShardAddr>>,
    /// Where each node of a cluster takes inter-node connections (host, port of its
    /// shard 0), as it registered: nodes not named in `--peers` are reached this way.
    pub peers: BTreeMap<NodeId, (String, u16)>,
    /// The voters a partition's raft group started with, kept once it has been
    /// reassigned: a replica added later opens the group with them and follows every
    /// membership change from the log's first entry.
    pub origins: BTreeMap<(String, PartitionId), Vec<NodeId>>,
}

impl ClusterMetadata {
    /// Number of partition replicas each shard index holds on `nodes` together, for
    /// placement.
    pub fn replicas_per_shard(&self, nodes: &[NodeId], shards: usize) -> Vec<usize> {
        let mut counts = vec![0; shards];
        for t in self.topics.values() {
            for r in t.partitions.iter().flat_map(|a| &a.replicas) {
                if !nodes.contains(&r.node) {
                    continue;
                }
                if let Some(c) = counts.get_mut(r.shard) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// True when both hold the same topics, brokers, producer ids and reassignments
    /// (whatever their versions).
    pub fn same_content(&self, other: &ClusterMetadata) -> bool {
        self.topics == other.topics
            && self.brokers == other.brokers
            && self.peers == other.peers
            && self.next_producer_id == other.next_producer_id
            && self.reassignments == other.reassignments
            && self.moving_from == other.moving_from
            && self.origins == other.origins
    }

    /// The voters partition `p` of `topic`'s raft group started with.
    pub fn origin_voters(&self, topic: &TopicMeta, p: PartitionId) -> Vec<NodeId> {
        match self.origins.get(&(topic.name.clone(), p)) {
            Some(o) => o.clone(),
            None => topic
                .partition(p)
                .map(|a| a.replicas.iter().map(|r| r.node).collect())
                .unwrap_or_default(),
        }
    }

    /// True when it holds nothing: no topic and no broker.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.brokers.is_empty()
    }

    /// Finds a topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.ids.get(id).and_then(|name| self.topics.get(name))
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
