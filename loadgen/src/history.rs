//! What a verification run did and saw, operation by operation: every send with its
//! outcome, every poll with the offsets and values it returned. The checker
//! (`checker.rs`) reads only this, so a history saved as JSON lines can be checked again
//! later (`caudal-loadgen check`).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A value as produced: unique in the run (`producer << 32 | sequence`).
pub type Value = u64;

/// The value a producer sends as its `seq`-th message.
pub fn value_of(producer: u32, seq: u32) -> Value {
    (u64::from(producer) << 32) | u64::from(seq)
}

/// How a send ended, as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Acknowledged (acks=all) at this offset.
    Ok {
        /// The offset the broker gave the record.
        offset: i64,
    },
    /// Definitely not written: never sent, or refused by a check that runs before any
    /// append.
    Failed {
        /// Why.
        error: String,
    },
    /// Sent, but the client cannot tell whether it was written (an error after the
    /// request left, a timeout, a lost connection).
    Unknown {
        /// Why.
        error: String,
    },
}

/// One produce of one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// Which producer (its sends are sequential: one in flight).
    pub producer: u32,
    /// Partition sent to.
    pub partition: i32,
    /// The value.
    pub value: Value,
    /// What came of it.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Milliseconds since the run started, when the outcome was known.
    pub at_ms: u64,
    /// Milliseconds since the run started, when the send began (0 in histories saved
    /// before this was recorded).
    #[serde(default)]
    pub sent_ms: u64,
}

/// One fetch's records of one partition, read by one consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// Which consumer.
    pub consumer: u32,
    /// The consumer's session: a new one starts when it seeks (its position is reset),
    /// so offsets only have to increase within a session.
    pub session: u32,
    /// Partition read.
    pub partition: i32,
    /// The fetch offset asked for.
    pub from: i64,
    /// `(offset, value)` of each record returned, in the order returned.
    pub read: Vec<(i64, Value)>,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

/// Offsets a group consumer committed, acknowledged by the group's coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Which consumer.
    pub consumer: u32,
    /// Partition.
    pub partition: i32,
    /// The offset committed (the next one to read).
    pub offset: i64,
    /// Milliseconds since the run started, when the commit was acknowledged.
    pub at_ms: u64,
}

/// A group's committed offset of one partition, as OffsetFetch returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRead {
    /// Which consumer asked (a group consumer joining, or the last reader).
    pub consumer: u32,
    /// Partition.
    pub partition: i32,
    /// The committed offset; `None` when the group had none.
    pub offset: Option<i64>,
    /// Milliseconds since the run started, when the OffsetFetch was sent.
    pub sent_ms: u64,
}

/// One operation of a history, as a line of the JSON-lines file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// A send.
    Send(Send),
    /// A poll.
    Poll(Poll),
    /// An acknowledged commit of a group consumer.
    Commit(Commit),
    /// A committed offset read back.
    CommitRead(CommitRead),
}

/// [`Op`] borrowed, for writing without copying the history.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum OpRef<'a> {
    Send(&'a Send),
    Poll(&'a Poll),
    Commit(&'a Commit),
    CommitRead(&'a CommitRead),
}

/// Everything a run did, in the order each client did it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Sends, each producer's in its own order.
    pub sends: Vec<Send>,
    /// Polls, each consumer's in its own order.
    pub polls: Vec<Poll>,
    /// Acknowledged commits of the group consumers.
    pub commits: Vec<Commit>,
    /// Committed offsets read back.
    pub commit_reads: Vec<CommitRead>,
}

impl History {
    /// Adds one operation.
    pub fn push(&mut self, op: Op) {
        match op {
            Op::Send(s) => self.sends.push(s),
            Op::Poll(p) => self.polls.push(p),
            Op::Commit(c) => self.commits.push(c),
            Op::CommitRead(r) => self.commit_reads.push(r),
        }
    }

    /// Writes the history as JSON lines: sends, polls, commits, then committed offsets
    /// read.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating history file {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let ops = (self.sends.iter().map(OpRef::Send))
            .chain(self.polls.iter().map(OpRef::Poll))
            .chain(self.commits.iter().map(OpRef::Commit))
            .chain(self.commit_reads.iter().map(OpRef::CommitRead));
        for op in ops {
            serde_json::to_writer(&mut out, &op)?;
            out.write_all(b"\n")?;
        }
        out.flush()
            .with_context(|| format!("writing history file {}", path.display()))
    }

    /// Reads a history written by [`History::save`].
    pub fn load(path: &Path) -> Result<History> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening history file {}", path.display()))?;
        let mut h = History::default();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            h.push(op);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_history_loads_back_unchanged() {
        let mut h = History::default();
        h.push(Op::Send(Send {
            producer: 1,
            partition: 2,
            value: value_of(1, 7),
            outcome: Outcome::Ok { offset: 41 },
            at_ms: 5,
            sent_ms: 4,
        }));
        h.push(Op::Send(Send {
            producer: 1,
            partition: 0,
            value: value_of(1, 8),
            outcome: Outcome::Unknown {
                error: "timed out".into(),
            },
            at_ms: 6,
            sent_ms: 5,
        }));
        h.push(Op::Poll(Poll {
            consumer: 0,
            session: 1,
            partition: 2,
            from: 40,
            read: vec![(40, 3), (41, value_of(1, 7))],
            at_ms: 9,
        }));
        h.push(Op::Commit(Commit {
            consumer: 4,
            partition: 2,
            offset: 42,
            at_ms: 10,
        }));
        h.push(Op::CommitRead(CommitRead {
            consumer: 5,
            partition: 2,
            offset: Some(42),
            sent_ms: 11,
        }));
        h.push(Op::CommitRead(CommitRead {
            consumer: 5,
            partition: 1,
            offset: None,
            sent_ms: 11,
        }));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
    }
}
