//! What a shard knows of its cluster, for handlers: the controller leader, every node's
//! Kafka listeners, who leads each partition and where clients reach it (any shard
//! answers for any partition), and the topics to hand the controller leader. On a single
//! node (no `--peers`) the answers are this node's own.

use crate::cluster::leaders::PartitionLeader;
use crate::cluster::wire::Control;
use crate::group::{offsets_partition, OFFSETS_TOPIC};
use crate::metadata::controller_log::CONTROLLER_GROUP;
use crate::metadata::{raft_group, BrokerEndpoint, NodeId, PartitionId, ShardId, TopicMeta};

use super::state::Shard;

/// Cluster id a single node (no `--peers`) reports to clients.
pub const SINGLE_NODE_CLUSTER_ID: &str = "caudal-single-node";

impl Shard {
    /// The cluster id clients are told.
    pub fn cluster_id(&self) -> String {
        if self.in_cluster() {
            self.config.cluster_id.clone()
        } else {
            SINGLE_NODE_CLUSTER_ID.to_string()
        }
    }

    /// True when this node is one of several (`--peers`).
    pub fn in_cluster(&self) -> bool {
        !self.config.peers.is_empty()
    }

    /// The node leading the controller, as this node last heard (this node on a single
    /// node; `None` while a cluster's controller election is under way).
    pub fn controller_node(&self) -> Option<NodeId> {
        if !self.in_cluster() {
            return Some(self.config.node_id);
        }
        let raft = self.raft.as_ref()?;
        raft.leaders
            .get(CONTROLLER_GROUP)
            .and_then(|l| l.leader)
            .and_then(|n| i32::try_from(n).ok())
    }

    /// Where to send what the controller leader must decide: the leader when known,
    /// otherwise every voter (only the leader acts on it).
    pub fn controller_targets(&self) -> Vec<u64> {
        match self.controller_node() {
            Some(n) if self.in_cluster() => vec![u64::try_from(n).unwrap_or(0)],
            _ => self.config.controller_voters(),
        }
    }

    /// True when this node's metadata holds its own registration (its listeners and peer
    /// address as it has them now): it has heard the controller since it joined.
    pub fn is_registered(&self) -> bool {
        let me = self.config.node_id;
        let meta = self.meta();
        meta.brokers.get(&me) == Some(&self.own_endpoint())
            && meta.peers.get(&me) == Some(&self.own_peer_address())
    }

    /// True when clients may be served: always on a single node; in a cluster once this
    /// node is registered. Before that its metadata is empty or stale (a node back on an
    /// empty disk that the others keep out never gets further), and a client that took
    /// it would see no topics and no other broker, so the node closes client connections
    /// instead, as a Kafka broker keeps its listeners shut until it has caught up.
    pub fn serves_clients(&self) -> bool {
        !self.in_cluster() || self.is_registered()
    }

