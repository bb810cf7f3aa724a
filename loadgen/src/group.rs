//! Consumer-group membership, classic protocol: FindCoordinator, JoinGroup (range
//! assignment by the leader), SyncGroup, OffsetFetch, heartbeats, periodic OffsetCommit,
//! LeaveGroup. Enough to drive a real Kafka's group coordinator; not a full client (no
//! cooperative rebalancing, no static membership).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::cluster::topic_name;
use crate::fetch::{run_lanes, FetchCtx, Positions};
use crate::kafka::{error_name, Conn};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
const COMMIT_EVERY: Duration = Duration::from_secs(5);
const PROTOCOL: &str = "range";

/// Encodes a consumer-protocol message behind its version prefix.
fn with_version<T: Encodable>(v: &T, version: i16) -> Result<Bytes> {
    let mut b = BytesMut::new();
    b.put_i16(version);
    v.encode(&mut b, version)?;
    Ok(b.freeze())
}

/// Decodes a consumer-protocol message behind its version prefix; newer versions only
/// append fields, so they are read as the newest this crate knows.
fn read_versioned<T: Decodable>(mut b: Bytes, newest: i16) -> Result<T> {
    if b.remaining() < 2 {
        bail!("consumer protocol message too short");
    }
    let v = b.get_i16().clamp(0, newest);
    T::decode(&mut b, v)
}

/// Subscription metadata sent in JoinGroup.
pub fn subscription(topic: &str) -> Result<Bytes> {
    let s = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_string())]);
    with_version(&s, 0)
}

/// Range assignment of `partitions` of every topic over the members subscribed to it:
/// members in id order get consecutive runs, the first ones one extra.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions: &HashMap<String, Vec<i32>>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
        .iter()
        .map(|(m, _)| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, parts) in partitions {
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        if subs.is_empty() {
            continue;
        }
        let mut parts = parts.clone();
        parts.sort_unstable();
        let (per, extra) = (parts.len() / subs.len(), parts.len() % subs.len());
        let mut at = 0;
        for (i, m) in subs.iter().enumerate() {
            let n = per + usize::from(i < extra);
            if n > 0 {
                if let Some(a) = out.get_mut(*m) {
                    a.insert(topic.clone(), parts[at..at + n].to_vec());
                }
            }
            at += n;
        }
    }
    out
}

fn assignment_bytes(a: &BTreeMap<String, Vec<i32>>) -> Result<Bytes> {
    let v = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .map(|(t, p)| {
                AssignedPartitions::default()
                    .with_topic(topic_name(t))
                    .with_partitions(p.clone())
            })
            .collect(),
    );
    with_version(&v, 0)
}

/// Who joins a group, and for what: the broker to ask first, the client id, and the one
/// topic subscribed, with its partitions.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Broker asked for the group's coordinator.
    pub bootstrap: String,
    /// Client id in request headers.
    pub client_id: String,
    /// The topic subscribed.
    pub topic: String,
    /// The topic's partitions, for the leader's assignment.
    pub partitions: Vec<i32>,
}

/// A member of a group in one generation.
pub struct Membership {
    /// Connection to the group's coordinator.
    pub coordinator: Conn,
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The generation joined.
    pub generation: i32,
    /// The partitions assigned to this member in it.
    pub partitions: Vec<i32>,
}

