//! The history checker: finds in a [`History`] the anomalies Jepsen's Kafka checker
//! names. A run passes when it finds none.
//!
//! What it relies on: values are unique, each producer has one send in flight, and a
//! consumer's position only moves by reading within a session (assign mode). Offsets
//! "known" to hold a record are those read by anyone or acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::history::{History, Outcome, Value};

/// A kind of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Acknowledged, never read, below the highest offset read of its partition.
    LostWrite,
    /// Acknowledged, never read, at or above the highest offset read: the log ends
    /// before it.
    Unseen,
    /// One value read at two offsets.
    Duplicate,
    /// Two values read at one offset, or a value read at an offset other than the one
    /// its acknowledgement gave.
    InconsistentOffset,
    /// A producer's acknowledged sends to one partition got offsets that do not
    /// increase.
    NonMonotonicSend,
    /// A consumer read offsets that do not increase within a session.
    NonMonotonicPoll,
    /// A consumer's reads jumped over an offset known to hold a record.
    PollSkip,
    /// A send that definitely failed (never sent, or refused before any append) was
    /// read.
    FailedWriteRead,
    /// A group's committed offset, read back, was below one it had acknowledged
    /// committing before the read was sent.
    CommittedOffsetBackwards,
}

/// One anomaly, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Its kind.
    pub kind: Kind,
    /// Partition.
    pub partition: i32,
    /// What was seen, for a person.
    pub detail: String,
}

/// What the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Sends in the history.
    pub sends: u64,
    /// Acknowledged sends.
    pub acknowledged: u64,
    /// Sends that definitely failed.
    pub failed: u64,
    /// Sends whose outcome is unknown.
    pub unknown: u64,
    /// Unknown sends that were read after all.
    pub unknown_read: u64,
    /// Polls in the history.
    pub polls: u64,
    /// Distinct values read.
    pub values_read: u64,
    /// Acknowledged commits of group consumers.
    pub commits: u64,
    /// Committed offsets read back.
    pub commit_reads: u64,
    /// Anomalies by kind.
    pub counts: BTreeMap<Kind, u64>,
    /// The first anomalies of each kind (up to [`EXAMPLES`]).
    pub examples: Vec<Anomaly>,
}

/// How many anomalies of one kind the report lists.
pub const EXAMPLES: usize = 8;

impl Report {
    /// Whether the history showed no anomaly.
    pub fn is_clean(&self) -> bool {
        self.counts.values().all(|&n| n == 0)
    }

    /// How many anomalies of `kind` were found.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    fn add(&mut self, kind: Kind, partition: i32, detail: String) {
        let n = self.counts.entry(kind).or_default();
        *n += 1;
        if *n as usize <= EXAMPLES {
            self.examples.push(Anomaly {
                kind,
                partition,
                detail,
            });
        }
    }
}

