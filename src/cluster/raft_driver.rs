//! The loop that drives one shard's raft groups over the wire: it alone owns the
//! shard's [`RaftShard`], ticks it, steps what the [`Transport`] received, takes the
//! proposals and commands others queued, runs rounds, sends their messages and hands
//! each proposal its outcome. Everyone else sees a group through its [`GroupView`],
//! refreshed after every round, and proposes through [`RaftDriver::propose`].
//!
//! A leader's appends go out in the same round as its own write, so the leader's
//! fdatasync and its followers' overlap (raft allows a leader to count its own entry
//! only once durable, which `RaftShard` keeps).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use raft::StateRole;
use tracing::{debug, info, warn};

use crate::log::{Log, Offset, Recovered};
use crate::notify::Notify;
use crate::replica::raft_shard::{Acks, GroupId, NodeId, ProposeError, RaftShard, RaftShardError};
use crate::replica::raft_snapshot::SnapshotState;
use crate::task::{local_channel, TaskSet};

use super::transport::Transport;

/// Raft's clock: every group ticks this often. With the default ten ticks per election
/// a follower waits 1–2 s without a leader before it campaigns: long enough for three
/// nodes sharing two cores under load, short enough for a failover clients ride out.
pub const TICK: Duration = Duration::from_millis(100);

pub use crate::replica::replication::GroupView;

/// How often a leader checks whether its group's preferred replica should lead again.
pub const BALANCE_EVERY: Duration = Duration::from_secs(5);

type Reply<T> = local_channel::LocalSender<T>;

enum Command {
    Open {
        group: GroupId,
        log: Rc<Log>,
        recovered: Recovered,
        voters: Vec<NodeId>,
        state: Option<Rc<dyn SnapshotState>>,
        reply: Reply<Result<(), String>>,
    },
    Campaign(GroupId),
    /// On the leader: the offset after what each voter is known to hold.
    Progress(GroupId, Reply<Vec<(NodeId, Offset)>>),
    /// Hand leadership of these groups to their preferred replicas now, where this
    /// replica leads and the preferred one is caught up (ElectLeaders).
    HandBack(Vec<GroupId>),
    /// A group's preferred replica (none: leadership stays where elections put it),
    /// and the voters it is moving to (if it moves).
    Assign {
        group: GroupId,
        preferred: Option<NodeId>,
        target: Option<Vec<NodeId>>,
    },
    /// Cut a group's log below an offset (retention; the controller's snapshots).
    Compact(GroupId, Offset, Reply<Result<Option<Offset>, String>>),
    /// Stop hosting a group (its partition was deleted), closing its log.
    CloseGroup(GroupId, Reply<Result<(), String>>),
    /// Close every group's log and stop the loop (shutdown).
    Close(Reply<Result<(), String>>),
}

struct Proposal {
    group: GroupId,
    batches: Vec<u8>,
    acks: Acks,
    token: u64,
}

struct Shared {
    /// When the loop last ticked its groups.
    ticked_at: Cell<Instant>,
    commands: RefCell<Vec<Command>>,
    proposals: RefCell<Vec<Proposal>>,
    waiters: RefCell<HashMap<u64, Reply<Result<Offset, ProposeError>>>>,
    next_token: Cell<u64>,
    views: RefCell<BTreeMap<GroupId, GroupView>>,
    /// Woken when a command or proposal is queued.
    wake: Notify,
    /// Woken after every round that changed some view (fetches wait on it).
    changed: Notify,
    /// Groups whose view changed since [`RaftDriver::take_changed`] last ran.
    dirty: RefCell<BTreeSet<GroupId>>,
    /// How long a voter may lag and stay in sync (Kafka's `replica.lag.time.max.ms`).
    lag_max: Duration,
    /// Moved groups this replica leads whose voters are their move's target, with
    /// those voters, until [`RaftDriver::take_moved`] takes them.
    moved: RefCell<Vec<(GroupId, Vec<NodeId>)>>,
}

/// A shard's raft loop. See the module docs.
pub struct RaftDriver {
    shared: Rc<Shared>,
    tasks: TaskSet,
}

