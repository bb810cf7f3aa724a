//! How a replicated partition reaches its raft group: the group's state as the shard's
//! raft loop last saw it, and proposals. The loop (`cluster::raft_driver`) implements
//! [`ReplicationGroup`]; a [`super::Partition`] holding one serves its reads and appends
//! through it, so the handlers above treat replicated and single-replica partitions
//! alike.

use std::future::Future;
use std::pin::Pin;

use crate::log::Offset;

use super::raft_shard::{Acks, NodeId, ProposeError};

/// What the rest of the shard knows of a raft group, as of the raft loop's last round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// The leader this replica knows of, if any.
    pub leader: Option<NodeId>,
    /// The current term (the partition's leader epoch).
    pub term: u64,
    /// True when this replica leads.
    pub is_leader: bool,
    /// Offset after the last committed record this replica holds durably.
    pub high_watermark: Offset,
    /// Offset after this replica's last record.
    pub log_end: Offset,
    /// The group's voters.
    pub voters: Vec<NodeId>,
    /// The voters the leader has seen caught up within the lag bound (on the leader;
    /// elsewhere the voters themselves are reported).
    pub in_sync: Vec<NodeId>,
}

impl GroupView {
    /// The term as a Kafka leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        i32::try_from(self.term).unwrap_or(i32::MAX)
    }
}

/// A proposal's eventual outcome: the offset of its first record, or why not.
pub type Proposed<'a> = Pin<Box<dyn Future<Output = Result<Offset, ProposeError>> + 'a>>;

/// One partition's raft group, as its replica uses it.
pub trait ReplicationGroup {
    /// Proposes one client append (whole record batches) and resolves once it is
    /// acknowledged as `acks` asks.
    fn propose(&self, batches: Vec<u8>, acks: Acks) -> Proposed<'_>;

    /// The group as of the last round (`None` before its first).
    fn view(&self) -> Option<GroupView>;

    /// Cuts the log's oldest segments below `before` with raft's entries for them (see
    /// `RaftLog::compact`); resolves to the new log start when anything was cut.
    fn compact(&self, before: Offset) -> Compacted<'_>;
}

/// The outcome of [`ReplicationGroup::compact`].
pub type Compacted<'a> = Pin<Box<dyn Future<Output = Result<Option<Offset>, String>> + 'a>>;
