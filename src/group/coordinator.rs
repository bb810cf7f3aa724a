//! The group coordinator of one shard: the classic consumer-group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) and committed offsets, for the groups that hash to
//! this shard.
//!
//! Everything runs on the shard's executor. Group state lives in a `RefCell` that is
//! never borrowed across an await: a JoinGroup or a follower's SyncGroup registers a
//! one-shot channel in its member and awaits it; a small driver task completes each
//! rebalance when every member has rejoined, or when the rebalance timeout runs out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::task::local_channel;
use bytes::Bytes;
use tracing::{info, warn};
use uuid::Uuid;

use super::offsets::{Committed, GroupOffsets, OffsetRecord, OffsetStore};
use super::state::{Group, GroupState, JoinResult, Member, SyncResult};
use super::stored_group::StoredGroup;
// Declared with the broker settings, since config must not depend on group/; callers keep
// this path.
pub use crate::config::GroupSettings;
use crate::error::ErrorCode;
use crate::log::{LogEnv, LogResult};
use crate::metrics::CommittedOffsets;
use crate::notify::Notify;
use crate::task::TaskSet;

/// How often sessions are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(200);

/// A JoinGroup request, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// Group id.
    pub group_id: String,
    /// Member id; empty on a first join.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v1+; the session timeout before).
    pub rebalance_timeout_ms: i32,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols with metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Request version: v4+ must first get a member id (MEMBER_ID_REQUIRED).
    pub version: i16,
}

/// One member, as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct DescribedMember {
    /// Member id.
    pub member_id: String,
    /// Static id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the selected protocol.
    pub metadata: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A group, as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct DescribedGroup {
    /// State name.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Selected protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<DescribedMember>,
}

/// The coordinator of the groups owned by one shard.
pub struct Coordinator {
    me: Weak<Coordinator>,
    groups: RefCell<HashMap<String, Group>>,
    /// Committed offsets.
    pub offsets: OffsetStore,
    settings: GroupSettings,
    /// Fired when a member joins or leaves: rebalance drivers look again.
    members_changed: Rc<Notify>,
    /// Session expiry and the rebalance drivers.
    tasks: TaskSet,
    /// Committed offsets as the metrics endpoint shows them.
    metrics: CommittedOffsets,
}

/// A successful SyncGroup answer of `g` with `assignment`.
fn ok(g: &Group, assignment: Bytes) -> SyncResult {
    SyncResult {
        error: ErrorCode::None,
        assignment,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
    }
}

/// What a SyncGroup comes to: an answer, or, for the leader's, the group to store
/// before anyone is answered.
enum Assigned {
    Answer(SyncResult),
    Store(StoredGroup),
}

fn send<T>(tx: Option<local_channel::LocalSender<T>>, value: T) {
    if let Some(tx) = tx {
        let _ = tx.try_send(value);
    }
}

impl Coordinator {
    /// Opens the offsets log in `dir` (a single node's shard) and starts the
    /// session-expiry task.
    pub async fn open(
        dir: &Path,
        env: LogEnv,
        settings: GroupSettings,
        metrics: CommittedOffsets,
    ) -> LogResult<Rc<Coordinator>> {
        let offsets = OffsetStore::open(dir, env).await?;
        Ok(Coordinator::start(offsets, settings, metrics))
    }

    /// The coordinator of the groups of a partition of the replicated offsets topic,
    /// which this replica leads: their offsets replayed from it, commits proposed to it.
    pub async fn over(
        partition: Rc<crate::replica::Partition>,
        settings: GroupSettings,
        metrics: CommittedOffsets,
    ) -> LogResult<Rc<Coordinator>> {
        let offsets = OffsetStore::over(partition).await?;
        Ok(Coordinator::start(offsets, settings, metrics))
    }

    /// Stops coordinating (its offsets partition's leadership moved away): timers stop,
    /// and members waiting in a rebalance are let go (they find the new coordinator).
    pub fn resign(&self) {
        self.tasks.stop_all();
        self.groups.borrow_mut().clear();
    }