impl RaftDriver {
    /// Starts the loop over `shard` and `transport`.
    pub fn start(shard: RaftShard, transport: Rc<Transport>, lag_max: Duration) -> RaftDriver {
        RaftDriver::start_ticking(shard, transport, lag_max, TICK)
    }

    /// [`RaftDriver::start`] with another tick (tests: a tick so long that anything
    /// waiting for one shows).
    pub fn start_ticking(
        shard: RaftShard,
        transport: Rc<Transport>,
        lag_max: Duration,
        tick: Duration,
    ) -> RaftDriver {
        let shared = Rc::new(Shared {
            ticked_at: Cell::new(Instant::now()),
            commands: RefCell::new(Vec::new()),
            proposals: RefCell::new(Vec::new()),
            waiters: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            views: RefCell::new(BTreeMap::new()),
            wake: Notify::default(),
            changed: Notify::default(),
            dirty: RefCell::new(BTreeSet::new()),
            lag_max,
            moved: RefCell::new(Vec::new()),
        });
        let tasks = TaskSet::new(format!("raft loop of node {}", shard.node_id()));
        tasks.spawn("raft loop", run(shard, transport, shared.clone(), tick));
        RaftDriver { shared, tasks }
    }

    /// Opens group `group` over `log` (recovering it, or starting it with `voters`);
    /// `recovered` is what the log's open returned.
    pub async fn open_group(
        &self,
        group: GroupId,
        log: Rc<Log>,
        recovered: Recovered,
        voters: Vec<NodeId>,
        state: Option<Rc<dyn SnapshotState>>,
    ) -> Result<(), String> {
        let (reply, rx) = local_channel::new_bounded(1);
        self.command(Command::Open {
            group,
            log,
            recovered,
            voters,
            state,
            reply,
        });
        rx.recv()
            .await
            .unwrap_or_else(|| Err("the raft loop stopped".into()))
    }

    /// Makes this replica campaign for leadership of `group` now (tests, and a preferred
    /// leader's election).
    pub fn campaign(&self, group: GroupId) {
        self.command(Command::Campaign(group));
    }

    /// Where each voter of `group` is, in offsets after what it holds, when this replica
    /// leads it (empty otherwise): asked of the loop, as only the leader knows and it is
    /// wanted rarely (DescribeQuorum), never computed in every round.
    pub async fn progress(&self, group: GroupId) -> Vec<(NodeId, Offset)> {
        let (reply, rx) = local_channel::new_bounded(1);
        self.command(Command::Progress(group, reply));
        rx.recv().await.unwrap_or_default()
    }

    /// Tells the loop group `group`'s preferred replica and, while it moves, the voters
    /// it moves to (the leader then changes its members step by step).
    pub fn assign(&self, group: GroupId, preferred: Option<NodeId>, target: Option<Vec<NodeId>>) {
        self.command(Command::Assign {
            group,
            preferred,
            target,
        });
    }

    /// Moved groups this replica leads whose voters now are their target, with those
    /// voters (reported to the controller, which ends the move).
    pub fn take_moved(&self) -> Vec<(GroupId, Vec<NodeId>)> {
        std::mem::take(&mut *self.shared.moved.borrow_mut())
    }

    /// Hands leadership of the groups of `groups` this replica leads to their preferred
    /// replicas, where those are caught up (a preferred-leader election).
    pub fn hand_back(&self, groups: Vec<GroupId>) {
        self.command(Command::HandBack(groups));
    }

    fn command(&self, c: Command) {
        self.shared.commands.borrow_mut().push(c);
        self.shared.wake.notify();
    }

