//! A shard as a node of a cluster: its raft loop and peer connections ([`ShardRaft`]),
//! who leads what and where clients reach it (any shard answers for any partition), and
//! the two background tasks a node runs:
//!
//! - every shard publishes its raft groups' changes to the node's [`LeaderTable`] and
//!   wakes its long-polling fetches;
//! - shard 0 exchanges the metadata: the controller node (the lowest id of `--peers`)
//!   records every node's Kafka listeners as they register and sends the whole metadata
//!   to the others whenever it changes and every few seconds (so a node that was down
//!   catches up); the other nodes register until the metadata names them, adopt what the
//!   controller node sends, and hand it the topics their clients auto-create.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::cluster::leaders::LeaderTable;
use crate::cluster::raft_driver::RaftDriver;
use crate::cluster::transport::Transport;
use crate::cluster::wire::Control;
use crate::metadata::store::{decode_snapshot, snapshot};
use crate::metadata::{raft_group, BrokerEndpoint, NodeId, PartitionId, ShardId, TopicMeta};

use super::mesh::Everywhere;
use super::router::TopicSpec;
use super::state::Shard;

/// How often the controller node resends the metadata, and other nodes their listeners
/// until the metadata has them.
const RESEND: Duration = Duration::from_secs(2);

/// A shard's part in the cluster.
pub struct ShardRaft {
    /// The loop driving the shard's raft groups.
    pub driver: Rc<RaftDriver>,
    /// Its connections to the same shard of the other nodes.
    pub transport: Rc<Transport>,
    /// Leadership of every group hosted on this node, shared by its shards.
    pub leaders: Arc<LeaderTable>,
}

/// A partition's leader and replicas as clients are told, in broker ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// The leader (`None` while the partition has none: an election is under way).
    pub leader: Option<i32>,
    /// The leader epoch.
    pub epoch: i32,
    /// Every replica.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader.
    pub in_sync: Vec<i32>,
}

impl Shard {
    /// True when this node is one of several (`--peers`).
    pub fn in_cluster(&self) -> bool {
        !self.config.peers.is_empty()
    }

    /// The node that decides topic changes and coordinates groups: the lowest id of
    /// `--peers`, or this node alone.
    pub fn controller_node(&self) -> NodeId {
        self.config
            .peers
            .iter()
            .map(|p| i32::try_from(p.node).unwrap_or(i32::MAX))
            .min()
            .unwrap_or(self.config.node_id)
    }

    /// This node's Kafka listeners, as it registers them.
    pub fn own_endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint {
            host: self.config.advertised_host.clone(),
            port: self.config.base_port,
            shards: u16::try_from(self.config.shards).unwrap_or(u16::MAX),
        }
    }

    /// Every broker clients may use: each shard of each node the metadata knows (this
    /// node's own from its settings), as (broker id, host, port).
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        let meta = self.meta();
        let me = self.config.node_id;
        let mut nodes: Vec<(NodeId, BrokerEndpoint)> = meta
            .brokers
            .iter()
            .filter(|(&n, _)| n != me)
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
        let id =
            crate::config::broker_id(self.controller_node(), super::controller::CONTROLLER_SHARD);
        if self.endpoint(id).is_some() {
            id
        } else {
            -1
        }
    }

    /// Broker id of the coordinator of `group`: a shard of the controller node in a
    /// cluster (group state is not replicated before part 3, so it stays on one node).
    pub fn coordinator_broker(&self, group: &str) -> i32 {
        let shard = crate::group::coordinator_shard(group, self.config.shards);
        crate::config::broker_id(self.controller_node(), shard)
    }

    /// The leader, epoch, replicas and in-sync replicas of partition `index` of `topic`
    /// as this node knows them. A replicated partition's come from the raft group when
    /// this node hosts a replica of it; otherwise from the metadata (its preferred
    /// leader, which answers with the current leader's hint if it no longer leads).
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
        let Some(l) = raft.leaders.get(raft_group(&topic.id, index)) else {
            return Some(fallback);
        };
        let broker = |n: u64| crate::config::broker_id(i32::try_from(n).unwrap_or(i32::MAX), shard);
        Some(PartitionLeader {
            leader: l.leader.map(broker),
            epoch: i32::try_from(l.term).unwrap_or(i32::MAX),
            replicas,
            in_sync: l.in_sync.iter().copied().map(broker).collect(),
        })
    }
}

