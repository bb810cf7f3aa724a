//! The raft groups a shard hosts, and the loop that drives them all: no task per group.
//! One [`RaftShard::round`] collects the ready state of every group, stages their
//! entries and HardStates, makes them durable in one go (the groups' writes run side by
//! side and share the shard journal's durable writes: one fdatasync for every group of
//! the round), tells raft through `advance_append_async` / `on_persist_ready`, and
//! returns the messages to send, grouped by destination node, and the proposals whose
//! outcome is now known. [`RaftShard::tick`] ticks every group; the caller's loop ticks,
//! steps incoming messages, runs rounds and sends (part 2 puts that loop on TCP; the
//! tests and the bench drive it in one process).
//!
//! Acknowledgements: a proposal with [`Acks::All`] completes when the commit index (what
//! a majority holds durably) covers its entry — the high watermark is the commit index;
//! with [`Acks::Leader`] when the leader's own copy is durable (Kafka's acks=1: such a
//! write can be lost if the leader fails before a majority has it). A proposal whose
//! entry is replaced, or whose leader loses leadership before it is decided, completes
//! with [`ProposeError::Unknown`]: never a false success.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{Config, RawNode, SnapshotStatus, StateRole};
use tracing::{info, warn};

use crate::log::raft_index::Located;
use crate::log::{Log, Offset, Recovered};

use super::raft_log::{Persist, RaftLog, RaftLogError};
use super::raft_producers::{Admission, AdmitError};
use super::raft_snapshot::SnapshotState;

/// A raft group's id: one partition, the same on every node that holds a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

/// A node's id in raft (a group's replicas are nodes).
pub type NodeId = u64;

/// When a proposal counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// When the leader's copy is durable (Kafka's acks=1).
    Leader,
    /// When a majority holds it durably: the commit index covers it (acks=all).
    All,
}

/// Why a proposal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the group's leader.
    #[error("not the leader")]
    NotLeader,
    /// Raft refused the proposal (a leader transfer is under way, or too much is
    /// uncommitted).
    #[error("proposal dropped")]
    Dropped,
    /// The outcome is unknown: the leader changed or the entry was replaced before it
    /// was decided. It may or may not end up in the log.
    #[error("outcome unknown after a leader change")]
    Unknown,
    /// The group's storage failed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The batches were refused: an idempotent producer's sequence or epoch, or an
    /// invalid batch.
    #[error(transparent)]
    Rejected(#[from] AdmitError),
}

/// Why the shard could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RaftShardError {
    /// The group's storage failed.
    #[error(transparent)]
    Storage(#[from] RaftLogError),
    /// Raft refused (an invalid configuration, a message for another node).
    #[error(transparent)]
    Raft(#[from] raft::Error),
    /// No such group here.
    #[error("no raft group {0:?} on this shard")]
    UnknownGroup(GroupId),
}

/// A proposal's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The caller's token for the proposal.
    pub token: u64,
    /// The offset of its first record, or why it failed.
    pub result: Result<Offset, ProposeError>,
}

/// What a round produced.
#[derive(Default)]
pub struct Round {
    /// Messages to send, by destination node, each with its group.
    pub messages: BTreeMap<NodeId, Vec<(GroupId, Message)>>,
    /// Proposals whose outcome is known.
    pub completions: Vec<(GroupId, Completion)>,
    /// Groups whose storage failed this round (they are stopped).
    pub failed: Vec<(GroupId, String)>,
    /// Groups that had something to do this round.
    pub active: Vec<GroupId>,
    /// Bytes read from disk this round for lagging followers.
    pub catch_up_bytes: usize,
    /// Groups that installed a leader's snapshot this round.
    pub installed: Vec<GroupId>,
}

impl Round {
    fn send(&mut self, group: GroupId, msgs: Vec<Message>) {
        for m in msgs {
            self.messages.entry(m.to).or_default().push((group, m));
        }
    }
}

/// The raft settings every group of the shard runs with (the node id is the shard's).
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Ticks without a leader before a follower campaigns.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Bytes a round reads from disk for lagging followers, all groups together: a
    /// returning node catches up a round at a time without making the leaders' own
    /// rounds (their clients' acknowledgements) wait behind gigabytes of reads.
    pub catch_up_bytes_per_round: usize,
    /// Longest a round spends on those reads, all groups together. Each entry is a read
    /// of its own, so a byte budget alone let a round over small entries run for tens
    /// of seconds: a node's raft loop, feeding a new replica 4 MiB of 70-byte entries,
    /// neither ticked nor heard of newer terms for 55 s in the cluster soak, and the
    /// group coordinator on that shard answered from stale memory meanwhile.
    pub catch_up_time_per_round: std::time::Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            catch_up_bytes_per_round: 4 << 20,
            catch_up_time_per_round: std::time::Duration::from_millis(50),
        }
    }
}