/// A connection to `group`'s coordinator, asked of `bootstrap` for up to 30 s.
pub async fn find_coordinator(bootstrap: &mut Conn, group: &str, client_id: &str) -> Result<Conn> {
    let v = bootstrap.version::<FindCoordinatorRequest>()?;
    let mut req = FindCoordinatorRequest::default().with_key_type(0);
    if v >= 4 {
        req.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
    } else {
        req.key = StrBytes::from_string(group.to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = bootstrap.call(&req).await?;
        let (err, host, port) = if v >= 4 {
            let c = resp
                .coordinators
                .first()
                .ok_or_else(|| anyhow!("FindCoordinator answered no coordinator"))?;
            (c.error_code, c.host.to_string(), c.port)
        } else {
            (resp.error_code, resp.host.to_string(), resp.port)
        };
        if err == 0 {
            return Conn::connect(&format!("{host}:{port}"), client_id).await;
        }
        if Instant::now() > deadline {
            bail!("FindCoordinator for group {group}: {}", error_name(err));
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}

/// Joins `group` (JoinGroup and SyncGroup, assigning as the leader when chosen), retrying
/// through coordinator moves and rebalances for up to 60 s.
pub async fn join(who: &Subscriber, group: &str) -> Result<Membership> {
    let mut bootstrap = Conn::connect(&who.bootstrap, &who.client_id).await?;
    let mut coordinator = find_coordinator(&mut bootstrap, group, &who.client_id).await?;
    let mut member_id = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            bail!("could not join group {group} within 60 s");
        }
        let jv = coordinator.version::<JoinGroupRequest>()?;
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(PROTOCOL))
                .with_metadata(subscription(&who.topic)?)]);
        let resp = coordinator.call(&req).await?;
        match resp.error_code {
            0 => {}
            79 => {
                // MEMBER_ID_REQUIRED (v4+): join again with the id the broker chose.
                member_id = resp.member_id.to_string();
                continue;
            }
            14 | 15 | 16 | 27 => {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                if resp.error_code != 27 {
                    coordinator = find_coordinator(&mut bootstrap, group, &who.client_id).await?;
                }
                continue;
            }
            25 => {
                member_id.clear();
                continue;
            }
            e => bail!("JoinGroup {group}: {} (v{jv})", error_name(e)),
        }
        member_id = resp.member_id.to_string();
        let generation = resp.generation_id;
        let assignments = if resp.leader == resp.member_id {
            let members: Vec<(String, Vec<String>)> = resp
                .members
                .iter()
                .map(|m| {
                    let topics =
                        read_versioned::<ConsumerProtocolSubscription>(m.metadata.clone(), 3)
                            .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
                            .unwrap_or_default();
                    (m.member_id.to_string(), topics)
                })
                .collect();
            let parts = HashMap::from([(who.topic.clone(), who.partitions.clone())]);
            range_assign(&members, &parts)
                .iter()
                .map(|(m, a)| {
                    Ok(SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m.clone()))
                        .with_assignment(assignment_bytes(a)?))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(PROTOCOL)))
            .with_assignments(assignments);
        let sresp = coordinator.call(&sync).await?;
        match sresp.error_code {
            0 => {}
            27 | 22 => continue, // a rebalance started meanwhile: join again
            25 => {
                member_id.clear();
                continue;
            }
            e => bail!("SyncGroup {group}: {}", error_name(e)),
        }
        let mut partitions = Vec::new();
        if !sresp.assignment.is_empty() {
            let a = read_versioned::<ConsumerProtocolAssignment>(sresp.assignment.clone(), 3)
                .context("decoding the assignment")?;
            for tp in a.assigned_partitions {
                if tp.topic.0.as_str() == who.topic {
                    partitions.extend(tp.partitions);
                }
            }
        }
        return Ok(Membership {
            coordinator,
            member_id,
            generation,
            partitions,
        });
    }
}

/// The offsets `group` has committed for `partitions` of `topic` (those with none are
/// left out), read from its coordinator.
pub async fn committed(
    coordinator: &mut Conn,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec())]));
    let resp = coordinator.call(&req).await?;
    if resp.error_code != 0 {
        bail!("OffsetFetch {group}: {}", error_name(resp.error_code));
    }
    let mut out = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "OffsetFetch {group}-{}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
            if p.committed_offset >= 0 {
                out.insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (partition, next offset to read) of `topic` for `m`'s generation;
/// an error when the coordinator refuses any of them.
pub async fn commit(
    m: &mut Membership,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<()> {
    let parts: Vec<OffsetCommitRequestPartition> = offsets
        .iter()
        .map(|&(p, o)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(o)
        })
        .collect();
    if parts.is_empty() {
        return Ok(());
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(m.generation)
        .with_member_id(StrBytes::from_string(m.member_id.clone()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(parts)]);
    let resp = m.coordinator.call(&req).await?;
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "OffsetCommit {group}-{}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
        }
    }
    Ok(())
}

/// One heartbeat of `m`: the coordinator's error code (0 while the generation holds).
pub async fn heartbeat(m: &mut Membership, group: &str) -> Result<i16> {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id(m.generation)
        .with_member_id(StrBytes::from_string(m.member_id.clone()));
    Ok(m.coordinator.call(&req).await?.error_code)
}

/// Leaves `group`, so that its partitions move at once.
pub async fn leave(m: &mut Membership, group: &str) -> Result<()> {
    let v = m.coordinator.version::<LeaveGroupRequest>()?;
    let mut req = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())));
    if v >= 3 {
        req.members =
            vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(m.member_id.clone()))];
    } else {
        req.member_id = StrBytes::from_string(m.member_id.clone());
    }
    m.coordinator.call(&req).await?;
    Ok(())
}