    /// Starts the session-expiry task over `offsets`.
    fn start(
        offsets: OffsetStore,
        settings: GroupSettings,
        metrics: CommittedOffsets,
    ) -> Rc<Coordinator> {
        // The groups as last stored: members carry on with their generation.
        let stored = offsets.stored_groups();
        let c = Rc::new_cyclic(|me| Coordinator {
            me: me.clone(),
            groups: RefCell::new(
                stored
                    .iter()
                    .map(|sg| (sg.group.clone(), sg.rebuild()))
                    .collect(),
            ),
            offsets,
            settings,
            metrics,
            members_changed: Rc::new(Notify::default()),
            tasks: TaskSet::new("group coordinator"),
        });
        let rebuilt = stored.iter().filter(|sg| !sg.members.is_empty()).count();
        if rebuilt > 0 {
            info!(
                groups = rebuilt,
                "groups rebuilt with their members from the offsets log"
            );
        }
        for g in c.offsets.groups() {
            c.publish_committed(&g);
        }
        let weak = Rc::downgrade(&c);
        c.tasks.spawn("group session expiry", async move {
            let mut last_retention = Instant::now();
            loop {
                crate::task::sleep(EXPIRY_TICK).await;
                let Some(c) = weak.upgrade() else { return };
                c.expire_sessions();
                c.store_changed_groups().await;
                if last_retention.elapsed() > Duration::from_secs(60) {
                    last_retention = Instant::now();
                    c.expire_offsets().await;
                }
            }
        });
        c
    }

