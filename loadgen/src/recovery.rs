//! How produce fared through each fault a nemesis injected: the time from the fault to
//! the first acknowledgement on the partition whose leader it hit, and acknowledgement
//! latency while faults were in force against the rest of the run. The nemesis writes
//! its faults on the history's clock (milliseconds from the run's start); both Caudal
//! and Kafka are measured by this one definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{History, Outcome};

/// One fault as the nemesis injected it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Its kind (kill, isolate, pause, ...).
    pub kind: String,
    /// The partition whose leader it hit, when it was aimed at a leader.
    #[serde(default)]
    pub partition: Option<i32>,
    /// When it was injected (ms from the run's start).
    pub at_ms: u64,
    /// When it was healed (ms from the run's start).
    pub healed_ms: u64,
}

/// The recovery of one fault aimed at a leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The fault's kind.
    pub kind: String,
    /// The partition whose leader it hit.
    pub partition: i32,
    /// When it was injected.
    pub at_ms: u64,
    /// From the fault to the first acknowledgement of a send to that partition that
    /// began after it; `None` when none came before the run ended.
    pub ms: Option<u64>,
}

/// Percentiles of a set of durations, nearest rank.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// How many.
    pub count: usize,
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Longest.
    pub max_ms: u64,
}

impl Spread {
    /// The spread of `ms` (sorted in place).
    pub fn of(ms: &mut [u64]) -> Spread {
        if ms.is_empty() {
            return Spread::default();
        }
        ms.sort_unstable();
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Spread {
            count: ms.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// Everything measured against the faults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Each fault aimed at a leader, in order.
    pub faults: Vec<Recovery>,
    /// Recovery times by fault kind, over the faults that recovered.
    pub by_kind: BTreeMap<String, Spread>,
    /// Faults aimed at a leader after which no send to that partition was acknowledged.
    pub unrecovered: usize,
    /// Latency of acknowledged sends that began while a fault was in force.
    pub ack_during_faults: Spread,
    /// Latency of acknowledged sends that began with no fault in force.
    pub ack_outside_faults: Spread,
}

/// Measures `h` against `faults`.
pub fn recovery(h: &History, faults: &[Fault]) -> RecoveryReport {
    // Each partition's acknowledged sends as (began, acknowledged), by beginning.
    let mut acks: BTreeMap<i32, Vec<(u64, u64)>> = BTreeMap::new();
    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for s in &h.sends {
        if !matches!(s.outcome, Outcome::Ok { .. }) {
            continue;
        }
        acks.entry(s.partition)
            .or_default()
            .push((s.sent_ms, s.at_ms));
        let latency = s.at_ms.saturating_sub(s.sent_ms);
        if faults
            .iter()
            .any(|f| (f.at_ms..f.healed_ms).contains(&s.sent_ms))
        {
            during.push(latency);
        } else {
            outside.push(latency);
        }
    }
    for list in acks.values_mut() {
        list.sort_unstable();
    }
    let mut report = RecoveryReport::default();
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in faults {
        let Some(partition) = f.partition else {
            continue;
        };
        let first = acks.get(&partition).and_then(|list| {
            let from = list.partition_point(|&(began, _)| began < f.at_ms);
            list[from..].iter().map(|&(_, acked)| acked).min()
        });
        let ms = first.map(|acked| acked.saturating_sub(f.at_ms));
        match ms {
            Some(ms) => times.entry(f.kind.clone()).or_default().push(ms),
            None => report.unrecovered += 1,
        }
        report.faults.push(Recovery {
            kind: f.kind.clone(),
            partition,
            at_ms: f.at_ms,
            ms,
        });
    }
    report.by_kind = times
        .into_iter()
        .map(|(kind, mut ms)| (kind, Spread::of(&mut ms)))
        .collect();
    report.ack_during_faults = Spread::of(&mut during);
    report.ack_outside_faults = Spread::of(&mut outside);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{value_of, Op, Send};

    fn ok(partition: i32, seq: u32, sent_ms: u64, at_ms: u64) -> Op {
        Op::Send(Send {
            producer: 0,
            partition,
            value: value_of(0, seq),
            outcome: Outcome::Ok { offset: 0 },
            at_ms,
            sent_ms,
        })
    }

    fn fault(kind: &str, partition: Option<i32>, at_ms: u64, healed_ms: u64) -> Fault {
        Fault {
            kind: kind.into(),
            partition,
            at_ms,
            healed_ms,
        }
    }

    #[test]
    fn recovery_runs_from_the_fault_to_the_first_ack_of_a_send_begun_after_it() {
        let mut h = History::default();
        for op in [
            ok(0, 0, 90, 110),  // began before the kill: does not count
            ok(1, 1, 120, 125), // another partition: does not count
            ok(0, 2, 150, 1_400),
            ok(0, 3, 1_300, 1_350), // began later, acknowledged first
            ok(0, 4, 1_500, 1_510),
        ] {
            h.push(op);
        }
        let r = recovery(
            &h,
            &[
                fault("kill", Some(0), 100, 2_000),
                fault("kill", Some(1), 3_000, 4_000),
                fault("loss", None, 5_000, 6_000),
            ],
        );
        assert_eq!(r.faults[0].ms, Some(1_250));
        assert_eq!(r.faults[1].ms, None);
        assert_eq!(r.unrecovered, 1);
        assert_eq!(
            r.faults.len(),
            2,
            "faults not aimed at a leader have no recovery"
        );
        assert_eq!(r.by_kind["kill"].count, 1);
        assert_eq!(r.by_kind["kill"].p99_ms, 1_250);
        // Sends begun at 120, 150, 1300 and 1500 fall in the first fault's window.
        assert_eq!(r.ack_during_faults.count, 4);
        assert_eq!(r.ack_during_faults.max_ms, 1_250);
        assert_eq!(r.ack_outside_faults.count, 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut ms: Vec<u64> = (1..=200).rev().collect();
        let s = Spread::of(&mut ms);
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (200, 100, 198, 200)
        );
        assert_eq!(Spread::of(&mut []), Spread::default());
    }
}