/// Runs one group member until the run stops: join, fetch what is assigned, heartbeat
/// and commit meanwhile, rejoin on a rebalance, commit and leave at the end.
pub async fn run_member(
    ctx: &Rc<FetchCtx>,
    group_idx: usize,
    group: &str,
    start: &HashMap<i32, i64>,
) -> Result<()> {
    let who = Subscriber {
        bootstrap: ctx.bootstrap.clone(),
        client_id: ctx.client_id.clone(),
        topic: ctx.topic.clone(),
        partitions: ctx.topology.partitions(),
    };
    let mut ready = false;
    loop {
        let mut m = join(&who, group).await?;
        let committed = committed(&mut m.coordinator, group, &ctx.topic, &m.partitions).await?;
        let positions: Positions = Rc::new(RefCell::new(
            m.partitions
                .iter()
                .map(|&p| {
                    let reset = start.get(&p).copied().unwrap_or(0);
                    // In e2e, skip anything older than this run.
                    let at = match committed.get(&p) {
                        Some(&c) if !ctx.stamped || c >= reset => c,
                        _ => reset,
                    };
                    (p, at)
                })
                .collect(),
        ));
        if !ready {
            ready = true;
            ctx.shared.consumer_ready();
        }
        let rebalance = Rc::new(Cell::new(false));
        let done = Rc::new(Cell::new(false));
        let keeper = {
            let (rebalance, done, positions) = (rebalance.clone(), done.clone(), positions.clone());
            let ctx = ctx.clone();
            let group = group.to_string();
            glommio::spawn_local(async move {
                let mut last_beat = Instant::now();
                let mut last_commit = Instant::now();
                while !done.get() && !rebalance.get() {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    if last_beat.elapsed() >= HEARTBEAT_EVERY {
                        last_beat = Instant::now();
                        match heartbeat(&mut m, &group).await {
                            Ok(0) => {}
                            Ok(_) => rebalance.set(true),
                            Err(e) => {
                                ctx.shared.report_error(format!("heartbeat {group}: {e:#}"));
                                rebalance.set(true);
                            }
                        }
                    }
                    if last_commit.elapsed() >= COMMIT_EVERY {
                        last_commit = Instant::now();
                        if let Err(e) = commit_positions(&ctx, &mut m, &group, &positions).await {
                            ctx.shared.report_error(format!("{e:#}"));
                        }
                    }
                }
                m
            })
        };
        let interrupt = {
            let rebalance = rebalance.clone();
            move || rebalance.get()
        };
        let fetched = if m_has_partitions(&positions) {
            run_lanes(ctx, group_idx, &positions, &interrupt).await
        } else {
            // Nothing assigned: idle until the run ends or the group rebalances.
            while !(ctx.shared.consumer_should_stop(group_idx) || rebalance.get()) {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        };
        done.set(true);
        let mut m = keeper.await;
        let rebalancing = rebalance.get() && !ctx.shared.consumer_should_stop(group_idx);
        if let Err(e) = commit_positions(ctx, &mut m, group, &positions).await {
            if !rebalancing {
                ctx.shared.report_error(format!("final {e:#}"));
            }
        }
        fetched?;
        if !rebalancing {
            leave(&mut m, group).await?;
            return Ok(());
        }
    }
}

async fn commit_positions(
    ctx: &FetchCtx,
    m: &mut Membership,
    group: &str,
    positions: &Positions,
) -> Result<()> {
    let offsets: Vec<(i32, i64)> = positions.borrow().iter().map(|(&p, &o)| (p, o)).collect();
    commit(m, group, &ctx.topic, &offsets).await
}

fn m_has_partitions(positions: &Positions) -> bool {
    !positions.borrow().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_gives_consecutive_runs_first_members_one_more() {
        let members = vec![
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string()]),
            ("c".to_string(), vec!["t".to_string()]),
        ];
        let parts = HashMap::from([("t".to_string(), (0..7).rev().collect::<Vec<i32>>())]);
        let a = range_assign(&members, &parts);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["c"]["t"], vec![5, 6]);
        // More members than partitions: the last ones get nothing.
        let parts = HashMap::from([("t".to_string(), vec![0])]);
        let a = range_assign(&members, &parts);
        assert_eq!(a["a"]["t"], vec![0]);
        assert!(a["b"].is_empty());
    }

    #[test]
    fn consumer_protocol_messages_round_trip_with_their_version_prefix() {
        let s = subscription("topic-x").unwrap();
        assert_eq!(&s[..2], &[0, 0]);
        let back: ConsumerProtocolSubscription = read_versioned(s, 3).unwrap();
        assert_eq!(back.topics[0].as_str(), "topic-x");
        let a = BTreeMap::from([("t".to_string(), vec![1, 3])]);
        let back: ConsumerProtocolAssignment =
            read_versioned(assignment_bytes(&a).unwrap(), 3).unwrap();
        assert_eq!(back.assigned_partitions[0].partitions, vec![1, 3]);
    }
}