/// Every shard of a node: publishes its raft groups' changes to the node's leader table
/// and wakes the shard's long-polling fetches. Runs until the shard stops.
pub async fn publish_leadership(shard: Rc<Shard>) {
    let Some(raft) = shard.raft.as_ref() else {
        return;
    };
    loop {
        let changed: Vec<(u64, _)> = raft
            .driver
            .take_changed()
            .into_iter()
            .map(|(g, v)| (g.0, v))
            .collect();
        if !changed.is_empty() {
            raft.leaders.update(&changed);
            shard.data_arrived.notify();
        }
        raft.driver.changed().await;
    }
}

/// Shard 0 of a node of a cluster: exchanges the metadata with the other nodes (see the
/// module docs). Runs until the shard stops.
pub async fn exchange_metadata(shard: Rc<Shard>) {
    let (Some(raft), Some(service)) = (shard.raft.as_ref(), shard.controller.as_ref()) else {
        return;
    };
    let transport = raft.transport.clone();
    let me = shard.config.node_id;
    let controller = shard.controller_node();
    let decides = service.decides();
    let publish = Everywhere(&shard);
    if decides {
        if let Err(e) = service
            .register_broker(me, shard.own_endpoint(), &publish)
            .await
        {
            warn!(error = %e, "could not record this node's listeners in the metadata log");
        }
    }
    let mut sent_version = None;
    let mut next_resend = Instant::now();
    loop {
        let arrived = transport.inbox().control_arrived.generation();
        let changed = service.changed.generation();
        for (from, c) in transport.inbox().take_control() {
            let from = i32::try_from(from).unwrap_or(i32::MAX);
            match c {
                Control::Register { host, port, shards } if decides => {
                    let endpoint = BrokerEndpoint { host, port, shards };
                    if let Err(e) = service.register_broker(from, endpoint, &publish).await {
                        warn!(node = from, error = %e, "could not record a node's listeners");
                    }
                }
                Control::Metadata(bytes) if !decides && from == controller => {
                    match decode_snapshot(&bytes) {
                        Ok(meta) => {
                            if let Err(e) = service.adopt_sent(meta, &publish).await {
                                warn!(error = %e, "could not keep the controller node's metadata");
                            }
                        }
                        Err(e) => warn!(error = %e, "bad metadata from the controller node"),
                    }
                }
                Control::CreateTopics(topics) if decides => {
                    let specs = topics
                        .into_iter()
                        .map(|(name, partitions, replication_factor)| TopicSpec {
                            name,
                            partitions,
                            configs: Default::default(),
                            replication_factor,
                        })
                        .collect();
                    service.create_topics(specs, false, &publish).await;
                }
                other => debug!(node = from, message = ?other, "control message not for this node"),
            }
        }
        let now = Instant::now();
        let resend = now >= next_resend;
        if resend {
            next_resend = now + RESEND;
        }
        if decides {
            let meta = service.metadata();
            if resend || sent_version != Some(meta.version) {
                sent_version = Some(meta.version);
                let bytes = Bytes::from(snapshot(&meta));
                for peer in transport.peers() {
                    transport.send_control(peer, Control::Metadata(bytes.clone()));
                }
            }
        } else if resend && shard.meta().brokers.get(&me) != Some(&shard.own_endpoint()) {
            let e = shard.own_endpoint();
            transport.send_control(
                u64::try_from(controller).unwrap_or(0),
                Control::Register {
                    host: e.host,
                    port: e.port,
                    shards: e.shards,
                },
            );
        }
        let wait = next_resend.saturating_duration_since(Instant::now());
        futures_lite::future::or(
            crate::task::sleep(wait),
            futures_lite::future::or(
                transport.inbox().control_arrived.changed_since(arrived),
                service.changed.changed_since(changed),
            ),
        )
        .await;
    }
}

/// Asks the controller node to create topics a client of this node auto-created.
pub fn forward_creation(shard: &Shard, topics: Vec<(String, i32, i16)>) {
    if let Some(raft) = shard.raft.as_ref() {
        let to = u64::try_from(shard.controller_node()).unwrap_or(0);
        raft.transport
            .send_control(to, Control::CreateTopics(topics));
    }
}
