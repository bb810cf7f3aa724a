//! Counters and latency histograms, the per-second progress line, the exit summary, the
//! JSON result and the `.hgrm` percentile distribution.
//!
//! Each executor records into its own `Recorder` behind a mutex that only the progress
//! thread (once a second) ever contends for.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency recorded exactly: one hour, in µs. Larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Everything one executor measured.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Messages produced and acknowledged (or sent, with acks=0).
    pub produced: u64,
    /// Value bytes of those messages.
    pub produced_bytes: u64,
    /// Messages consumed (summed over consumer groups).
    pub consumed: u64,
    /// Value bytes consumed.
    pub consumed_bytes: u64,
    /// Failed requests or partitions.
    pub errors: u64,
    /// Produce latency (ack time - due time) or, for `consume`, fetch latency.
    pub latency: Histogram<u64>,
    /// End-to-end latency (receipt - send time carried in the value).
    pub e2e: Histogram<u64>,
    /// When the last produce was acknowledged.
    pub last_produce: Option<Instant>,
    /// When the last message was consumed.
    pub last_consume: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            produced: 0,
            produced_bytes: 0,
            consumed: 0,
            consumed_bytes: 0,
            errors: 0,
            latency: new_histogram(),
            e2e: new_histogram(),
            last_produce: None,
            last_consume: None,
        }
    }
}

impl Recorder {
    /// Records one latency sample of `us` microseconds, `count` times.
    pub fn record_latency(&mut self, us: u64, count: u64) {
        self.latency
            .saturating_record_n(us.clamp(1, MAX_LATENCY_US), count);
    }

    /// Records one end-to-end sample.
    pub fn record_e2e(&mut self, us: u64) {
        self.e2e.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Removes what `earlier` (a snapshot of the same recorders) had counted, leaving what
    /// was measured since: used to leave the warm-up out.
    pub fn subtract(&mut self, earlier: &Recorder) {
        self.produced = self.produced.saturating_sub(earlier.produced);
        self.produced_bytes = self.produced_bytes.saturating_sub(earlier.produced_bytes);
        self.consumed = self.consumed.saturating_sub(earlier.consumed);
        self.consumed_bytes = self.consumed_bytes.saturating_sub(earlier.consumed_bytes);
        self.errors = self.errors.saturating_sub(earlier.errors);
        // A snapshot never holds more of a value than the later totals, so this cannot fail;
        // if it somehow did, the histogram keeps the warm-up rather than losing samples.
        let _ = self.latency.subtract(&earlier.latency);
        let _ = self.e2e.subtract(&earlier.e2e);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        self.produced += other.produced;
        self.produced_bytes += other.produced_bytes;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        self.errors += other.errors;
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.e2e.add(&other.e2e);
        self.last_produce = self.last_produce.max(other.last_produce);
        self.last_consume = self.last_consume.max(other.last_consume);
    }
}

/// A recorder shared between an executor and the progress thread.
pub type SharedRecorder = Arc<Mutex<Recorder>>;

/// Sums the recorders of all executors.
pub fn merge_all(recorders: &[SharedRecorder]) -> Recorder {
    let mut total = Recorder::default();
    for r in recorders {
        let r = r.lock().unwrap_or_else(|e| e.into_inner());
        total.merge(&r);
    }
    total
}

/// The percentiles reported everywhere, in µs.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    let q = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64
        }
    };
    json!({
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p999": q(0.999),
        "p9999": q(0.9999),
        "max": if h.is_empty() { 0.0 } else { h.max() as f64 },
    })
}

/// Which subcommand produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Producers only.
    Produce,
    /// Consumers only.
    Consume,
    /// Producers and consumers, end-to-end latency.
    E2e,
}

