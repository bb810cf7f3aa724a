//! Broker configuration: one struct, filled from the command line, validated at start.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A configuration the broker refuses to start with.
#[derive(Debug, Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Everything a broker process needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of all data: `meta/` and one directory per partition. Default `./data`.
    pub data_dir: PathBuf,
    /// Address shard 0 listens on; shard k listens on `port + k`. Default 127.0.0.1:9092.
    pub listen_host: IpAddr,
    /// Port of shard 0.
    pub base_port: u16,
    /// Number of shards. Default: one per CPU in the process's affinity mask.
    pub shards: usize,
    /// CPUs to pin shards to, in shard order. Default: the process's affinity mask.
    pub cpus: Vec<usize>,
    /// Host name advertised to clients in Metadata. Default: the listen address.
    pub advertised_host: String,
    /// This node's id; broker ids are `node_id * 1024 + shard`. Default 0.
    pub node_id: i32,
    /// Partitions of an auto-created topic or a CreateTopics with -1. Default 1.
    pub default_partitions: i32,
    /// Create unknown topics on Metadata requests that allow it. Default true.
    pub auto_create_topics: bool,
    /// Default durability of produce requests with acks != 0. Default durable.
    pub flush: FlushPolicy,
    /// Largest request accepted, checked before buffering. Default 100 MiB, min 1 KiB.
    pub socket_request_max_bytes: usize,
    /// Bytes of requests in flight per shard before it stops reading sockets.
    /// Default 256 MiB; at least `socket_request_max_bytes` is always admitted alone.
    pub request_budget_bytes: usize,
    /// Tail cache per shard. Default 256 MiB.
    pub tail_cache_bytes: usize,
    /// Memory registered with io_uring per shard. Default 2 MiB.
    pub io_memory_bytes: usize,
    /// Close a connection that sends no complete request for this long (Kafka's
    /// `connections.max.idle.ms`). Default 10 minutes.
    pub connections_max_idle: Duration,
    /// How long a shard runs tasks before it polls for completed I/O again. Default
    /// 100 ms, glommio's own; lower it for tail latency on dedicated cores (measured in
    /// docs/benchmarks.md).
    pub preempt_timer: Duration,
    /// How often the wake guard wakes every executor: the bound on a sleep with tasks
    /// ready (`crate::executor::wake_guard`). Zero turns it off. Default 10 ms.
    pub wake_guard_period: Duration,
    /// Address of the Prometheus metrics endpoint; off when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Consumer-group coordinator settings.
    pub group: GroupSettings,
    /// How often retention runs, in ms. Default 5 minutes (Kafka's
    /// `log.retention.check.interval.ms`).
    pub retention_check_ms: u64,
}

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

/// Largest broker id a shard may add to `node_id * 1024`.
pub const MAX_SHARDS: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen_host: IpAddr::from([127, 0, 0, 1]),
            base_port: 9092,
            shards: 1,
            cpus: Vec::new(),
            advertised_host: "127.0.0.1".into(),
            node_id: 0,
            default_partitions: 1,
            auto_create_topics: true,
            flush: FlushPolicy::Durable,
            socket_request_max_bytes: 100 << 20,
            request_budget_bytes: 256 << 20,
            tail_cache_bytes: 256 << 20,
            io_memory_bytes: 2 << 20,
            retention_check_ms: 300_000,
            group: Default::default(),
            connections_max_idle: Duration::from_secs(600),
            metrics_listen: None,
            preempt_timer: Duration::from_millis(100),
            wake_guard_period: crate::executor::wake_guard::DEFAULT_PERIOD,
        }
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
        if self.default_partitions < 1 {
            return Err(ConfigError("default partitions must be at least 1".into()));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(ConfigError(
                "socket.request.max.bytes must be at least 1024".into(),
            ));
        }
        if let FlushPolicy::Interval(d) = self.flush {
            if d < Duration::from_millis(1) {
                return Err(ConfigError("flush interval must be at least 1 ms".into()));
            }
        }
        Ok(())
    }

    /// Port of shard `k`.
    pub fn shard_port(&self, shard: usize) -> u16 {
        self.base_port + shard as u16
    }

    /// Broker id clients see for shard `k`.
    pub fn broker_id(&self, shard: usize) -> i32 {
        self.node_id * MAX_SHARDS as i32 + shard as i32
    }
}
