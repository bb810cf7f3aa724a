//! Metrics: lock-free counters and histograms that each shard updates on its own data,
//! aggregated across shards only when `/metrics` is scraped (`net::metrics_http`
//! renders them in the Prometheus text exposition format).
//!
//! The data path touches only relaxed atomics owned by its shard (no contention, no
//! locks). Registries of partitions and committed offsets sit behind a mutex that is
//! taken when a partition is opened or deleted, when a group commits, and by the scraper.
//! Written by hand rather than with a metrics crate: the common crates keep one global
//! registry behind shared locks, which does not fit a thread-per-core broker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Bucket counts, total count and sum in microseconds, read once each.
    pub fn snapshot(&self) -> ([u64; BUCKETS.len()], u64, u64) {
        let mut b = [0u64; BUCKETS.len()];
        for (i, x) in self.buckets.iter().enumerate() {
            b[i] = x.load(Ordering::Relaxed);
        }
        (
            b,
            self.count.load(Ordering::Relaxed),
            self.sum_nanos.load(Ordering::Relaxed),
        )
    }
}

/// Counters of one partition.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    /// Record batch bytes appended.
    pub bytes_in: AtomicU64,
    /// Records appended.
    pub messages_in: AtomicU64,
    /// Record batch bytes returned by fetches.
    pub bytes_out: AtomicU64,
    /// Records returned by fetches (whole batches, as sent).
    pub messages_out: AtomicU64,
    /// High watermark after the last append or read.
    pub high_watermark: AtomicI64,
    /// First offset in the log.
    pub log_start_offset: AtomicI64,
    /// Bytes on disk.
    pub size_bytes: AtomicI64,
}

/// A partition's identity in metrics: (topic, partition).
pub type PartitionKey = (String, i32);

/// Registries a shard shares with the scraper.
#[derive(Debug, Default)]
pub struct Registry {
    /// Partitions the shard serves.
    pub partitions: Mutex<BTreeMap<PartitionKey, Arc<PartitionMetrics>>>,
    /// Committed offsets of the groups it coordinates, kept by the group coordinator.
    pub committed: CommittedOffsets,
}

/// Committed offsets by (group, topic, partition), as the scraper shows them.
pub type CommittedOffsets = Arc<Mutex<BTreeMap<(String, String, i32), i64>>>;