    /// Handles JoinGroup; resolves when the rebalance completes (or at once on error).
    pub async fn join(&self, p: JoinParams) -> JoinResult {
        if p.group_id.is_empty() {
            return JoinResult::error(ErrorCode::InvalidGroupId, &p.member_id);
        }
        let session = Duration::from_millis(p.session_timeout_ms.max(0) as u64);
        if session < self.settings.min_session_timeout
            || session > self.settings.max_session_timeout
        {
            return JoinResult::error(ErrorCode::InvalidSessionTimeout, &p.member_id);
        }
        let rebalance = Duration::from_millis(p.rebalance_timeout_ms.max(0) as u64).max(session);
        let (tx, rx) = local_channel::new_bounded(1);
        {
            let mut groups = self.groups.borrow_mut();
            let g = groups
                .entry(p.group_id.clone())
                .or_insert_with(|| Group::new(&p.group_id));
            let others_common: Vec<String> = {
                let mut common: Option<Vec<String>> = None;
                for m in g.members.values().filter(|m| m.id != p.member_id) {
                    let names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
                    common = Some(match common {
                        None => names,
                        Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
                    });
                }
                common.unwrap_or_default()
            };
            let has_others = g.members.keys().any(|id| *id != p.member_id);
            if has_others
                && (g.protocol_type.as_deref() != Some(p.protocol_type.as_str())
                    || !p.protocols.iter().any(|(n, _)| others_common.contains(n)))
            {
                return JoinResult::error(ErrorCode::InconsistentGroupProtocol, &p.member_id);
            }
            if p.protocols.is_empty() {
                return JoinResult::error(ErrorCode::InconsistentGroupProtocol, &p.member_id);
            }
            let member_id = if p.member_id.is_empty() {
                let prefix = if p.client_id.is_empty() {
                    "member"
                } else {
                    p.client_id.as_str()
                };
                let new_id = format!("{prefix}-{}", Uuid::new_v4());
                if p.instance_id.is_none() && p.version >= 4 {
                    g.pending.insert(new_id.clone(), Instant::now());
                    return JoinResult::error(ErrorCode::MemberIdRequired, &new_id);
                }
                if let Some(inst) = &p.instance_id {
                    let old = g
                        .members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(inst))
                        .map(|m| m.id.clone());
                    if let Some(old) = old {
                        if let Some(m) = g.members.remove(&old) {
                            send(
                                m.join_waiter,
                                JoinResult::error(ErrorCode::FencedInstanceId, &old),
                            );
                            send(
                                m.sync_waiter,
                                SyncResult::error(ErrorCode::FencedInstanceId),
                            );
                            if g.leader.as_deref() == Some(old.as_str()) {
                                g.leader = Some(new_id.clone());
                            }
                        }
                    }
                }
                new_id
            } else {
                if !g.members.contains_key(&p.member_id) && g.pending.remove(&p.member_id).is_none()
                {
                    return JoinResult::error(ErrorCode::UnknownMemberId, &p.member_id);
                }
                p.member_id.clone()
            };
            let now = Instant::now();
            let member = g
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    id: member_id.clone(),
                    instance_id: p.instance_id.clone(),
                    client_id: p.client_id.clone(),
                    client_host: p.client_host.clone(),
                    session_timeout: session,
                    rebalance_timeout: rebalance,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                });
            member.protocols = p.protocols.clone();
            member.session_timeout = session;
            member.rebalance_timeout = rebalance;
            member.last_seen = now;
            member.join_waiter = Some(tx);
            self.members_changed.notify();
            g.protocol_type = Some(p.protocol_type.clone());
            if g.state != GroupState::PreparingRebalance {
                self.prepare_rebalance(g);
            }
        }
        rx.recv()
            .await
            .unwrap_or_else(|| JoinResult::error(ErrorCode::RebalanceInProgress, &p.member_id))
    }

    /// Moves a group to PreparingRebalance and starts the task that completes it.
    fn prepare_rebalance(&self, g: &mut Group) {
        for m in g.members.values_mut() {
            send(
                m.sync_waiter.take(),
                SyncResult::error(ErrorCode::RebalanceInProgress),
            );
        }
        g.rebalance_from_empty = g.state == GroupState::Empty;
        g.state = GroupState::PreparingRebalance;
        g.storing = false;
        g.rebalance_started = Instant::now();
        info!(group = %g.id, generation = g.generation, members = g.members.len(), "rebalance started");
        if g.rebalance_driver {
            return;
        }
        g.rebalance_driver = true;
        let weak = self.me.clone();
        let id = g.id.clone();
        let changed = self.members_changed.clone();
        // Event-driven: the driver looks again when a member joins or leaves, or when the
        // rebalance's next time limit passes; nothing polls.
        self.tasks
            .spawn(format!("rebalance of group {id}"), async move {
                // The caller still holds the group's borrow: look once it is done.
                futures_lite::future::yield_now().await;
                loop {
                    let generation = changed.generation();
                    let wake_at = {
                        let Some(c) = weak.upgrade() else { return };
                        let mut groups = c.groups.borrow_mut();
                        let Some(g) = groups.get_mut(&id) else { return };
                        if g.state != GroupState::PreparingRebalance {
                            g.rebalance_driver = false;
                            return;
                        }
                        let now = Instant::now();
                        let all_joined = g.members.values().all(|m| m.join_waiter.is_some());
                        let not_before = if g.rebalance_from_empty {
                            g.rebalance_started + c.settings.initial_rebalance_delay
                        } else {
                            g.rebalance_started
                        };
                        let timeout = g
                            .members
                            .values()
                            .map(|m| m.rebalance_timeout)
                            .max()
                            .unwrap_or_default();
                        let deadline = (g.rebalance_started + timeout).max(not_before);
                        if (all_joined && now >= not_before) || now >= deadline {
                            g.rebalance_driver = false;
                            complete_join(g);
                            return;
                        }
                        if all_joined {
                            not_before
                        } else {
                            deadline
                        }
                    };
                    let wait = wake_at.saturating_duration_since(Instant::now());
                    futures_lite::future::or(
                        changed.changed_since(generation),
                        crate::task::sleep(wait),
                    )
                    .await;
                }
            });
    }

    /// Handles SyncGroup: the leader's assignment completes the rebalance; followers wait
    /// for it. No member is given an assignment before the stable group is stored, so a
    /// coordinator that takes the group over knows the generation its members were told;
    /// when the store fails every member is told to find the coordinator and join again
    /// (as Kafka's coordinator does), instead of being given a generation that a new
    /// coordinator would hand out again to others.
    pub async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        match self.assign(group, generation, member_id, assignments).await {
            Assigned::Answer(result) => result,
            Assigned::Store(stored) => {
                let written = if crate::replica::planted::group_store_fails() {
                    Err(crate::log::LogError::Io(std::io::Error::other(
                        "planted: the group store fails",
                    )))
                } else {
                    self.offsets.write(vec![OffsetRecord::Group(stored)]).await
                };
                self.complete_sync(group, generation, member_id, written)
            }
        }
    }

    /// After the leader's assignment was stored (or not): the group turns Stable and
    /// every member waiting is answered, or, when the store failed, they are all told
    /// the coordinator is not available and the group rebalances.
    fn complete_sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        written: LogResult<()>,
    ) -> SyncResult {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return SyncResult::error(ErrorCode::CoordinatorNotAvailable);
        };
        g.storing = false;
        if g.generation != generation || g.state != GroupState::CompletingRebalance {
            // A member joined or left meanwhile: everyone joins again.
            return SyncResult::error(ErrorCode::RebalanceInProgress);
        }
        if let Err(e) = written {
            warn!(group = %g.id, generation, error = %e, "could not store the group's new generation; its members join again");
            for m in g.members.values_mut() {
                m.assignment = Bytes::new();
                send(
                    m.sync_waiter.take(),
                    SyncResult::error(ErrorCode::CoordinatorNotAvailable),
                );
            }
            self.prepare_rebalance(g);
            return SyncResult::error(ErrorCode::CoordinatorNotAvailable);
        }
        g.state = GroupState::Stable;
        info!(group = %g.id, generation = g.generation, members = g.members.len(), "group stable");
        let replies: Vec<_> = g
            .members
            .values_mut()
            .filter_map(|m| m.sync_waiter.take().map(|tx| (tx, m.assignment.clone())))
            .collect();
        for (tx, a) in replies {
            send(Some(tx), ok(g, a));
        }
        let mine = g.members.get_mut(member_id).map(|m| {
            m.last_seen = Instant::now();
            m.assignment.clone()
        });
        ok(g, mine.unwrap_or_default())
    }

    async fn assign(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Assigned {
        use Assigned::Answer;
        let rx = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(group) else {
                return Answer(SyncResult::error(ErrorCode::UnknownMemberId));
            };
            if !g.members.contains_key(member_id) {
                return Answer(SyncResult::error(ErrorCode::UnknownMemberId));
            }
            if generation != g.generation {
                return Answer(SyncResult::error(ErrorCode::IllegalGeneration));
            }
            match g.state {
                GroupState::PreparingRebalance => {
                    return Answer(SyncResult::error(ErrorCode::RebalanceInProgress))
                }
                GroupState::Empty | GroupState::Dead => {
                    return Answer(SyncResult::error(ErrorCode::UnknownMemberId))
                }
                GroupState::Stable => {
                    let a = g
                        .members
                        .get(member_id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    return Answer(ok(g, a));
                }
                GroupState::CompletingRebalance => {}
            }
            let is_leader = g.leader.as_deref() == Some(member_id);
            if is_leader && !g.storing {
                // Stored before anyone is answered (`complete_sync`); followers that
                // sync meanwhile wait with the others.
                let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in g.members.values_mut() {
                    m.assignment = by_member.remove(&m.id).unwrap_or_default();
                }
                g.storing = true;
                return Assigned::Store(StoredGroup::stable(g));
            }
            let (tx, rx) = local_channel::new_bounded(1);
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_seen = Instant::now();
                m.sync_waiter = Some(tx);
            }
            rx
        };
        Answer(
            rx.recv()
                .await
                .unwrap_or_else(|| SyncResult::error(ErrorCode::RebalanceInProgress)),
        )
    }

    /// Handles Heartbeat.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> ErrorCode {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return ErrorCode::UnknownMemberId;
        };
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        m.last_seen = Instant::now();
        if generation != current {
            return ErrorCode::IllegalGeneration;
        }
        match state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// Handles LeaveGroup for members given by id or by static instance id; answers
    /// once the group as it is left is stored (a group left Empty must not come back
    /// with its members after a restart or a takeover).
    pub async fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<ErrorCode> {
        let codes = self.remove_members(group, members);
        self.store_changed_groups().await;
        codes
    }

    fn remove_members(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<ErrorCode> {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return vec![ErrorCode::UnknownMemberId; members.len()];
        };
        let mut out = Vec::with_capacity(members.len());
        for (id, instance) in members {
            let target = if id.is_empty() {
                instance.as_ref().and_then(|i| {
                    g.members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(i))
                        .map(|m| m.id.clone())
                })
            } else {
                Some(id.clone())
            };
            match target.and_then(|t| g.members.remove(&t)) {
                Some(m) => {
                    info!(group = %g.id, member = %m.id, "member left");
                    send(
                        m.join_waiter,
                        JoinResult::error(ErrorCode::UnknownMemberId, &m.id),
                    );
                    send(m.sync_waiter, SyncResult::error(ErrorCode::UnknownMemberId));
                    out.push(ErrorCode::None);
                }
                None => out.push(ErrorCode::UnknownMemberId),
            }
        }
        self.after_removal(g);
        out
    }

    /// After members are gone: an empty group becomes Empty; otherwise the survivors
    /// rebalance.
    fn after_removal(&self, g: &mut Group) {
        self.members_changed.notify();
        if g.leader
            .as_ref()
            .is_some_and(|l| !g.members.contains_key(l))
        {
            g.leader = None;
        }
        match g.state {
            GroupState::PreparingRebalance => {}
            GroupState::Empty => {}
            _ if g.members.is_empty() => {
                g.state = GroupState::Empty;
                g.generation += 1;
                g.protocol = None;
            }
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(g),
            _ => {}
        }
    }

    fn expire_sessions(&self) {
        let mut groups = self.groups.borrow_mut();
        let now = Instant::now();
        let max_pending = self
            .settings
            .max_session_timeout
            .min(Duration::from_secs(60));
        for g in groups.values_mut() {
            g.pending
                .retain(|_, at| now.duration_since(*at) < max_pending);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            for id in &expired {
                if let Some(m) = g.members.remove(id) {
                    info!(group = %g.id, member = %id, "member session expired");
                    send(m.sync_waiter, SyncResult::error(ErrorCode::UnknownMemberId));
                }
            }
            self.after_removal(g);
        }
        let offsets = self.offsets.groups();
        groups.retain(|id, g| {
            !(g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending.is_empty()
                && !offsets.contains(id))
        });
    }

    /// Stores the generation and members of every group that became Stable or Empty
    /// since it was last stored: at once after a SyncGroup or LeaveGroup, otherwise
    /// (expired sessions, rebalances that emptied a group) at the next expiry tick.
    async fn store_changed_groups(&self) {
        let changed: Vec<OffsetRecord> = self
            .groups
            .borrow()
            .values()
            .filter_map(StoredGroup::of)
            .filter(|sg| self.offsets.stored_signature(&sg.group) != Some(sg.signature()))
            .map(OffsetRecord::Group)
            .collect();
        if changed.is_empty() {
            return;
        }
        if let Err(e) = self.offsets.write(changed).await {
            warn!(error = %e, "could not store groups' members (tried again at the next tick)");
        }
    }

    async fn expire_offsets(&self) {
        let now = crate::clock::now_ms();
        let retention = self.settings.offsets_retention.as_millis() as i64;
        let stale: Vec<String> = self
            .offsets
            .groups()
            .into_iter()
            .filter(|id| {
                let active = self
                    .groups
                    .borrow()
                    .get(id)
                    .is_some_and(|g| !g.members.is_empty());
                !active
                    && self
                        .offsets
                        .group(id)
                        .values()
                        .all(|c| c.commit_ms < now - retention)
            })
            .collect();
        let records: Vec<OffsetRecord> = stale
            .iter()
            .cloned()
            .map(OffsetRecord::DeleteGroup)
            .collect();
        if !records.is_empty() {
            info!(groups = records.len(), "expiring offsets of empty groups");
            let _ = self.offsets.write(records).await;
            for g in &stale {
                self.publish_committed(g);
            }
        }
    }

    /// Checks that a commit may be made by this member and generation.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> ErrorCode {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return if generation < 0 {
                ErrorCode::None
            } else {
                ErrorCode::IllegalGeneration
            };
        };
        if generation < 0 && g.members.is_empty() {
            return ErrorCode::None;
        }
        let current = g.generation;
        let state = g.state;
        let Some(m) = g.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        m.last_seen = Instant::now();
        if generation != current {
            return ErrorCode::IllegalGeneration;
        }
        if state == GroupState::CompletingRebalance {
            return ErrorCode::RebalanceInProgress;
        }
        ErrorCode::None
    }

    /// Stores committed offsets durably.
    pub async fn commit(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> LogResult<()> {
        let records = offsets
            .into_iter()
            .map(|(topic, partition, committed)| OffsetRecord::Commit {
                group: group.to_string(),
                topic,
                partition,
                committed,
            })
            .collect();
        self.offsets.write(records).await?;
        self.publish_committed(group);
        Ok(())
    }

    /// Copies a group's committed offsets into the metrics.
    fn publish_committed(&self, group: &str) {
        let committed = self.offsets.group(group);
        if let Ok(mut m) = self.metrics.lock() {
            m.retain(|(g, _, _), _| g != group);
            for ((topic, partition), c) in committed {
                m.insert((group.to_string(), topic, partition), c.offset);
            }
        }
    }

    /// Committed offsets of a group.
    pub fn committed(&self, group: &str) -> GroupOffsets {
        self.offsets.group(group)
    }

    /// Describes a group; a group this shard has never seen is Dead.
    pub fn describe(&self, group: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        match groups.get(group) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                DescribedGroup {
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    members: g
                        .members
                        .values()
                        .map(|m| DescribedMember {
                            member_id: m.id.clone(),
                            instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: m.metadata_for(&protocol),
                            assignment: m.assignment.clone(),
                        })
                        .collect(),
                    protocol,
                }
            }
            None if !self.offsets.group(group).is_empty() => DescribedGroup {
                state: GroupState::Empty.name(),
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: Vec::new(),
            },
            None => DescribedGroup {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    /// Every group this shard coordinates: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, String)> {
        let groups = self.groups.borrow();
        let mut out: Vec<(String, String, String)> = groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name().to_string(),
                )
            })
            .collect();
        for id in self.offsets.groups() {
            if !groups.contains_key(&id) {
                out.push((id, "consumer".into(), GroupState::Empty.name().into()));
            }
        }
        out.sort();
        out
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, group: &str) -> ErrorCode {
        {
            let groups = self.groups.borrow();
            match groups.get(group) {
                Some(g) if !g.members.is_empty() => return ErrorCode::NonEmptyGroup,
                None if self.offsets.group(group).is_empty() => return ErrorCode::GroupIdNotFound,
                _ => {}
            }
        }
        if self
            .offsets
            .write(vec![OffsetRecord::DeleteGroup(group.to_string())])
            .await
            .is_err()
        {
            return ErrorCode::KafkaStorageError;
        }
        self.groups.borrow_mut().remove(group);
        self.publish_committed(group);
        info!(group, "deleted group");
        ErrorCode::None
    }

    /// Deletes some committed offsets of a group.
    pub async fn delete_offsets(&self, group: &str, partitions: Vec<(String, i32)>) -> ErrorCode {
        if self.offsets.group(group).is_empty() && !self.groups.borrow().contains_key(group) {
            return ErrorCode::GroupIdNotFound;
        }
        let records = partitions
            .into_iter()
            .map(|(topic, partition)| OffsetRecord::DeleteOffset {
                group: group.to_string(),
                topic,
                partition,
            })
            .collect();
        match self.offsets.write(records).await {
            Ok(()) => ErrorCode::None,
            Err(_) => ErrorCode::KafkaStorageError,
        }
    }

    /// Syncs the offsets log.
    pub async fn close(&self) -> LogResult<()> {
        self.tasks.stop_all();
        self.offsets.close().await
    }
}