/// Checks a history.
pub fn check(h: &History) -> Report {
    let mut r = Report {
        sends: h.sends.len() as u64,
        polls: h.polls.len() as u64,
        commits: h.commits.len() as u64,
        commit_reads: h.commit_reads.len() as u64,
        ..Report::default()
    };
    // What was read where.
    let mut at: BTreeMap<(i32, i64), BTreeSet<Value>> = BTreeMap::new();
    let mut read_at: HashMap<Value, BTreeSet<(i32, i64)>> = HashMap::new();
    for p in &h.polls {
        for &(offset, value) in &p.read {
            at.entry((p.partition, offset)).or_default().insert(value);
            read_at
                .entry(value)
                .or_default()
                .insert((p.partition, offset));
        }
    }
    r.values_read = read_at.len() as u64;
    for (&(partition, offset), values) in &at {
        if values.len() > 1 {
            r.add(
                Kind::InconsistentOffset,
                partition,
                format!(
                    "offset {offset} read with {} values: {values:?}",
                    values.len()
                ),
            );
        }
    }
    let mut values: Vec<_> = read_at.iter().filter(|(_, w)| w.len() > 1).collect();
    values.sort();
    for (value, wheres) in values {
        let partition = wheres.iter().next().map_or(-1, |w| w.0);
        r.add(
            Kind::Duplicate,
            partition,
            format!("value {value:#x} read at {wheres:?}"),
        );
    }
    // Offsets known to hold a record: read by anyone, or acknowledged.
    let mut known: HashMap<i32, BTreeSet<i64>> = HashMap::new();
    for &(partition, offset) in at.keys() {
        known.entry(partition).or_default().insert(offset);
    }
    // Before acknowledgements join them, the known offsets are the ones read.
    let highest_read: HashMap<i32, i64> = known
        .iter()
        .filter_map(|(&p, offsets)| Some((p, *offsets.last()?)))
        .collect();
    // Sends.
    let mut last_acked: HashMap<(u32, i32), i64> = HashMap::new();
    for s in &h.sends {
        let read = read_at.get(&s.value);
        match &s.outcome {
            Outcome::Ok { offset } => {
                r.acknowledged += 1;
                known.entry(s.partition).or_default().insert(*offset);
                match read {
                    None => {
                        let highest = highest_read.get(&s.partition).copied().unwrap_or(-1);
                        let (kind, why) = if *offset < highest {
                            (Kind::LostWrite, format!("highest offset read {highest}"))
                        } else {
                            (Kind::Unseen, format!("highest offset read {highest}"))
                        };
                        r.add(
                            kind,
                            s.partition,
                            format!(
                                "value {:#x} acknowledged at offset {offset} by producer {}, never read ({why})",
                                s.value, s.producer
                            ),
                        );
                    }
                    Some(wheres) => {
                        if !wheres.contains(&(s.partition, *offset)) {
                            r.add(
                                Kind::InconsistentOffset,
                                s.partition,
                                format!(
                                    "value {:#x} acknowledged at offset {offset}, read at {wheres:?}",
                                    s.value
                                ),
                            );
                        }
                    }
                }
                let key = (s.producer, s.partition);
                if let Some(&prev) = last_acked.get(&key) {
                    if *offset <= prev {
                        r.add(
                            Kind::NonMonotonicSend,
                            s.partition,
                            format!(
                                "producer {} acknowledged at offset {prev}, then at {offset}",
                                s.producer
                            ),
                        );
                    }
                }
                last_acked.insert(key, *offset);
            }
            Outcome::Failed { error } => {
                r.failed += 1;
                if let Some(wheres) = read {
                    r.add(
                        Kind::FailedWriteRead,
                        s.partition,
                        format!(
                            "value {:#x} failed ({error}) but was read at {wheres:?}",
                            s.value
                        ),
                    );
                }
            }
            Outcome::Unknown { .. } => {
                r.unknown += 1;
                if read.is_some() {
                    r.unknown_read += 1;
                }
            }
        }
    }
    // Polls, per consumer session and partition, in the consumer's order.
    let mut last_read: HashMap<(u32, u32, i32), i64> = HashMap::new();
    for p in &h.polls {
        let key = (p.consumer, p.session, p.partition);
        let empty = BTreeSet::new();
        let known = known.get(&p.partition).unwrap_or(&empty);
        // The position before this poll: the fetch offset, or what the session read.
        let mut prev = last_read.get(&key).copied().unwrap_or(p.from - 1);
        for &(offset, _) in &p.read {
            if offset <= prev {
                r.add(
                    Kind::NonMonotonicPoll,
                    p.partition,
                    format!(
                        "consumer {} session {} read offset {prev}, then {offset}",
                        p.consumer, p.session
                    ),
                );
            } else if let Some(&skipped) = known.range(prev + 1..offset).next() {
                r.add(
                    Kind::PollSkip,
                    p.partition,
                    format!(
                        "consumer {} session {} went from offset {prev} to {offset}, over {skipped} (which holds a record)",
                        p.consumer, p.session
                    ),
                );
            }
            prev = prev.max(offset);
        }
        last_read.insert(key, prev);
    }
    check_commits(h, &mut r);
    r
}

/// Every committed offset read back must be at least the highest offset whose commit
/// was acknowledged before the read was sent: an acknowledged commit is durable.
fn check_commits(h: &History, r: &mut Report) {
    // Each partition's acknowledged commits as (acknowledged at, offset), in time order,
    // with the highest offset up to each.
    let mut commits: HashMap<i32, Vec<(u64, i64)>> = HashMap::new();
    for c in &h.commits {
        commits
            .entry(c.partition)
            .or_default()
            .push((c.at_ms, c.offset));
    }
    for list in commits.values_mut() {
        list.sort_unstable();
        let mut highest = i64::MIN;
        for entry in list.iter_mut() {
            highest = highest.max(entry.1);
            entry.1 = highest;
        }
    }
    for read in &h.commit_reads {
        let Some(list) = commits.get(&read.partition) else {
            continue;
        };
        // Commits acknowledged strictly before the read was sent.
        let before = list.partition_point(|&(at, _)| at < read.sent_ms);
        let Some(&(at, highest)) = before.checked_sub(1).and_then(|i| list.get(i)) else {
            continue;
        };
        if read.offset.unwrap_or(-1) < highest {
            r.add(
                Kind::CommittedOffsetBackwards,
                read.partition,
                format!(
                    "consumer {} read committed offset {:?} at {} ms; offset {highest} had been committed by {at} ms",
                    read.consumer, read.offset, read.sent_ms
                ),
            );
        }
    }
}

