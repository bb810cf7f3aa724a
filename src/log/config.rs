//! Per-partition log settings (Kafka's topic-level configs) and the flush policy.

// Declared with the broker settings, since config must not depend on the log; the log
// keeps its own path to it.
pub use crate::config::FlushPolicy;

/// Settings of one partition log. Defaults follow Kafka's topic defaults.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment once it would exceed this size. Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment once it is older than this. Default 7 days.
    pub segment_ms: i64,
    /// Delete sealed segments whose newest record is older than this; -1 keeps forever.
    /// Default 7 days.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this; -1 keeps
    /// everything. Default -1.
    pub retention_bytes: i64,
    /// Log bytes between two sparse index entries. Default 4 KiB.
    pub index_interval_bytes: u64,
    /// Largest batch accepted, in bytes. Default 1 MiB + 12 bytes, as Kafka.
    pub max_message_bytes: usize,
    /// Durability of an append.
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            flush: FlushPolicy::Durable,
        }
    }
}
