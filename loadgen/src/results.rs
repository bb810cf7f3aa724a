//! Reading bench results back (a run's JSON and percentile files) and formatting their
//! figures for the report's tables: shared by the run tables and the Kafka comparison.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::plot::parse_hgrm;

/// The standard suite, in order, with what each measures.
pub const WORKLOADS: [(&str, &str); 7] = [
    (
        "throughput",
        "1 KiB messages, batches up to 1 MiB, acks=all, 2 producers, flat out",
    ),
    (
        "latency",
        "1 KiB messages at half the measured throughput, e2e, 2 producers",
    ),
    (
        "small",
        "100 B messages, 16 KiB batches, acks=all, 8 producers, flat out",
    ),
    (
        "one-partition",
        "1 KiB messages, 16 KiB batches, 5 requests in flight, acks=all, 1 partition, 1 producer, flat out",
    ),
    (
        "catch-up",
        "consume a backlog from the start, none of it in the tail cache",
    ),
    (
        "fan-out",
        "1 producer at a quarter of the measured throughput, 4 consumer groups, e2e",
    ),
    (
        "partitions",
        "1 KiB messages, 16 KiB batches, acks=all, 2 producers, 1,000 (quick) or 4,000 partitions, flat out, after three unmeasured batches into each partition",
    ),
];

/// A JSON file of a results directory.
pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A JSON number as f64.
pub fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The histogram that best describes a workload: e2e if it has one, else its own.
pub fn curve_of(dir: &Path, name: &str, result: &Value) -> Option<(String, Vec<(f64, f64)>)> {
    let (file, what) = match result["mode"].as_str() {
        Some("e2e") => (format!("{name}.e2e.hgrm"), "e2e"),
        Some("consume") => (format!("{name}.hgrm"), "fetch"),
        _ => (format!("{name}.hgrm"), "produce ack"),
    };
    let rows = parse_hgrm(&std::fs::read_to_string(dir.join(file)).ok()?);
    (!rows.is_empty()).then(|| (format!("{name} ({what})"), rows))
}

/// A figure for a table cell: thousands separated, few decimals.
pub fn fmt_num(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A latency in microseconds, as ms or µs for a table cell.
pub fn fmt_us(v: &Value) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(us) if us >= 10_000.0 => format!("{:.0} ms", us / 1000.0),
        Some(us) if us >= 1000.0 => format!("{:.1} ms", us / 1000.0),
        Some(us) => format!("{us:.0} µs"),
    }
}

/// A ratio as a percentage for a table cell.
pub fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{:.0} %", r * 100.0))
}

/// Broker CPU-seconds per GB, with what the GB counts (`bench/run.sh` records both).
pub fn cpu_per_gb(w: &Value) -> String {
    match num(&w["broker_cpu_seconds_per_gb"]) {
        None => "–".into(),
        Some(c) => match w["broker_cpu_gb_basis"].as_str() {
            Some(basis) => format!("{c:.2} ({basis})"),
            None => format!("{c:.2}"),
        },
    }
}

/// The latency a workload reports (e2e if it has one, else per request) and what it is.
pub fn latency_of(w: &Value) -> (&Value, &'static str) {
    if w["mode"] == "e2e" {
        (&w["e2e_latency_us"], " (e2e)")
    } else if w["mode"] == "consume" {
        (&w["latency_us"], " (fetch)")
    } else {
        (&w["latency_us"], " (ack)")
    }
}

/// The name of a run: its directory's label.
pub fn run_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Reads one figure of a workload's result.
pub type Metric = fn(&Value) -> Option<f64>;

/// Formats one figure for a table cell.
pub type Format = fn(f64) -> String;

/// `plot` relative to the directory of `doc` (both relative to the working directory).
pub fn pathdiff(plot: &Path, doc: &Path) -> String {
    let up = doc.parent().map(|p| p.components().count()).unwrap_or(0);
    format!("{}{}", "../".repeat(up), plot.display())
}

/// The client-defaults ladders (bench/run.sh step 6): name and the client it imitates.
pub const LADDERS: [(&str, &str); 2] = [
    (
        "client-java",
        "Java producer defaults: 16 KiB batches, linger 5 ms, 5 requests in flight, acks=all",
    ),
    (
        "client-librdkafka",
        "librdkafka defaults: 1,000,000-byte batches, linger 5 ms, acks=all",
    ),
];

/// The ladders' service level: e2e p99 within this many microseconds.
pub const SLO_P99_US: f64 = 10_000.0;

/// One ladder of a results directory: its steps (`<name>-<rate>.json`) by rate, and the
/// highest rate that it and every lower step held the SLO at while delivering at least
/// 95 % of the rate. `None` when the run has no step of it.
pub fn ladder_summary(dir: &Path, name: &str) -> Option<Value> {
    let prefix = format!("{name}-");
    let mut steps: Vec<(f64, Value)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rate: f64 = file
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((rate, read_json(&e.path()).ok()?))
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut max_at_slo: Option<f64> = None;
    let mut holding = true;
    let rows: Vec<Value> = steps
        .iter()
        .map(|(rate, r)| {
            let got = num(&r["msgs_per_sec"]).unwrap_or(0.0);
            let p99 = num(&r["e2e_latency_us"]["p99"]).unwrap_or(f64::INFINITY);
            let ok = p99 <= SLO_P99_US && got >= 0.95 * rate;
            holding &= ok;
            if holding {
                max_at_slo = Some(*rate);
            }
            serde_json::json!({"rate": rate, "msgs_per_sec": got, "p50_us": r["e2e_latency_us"]["p50"],
                "p99_us": r["e2e_latency_us"]["p99"], "within_slo": ok})
        })
        .collect();
    Some(serde_json::json!({"max_rate_at_slo": max_at_slo, "steps": rows}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_rate_at_slo_is_the_last_step_of_an_unbroken_run_of_passes() {
        let dir = tempfile::tempdir().unwrap();
        let step = |rate: u64, got: f64, p99: u64| {
            let v = serde_json::json!({"msgs_per_sec": got,
                "e2e_latency_us": {"p50": p99 / 2, "p99": p99}});
            std::fs::write(
                dir.path().join(format!("client-java-{rate}.json")),
                v.to_string(),
            )
            .unwrap();
        };
        step(25_000, 25_000.0, 3_000);
        step(50_000, 49_900.0, 6_000);
        step(100_000, 99_000.0, 12_000); // misses the SLO
        step(200_000, 200_000.0, 9_000); // a pass after a miss does not count
        let l = ladder_summary(dir.path(), "client-java").unwrap();
        assert_eq!(l["max_rate_at_slo"], 50_000.0);
        assert_eq!(l["steps"].as_array().unwrap().len(), 4);
        assert_eq!(l["steps"][2]["within_slo"], false);
        assert!(ladder_summary(dir.path(), "client-librdkafka").is_none());
    }
}