/// A time a partition acknowledged nothing while producers were sending to it: from
/// one acknowledgement to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// Partition.
    pub partition: i32,
    /// When the last acknowledgement before it came (ms from the run's start).
    pub from_ms: u64,
    /// How long until the next one.
    pub ms: u64,
}

/// Each partition's gaps of at least `min_ms` between consecutive acknowledgements,
/// longest first: how long produce was unavailable through each fault.
pub fn outages(h: &History, min_ms: u64) -> Vec<Outage> {
    let mut acks: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    for s in &h.sends {
        if matches!(s.outcome, Outcome::Ok { .. }) {
            acks.entry(s.partition).or_default().push(s.at_ms);
        }
    }
    let mut out = Vec::new();
    for (partition, mut times) in acks {
        times.sort_unstable();
        for w in times.windows(2) {
            let ms = w[1] - w[0];
            if ms >= min_ms {
                out.push(Outage {
                    partition,
                    from_ms: w[0],
                    ms,
                });
            }
        }
    }
    out.sort_by(|a, b| b.ms.cmp(&a.ms).then(a.from_ms.cmp(&b.from_ms)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{value_of, Commit, CommitRead, Op, Poll, Send};

    fn ok(producer: u32, partition: i32, seq: u32, offset: i64) -> Op {
        Op::Send(Send {
            producer,
            partition,
            value: value_of(producer, seq),
            outcome: Outcome::Ok { offset },
            at_ms: 0,
            sent_ms: 0,
        })
    }

    fn unknown(producer: u32, partition: i32, seq: u32) -> Op {
        Op::Send(Send {
            producer,
            partition,
            value: value_of(producer, seq),
            outcome: Outcome::Unknown {
                error: "timed out".into(),
            },
            at_ms: 0,
            sent_ms: 0,
        })
    }

    fn poll(consumer: u32, session: u32, partition: i32, from: i64, read: &[(i64, Value)]) -> Op {
        Op::Poll(Poll {
            consumer,
            session,
            partition,
            from,
            read: read.to_vec(),
            at_ms: 0,
        })
    }

    fn commit(partition: i32, offset: i64, at_ms: u64) -> Op {
        Op::Commit(Commit {
            consumer: 9,
            partition,
            offset,
            at_ms,
        })
    }

    fn commit_read(partition: i32, offset: Option<i64>, sent_ms: u64) -> Op {
        Op::CommitRead(CommitRead {
            consumer: 10,
            partition,
            offset,
            sent_ms,
        })
    }

    #[test]
    fn a_committed_offset_read_below_an_acknowledged_commit_is_reported() {
        let h = history(vec![
            commit(0, 10, 100),
            commit(0, 30, 200),
            commit(0, 20, 300), // a later, lower commit: the read must still see 30
            commit(1, 5, 100),
            commit_read(0, Some(10), 150), // sent after the first commit only: fine
            commit_read(0, Some(10), 200), // the second was acknowledged at 200, not before
            commit_read(0, Some(20), 400), // 30 was acknowledged before: backwards
            commit_read(1, None, 50),      // nothing committed yet: fine
            commit_read(1, None, 150),     // 5 was committed: backwards
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::CommittedOffsetBackwards), 2, "{r:?}");
        assert_eq!((r.commits, r.commit_reads), (4, 5));
    }

    fn history(ops: Vec<Op>) -> History {
        let mut h = History::default();
        for op in ops {
            h.push(op);
        }
        h
    }

    fn v(seq: u32) -> Value {
        value_of(1, seq)
    }

    #[test]
    fn a_history_where_every_acknowledged_value_is_read_once_in_order_is_clean() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            unknown(1, 0, 1),
            ok(1, 0, 2, 2),
            poll(0, 0, 0, 0, &[(0, v(0)), (1, v(1))]),
            poll(0, 0, 0, 2, &[(2, v(2))]),
        ]);
        let r = check(&h);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.acknowledged, r.unknown, r.unknown_read), (2, 1, 1));
    }

    #[test]
    fn an_acknowledged_value_missing_below_what_was_read_is_a_lost_write() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            ok(1, 0, 1, 1),
            ok(1, 0, 2, 2),
            poll(0, 0, 0, 0, &[(0, v(0)), (2, v(2))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::LostWrite), 1, "{r:?}");
        // Reading 0 then 2 also jumped over the acknowledged offset 1.
        assert_eq!(r.count(Kind::PollSkip), 1, "{r:?}");
    }

    #[test]
    fn an_acknowledged_value_past_the_end_of_what_was_read_is_unseen() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            ok(1, 0, 1, 1),
            poll(0, 0, 0, 0, &[(0, v(0))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::Unseen), 1, "{r:?}");
        assert_eq!(r.count(Kind::LostWrite), 0);
    }

    #[test]
    fn a_value_read_at_two_offsets_is_a_duplicate() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            poll(0, 0, 0, 0, &[(0, v(0)), (1, v(0))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::Duplicate), 1, "{r:?}");
    }

    #[test]
    fn two_values_at_one_offset_or_a_value_away_from_its_acknowledged_offset_are_inconsistent() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            ok(1, 0, 1, 1),
            poll(0, 0, 0, 0, &[(0, v(0)), (1, v(1))]),
            poll(1, 0, 0, 0, &[(0, v(0)), (1, v(9))]),
        ]);
        assert_eq!(check(&h).count(Kind::InconsistentOffset), 1);
        let h = history(vec![ok(1, 0, 0, 5), poll(0, 0, 0, 0, &[(0, v(0))])]);
        assert_eq!(check(&h).count(Kind::InconsistentOffset), 1);
    }

    #[test]
    fn a_producers_offsets_going_back_is_a_non_monotonic_send() {
        let h = history(vec![
            ok(1, 0, 0, 1),
            ok(1, 0, 1, 0),
            ok(2, 0, 0, 2),
            poll(0, 0, 0, 0, &[(0, v(1)), (1, v(0)), (2, value_of(2, 0))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::NonMonotonicSend), 1, "{r:?}");
        assert_eq!(r.examples.len(), 1);
    }

    #[test]
    fn a_consumer_reading_backwards_within_a_session_is_non_monotonic_but_not_across_sessions() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            ok(1, 0, 1, 1),
            poll(0, 0, 0, 0, &[(0, v(0)), (1, v(1))]),
            poll(0, 0, 0, 1, &[(1, v(1))]),
            poll(0, 1, 0, 0, &[(0, v(0))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::NonMonotonicPoll), 1, "{r:?}");
    }

    #[test]
    fn a_poll_that_starts_past_its_fetch_offset_over_a_known_record_is_a_skip() {
        let h = history(vec![
            ok(1, 0, 0, 0),
            ok(1, 0, 1, 1),
            poll(0, 0, 0, 0, &[(1, v(1))]),
            poll(1, 0, 0, 0, &[(0, v(0)), (1, v(1))]),
        ]);
        let r = check(&h);
        assert_eq!(r.count(Kind::PollSkip), 1, "{r:?}");
        assert!(r.examples[0].detail.contains("over 0"), "{r:?}");
    }

    #[test]
    fn outages_are_the_long_gaps_between_a_partitions_acknowledgements() {
        let at = |p: i32, seq: u32, ms: u64| {
            Op::Send(Send {
                producer: 1,
                partition: p,
                value: v(seq),
                outcome: Outcome::Ok { offset: 0 },
                at_ms: ms,
                sent_ms: ms,
            })
        };
        let h = history(vec![
            at(0, 0, 10),
            at(1, 1, 20),
            at(0, 2, 900),
            at(1, 3, 30),
            at(0, 4, 2900),
        ]);
        assert_eq!(
            outages(&h, 500),
            vec![
                Outage {
                    partition: 0,
                    from_ms: 900,
                    ms: 2000
                },
                Outage {
                    partition: 0,
                    from_ms: 10,
                    ms: 890
                },
            ]
        );
    }

    #[test]
    fn a_definitely_failed_send_that_is_read_is_reported() {
        let h = history(vec![
            Op::Send(Send {
                producer: 1,
                partition: 0,
                value: v(0),
                outcome: Outcome::Failed {
                    error: "no leader".into(),
                },
                at_ms: 0,
                sent_ms: 0,
            }),
            poll(0, 0, 0, 0, &[(0, v(0))]),
        ]);
        assert_eq!(check(&h).count(Kind::FailedWriteRead), 1);
    }
}