struct Waiting {
    index: u64,
    term: u64,
    acks: Acks,
    token: u64,
}

/// A producer's retry of batches already proposed: answered with the original's first
/// offset once the records up to `end` are acknowledged as `acks` asks.
struct WaitingRetry {
    end: Offset,
    base: Offset,
    acks: Acks,
    term: u64,
    token: u64,
}

struct Group {
    node: RawNode<RaftLog>,
    waiting: VecDeque<Waiting>,
    retries: Vec<WaitingRetry>,
    failed: bool,
}

/// A ready taken from a group, on its way to disk.
struct InFlight {
    group: GroupId,
    number: u64,
    job: Persist,
    /// Messages raft may send only once the ready is durable (a follower's replies).
    after_persist: Vec<Message>,
    /// The index of the leader's snapshot this ready installs, if any.
    installed: Option<u64>,
}

/// The raft groups of one shard of node `node_id`. See the module docs.
pub struct RaftShard {
    node_id: NodeId,
    settings: GroupSettings,
    groups: BTreeMap<GroupId, Group>,
    /// Where the next round's catch-up reads start, so that every lagging group gets
    /// its turn under the budget.
    fetch_cursor: Option<GroupId>,
    /// Outcomes known when they were proposed (a retry of batches already
    /// acknowledged), handed out by the next round.
    decided: Vec<(GroupId, Completion)>,
    logger: slog::Logger,
}

