//! The "Caudal beside Apache Kafka" section of the report: each Caudal mode against the
//! Kafka mode of the same durability, from one `make bench PEER=kafka` run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::plot::latency_svg;
use crate::results::{
    curve_of, fmt_num, fmt_us, latency_of, num, pathdiff, run_name, Format, Metric, LADDERS,
    SLO_P99_US, WORKLOADS,
};

/// Broker modes compared at equal durability: (Caudal's label, Kafka's label).
const PAIRS: [(&str, &str); 2] = [("caudal", "kafka-durable"), ("caudal-flush", "kafka")];

/// The side-by-side section: every run's figures per workload, the ratio Caudal / Kafka at
/// equal durability, Kafka's own tools, and one latency plot per workload with every run.
pub fn comparison(
    runs: &[(String, PathBuf, Value)],
    plot: &Path,
    doc: &Path,
    out: &mut String,
) -> Result<()> {
    let _ = writeln!(
        out,
        "### Caudal beside Apache Kafka: one run, one machine\n"
    );
    for (label, dir, s) in runs {
        let _ = writeln!(
            out,
            "- **{label}** (`{}`): {}; {}.",
            run_name(dir),
            s["meta"]["bootstrap"].as_str().unwrap_or("?"),
            s["meta"]["durability"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(
        out,
        "\nSame caudal-loadgen flags, broker on the first half of the CPUs and the load \
         generator on the other; ratios are Caudal / Kafka at equal durability (above 1: \
         Caudal higher; for latency and CPU, below 1 is Caudal better).\n"
    );
    let find = |l: &str| runs.iter().find(|(x, _, _)| x == l).map(|(_, _, s)| s);
    let pairs: Vec<(&str, &str)> = PAIRS
        .iter()
        .copied()
        .filter(|(c, k)| find(c).is_some() && find(k).is_some())
        .collect();
    let metrics: [(&str, Metric, Format); 3] = [
        ("msgs/s", |w| num(&w["msgs_per_sec"]), fmt_num),
        (
            "latency p99",
            |w| num(&latency_of(w).0["p99"]),
            |v| fmt_us(&json!(v)),
        ),
        (
            "broker CPU-s per GB",
            |w| num(&w["broker_cpu_seconds_per_gb"]),
            |v| format!("{v:.2}"),
        ),
    ];
    // Client defaults: the highest open-loop rate each broker held within the SLO.
    if runs.iter().any(|(_, _, s)| s["ladders"].is_object()) {
        table_header(out, "max rate at SLO (msgs/s)", runs, &pairs);
        for (name, _) in LADDERS {
            let best = |s: &Value| num(&s["ladders"][name]["max_rate_at_slo"]);
            let _ = write!(out, "| {name} |");
            for (_, _, s) in runs {
                let _ = write!(out, " {} |", best(s).map_or("—".to_string(), fmt_num));
            }
            for (c, k) in &pairs {
                let ratio = match (find(c).and_then(best), find(k).and_then(best)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "—".to_string(),
                };
                let _ = write!(out, " {ratio} |");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\nOpen-loop e2e at a ladder of rates in each client's default shape (bench/run.sh \
             step 6); the highest rate whose e2e p99 stayed within {} ms and delivered 95 % of \
             its rate, every lower step too. \"—\": not even the lowest step.\n",
            SLO_P99_US / 1000.0
        );
    }
    for (metric, get, fmt) in metrics {
        table_header(out, metric, runs, &pairs);
        for (name, _) in WORKLOADS {
            let _ = write!(out, "| {name} |");
            for (_, _, s) in runs {
                let v = get(&s["workloads"][name]);
                let _ = write!(out, " {} |", v.map_or("–".into(), fmt));
            }
            for (c, k) in &pairs {
                let a = find(c).and_then(|s| get(&s["workloads"][name]));
                let b = find(k).and_then(|s| get(&s["workloads"][name]));
                let r = match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "–".into(),
                };
                let _ = write!(out, " {r} |");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    if runs.iter().any(|(_, _, s)| !s["kafka_tools"].is_null()) {
        let _ = writeln!(
            out,
            "Kafka's own tools against each, same topic shape (`ProducerPerformance \
             --record-size 1024 --throughput -1`, acks=all, batch.size 1 MiB, linger 5 ms; \
             `ConsumerPerformance` reading it back; `EndToEndLatency` 10,000 × 1 KiB, \
             acks=all, one partition):\n"
        );
        let _ = writeln!(
            out,
            "| broker | produce records/s | produce MB/s | produce p50 / p99 / p99.9 | consume MB/s | end-to-end p50 / p99 / p99.9 |\n|---|---|---|---|---|---|"
        );
        let ms = |v: &Value| num(v).map_or("–".into(), |v| format!("{v} ms"));
        for (label, _, s) in runs {
            let t = &s["kafka_tools"];
            let (p, c, e) = (&t["producer"], &t["consumer"], &t["end_to_end"]);
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} / {} / {} | {} | {} / {} / {} |",
                num(&p["records_per_sec"]).map_or("–".into(), fmt_num),
                num(&p["mb_per_sec"]).map_or("–".into(), fmt_num),
                ms(&p["p50_ms"]),
                ms(&p["p99_ms"]),
                ms(&p["p999_ms"]),
                num(&c["mb_per_sec"]).map_or("–".into(), fmt_num),
                ms(&e["p50_ms"]),
                ms(&e["p99_ms"]),
                ms(&e["p999_ms"]),
            );
        }
        out.push('\n');
    }
    let dir = plot.parent().unwrap_or(Path::new("."));
    for (name, _) in WORKLOADS {
        let curves: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .filter_map(|(label, d, s)| {
                curve_of(d, name, &s["workloads"][name]).map(|(what, rows)| {
                    let what = what.trim_start_matches(name).trim().to_string();
                    (format!("{label} {what}"), rows)
                })
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let file = dir.join(format!("compare-{name}.svg"));
        std::fs::write(
            &file,
            latency_svg(&format!("{name}: latency by percentile"), &curves),
        )
        .with_context(|| format!("writing {}", file.display()))?;
        let _ = writeln!(out, "![{name}: every broker]({})\n", pathdiff(&file, doc));
    }
    Ok(())
}

/// The header of a comparison table: the metric, one column per run, one per ratio.
fn table_header(
    out: &mut String,
    metric: &str,
    runs: &[(String, PathBuf, Value)],
    pairs: &[(&str, &str)],
) {
    let _ = write!(out, "| {metric} |");
    for (label, _, _) in runs {
        let _ = write!(out, " {label} |");
    }
    for (c, k) in pairs {
        let _ = write!(out, " {c} / {k} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..runs.len() + pairs.len() {
        let _ = write!(out, "---|");
    }
    out.push('\n');
}
