//! The Prometheus endpoint: `GET /metrics` renders every shard's counters and histograms
//! in the text exposition format, from a thread of its own so that a scrape never runs
//! on a shard.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};

use crate::metrics::{Histogram, PartitionKey, PartitionMetrics, BUCKETS};
use crate::shard::state::ShardStats;
use crate::task::StopSignal;

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
        "caudal_produce_requests_copied_total",
        "Produce requests whose record batches were copied out of the request (those for several partitions; one partition's are stamped and cached in place).",
        "counter",
        &|s| load(&s.produce_copied),
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
        "caudal_connections_refused_total",
        "Client connections closed unserved: the node is not registered with its cluster's controller yet.",
        "counter",
        &|s| load(&s.connections_refused),
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
        "Group-commit rounds completed: an fdatasync each, or O_DSYNC writes under the durable policy.",
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
        "caudal_disk_zero_bytes_total",
        "Bytes of zeros written ahead of the data, so that small durable writes land in written extents.",
        "counter",
        &|s| load(&s.io.zero_bytes_written),
    );
    counter(
        &mut out,
        "caudal_disk_reserved_ahead_bytes",
        "Disk reserved with fallocate ahead of the segments' data, holding none yet.",
        "gauge",
        &|s| load(&s.io.reserved_ahead),
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
        "Duration of a group-commit round: its writes, then the fdatasync if there is one.",
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

/// Serves `GET /metrics` on `addr` from a thread of its own until `stop` is sent.
pub fn serve(
    addr: SocketAddr,
    shards: Vec<Arc<ShardStats>>,
    stop: Arc<StopSignal>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !stop.is_stopped() {
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
