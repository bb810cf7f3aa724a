//! Metrics: lock-free counters and histograms that each shard updates on its own data,
//! aggregated across shards only when `/metrics` is scraped, and rendered in the
//! Prometheus text exposition format.
//!
//! The data path touches only relaxed atomics owned by its shard (no contention, no
//! locks). Registries of partitions and committed offsets sit behind a mutex that is
//! taken when a partition is opened or deleted, when a group commits, and by the scraper.
//! Written by hand rather than with a metrics crate: the common crates keep one global
//! registry behind shared locks, which does not fit a thread-per-core broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::shard::state::ShardStats;

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

    fn snapshot(&self) -> ([u64; BUCKETS.len()], u64, u64) {
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
    /// Committed offsets of the groups it coordinates: (group, topic, partition).
    pub committed: Mutex<BTreeMap<(String, String, i32), i64>>,
}

/// Renders every shard's metrics in the Prometheus text format.
pub fn render(shards: &[Arc<ShardStats>]) -> String {
    let mut out = String::new();
    let counter =
        |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&ShardStats) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (k, s) in shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{k}\"}} {}", f(s));
            }
        };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "caudal_produce_requests_total",
        "Produce requests handled.",
        "counter",
        &|s| load(&s.produce_requests),
    );
    counter(
        &mut out,
        "caudal_fetch_requests_total",
        "Fetch requests handled.",
        "counter",
        &|s| load(&s.fetch_requests),
    );
    counter(
        &mut out,
        "caudal_connections_accepted_total",
        "Client connections accepted.",
        "counter",
        &|s| load(&s.connections),
    );
    counter(
        &mut out,
        "caudal_connections",
        "Client connections open now.",
        "gauge",
        &|s| load(&s.open_connections),
    );
    counter(
        &mut out,
        "caudal_request_bytes_in_flight",
        "Bytes of requests being read or handled.",
        "gauge",
        &|s| load(&s.request_bytes_in_flight),
    );
    counter(
        &mut out,
        "caudal_tail_cache_bytes",
        "Bytes held in the tail cache.",
        "gauge",
        &|s| s.cache.used() as u64,
    );
    counter(
        &mut out,
        "caudal_fsyncs_total",
        "fdatasync calls completed.",
        "counter",
        &|s| load(&s.io.fsyncs),
    );
    counter(
        &mut out,
        "caudal_disk_write_bytes_total",
        "Bytes written with direct I/O, padding included.",
        "counter",
        &|s| load(&s.io.bytes_written),
    );
    counter(
        &mut out,
        "caudal_not_leader_total",
        "Partition requests refused: another shard owns the partition.",
        "counter",
        &|s| load(&s.not_leader),
    );

    histogram(
        &mut out,
        "caudal_fsync_duration_seconds",
        "fdatasync latency.",
        shards
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("shard=\"{k}\""), &s.io.fsync_latency)),
    );
    let per_api = shards.iter().enumerate().flat_map(|(k, s)| {
        s.request_latency
            .iter()
            .enumerate()
            .filter(|(_, h)| h.count() > 0)
            .map(move |(api, h)| {
                let name = kafka_protocol::messages::ApiKey::try_from(api as i16)
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_else(|_| api.to_string());
                (format!("shard=\"{k}\",api=\"{name}\""), h)
            })
    });
    histogram(
        &mut out,
        "caudal_request_duration_seconds",
        "Time from a request's arrival to its response, by API.",
        per_api,
    );

    let _ = writeln!(out, "# HELP caudal_errors_total Error codes returned, by Kafka error code.\n# TYPE caudal_errors_total counter");
    for (k, s) in shards.iter().enumerate() {
        for (i, c) in s.errors.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "caudal_errors_total{{shard=\"{k}\",code=\"{}\"}} {n}",
                    i as i64 - 1
                );
            }
        }
    }

    let mut partitions: BTreeMap<PartitionKey, Arc<PartitionMetrics>> = BTreeMap::new();
    for s in shards {
        if let Ok(p) = s.registry.partitions.lock() {
            partitions.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let part = |out: &mut String,
                name: &str,
                help: &str,
                kind: &str,
                f: &dyn Fn(&PartitionMetrics) -> i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((t, p), m) in &partitions {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{p}\"}} {}",
                escape(t),
                f(m)
            );
        }
    };
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
    let li = |a: &AtomicI64| a.load(Ordering::Relaxed);
    part(
        &mut out,
        "caudal_partition_bytes_in_total",
        "Record batch bytes appended.",
        "counter",
        &|m| l(&m.bytes_in),
    );
    part(
        &mut out,
        "caudal_partition_messages_in_total",
        "Records appended.",
        "counter",
        &|m| l(&m.messages_in),
    );
    part(
        &mut out,
        "caudal_partition_bytes_out_total",
        "Record batch bytes fetched.",
        "counter",
        &|m| l(&m.bytes_out),
    );
    part(
        &mut out,
        "caudal_partition_messages_out_total",
        "Records fetched.",
        "counter",
        &|m| l(&m.messages_out),
    );
    part(
        &mut out,
        "caudal_partition_high_watermark",
        "Offset after the last visible record.",
        "gauge",
        &|m| li(&m.high_watermark),
    );
    part(
        &mut out,
        "caudal_partition_log_start_offset",
        "First offset in the log.",
        "gauge",
        &|m| li(&m.log_start_offset),
    );
    part(
        &mut out,
        "caudal_partition_size_bytes",
        "Bytes of the partition on disk.",
        "gauge",
        &|m| li(&m.size_bytes),
    );

    let _ = writeln!(out, "# HELP caudal_group_lag Records between a group's committed offset and the high watermark.\n# TYPE caudal_group_lag gauge");
    for s in shards {
        let Ok(committed) = s.registry.committed.lock() else {
            continue;
        };
        for ((g, t, p), offset) in committed.iter() {
            if let Some(m) = partitions.get(&(t.clone(), *p)) {
                let lag = (m.high_watermark.load(Ordering::Relaxed) - offset).max(0);
                let _ = writeln!(
                    out,
                    "caudal_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {lag}",
                    escape(g),
                    escape(t)
                );
            }
        }
    }
    out
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (String, &'a Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        let (buckets, count, sum) = h.snapshot();
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Label values may hold any character but `\`, `"` and newlines must be escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `addr` from a thread of its own until `stop` is set.
pub fn serve(
    addr: SocketAddr,
    shards: Vec<Arc<ShardStats>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        continue;
                    }
                    // Drain the request headers.
                    let mut header = String::new();
                    while reader.read_line(&mut header).map(|n| n > 2).unwrap_or(false) {
                        header.clear();
                    }
                    let (status, body) = if line.starts_with("GET /metrics") {
                        ("200 OK", render(&shards))
                    } else {
                        ("404 Not Found", "try /metrics\n".to_string())
                    };
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}
