//! A shard's part in a cluster, as the shard holds it: its raft loop, its connections
//! to the same shard of the other nodes, and the node-wide table of who leads.

use std::rc::Rc;
use std::sync::Arc;

use super::leaders::LeaderTable;
use super::liveness::PeerLiveness;
use super::raft_driver::RaftDriver;
use super::transport::Transport;

/// A shard's part in the cluster.
pub struct ShardRaft {
    /// The loop driving the shard's raft groups.
    pub driver: Rc<RaftDriver>,
    /// Its connections to the same shard of the other nodes.
    pub transport: Rc<Transport>,
    /// Leadership of every group hosted on this node, shared by its shards.
    pub leaders: Arc<LeaderTable>,
    /// Which peers are up, shared by the node's shards.
    pub liveness: Arc<PeerLiveness>,
}