    /// Proposes `batches` (one client append) to `group`, and waits for its outcome:
    /// the offset of its first record, or why it failed.
    pub async fn propose(
        &self,
        group: GroupId,
        batches: Vec<u8>,
        acks: Acks,
    ) -> Result<Offset, ProposeError> {
        let token = self.shared.next_token.get();
        self.shared.next_token.set(token + 1);
        let (reply, rx) = local_channel::new_bounded(1);
        self.shared.waiters.borrow_mut().insert(token, reply);
        self.shared.proposals.borrow_mut().push(Proposal {
            group,
            batches,
            acks,
            token,
        });
        self.shared.wake.notify();
        match rx.recv().await {
            Some(result) => result,
            None => Err(ProposeError::Unknown),
        }
    }

    /// `group` as of the last round.
    pub fn view(&self, group: GroupId) -> Option<GroupView> {
        self.shared.views.borrow().get(&group).cloned()
    }

    /// The groups whose view changed since the last call, with their views (`None`:
    /// the group is no longer hosted).
    pub fn take_changed(&self) -> Vec<(GroupId, Option<GroupView>)> {
        let dirty = std::mem::take(&mut *self.shared.dirty.borrow_mut());
        let views = self.shared.views.borrow();
        dirty
            .into_iter()
            .map(|g| (g, views.get(&g).cloned()))
            .collect()
    }

    /// Stops hosting `group` and closes its log (its partition was deleted).
    pub async fn close_group(&self, group: GroupId) -> Result<(), String> {
        let (reply, rx) = local_channel::new_bounded(1);
        self.command(Command::CloseGroup(group, reply));
        rx.recv()
            .await
            .unwrap_or_else(|| Err("the raft loop stopped".into()))
    }

    /// Cuts `group`'s log below `before` between rounds (see `RaftLog::compact`);
    /// resolves to the new log start when anything was cut.
    pub async fn compact(&self, group: GroupId, before: Offset) -> Result<Option<Offset>, String> {
        let (reply, rx) = local_channel::new_bounded(1);
        self.command(Command::Compact(group, before, reply));
        rx.recv()
            .await
            .unwrap_or_else(|| Err("the raft loop stopped".into()))
    }

    /// Closes every group's log cleanly and stops the loop (shutdown); waiting
    /// proposals end with an unknown outcome.
    pub async fn close(&self) -> Result<(), String> {
        let (reply, rx) = local_channel::new_bounded(1);
        self.command(Command::Close(reply));
        let result = rx
            .recv()
            .await
            .unwrap_or_else(|| Err("the raft loop stopped".into()));
        self.stop();
        result
    }

    /// Resolves after the next round that changed some group's view.
    pub async fn changed(&self) {
        let generation = self.shared.changed.generation();
        self.shared.changed.changed_since(generation).await;
    }

    /// How many rounds changed views so far: read before looking at the views, then
    /// wait with [`RaftDriver::changed_since`], so that no change in between is missed.
    pub fn generation(&self) -> u64 {
        self.shared.changed.generation()
    }

    /// Resolves once a round changed some group's view after `generation` was read.
    pub async fn changed_since(&self, generation: u64) {
        self.shared.changed.changed_since(generation).await;
    }

    /// Whether the loop ticked within `bound`. A loop held up (a slow write, a long
    /// round) neither steps its leaders down nor hears of newer terms, so what its views
    /// say of leadership may be stale: a leader's answers that do not go through raft
    /// (a group coordinator's) are withheld until it ticks again.
    pub fn ticked_within(&self, bound: Duration) -> bool {
        self.shared.ticked_at.get().elapsed() <= bound
    }

    /// Stops the loop; waiting proposals end with an unknown outcome.
    pub fn stop(&self) {
        self.tasks.stop_all();
        self.shared.waiters.borrow_mut().clear();
    }
}

/// One group of a driver, as its partition's replica proposes to it and reads its view.
pub struct GroupHandle {
    /// The shard's raft loop.
    pub driver: Rc<RaftDriver>,
    /// The group.
    pub group: GroupId,
}

impl crate::replica::replication::ReplicationGroup for GroupHandle {
    fn propose(&self, batches: Vec<u8>, acks: Acks) -> crate::replica::replication::Proposed<'_> {
        Box::pin(self.driver.propose(self.group, batches, acks))
    }

    fn view(&self) -> Option<GroupView> {
        self.driver.view(self.group)
    }

    fn compact(&self, before: Offset) -> crate::replica::replication::Compacted<'_> {
        Box::pin(self.driver.compact(self.group, before))
    }
}