    /// This node's Kafka listeners, as it registers them.
    pub fn own_endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint {
            host: self.config.advertised_host.clone(),
            port: self.config.base_port,
            shards: u16::try_from(self.config.shards).unwrap_or(u16::MAX),
        }
    }

    /// Where this node takes inter-node connections (its `--peers` entry), as it
    /// registers it.
    pub fn own_peer_address(&self) -> (String, u16) {
        let me = u64::try_from(self.config.node_id).unwrap_or(0);
        self.config
            .peers
            .iter()
            .find(|p| p.node == me)
            .map_or_else(|| (String::new(), 0), |p| (p.host.clone(), p.port))
    }

    /// Every broker clients may use: each shard of each node the metadata knows and this
    /// node heard from lately (this node's own from its settings), as (broker id, host,
    /// port).
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        let meta = self.meta();
        let me = self.config.node_id;
        let up = |n: NodeId| {
            self.raft
                .as_ref()
                .is_none_or(|r| r.liveness.is_up(u64::try_from(n).unwrap_or(0)))
        };
        let mut nodes: Vec<(NodeId, BrokerEndpoint)> = meta
            .brokers
            .iter()
            .filter(|(&n, _)| n != me && up(n))
            .map(|(&n, b)| (n, b.clone()))
            .collect();
        nodes.push((me, self.own_endpoint()));
        nodes.sort_by_key(|(n, _)| *n);
        nodes
            .into_iter()
            .flat_map(|(node, b)| {
                (0..usize::from(b.shards)).map(move |k| {
                    (
                        crate::config::broker_id(node, k),
                        b.host.clone(),
                        i32::from(b.shard_port(k)),
                    )
                })
            })
            .collect()
    }

    /// Where clients reach broker `id`, when the metadata knows its node.
    pub fn endpoint(&self, id: i32) -> Option<(String, i32)> {
        let per_node = crate::config::MAX_SHARDS as i32;
        let (node, shard) = (id / per_node, (id % per_node) as ShardId);
        if node == self.config.node_id {
            return (shard < self.config.shards).then(|| {
                (
                    self.config.advertised_host.clone(),
                    i32::from(self.config.shard_port(shard)),
                )
            });
        }
        let meta = self.meta();
        let b = meta.brokers.get(&node)?;
        (shard < usize::from(b.shards)).then(|| (b.host.clone(), i32::from(b.shard_port(shard))))
    }

    /// Broker id of the shard that hosts the controller service clients are told of;
    /// -1 (none, as Kafka says while it has none) until this node knows where it is.
    pub fn controller_broker(&self) -> i32 {
        let Some(node) = self.controller_node() else {
            return -1;
        };
        let id = crate::config::broker_id(node, super::controller::CONTROLLER_SHARD);
        if self.endpoint(id).is_some() {
            id
        } else {
            -1
        }
    }

    /// Broker id of the coordinator of `group`: on a single node the shard its id hashes
    /// to; in a cluster the leader of its partition of the offsets topic (`None` until
    /// the topic exists and the partition has a leader).
    pub fn coordinator_broker(&self, group: &str) -> Option<i32> {
        if !self.in_cluster() {
            let shard = crate::group::coordinator_shard(group, self.config.shards);
            return Some(crate::config::broker_id(self.config.node_id, shard));
        }
        let meta = self.meta();
        let t = meta.topics.get(OFFSETS_TOPIC)?;
        let p = offsets_partition(group, t.partitions.len());
        self.partition_leader(t, p)?.leader
    }

    /// The offsets topic as the controller creates it: `--offsets-topic-*`, with no more
    /// replicas than nodes.
    pub fn offsets_topic_spec(&self) -> (String, i32, i16) {
        let nodes = i16::try_from(self.config.peers.len().max(1)).unwrap_or(i16::MAX);
        (
            OFFSETS_TOPIC.to_string(),
            self.config.offsets_topic_num_partitions,
            self.config.offsets_topic_replication_factor.min(nodes),
        )
    }

    /// The leader, epoch, replicas and in-sync replicas of partition `index` of `topic`
    /// as this node knows them. A replicated partition's come from the raft group when
    /// this node hosts a replica of it; otherwise from what its leader last said of
    /// itself (`Control::Alive`), or else from the metadata (its preferred leader, which
    /// answers with the current leader's hint if it no longer leads).
    pub fn partition_leader(
        &self,
        topic: &TopicMeta,
        index: PartitionId,
    ) -> Option<PartitionLeader> {
        let a = topic.partition(index)?;
        let replicas: Vec<i32> = a.replicas.iter().map(|r| r.broker_id()).collect();
        let fallback = PartitionLeader {
            leader: Some(a.leader.broker_id()),
            epoch: a.leader_epoch,
            replicas: replicas.clone(),
            in_sync: replicas.clone(),
        };
        if !a.is_replicated() {
            return Some(fallback);
        }
        let Some(raft) = self.raft.as_ref() else {
            return Some(fallback);
        };
        let shard = a.leader.shard;
        let group = raft_group(&topic.id, index);
        let broker = |n: u64| crate::config::broker_id(i32::try_from(n).unwrap_or(i32::MAX), shard);
        let Some(l) = raft.leaders.get(group) else {
            // No replica here: the leader that last said so, while it is up (the
            // preferred leader may be down for good).
            return Some(match raft.leaders.told_leader(group) {
                Some((node, term)) if raft.liveness.is_up(node) => PartitionLeader {
                    leader: Some(broker(node)),
                    epoch: i32::try_from(term).unwrap_or(i32::MAX),
                    ..fallback
                },
                _ => fallback,
            });
        };
        Some(PartitionLeader {
            leader: l.leader.map(broker),
            epoch: i32::try_from(l.term).unwrap_or(i32::MAX),
            replicas,
            in_sync: l.in_sync.iter().copied().map(broker).collect(),
        })
    }
}

/// Asks the controller leader to create topics a client of this node auto-created.
pub fn forward_creation(shard: &Shard, topics: Vec<(String, i32, i16)>) {
    if let Some(raft) = shard.raft.as_ref() {
        for to in shard.controller_targets() {
            raft.transport
                .send_control(to, Control::CreateTopics(topics.clone()));
        }
    }
}