impl Mode {
    /// Name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// The result of a run, as written to `--json`.
pub fn result_json(mode: Mode, total: &Recorder, seconds: f64, extra: Value) -> Value {
    // The headline counts are the produced messages, except for `consume`.
    let (messages, bytes) = match mode {
        Mode::Consume => (total.consumed, total.consumed_bytes),
        _ => (total.produced, total.produced_bytes),
    };
    let secs = seconds.max(1e-9);
    let mut v = json!({
        "mode": mode.name(),
        "messages": messages,
        "bytes": bytes,
        "seconds": seconds,
        "msgs_per_sec": messages as f64 / secs,
        "mb_per_sec": bytes as f64 / 1e6 / secs,
        "latency_us": percentiles(&total.latency),
        "errors": total.errors,
    });
    if mode == Mode::E2e {
        v["e2e_latency_us"] = percentiles(&total.e2e);
        v["consumed_messages"] = json!(total.consumed);
        v["consumed_bytes"] = json!(total.consumed_bytes);
    }
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        for (k, val) in more {
            obj.entry(k).or_insert(val);
        }
    }
    v
}

/// HdrHistogram's percentile distribution text (as Java's
/// `outputPercentileDistribution(out, 5, 1000.0)` writes it): values in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut cumulative = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            cumulative += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / scale;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>2.12} {:>10} {:>14.2}",
                    value,
                    q,
                    cumulative,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{:>12.3} {:>2.12} {:>10}", value, q, cumulative);
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        mean, sd
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        max,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// One progress line: rates over the last interval and the p99 so far.
pub fn progress_line(
    elapsed_s: f64,
    mode: Mode,
    now: &Recorder,
    before: &Recorder,
    interval_s: f64,
) -> String {
    let i = interval_s.max(1e-9);
    let mut line = format!("[{elapsed_s:6.1}s]");
    if mode != Mode::Consume {
        let _ = write!(
            line,
            " produce {:>10.0} msg/s {:>8.1} MB/s p99 {:>9} µs",
            (now.produced - before.produced) as f64 / i,
            (now.produced_bytes - before.produced_bytes) as f64 / 1e6 / i,
            if now.latency.is_empty() {
                0
            } else {
                now.latency.value_at_quantile(0.99)
            }
        );
    }
    if mode != Mode::Produce {
        let _ = write!(
            line,
            " | consume {:>10.0} msg/s {:>8.1} MB/s",
            (now.consumed - before.consumed) as f64 / i,
            (now.consumed_bytes - before.consumed_bytes) as f64 / 1e6 / i,
        );
        let h = if mode == Mode::E2e {
            &now.e2e
        } else {
            &now.latency
        };
        let label = if mode == Mode::E2e { "e2e" } else { "fetch" };
        let _ = write!(
            line,
            " {label} p99 {:>9} µs",
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            }
        );
    }
    if now.errors > 0 {
        let _ = write!(line, " errors {}", now.errors);
    }
    line
}

