//! A consumer group's members and state, as the classic group protocol defines them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::task::local_channel::LocalSender;
use bytes::Bytes;

use crate::error::ErrorCode;

/// Where a group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned and running.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinResult {
    /// Error, or None.
    pub error: ErrorCode,
    /// Generation the member joined.
    pub generation: i32,
    /// Protocol type of the group.
    pub protocol_type: Option<String>,
    /// Selected protocol (assignor).
    pub protocol: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member's id, instance id and metadata for `protocol`.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    /// An error answer carrying the member id.
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone)]
pub struct SyncResult {
    /// Error, or None.
    pub error: ErrorCode,
    /// This member's assignment.
    pub assignment: Bytes,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Selected protocol.
    pub protocol: Option<String>,
}

impl SyncResult {
    /// An error answer.
    pub fn error(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            assignment: Bytes::new(),
            protocol_type: None,
            protocol: None,
        }
    }
}

/// One member of a group.
pub struct Member {
    /// Member id the coordinator gave it.
    pub id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Client id from its requests.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Evicted when silent this long.
    pub session_timeout: Duration,
    /// How long a rebalance waits for it to rejoin.
    pub rebalance_timeout: Duration,
    /// Protocols (assignors) it supports, in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Its assignment from the leader.
    pub assignment: Bytes,
    /// Last time it was heard from.
    pub last_seen: Instant,
    /// Its pending JoinGroup, answered when the rebalance completes.
    pub join_waiter: Option<LocalSender<JoinResult>>,
    /// Its pending SyncGroup, answered when the leader's assignment arrives.
    pub sync_waiter: Option<LocalSender<SyncResult>>,
}

impl Member {
    /// Metadata it gave for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
pub struct Group {
    /// Group id.
    pub id: String,
    /// Rebalance state.
    pub state: GroupState,
    /// Incremented by every completed rebalance.
    pub generation: i32,
    /// "consumer" for Kafka consumers.
    pub protocol_type: Option<String>,
    /// Selected protocol of the current generation.
    pub protocol: Option<String>,
    /// Leader's member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used.
    pub pending: HashMap<String, Instant>,
    /// When the current rebalance started.
    pub rebalance_started: Instant,
    /// Whether the current rebalance started from an empty group (initial delay applies).
    pub rebalance_from_empty: bool,
    /// Whether a task is driving the current rebalance.
    pub rebalance_driver: bool,
    /// Whether the leader's assignment is being stored (no member is answered before).
    pub storing: bool,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_started: Instant::now(),
            rebalance_from_empty: false,
            rebalance_driver: false,
            storing: false,
        }
    }

    /// Protocols every member supports, in the first member's preference order.
    pub fn common_protocols(&self) -> Vec<String> {
        let mut iter = self.members.values();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        common
    }

    /// Picks the protocol by member votes: each member votes for its most preferred
    /// protocol among those all support; ties go to the earlier candidate.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.common_protocols();
        let mut best: Option<(usize, &String)> = None;
        for c in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .find(|(n, _)| candidates.contains(n))
                        .is_some_and(|(n, _)| n == c)
                })
                .count();
            if best.is_none_or(|(v, _)| votes > v) {
                best = Some((votes, c));
            }
        }
        best.map(|(_, c)| c.clone())
    }
}