impl Drop for RaftDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(mut shard: RaftShard, transport: Rc<Transport>, shared: Rc<Shared>, tick: Duration) {
    let mut next_tick = Instant::now() + tick;
    let mut next_balance = Instant::now() + BALANCE_EVERY;
    // When each voter was last seen caught up, per group (on its leader).
    let mut caught_up: HashMap<(GroupId, NodeId), Instant> = HashMap::new();
    // Each group's preferred leader: the first replica placement named.
    let mut preferred: HashMap<GroupId, NodeId> = HashMap::new();
    // The voters of the groups that move, and when each was last looked at.
    let mut targets: HashMap<GroupId, Vec<NodeId>> = HashMap::new();
    let mut next_move = Instant::now() + MOVE_EVERY;
    loop {
        let inbox_generation = transport.inbox().arrived.generation();
        let wake_generation = shared.wake.generation();
        // Messages that arrived while the last round was writing are waiting in the
        // inbox already: their notification came before this generation was read, so
        // only looking at the inbox keeps the loop from sleeping on them until a tick.
        let idle = !shard.has_ready()
            && shared.commands.borrow().is_empty()
            && shared.proposals.borrow().is_empty()
            && transport.inbox().is_empty();
        if idle {
            let wait = next_tick.saturating_duration_since(Instant::now());
            futures_lite::future::or(
                crate::task::sleep(wait),
                futures_lite::future::or(
                    transport.inbox().arrived.changed_since(inbox_generation),
                    shared.wake.changed_since(wake_generation),
                ),
            )
            .await;
        }
        let now = Instant::now();
        // Views are refreshed for the groups this pass touched, and for all at a tick
        // (a shard may host thousands of groups; a pass touches a few).
        let mut touched = BTreeSet::new();
        let ticked = now >= next_tick;
        if ticked {
            shard.tick();
            shared.ticked_at.set(now);
            next_tick = now + tick;
            // A preferred replica that knows no leader (a new group, or all restarted)
            // stands at once rather than after a random election timeout, so leadership
            // starts where placement put it and need not be handed back later.
            touched.extend(stand_if_leaderless(&mut shard, &preferred));
        }
        let commands = std::mem::take(&mut *shared.commands.borrow_mut());
        for c in commands {
            match c {
                Command::Open {
                    group,
                    log,
                    recovered,
                    voters,
                    state,
                    reply,
                } => {
                    if let Some(&first) = voters.first() {
                        // An assignment told before the open (a moving group) stands.
                        preferred.entry(group).or_insert(first);
                    }
                    let result = shard
                        .open_group(group, log, recovered, voters, state)
                        .await
                        .map_err(|e| e.to_string());
                    touched.insert(group);
                    let _ = reply.try_send(result);
                }
                Command::Campaign(group) => {
                    touched.insert(group);
                    if let Some(n) = shard.node_mut(group) {
                        if let Err(e) = n.campaign() {
                            warn!(group = group.0, error = %e, "campaign refused");
                        }
                    }
                }
                Command::Assign {
                    group,
                    preferred: first,
                    target,
                } => {
                    match first {
                        Some(n) => preferred.insert(group, n),
                        None => preferred.insert(group, NO_PREFERENCE),
                    };
                    match target {
                        Some(t) => {
                            targets.insert(group, t);
                        }
                        None => {
                            targets.remove(&group);
                        }
                    }
                }
                Command::Progress(group, reply) => {
                    let _ = reply.try_send(progress_of(&shard, group));
                }
                Command::HandBack(groups) => {
                    touched.extend(hand_back_leadership(&mut shard, &preferred, Some(&groups)));
                }
                Command::Compact(group, before, reply) => {
                    let result = shard
                        .compact(group, before)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = reply.try_send(result);
                }
                Command::CloseGroup(group, reply) => {
                    preferred.remove(&group);
                    targets.remove(&group);
                    caught_up.retain(|(g, _), _| *g != group);
                    let result = match shard.close_group(group).await {
                        Ok(unknown) => {
                            for c in unknown {
                                if let Some(w) = shared.waiters.borrow_mut().remove(&c.token) {
                                    let _ = w.try_send(c.result);
                                }
                            }
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    shared.views.borrow_mut().remove(&group);
                    shared.dirty.borrow_mut().insert(group);
                    shared.changed.notify();
                    let _ = reply.try_send(result);
                }
                Command::Close(reply) => {
                    let result = shard.close().await.map_err(|e| e.to_string());
                    transport.stop();
                    let _ = reply.try_send(result);
                    // The groups' logs are closed: nothing may run a round over them.
                    std::future::pending::<()>().await;
                }
            }
        }
        for (group, m) in transport.inbox().take() {
            touched.insert(group);
            match shard.step(group, m) {
                Ok(()) => {}
                Err(RaftShardError::UnknownGroup(g)) => {
                    debug!(group = g.0, "message for a group not hosted here dropped");
                }
                Err(e) => debug!(group = group.0, error = %e, "raft refused a message"),
            }
        }
        for node in transport.take_unreachable() {
            for g in shard.group_ids() {
                if let Some(n) = shard.node_mut(g) {
                    n.report_unreachable(node);
                }
            }
        }
        let proposals = std::mem::take(&mut *shared.proposals.borrow_mut());
        for p in proposals {
            touched.insert(p.group);
            if let Err(e) = shard.propose(p.group, p.batches, p.acks, p.token) {
                if let Some(w) = shared.waiters.borrow_mut().remove(&p.token) {
                    let _ = w.try_send(Err(e));
                }
            }
        }
        if shard.has_ready() {
            let round = shard
                .round_sending_early(|early| {
                    for (to, messages) in early {
                        transport.send(to, messages);
                    }
                })
                .await;
            for (to, messages) in round.messages {
                transport.send(to, messages);
            }
            for (group, e) in &round.failed {
                warn!(group = group.0, error = %e, "raft group stopped: its storage failed");
            }
            for (_, c) in round.completions {
                if let Some(w) = shared.waiters.borrow_mut().remove(&c.token) {
                    let _ = w.try_send(c.result);
                }
            }
            touched.extend(round.active);
        }
        if now >= next_move && !targets.is_empty() {
            next_move = now + MOVE_EVERY;
            let moved = move_members(&mut shard, &targets);
            touched.extend(moved.iter().map(|(g, _)| *g));
            let done: Vec<(GroupId, Vec<NodeId>)> = moved
                .into_iter()
                .filter_map(|(g, d)| d.map(|v| (g, v)))
                .collect();
            if !done.is_empty() {
                shared.moved.borrow_mut().extend(done);
                shared.changed.notify();
            }
        }
        if now >= next_balance {
            next_balance = now + BALANCE_EVERY;
            touched.extend(hand_back_leadership(&mut shard, &preferred, None));
        }
        let groups = if ticked {
            shard.group_ids()
        } else {
            touched.into_iter().collect()
        };
        if refresh_views(&shard, &groups, &shared, &mut caught_up) {
            shared.changed.notify();
        }
        crate::task::yield_if_needed().await;
    }
}

/// A group's preferred replica when it has none: no node has id 0, so no leader hands
/// leadership to it and no replica stands for it at once.
const NO_PREFERENCE: NodeId = 0;

/// How often a leader takes the next step of its groups' moves.
pub const MOVE_EVERY: Duration = Duration::from_millis(500);

/// One step of every move this replica leads: add the target's new replicas as
/// learners; once they are caught up, promote them and remove the voters not in the
/// target (joint consensus, left automatically); a leader that is itself to go first
/// hands leadership to a caught-up voter of the target. Returns the groups looked at,
/// with their voters when those are the target (the move is over).
fn move_members(
    shard: &mut RaftShard,
    targets: &HashMap<GroupId, Vec<NodeId>>,
) -> Vec<(GroupId, Option<Vec<NodeId>>)> {
    use crate::replica::conf_change::proposal;
    use raft::eraftpb::ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    let mut out = Vec::new();
    for (&g, target) in targets {
        let Some(node) = shard.node_mut(g) else {
            continue;
        };
        let raft = &node.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
            continue;
        }
        let conf = raft.prs().conf().to_conf_state();
        if !conf.voters_outgoing.is_empty() || raft.has_pending_conf() {
            // A change is under way (or the joint configuration is being left).
            continue;
        }
        let me = raft.id;
        let last = raft.raft_log.last_index();
        let caught_up = |n: NodeId| {
            n == me
                || raft
                    .prs()
                    .get(n)
                    .is_some_and(|p| p.matched >= last && p.recent_active)
        };
        let in_target = |n: &NodeId| target.contains(n);
        let add: Vec<NodeId> = target
            .iter()
            .copied()
            .filter(|n| !conf.voters.contains(n) && !conf.learners.contains(n))
            .collect();
        let mut voters = conf.voters.clone();
        voters.sort_unstable();
        let mut wanted = target.clone();
        wanted.sort_unstable();
        let cc = if !add.is_empty() {
            info!(group = g.0, learners = ?add, "moving: adding learners");
            Some(proposal(
                &add.iter().map(|&n| (AddLearnerNode, n)).collect::<Vec<_>>(),
            ))
        } else if !conf
            .learners
            .iter()
            .filter(|n| in_target(n))
            .all(|&n| caught_up(n))
        {
            None // the learners are still catching up
        } else {
            let mut changes: Vec<_> = conf
                .learners
                .iter()
                .map(|&n| (if in_target(&n) { AddNode } else { RemoveNode }, n))
                .collect();
            changes.extend(
                conf.voters
                    .iter()
                    .filter(|&&n| n != me && !in_target(&n))
                    .map(|&n| (RemoveNode, n)),
            );
            if !changes.is_empty() {
                info!(group = g.0, changes = ?changes, "moving: changing voters");
                Some(proposal(&changes))
            } else if !in_target(&me) {
                // Only this leader is left to go: another voter of the target leads on.
                if let Some(&to) = target
                    .iter()
                    .find(|&&n| conf.voters.contains(&n) && caught_up(n))
                {
                    info!(
                        group = g.0,
                        to, "moving: handing leadership to a replica that stays"
                    );
                    node.transfer_leader(to);
                }
                None
            } else {
                out.push((g, (voters == wanted).then(|| voters.clone())));
                continue;
            }
        };
        if let Some(cc) = cc {
            if let Err(e) = shard.propose_conf_change(g, cc) {
                debug!(group = g.0, error = %e, "membership change not proposed");
            }
        }
        out.push((g, None));
    }
    out
}

/// Kafka's preferred-leader balancing (`auto.leader.rebalance.enable`), per group: a
/// leader that is not its group's preferred replica hands leadership to it once it is
/// caught up and answering. Placement spreads preferred replicas over the nodes, so after
/// a node comes back its share of leaders returns to it instead of staying piled on the
/// others. `only` limits it to some groups (ElectLeaders). Returns the groups asked to
/// transfer.
fn hand_back_leadership(
    shard: &mut RaftShard,
    preferred: &HashMap<GroupId, NodeId>,
    only: Option<&[GroupId]>,
) -> Vec<GroupId> {
    let mut moved = Vec::new();
    let groups = match only {
        Some(g) => g.to_vec(),
        None => shard.group_ids(),
    };
    for g in groups {
        let Some(&to) = preferred.get(&g) else {
            continue;
        };
        let Some(node) = shard.node_mut(g) else {
            continue;
        };
        let raft = &node.raft;
        if raft.state != StateRole::Leader || raft.id == to || raft.lead_transferee.is_some() {
            continue;
        }
        let last = raft.raft_log.last_index();
        let ready = raft
            .prs()
            .get(to)
            .is_some_and(|p| p.matched >= last && p.recent_active);
        if ready {
            info!(
                group = g.0,
                to, "handing leadership back to the preferred replica"
            );
            node.transfer_leader(to);
            moved.push(g);
        }
    }
    moved
}

/// Campaigns in the groups whose preferred replica this is and that know no leader;
/// returns them. With pre-vote, a campaign where a leader is still heard from changes
/// nothing.
fn stand_if_leaderless(
    shard: &mut RaftShard,
    preferred: &HashMap<GroupId, NodeId>,
) -> Vec<GroupId> {
    let mut stood = Vec::new();
    for g in shard.group_ids() {
        let Some(node) = shard.node_mut(g) else {
            continue;
        };
        let raft = &node.raft;
        let mine = preferred.get(&g) == Some(&raft.id);
        // A pre-candidate whose pre-vote went unanswered (the others had not opened the
        // group yet) asks again; a candidate is not disturbed (that would bump the term).
        let waiting = matches!(raft.state, StateRole::Follower | StateRole::PreCandidate);
        if mine && raft.leader_id == raft::INVALID_ID && waiting {
            if let Err(e) = node.campaign() {
                debug!(group = g.0, error = %e, "campaign refused");
            }
            stood.push(g);
        }
    }
    stood
}

/// Where each voter of `group` is (the offset after what it holds), when this replica
/// leads it.
fn progress_of(shard: &RaftShard, group: GroupId) -> Vec<(NodeId, Offset)> {
    let Some(node) = shard.node(group) else {
        return Vec::new();
    };
    let raft = &node.raft;
    if raft.state != StateRole::Leader {
        return Vec::new();
    }
    let table = node.store().table();
    raft.prs()
        .conf()
        .voters()
        .ids()
        .iter()
        .map(|v| {
            let matched = if v == raft.id {
                raft.raft_log.persisted
            } else {
                raft.prs().get(v).map_or(0, |p| p.matched)
            };
            (v, table.end_offset_at(matched))
        })
        .collect()
}

/// Recomputes the views of `groups`; true when any changed.
fn refresh_views(
    shard: &RaftShard,
    groups: &[GroupId],
    shared: &Shared,
    caught_up: &mut HashMap<(GroupId, NodeId), Instant>,
) -> bool {
    let now = Instant::now();
    let mut views = shared.views.borrow_mut();
    let mut changed = false;
    for &g in groups {
        let Some(node) = shard.node(g) else {
            continue;
        };
        let raft = &node.raft;
        let is_leader = raft.state == StateRole::Leader;
        let voters: Vec<NodeId> = raft.prs().conf().voters().ids().iter().collect();
        let in_sync = if is_leader {
            let last = raft.raft_log.last_index();
            voters
                .iter()
                .copied()
                .filter(|&v| {
                    // A follower counts only while it answers (raft's `recent_active`,
                    // cleared at every check-quorum round): one cut off right after
                    // catching up must not stay in sync while nothing new is written.
                    let (matched, active) = if v == raft.id {
                        (raft.raft_log.persisted, true)
                    } else {
                        raft.prs()
                            .get(v)
                            .map_or((0, false), |p| (p.matched, p.recent_active))
                    };
                    if matched >= last && active {
                        caught_up.insert((g, v), now);
                    }
                    caught_up
                        .get(&(g, v))
                        .is_some_and(|t| now.duration_since(*t) <= shared.lag_max)
                })
                .collect()
        } else {
            voters.clone()
        };
        let view = GroupView {
            leader: (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id),
            term: raft.term,
            is_leader,
            high_watermark: shard.high_watermark(g).unwrap_or(0),
            log_end: node.store().log().next_offset(),
            voters,
            in_sync,
        };
        let old = views.get(&g);
        if old.map(|o| (o.leader, o.term)) != Some((view.leader, view.term)) {
            // Leadership changes are rare and what an operator looks for first.
            info!(group = g.0, term = view.term, leader = ?view.leader, "raft group leadership");
        }
        if old != Some(&view) {
            views.insert(g, view);
            shared.dirty.borrow_mut().insert(g);
            changed = true;
        }
    }
    changed
}
