//! The TOML config file (`--config caudal.toml`): every broker setting, with the same
//! names as the command-line flags (dashes become underscores). Flags override the file;
//! the file overrides the defaults. Unknown keys and values of the wrong type are refused
//! at start with a message naming the key.
//!
//! ```toml
//! data_dir = "/var/lib/caudal"
//! listen = "0.0.0.0:9092"
//! advertised_host = "broker1.example.com"
//! shards = 8
//! flush_interval_ms = 1000        # omit for durable (fsync before ack)
//! metrics_listen = "127.0.0.1:9644"
//! log_level = "info"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// Settings as read from the file; `None` means "not set here".
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// See `--listen`.
    pub listen: Option<String>,
    /// See `--shards`.
    pub shards: Option<usize>,
    /// See `--cpus`.
    pub cpus: Option<Vec<usize>>,
    /// See `--advertised-host`.
    pub advertised_host: Option<String>,
    /// See `--node-id`.
    pub node_id: Option<i32>,
    /// See `--default-partitions`.
    pub default_partitions: Option<i32>,
    /// See `--no-auto-create-topics` (false here disables auto creation).
    pub auto_create_topics: Option<bool>,
    /// See `--flush-interval-ms`.
    pub flush_interval_ms: Option<u64>,
    /// See `--socket-request-max-bytes`.
    pub socket_request_max_bytes: Option<usize>,
    /// See `--request-budget-bytes`.
    pub request_budget_bytes: Option<usize>,
    /// See `--tail-cache-bytes`.
    pub tail_cache_bytes: Option<usize>,
    /// See `--io-memory-bytes`.
    pub io_memory_bytes: Option<usize>,
    /// See `--retention-check-ms`.
    pub retention_check_ms: Option<u64>,
    /// See `--group-initial-rebalance-delay-ms`.
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// See `--group-min-session-timeout-ms`.
    pub group_min_session_timeout_ms: Option<u64>,
    /// See `--connections-max-idle-ms`.
    pub connections_max_idle_ms: Option<u64>,
    /// See `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// See `--log-level`.
    pub log_level: Option<String>,
    /// See `--preempt-timer-us`.
    pub preempt_timer_us: Option<u64>,
    /// See `--wake-guard-us`.
    pub wake_guard_us: Option<u64>,
}

impl FileConfig {
    /// Parses file contents.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        FileConfig::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_refuses_unknown_ones_by_name() {
        let c =
            FileConfig::parse("shards = 4\nlisten = \"127.0.0.1:9000\"\nflush_interval_ms = 5\n")
                .unwrap();
        assert_eq!(c.shards, Some(4));
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9000"));
        let e = FileConfig::parse("shard = 4\n").unwrap_err().0;
        assert!(e.contains("shard"), "{e}");
        let e = FileConfig::parse("shards = \"many\"\n").unwrap_err().0;
        assert!(e.contains("shards"), "{e}");
    }
}
