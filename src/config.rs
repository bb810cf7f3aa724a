//! Broker configuration: `Config`, filled from the command line over the TOML file over
//! the defaults, all declared once in `settings`, and validated at start.

use std::time::Duration;

use thiserror::Error;

pub mod peers;
mod settings;

pub use peers::{Peer, PeerList};
pub use settings::{Config, FileConfig, Flags, Settings};

/// A configuration the broker refuses to start with.
#[derive(Debug, Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// The append resolves after its bytes are on disk and covered by an fdatasync.
    /// Concurrent appends share one fdatasync (group commit).
    Durable,
    /// Kafka's default: the append resolves once its write is issued; the log is synced
    /// every interval. A crash can lose up to one interval of acknowledged data.
    Interval(Duration),
}

/// Group coordinator settings (Kafka's `group.*` and `offsets.retention.*`).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Wait before the first rebalance of an empty group, so members starting together
    /// join one generation. Kafka: `group.initial.rebalance.delay.ms`, default 3 s.
    pub initial_rebalance_delay: Duration,
    /// Smallest session timeout accepted. Kafka default 6 s.
    pub min_session_timeout: Duration,
    /// Largest session timeout accepted. Kafka default 30 min.
    pub max_session_timeout: Duration,
    /// Offsets of an empty group are deleted this long after its last commit. Default 7 days.
    pub offsets_retention: Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            initial_rebalance_delay: Duration::from_secs(3),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(1800),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Controller voters when `--controller-voters` is not given: three keep the metadata
/// through the loss of any one node, as Kafka's usual three controllers do.
pub const DEFAULT_CONTROLLER_VOTERS: usize = 3;

/// Largest broker id a shard may add to `node_id * 1024`.
pub const MAX_SHARDS: usize = 1024;

/// What setting defaults may ask of the machine the broker runs on.
pub struct Host {
    /// CPUs the process may run on.
    pub cpus: fn() -> Vec<usize>,
}

impl Default for Config {
    /// Every setting at its default, on a host that lists no CPUs: an embedded broker
    /// (tests) then gets one shard, and `runtime::start` reads the empty list as the
    /// affinity mask.
    fn default() -> Self {
        Settings::defaults(&Host { cpus: Vec::new }).config()
    }
}

impl Config {
    /// Checks limits that would otherwise fail later, at a worse moment.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError(format!(
                "shards must be 1..={MAX_SHARDS}, got {}",
                self.shards
            )));
        }
        if usize::from(self.base_port) + self.shards - 1 > usize::from(u16::MAX) {
            return Err(ConfigError("listen port + shards exceeds 65535".into()));
        }
        if self.node_id < 0 || self.node_id > i32::MAX / 1024 - 1 {
            return Err(ConfigError(format!(
                "node id {} out of range",
                self.node_id
            )));
        }
        if self.offsets_topic_num_partitions < 1 || self.offsets_topic_replication_factor < 1 {
            return Err(ConfigError(
                "offsets topic partitions and replication factor must be at least 1".into(),
            ));
        }
        if self.default_partitions < 1 {
            return Err(ConfigError("default partitions must be at least 1".into()));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(ConfigError(
                "socket.request.max.bytes must be at least 1024".into(),
            ));
        }
        if !self.peers.is_empty() {
            if self.node_id < 1 {
                return Err(ConfigError(
                    "a node of a cluster (--peers) needs --node-id 1 or above".into(),
                ));
            }
            if !self.peers.iter().any(|p| p.node == self.node_id as u64) {
                return Err(ConfigError(format!(
                    "--peers does not name this node (--node-id {})",
                    self.node_id
                )));
            }
            if let Some(v) = self
                .controller_voters_set
                .iter()
                .find(|v| !self.peers.iter().any(|p| p.node == **v))
            {
                return Err(ConfigError(format!(
                    "--controller-voters names node {v}, which --peers does not"
                )));
            }
            if self
                .peers
                .iter()
                .any(|p| usize::from(p.port) + self.shards - 1 > 65535)
            {
                return Err(ConfigError("a peer port + shards exceeds 65535".into()));
            }
        }
        let nodes = self.peers.len().max(1);
        if self.default_replication_factor < 1
            || usize::try_from(self.default_replication_factor).unwrap_or(usize::MAX) > nodes
        {
            return Err(ConfigError(format!(
                "default replication factor {} must be 1..={nodes} (the nodes of the cluster)",
                self.default_replication_factor
            )));
        }
        if let FlushPolicy::Interval(d) = self.flush {
            if d < Duration::from_millis(1) {
                return Err(ConfigError("flush interval must be at least 1 ms".into()));
            }
        }
        Ok(())
    }

    /// The nodes keeping the controller log: `--controller-voters`, or the first three
    /// nodes of `--peers` (all of them when fewer). Empty on a single node.
    pub fn controller_voters(&self) -> Vec<u64> {
        if !self.controller_voters_set.is_empty() {
            let mut v = self.controller_voters_set.clone();
            v.sort_unstable();
            v.dedup();
            return v;
        }
        self.peers
            .iter()
            .take(DEFAULT_CONTROLLER_VOTERS)
            .map(|p| p.node)
            .collect()
    }

    /// Port of shard `k`.
    pub fn shard_port(&self, shard: usize) -> u16 {
        self.base_port + shard as u16
    }

    /// Broker id clients see for shard `k`.
    pub fn broker_id(&self, shard: usize) -> i32 {
        broker_id(self.node_id, shard)
    }
}

/// Broker id clients see for shard `shard` of node `node`: `node * 1024 + shard`.
pub fn broker_id(node: i32, shard: usize) -> i32 {
    node.saturating_mul(MAX_SHARDS as i32)
        .saturating_add(i32::try_from(shard).unwrap_or(i32::MAX))
}