/// Ends a rebalance: drops members that did not rejoin, bumps the generation, picks the
/// protocol and leader, and answers every pending JoinGroup.
fn complete_join(g: &mut Group) {
    let gone: Vec<String> = g
        .members
        .values()
        .filter(|m| m.join_waiter.is_none())
        .map(|m| m.id.clone())
        .collect();
    for id in gone {
        if let Some(m) = g.members.remove(&id) {
            info!(group = %g.id, member = %id, "member did not rejoin in time");
            send(m.sync_waiter, SyncResult::error(ErrorCode::UnknownMemberId));
        }
    }
    g.generation += 1;
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.protocol = None;
        g.leader = None;
        return;
    }
    g.protocol = g.select_protocol();
    if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
        g.leader = g.members.keys().next().cloned();
    }
    g.state = GroupState::CompletingRebalance;
    let protocol = g.protocol.clone().unwrap_or_default();
    let leader = g.leader.clone().unwrap_or_default();
    let roster: Vec<(String, Option<String>, Bytes)> = g
        .members
        .values()
        .map(|m| {
            (
                m.id.clone(),
                m.instance_id.clone(),
                m.metadata_for(&protocol),
            )
        })
        .collect();
    info!(group = %g.id, generation = g.generation, members = roster.len(), protocol = %protocol, "rebalance completed");
    let now = Instant::now();
    for m in g.members.values_mut() {
        m.last_seen = now;
        let result = JoinResult {
            error: ErrorCode::None,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            leader: leader.clone(),
            member_id: m.id.clone(),
            members: if m.id == leader {
                roster.clone()
            } else {
                Vec::new()
            },
        };
        send(m.join_waiter.take(), result);
    }
}