impl RaftShard {
    /// A shard of node `node_id` with no groups yet.
    pub fn new(node_id: NodeId, settings: GroupSettings) -> RaftShard {
        RaftShard {
            node_id,
            settings,
            groups: BTreeMap::new(),
            fetch_cursor: None,
            decided: Vec::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }

    /// This shard's node.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Opens group `id` over `log` (recovering its raft state, or starting it with
    /// `voters`). Pre-vote and check-quorum are on: a replica cut off and back does not
    /// depose a healthy leader, and a leader cut off from a majority steps down.
    pub async fn open_group(
        &mut self,
        id: GroupId,
        log: Rc<Log>,
        recovered: Recovered,
        voters: Vec<NodeId>,
        state: Option<Rc<dyn SnapshotState>>,
    ) -> Result<(), RaftShardError> {
        let store = RaftLog::open(log, recovered, voters, state).await?;
        let config = Config {
            id: self.node_id,
            election_tick: self.settings.election_tick,
            heartbeat_tick: self.settings.heartbeat_tick,
            max_size_per_msg: self.settings.max_size_per_msg,
            max_inflight_msgs: self.settings.max_inflight_msgs,
            applied: store.applied(),
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        config.validate()?;
        let node = RawNode::new(&config, store, &self.logger)?;
        self.groups.insert(
            id,
            Group {
                node,
                waiting: VecDeque::new(),
                retries: Vec::new(),
                failed: false,
            },
        );
        Ok(())
    }

    /// Cuts group `id`'s log below `before` (see `RaftLog::compact`), between rounds.
    pub async fn compact(
        &mut self,
        id: GroupId,
        before: Offset,
    ) -> Result<Option<Offset>, RaftShardError> {
        match self.groups.get(&id) {
            Some(g) if !g.failed => Ok(g.node.store().compact(before).await?),
            _ => Ok(None),
        }
    }

    /// Closes every group's log cleanly (see `RaftLog::close`), between rounds; the
    /// shard is not used after. Returns the first failure, having tried every group.
    pub async fn close(&mut self) -> Result<(), RaftShardError> {
        let mut first = None;
        for g in self.groups.values() {
            if let Err(e) = g.node.store().close().await {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Closes group `id`'s log cleanly and stops hosting it (its partition was
    /// deleted); proposals still waiting end with an unknown outcome.
    pub async fn close_group(&mut self, id: GroupId) -> Result<Vec<Completion>, RaftShardError> {
        let Some(g) = self.groups.remove(&id) else {
            return Ok(Vec::new());
        };
        let unknown = g
            .waiting
            .iter()
            .map(|w| w.token)
            .chain(g.retries.iter().map(|r| r.token))
            .map(|token| Completion {
                token,
                result: Err(ProposeError::Unknown),
            })
            .collect();
        g.node.store().close().await?;
        Ok(unknown)
    }

    /// The groups hosted here.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    /// Group `id`'s raft node.
    pub fn node(&self, id: GroupId) -> Option<&RawNode<RaftLog>> {
        self.groups.get(&id).map(|g| &g.node)
    }

    /// Group `id`'s raft node, to campaign or transfer leadership.
    pub fn node_mut(&mut self, id: GroupId) -> Option<&mut RawNode<RaftLog>> {
        self.groups.get_mut(&id).map(|g| &mut g.node)
    }

    /// True when this replica leads group `id`.
    pub fn is_leader(&self, id: GroupId) -> bool {
        self.node(id)
            .is_some_and(|n| n.raft.state == StateRole::Leader)
    }

    /// Group `id`'s high watermark: the offset after its last committed record that
    /// this replica holds durably. (A follower may learn of a commit before the entries
    /// it covers replace a stale suffix of its own: those rows still name the old
    /// batches, so the commit index is capped at what raft knows is persisted.)
    pub fn high_watermark(&self, id: GroupId) -> Option<Offset> {
        self.groups.get(&id).map(|g| acknowledged_to(g, Acks::All))
    }

    /// Ticks every group's clock (elections, heartbeats).
    pub fn tick(&mut self) {
        for g in self.groups.values_mut().filter(|g| !g.failed) {
            g.node.tick();
        }
    }

    /// Proposes a change of group `id`'s members (this replica must lead it, with no
    /// other change under way).
    pub fn propose_conf_change(
        &mut self,
        id: GroupId,
        cc: raft::eraftpb::ConfChangeV2,
    ) -> Result<(), ProposeError> {
        leading(&mut self.groups, id)?
            .node
            .propose_conf_change(Vec::new(), cc)
            .map_err(|_| ProposeError::Dropped)
    }

    /// Hands a message from another node to group `id`.
    pub fn step(&mut self, id: GroupId, msg: Message) -> Result<(), RaftShardError> {
        let g = self
            .groups
            .get_mut(&id)
            .ok_or(RaftShardError::UnknownGroup(id))?;
        if g.failed {
            return Ok(());
        }
        g.node.step(msg)?;
        Ok(())
    }

    /// Proposes record batches (one client append) to group `id`; its outcome comes in
    /// a later round's completions under `token`.
    pub fn propose(
        &mut self,
        id: GroupId,
        batches: Vec<u8>,
        acks: Acks,
        token: u64,
    ) -> Result<(), ProposeError> {
        let g = leading(&mut self.groups, id)?;
        let term = g.node.raft.term;
        let (headers, admission) = g.node.store().admit(&batches)?;
        if let Admission::Duplicate { first, last } = admission {
            let retry = WaitingRetry {
                end: last.last_offset + 1,
                base: first.base_offset,
                acks,
                term,
                token,
            };
            if acknowledged_to(g, acks) >= retry.end {
                self.decided.push((
                    id,
                    Completion {
                        token,
                        result: Ok(retry.base),
                    },
                ));
            } else {
                g.retries.push(retry);
            }
            return Ok(());
        }
        g.node
            .propose(Vec::new(), batches)
            .map_err(|_| ProposeError::Dropped)?;
        let index = g.node.raft.raft_log.last_index();
        g.node.store().proposed(index, term, &headers);
        g.waiting.push_back(Waiting {
            index,
            term,
            acks,
            token,
        });
        Ok(())
    }

    /// True when some group has something to do.
    pub fn has_ready(&self) -> bool {
        !self.decided.is_empty()
            || self
                .groups
                .values()
                .any(|g| !g.failed && (g.node.has_ready() || g.node.store().has_missing()))
    }

    /// One round over every group: see the module docs.
    pub async fn round(&mut self) -> Round {
        let mut early = BTreeMap::new();
        let mut round = self.round_sending_early(|m| early = m).await;
        for (to, mut later) in std::mem::take(&mut round.messages) {
            early.entry(to).or_insert_with(Vec::new).append(&mut later);
        }
        round.messages = early;
        round
    }

    /// A round that hands `send_early` the messages raft may send before the round's
    /// writes are durable (a leader's appends: its followers write while it does), by
    /// destination; the rest, sent only after the writes, come in the returned round.
    pub async fn round_sending_early(
        &mut self,
        send_early: impl FnOnce(BTreeMap<NodeId, Vec<(GroupId, Message)>>),
    ) -> Round {
        let mut out = Round {
            completions: std::mem::take(&mut self.decided),
            ..Round::default()
        };
        let mut in_flight = Vec::new();
        for (&id, g) in self.groups.iter_mut() {
            if g.failed || !g.node.has_ready() {
                continue;
            }
            out.active.push(id);
            let mut rd = g.node.ready();
            let messages = rd.take_messages();
            let snapshots_sent = snapshot_targets(&messages);
            out.send(id, messages);
            let installed = (!rd.snapshot().is_empty()).then(|| rd.snapshot().get_metadata().index);
            let staged = if installed.is_some() {
                g.node
                    .store()
                    .stage_snapshot(rd.snapshot())
                    .and_then(|job| Ok(job.then(g.node.store().stage(rd.entries(), rd.hs())?)))
            } else {
                g.node.store().stage(rd.entries(), rd.hs())
            };
            let mut job = match staged {
                Ok(job) => job,
                Err(e) => {
                    g.failed = true;
                    fail_waiting(g, id, &e.to_string(), &mut out);
                    out.failed.push((id, e.to_string()));
                    continue;
                }
            };
            let committed = rd.take_committed_entries();
            // Membership changes take effect as they commit; the new configuration is
            // written with this round's job.
            for e in committed
                .iter()
                .filter(|e| e.entry_type == EntryType::EntryConfChangeV2)
            {
                match super::conf_change::decode(&e.data) {
                    Ok(cc) => match g.node.apply_conf_change(&cc) {
                        Ok(cs) => {
                            info!(group = id.0, index = e.index, voters = ?cs.voters, learners = ?cs.learners, outgoing = ?cs.voters_outgoing, "raft group configuration changed");
                            g.node.store().stage_conf_state_into(cs, &mut job);
                        }
                        Err(err) => {
                            warn!(group = id.0, index = e.index, error = %err, "configuration change refused")
                        }
                    },
                    Err(err) => {
                        warn!(group = id.0, index = e.index, error = %err, "unreadable configuration change skipped")
                    }
                }
            }
            if committed
                .iter()
                .any(|e| e.entry_type == EntryType::EntryConfChange)
            {
                // Only version 2 changes are ever proposed here.
                warn!(
                    group = id.0,
                    "a version 1 configuration change entry was skipped"
                );
            }
            let last_committed = committed.last().map(|e| e.index);
            let after_persist = rd.take_persisted_messages();
            let snapshots_sent = [snapshots_sent, snapshot_targets(&after_persist)].concat();
            let number = rd.number();
            g.node.advance_append_async(rd);
            // A snapshot goes whole in one message, so it counts as delivered once sent:
            // the leader then probes the follower, and sends it again if it was lost.
            for to in snapshots_sent {
                g.node.report_snapshot(to, SnapshotStatus::Finish);
            }
            if let Some(index) = last_committed {
                // The log is the state machine: a committed entry is applied by the
                // commit index moving (the high watermark) and by its producers'
                // sequences joining the committed state.
                g.node.advance_apply_to(index);
                g.node.store().apply_committed(&committed);
            }
            in_flight.push(InFlight {
                group: id,
                number,
                job,
                after_persist,
                installed,
            });
        }
        send_early(std::mem::take(&mut out.messages));
        let groups = &self.groups;
        let writes: Vec<_> = in_flight
            .iter_mut()
            .filter_map(|f| {
                let job = std::mem::take(&mut f.job);
                groups
                    .get(&f.group)
                    .map(|g| async move { g.node.store().persist(job).await })
            })
            .collect();
        let results = crate::task::join_all(writes).await;
        for (f, result) in in_flight.into_iter().zip(results) {
            let Some(g) = self.groups.get_mut(&f.group) else {
                continue;
            };
            match result {
                Ok(()) => {
                    g.node.on_persist_ready(f.number);
                    if let Some(index) = f.installed {
                        // The snapshot is the state machine up to its index.
                        g.node.advance_apply_to(index);
                        out.installed.push(f.group);
                    }
                    out.send(f.group, f.after_persist);
                }
                Err(e) => {
                    g.failed = true;
                    fail_waiting(g, f.group, &e.to_string(), &mut out);
                    out.failed.push((f.group, e.to_string()));
                }
            }
        }
        self.fetch_missing(&mut out).await;
        for (&id, g) in self.groups.iter_mut() {
            if !g.failed {
                complete(g, id, &mut out);
            }
        }
        out
    }

    /// Reads from disk the entries raft could not find in memory (a lagging follower's
    /// appends), up to the round's budgets of bytes and time, and lets raft send them;
    /// groups left over keep their reads for the next round, which starts with them.
    async fn fetch_missing(&mut self, out: &mut Round) {
        let budget = self.settings.catch_up_bytes_per_round;
        let deadline = std::time::Instant::now() + self.settings.catch_up_time_per_round;
        let start = self.fetch_cursor.take();
        let order: Vec<GroupId> = match start {
            Some(s) => self
                .groups
                .range(s..)
                .chain(self.groups.range(..s))
                .map(|(&id, _)| id)
                .collect(),
            None => self.groups.keys().copied().collect(),
        };
        for id in order {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.failed || !g.node.store().has_missing() {
                continue;
            }
            let time_spent = out.catch_up_bytes > 0 && std::time::Instant::now() >= deadline;
            if out.catch_up_bytes >= budget || time_spent {
                self.fetch_cursor = Some(id);
                break;
            }
            match g
                .node
                .store()
                .fetch_missing(budget - out.catch_up_bytes, deadline)
                .await
            {
                Ok((contexts, bytes)) => {
                    out.catch_up_bytes += bytes;
                    for c in contexts {
                        g.node.on_entries_fetched(c);
                    }
                    g.node.store().clear_fetched();
                }
                Err(e) => {
                    g.failed = true;
                    fail_waiting(g, id, &e.to_string(), out);
                    out.failed.push((id, e.to_string()));
                }
            }
        }
    }
}

/// The followers these messages send a snapshot to.
fn snapshot_targets(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgSnapshot)
        .map(|m| m.to)
        .collect()
}

fn fail_waiting(g: &mut Group, id: GroupId, why: &str, out: &mut Round) {
    let retries: Vec<u64> = g.retries.drain(..).map(|r| r.token).collect();
    for token in g.waiting.drain(..).map(|w| w.token).chain(retries) {
        out.completions.push((
            id,
            Completion {
                token,
                result: Err(ProposeError::Storage(why.to_string())),
            },
        ));
    }
}

/// Completes the proposals of group `g` whose outcome is known.
fn complete(g: &mut Group, id: GroupId, out: &mut Round) {
    let leader = g.node.raft.state == StateRole::Leader;
    let term = g.node.raft.term;
    let commit = g.node.raft.raft_log.committed;
    let table = g.node.store().table();
    let persisted = g.node.raft.raft_log.persisted;
    g.waiting.retain(|w| {
        let result = if table.term(w.index) != Some(w.term) && w.index <= table.last_index() {
            Some(Err(ProposeError::Unknown))
        } else {
            let done = match w.acks {
                Acks::All => commit >= w.index,
                Acks::Leader => persisted >= w.index,
            };
            if done {
                Some(match table.locate(w.index) {
                    Some(Located::Records { first, .. }) => Ok(first),
                    _ => Err(ProposeError::Unknown),
                })
            } else if !leader || term != w.term {
                Some(Err(ProposeError::Unknown))
            } else {
                None
            }
        };
        match result {
            Some(result) => {
                out.completions.push((
                    id,
                    Completion {
                        token: w.token,
                        result,
                    },
                ));
                false
            }
            None => true,
        }
    });
    // A retry's original is in this leader's log, which no one truncates while it
    // leads in the same term: once acknowledged up to its end, the original is.
    drop(table);
    let acked_all = acknowledged_to(g, Acks::All);
    let acked_leader = acknowledged_to(g, Acks::Leader);
    g.retries.retain(|r| {
        let reached = match r.acks {
            Acks::All => acked_all >= r.end,
            Acks::Leader => acked_leader >= r.end,
        };
        let result = if !leader || term != r.term {
            Err(ProposeError::Unknown)
        } else if reached {
            Ok(r.base)
        } else {
            return true;
        };
        out.completions.push((
            id,
            Completion {
                token: r.token,
                result,
            },
        ));
        false
    });
}

/// The offset up to which group `g`'s records are acknowledged as `acks` asks: what a
/// majority holds durably (capped at this replica's own durable copy), or the leader's
/// durable copy alone.
/// Group `id`, when this replica leads it and its storage works.
fn leading(groups: &mut BTreeMap<GroupId, Group>, id: GroupId) -> Result<&mut Group, ProposeError> {
    let g = groups.get_mut(&id).ok_or(ProposeError::NotLeader)?;
    if g.failed {
        return Err(ProposeError::Storage("the group's storage failed".into()));
    }
    if g.node.raft.state != StateRole::Leader {
        return Err(ProposeError::NotLeader);
    }
    Ok(g)
}

fn acknowledged_to(g: &Group, acks: Acks) -> Offset {
    let log = &g.node.raft.raft_log;
    let index = match acks {
        Acks::All => log.committed.min(log.persisted),
        Acks::Leader => log.persisted,
    };
    g.node.store().table().end_offset_at(index)
}
