//! A node among others: the inter-node protocol, the connections between the same
//! shard of every node (`--peers`, in `config::peers`), and the loop that drives a
//! shard's raft groups over them (docs/architecture.md, "Between nodes").

pub mod leaders;
pub mod liveness;
pub mod node;
pub mod raft_driver;
pub mod transport;
pub mod wire;
