//! What a handler may use: the request's header and peer, and the shard's services —
//! partitions, groups, metadata and the controller, producer ids, metrics — and nothing
//! else of the shard (its router, stores, locks and budgets stay out of handlers' reach).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::RequestHeader;

use crate::cluster::leaders::PartitionLeader;
use crate::config::Config;
use crate::error::ErrorCode;
use crate::group::coordinator::Coordinator;
use crate::metadata::{ClusterMetadata, PartitionId, ShardId};
use crate::notify::Notify;
use crate::replica::Partition;
use crate::shard::controller_client::Controller;
use crate::shard::producer_ids::ProducerIds;
use crate::shard::state::{PartitionHandle, Shard, ShardStats};

/// One request being handled: its header and peer, and the services of the shard that
/// handles it.
pub struct RequestContext<'a> {
    /// The request's header.
    pub header: RequestHeader,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    shard: &'a Rc<Shard>,
}

impl<'a> RequestContext<'a> {
    /// The context for a request `header` from `peer`, handled by `shard`.
    pub fn new(shard: &'a Rc<Shard>, header: RequestHeader, peer: Option<SocketAddr>) -> Self {
        RequestContext {
            header,
            peer,
            shard,
        }
    }

    /// The request's API version.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// Broker settings.
    pub fn config(&self) -> &Config {
        &self.shard.config
    }

    /// The shard handling the request.
    pub fn shard_id(&self) -> ShardId {
        self.shard.id
    }

    /// The shard's counters and per-partition metrics.
    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.shard.stats
    }

    /// The metadata snapshot this shard serves from.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.shard.meta()
    }

    /// Broker id of shard `k` of this node.
    pub fn broker_id(&self, shard: ShardId) -> i32 {
        self.shard.broker_id(shard)
    }

    /// Every broker clients may use, as (broker id, host, port).
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        self.shard.brokers()
    }

    /// Where clients reach broker `id`, when known.
    pub fn endpoint(&self, id: i32) -> Option<(String, i32)> {
        self.shard.endpoint(id)
    }

    /// The broker clients are told is the controller.
    pub fn controller_broker(&self) -> i32 {
        self.shard.controller_broker()
    }

    /// True when node `node` is up as far as this node knows (always on a single node).
    pub fn node_is_up(&self, node: i32) -> bool {
        node == self.shard.config.node_id
            || self
                .shard
                .raft
                .as_ref()
                .is_none_or(|r| r.liveness.is_up(u64::try_from(node).unwrap_or(0)))
    }

    /// The broker that coordinates `group`.
    pub fn coordinator_broker(&self, group: &str) -> Option<i32> {
        self.shard.coordinator_broker(group)
    }

    /// In a cluster whose offsets topic does not exist yet, has the controller create it
    /// (as Kafka does at the first FindCoordinator); true when it was missing.
    pub async fn ensure_offsets_topic(&self) -> bool {
        if !self.shard.in_cluster()
            || self
                .shard
                .meta()
                .topics
                .contains_key(crate::group::OFFSETS_TOPIC)
        {
            return false;
        }
        let (name, partitions, replication_factor) = self.shard.offsets_topic_spec();
        if !self.forward_creation(vec![(name.clone(), partitions, replication_factor)]) {
            let spec = crate::shard::router::TopicSpec {
                name,
                partitions,
                configs: Default::default(),
                replication_factor,
            };
            self.controller().create_topics(vec![spec], false).await;
        }
        true
    }

    /// The cluster id clients are told.
    pub fn cluster_id(&self) -> String {
        self.shard.cluster_id()
    }

    /// Leader, epoch, replicas and in-sync replicas of partition `index` of `topic`.
    pub fn partition_leader(&self, topic: &str, index: PartitionId) -> Option<PartitionLeader> {
        let meta = self.shard.meta();
        let t = meta.topics.get(topic)?;
        self.shard.partition_leader(t, index)
    }

    /// Asks the cluster's controller leader to create topics a client auto-created here
    /// (name, partitions, replicas); false on a node that decides itself.
    pub fn forward_creation(&self, topics: Vec<(String, i32, i16)>) -> bool {
        if self.shard.in_cluster()
            && self.shard.controller_node() != Some(self.shard.config.node_id)
        {
            crate::shard::cluster_view::forward_creation(self.shard, topics);
            return true;
        }
        false
    }

    /// The log of a partition this shard leads, or the error code to answer with.
    pub fn partition(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<PartitionHandle, ErrorCode> {
        self.shard.local_partition(topic, partition)
    }

    /// Every partition this shard serves, with its topic and number.
    pub fn local_partitions(&self) -> Vec<(String, PartitionId, Rc<Partition>)> {
        self.shard.local_partitions()
    }

    /// Fired when a partition's high watermark moves: long-polling fetches wait on it.
    pub fn data_arrived(&self) -> &Notify {
        &self.shard.data_arrived
    }

    /// True once the shard is shutting down: long polls return at once.
    pub fn is_stopping(&self) -> bool {
        self.shard.is_stopping()
    }

    /// The coordinator of `group` if this shard is it, else the error to answer with.
    pub fn coordinator_for(&self, group: &str) -> Result<Rc<Coordinator>, ErrorCode> {
        self.shard.coordinator_for(group)
    }

    /// The shard's producer-id allocator, once started.
    pub fn producer_ids(&self) -> Option<&ProducerIds> {
        self.shard.producer_ids.get()
    }

    /// A producer id no other producer has: this shard's own on a single node, from the
    /// controller's blocks in a cluster.
    pub async fn allocate_producer_id(&self) -> Result<i64, ErrorCode> {
        if self.shard.in_cluster() {
            return self.shard.cluster_producer_id().await;
        }
        let Some(ids) = self.producer_ids() else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        ids.allocate()
            .await
            .map_err(|_| ErrorCode::KafkaStorageError)
    }

    /// The controller: topic changes and node-wide questions.
    pub fn controller(&self) -> Controller<'a> {
        Controller::new(self.shard)
    }
}