/// The human summary printed at exit.
pub fn summary_text(result: &Value) -> String {
    let mut s = String::new();
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let _ = writeln!(
        s,
        "{}: {} messages, {} bytes in {:.2} s: {:.0} msg/s, {:.1} MB/s, {} errors",
        result["mode"].as_str().unwrap_or("?"),
        result["messages"],
        result["bytes"],
        f(&result["seconds"]),
        f(&result["msgs_per_sec"]),
        f(&result["mb_per_sec"]),
        result["errors"]
    );
    for (key, label) in [("latency_us", "latency"), ("e2e_latency_us", "e2e latency")] {
        let l = &result[key];
        if l.is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "{label} (µs): p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["p999"]),
            f(&l["p9999"]),
            f(&l["max"])
        );
    }
    if !result["consumed_messages"].is_null() {
        let _ = writeln!(
            s,
            "consumed {} messages, verified: {}",
            result["consumed_messages"], result["verified"]
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_the_warm_up_leaves_only_what_came_after() {
        let mut r = Recorder {
            produced: 10,
            ..Recorder::default()
        };
        r.record_e2e(50_000); // a warm-up stall
        let warm = r.clone();
        r.produced += 5;
        r.record_e2e(800);
        r.record_e2e(900);
        r.subtract(&warm);
        assert_eq!(r.produced, 5);
        assert_eq!(r.e2e.len(), 2);
        assert!(
            r.e2e.max() < 1_000,
            "the warm-up stall is gone: {}",
            r.e2e.max()
        );
    }

    #[test]
    fn latencies_land_in_the_right_percentiles() {
        let mut r = Recorder::default();
        for us in 1..=1000u64 {
            r.record_latency(us, 1);
        }
        r.record_latency(50_000, 1); // one outlier
        let p = percentiles(&r.latency);
        let within = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1.0;
        assert!(within(p["p50"].as_f64().unwrap(), 500.0), "{p}");
        assert!(within(p["p90"].as_f64().unwrap(), 900.0), "{p}");
        assert!(within(p["p99"].as_f64().unwrap(), 990.0), "{p}");
        assert!(within(p["max"].as_f64().unwrap(), 50_000.0), "{p}");
        assert_eq!(r.latency.len(), 1001);
    }

    #[test]
    fn batches_are_recorded_per_message_and_out_of_range_values_clamped() {
        let mut r = Recorder::default();
        r.record_latency(2_000, 1000);
        r.record_latency(0, 1);
        r.record_latency(u64::MAX, 1);
        assert_eq!(r.latency.len(), 1002);
        assert_eq!(r.latency.min(), 1);
        assert!(r.latency.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Recorder {
            produced: 10,
            ..Default::default()
        };
        let mut b = Recorder {
            produced: 5,
            ..Default::default()
        };
        a.record_e2e(100);
        b.record_e2e(300);
        a.merge(&b);
        assert_eq!(a.produced, 15);
        assert_eq!(a.e2e.len(), 2);
        assert_eq!(a.e2e.max(), 300);
    }

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let mut r = Recorder {
            produced: 2000,
            produced_bytes: 2_000_000,
            consumed: 2000,
            ..Default::default()
        };
        r.record_latency(1500, 2000);
        r.record_e2e(2500);
        let keys = ["p50", "p90", "p99", "p999", "p9999", "max"];
        let v = result_json(Mode::E2e, &r, 2.0, json!({"verified": true}));
        for k in [
            "mode",
            "messages",
            "bytes",
            "seconds",
            "msgs_per_sec",
            "mb_per_sec",
            "latency_us",
            "e2e_latency_us",
            "errors",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {v}");
        }
        assert_eq!(v["mode"], "e2e");
        assert_eq!(v["messages"].as_u64(), Some(2000));
        assert_eq!(v["bytes"].as_u64(), Some(2_000_000));
        assert_eq!(v["msgs_per_sec"].as_f64(), Some(1000.0));
        assert_eq!(v["mb_per_sec"].as_f64(), Some(1.0));
        assert!(v["seconds"].is_f64());
        assert_eq!(v["errors"].as_u64(), Some(0));
        assert_eq!(v["verified"], true);
        for group in ["latency_us", "e2e_latency_us"] {
            let obj = v[group].as_object().unwrap();
            assert_eq!(obj.len(), keys.len());
            for k in keys {
                assert!(obj[k].is_f64(), "{group}.{k} is not a number: {v}");
            }
        }
        // Produce results carry no e2e block.
        let p = result_json(Mode::Produce, &r, 2.0, json!({}));
        assert!(p.get("e2e_latency_us").is_none());
    }

    #[test]
    fn hgrm_is_the_hdrhistogram_percentile_text() {
        let mut r = Recorder::default();
        for us in [1000u64, 2000, 3000, 4000] {
            r.record_latency(us, 25);
        }
        let text = hgrm(&r.latency);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 4);
        // Values in ms, percentiles rising to 1, the last row counting everything.
        assert!((rows[0][0] - 1.0).abs() < 0.01);
        let last = rows.last().unwrap();
        assert!((last[0] - 4.0).abs() < 0.01);
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 100.0);
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("Total count    =          100]"));
    }
}
