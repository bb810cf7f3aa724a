//! Seeded random schedules over raft groups of 3 and 5 replicas, in one process: each
//! node a directory with its shard journal (or none) and one log per group (1–3 groups,
//! half the time with small segments, so rolls seal raft-index tables along the way),
//! driven by its `RaftShard`; a network that drops, duplicates, delays and reorders
//! messages and partitions nodes from each other; and nodes that crash — between rounds
//! or in the middle of one, while their writes and truncations are under way — and
//! restart from their directories. Messages cross Caudal's wire framing. Checked all
//! along: what any replica has committed never changes at any offset (offsets only
//! grow, no committed batch is truncated); a restarted replica comes back with its term
//! and vote. After each schedule heals: every replica holds every batch ever committed,
//! byte for byte, at its offset, and all agree on the commit point.
//! `make test` runs them for 15 s in its debug build; `make test-raft-sim` runs 2,000 in
//! an optimised build (about 4.5 minutes here), `make soak` 5,000.
//! A failing seed is printed and replays with `RAFT_SIM_SEED=s`.

use std::collections::BTreeMap;

use caudal::protocol::record_batch::{
    build_batch, check_batch, set_producer, uncompressed_records, Compression,
};
use caudal::replica::raft_shard::{Acks, GroupId, ProposeError};
use futures_lite::future;
use raft::eraftpb::{HardState, Message};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::raft_cluster::{open_node_with, round, SimNode};
use super::*;

/// The network between nodes: messages in flight with the step they may arrive at.
struct Net {
    in_flight: Vec<(u64, GroupId, Message)>,
    /// Pairs (from, to) that cannot talk, while a partition lasts.
    cut: Vec<(u64, u64)>,
    drop_p: f64,
    dup_p: f64,
}

impl Net {
    fn send(&mut self, rng: &mut StdRng, now: u64, g: GroupId, m: Message) {
        if self.cut.contains(&(m.from, m.to)) || rng.gen_bool(self.drop_p) {
            return;
        }
        let copies = if rng.gen_bool(self.dup_p) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + rng.gen_range(0..4);
            self.in_flight.push((at, g, m.clone()));
        }
    }

    /// Messages due at `now`, in a random order.
    fn due(&mut self, rng: &mut StdRng, now: u64) -> Vec<(GroupId, Message)> {
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _, _)| *at <= now);
        self.in_flight = later;
        for i in (1..due.len()).rev() {
            due.swap(i, rng.gen_range(0..=i));
        }
        due.into_iter().map(|(_, g, m)| (g, m)).collect()
    }
}

/// Yields `n` times (a crash that lands `n` polls into a round).
async fn after_polls(n: u32) {
    for _ in 0..n {
        future::yield_now().await;
    }
}

/// Checks what `node` has committed in group `g` since `verified` (moved on) against
/// every value seen committed.
async fn check_committed(
    node: &SimNode,
    g: GroupId,
    committed: &mut BTreeMap<i64, Vec<u8>>,
    verified: &mut i64,
) -> Result<(), String> {
    let Some(raft) = node.shard.node(g) else {
        return Ok(());
    };
    let upto = node.shard.high_watermark(g).unwrap_or(0);
    let log = raft.store().log();
    // What retention cut (or a snapshot skipped) is not there to check.
    let mut from = (*verified).max(log.log_start_offset());
    while from < upto {
        let r = log
            .read(from, 1 << 20, upto)
            .await
            .map_err(|e| format!("node {} group {}: read at {from}: {e}", node.id, g.0))?;
        if r.batches.is_empty() {
            return Err(format!(
                "node {} group {}: committed up to {upto} but nothing at {from}",
                node.id, g.0
            ));
        }
        for b in r.batches {
            let h = check_batch(&b).map_err(|e| e.to_string())?;
            if h.base_offset != from {
                return Err(format!("offset {} where {from} was due", h.base_offset));
            }
            let v = first_value(&b)?;
            if let Some(seen) = committed.get(&from) {
                if *seen != v {
                    return Err(format!(
                        "node {} group {} committed {:?} at offset {from}, another {:?}",
                        node.id,
                        g.0,
                        String::from_utf8_lossy(&v),
                        String::from_utf8_lossy(seen)
                    ));
                }
            }
            committed.insert(from, v);
            from = h.last_offset() + 1;
            *verified = from;
        }
    }
    Ok(())
}

fn first_value(b: &[u8]) -> Result<Vec<u8>, String> {
    Ok(uncompressed_records(b).map_err(|e| e.to_string())?[0]
        .value
        .as_ref()
        .map(|v| v.to_vec())
        .unwrap_or_default())
}

/// What one schedule did.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// Batches committed.
    committed: usize,
    /// Logs cut by retention.
    cuts: usize,
    /// Leader's snapshots installed.
    installs: usize,
}

/// One schedule: what it did, or what broke.
async fn schedule(dir: &std::path::Path, seed: u64) -> Result<Tally, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: u64 = if rng.gen_bool(0.5) { 3 } else { 5 };
    let groups: u64 = rng.gen_range(1..=3);
    // Mostly with a journal whose files are small (frequent checkpoints), sometimes none.
    let journal = if rng.gen_bool(0.8) {
        Some(rng.gen_range(64u64 << 10..2 << 20))
    } else {
        None
    };
    // Sometimes small segments: rolls seal raft-index tables along the way.
    let config = caudal::log::LogConfig {
        segment_bytes: if rng.gen_bool(0.5) {
            rng.gen_range(1u64 << 10..32 << 10)
        } else {
            caudal::log::LogConfig::default().segment_bytes
        },
        ..caudal::log::LogConfig::default()
    };
    let voters: Vec<u64> = (1..=n).collect();
    let mut nodes: Vec<Option<SimNode>> = Vec::new();
    for id in 1..=n {
        nodes.push(Some(
            open_node_with(dir, id, &voters, groups, journal, config.clone()).await,
        ));
    }
    // While a node is down: the step it comes back at, and its durable hard states.
    let mut down: BTreeMap<u64, (u64, Vec<HardState>)> = BTreeMap::new();
    let mut net = Net {
        in_flight: Vec::new(),
        cut: Vec::new(),
        drop_p: rng.gen_range(0.0..0.2),
        dup_p: rng.gen_range(0.0..0.1),
    };
    let crash_p = if rng.gen_bool(0.7) { 0.01 } else { 0.0 };
    // With small segments, retention now and then cuts a replica's log up to what it
    // has applied: a replica that was away past the cut is sent a snapshot.
    let compact_p = if config.segment_bytes < 1 << 20 && rng.gen_bool(0.7) && cuts_enabled() {
        0.2
    } else {
        0.0
    };
    let mut cuts = 0usize;
    let mut installs = 0usize;
    // What happened to each node (crashes, restarts, cuts, installs), for a failure's
    // message.
    let mut story: Vec<String> = Vec::new();
    // Every value ever seen committed, per group, by the offset it was committed at.
    let mut committed: Vec<BTreeMap<i64, Vec<u8>>> = vec![BTreeMap::new(); groups as usize];
    // How far each node's committed records were checked, per group (from 0 again after
    // a restart: what it recovered is checked too).
    let mut verified: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut proposed = 0u32;
    // Proposals by token: (group, value, acks); and the acks=all ones acknowledged, with
    // the offset they were acknowledged at. Every one must be in the final log there.
    let mut sent: BTreeMap<u64, (u64, Vec<u8>, Acks)> = BTreeMap::new();
    let mut acknowledged: Vec<(u64, i64, Vec<u8>)> = Vec::new();
    // One idempotent producer per group, as a client with one request in flight: it
    // sends its next sequence once the last is acknowledged, and resends the same batch
    // (same sequence) after any other outcome, or none within 40 steps.
    let mut producers: Vec<IdempotentClient> =
        (0..groups).map(|_| IdempotentClient::default()).collect();
    let steps = 300u64;
    for now in 0..steps + 200 {
        let healing = now >= steps;
        if healing {
            net.cut.clear();
            net.drop_p = 0.0;
            net.dup_p = 0.0;
        } else if rng.gen_bool(0.02) {
            // A partition: one replica, or a minority, cut off both ways for a while.
            net.cut.clear();
            let isolated: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.3))
                .collect();
            for &a in &isolated {
                for &b in voters.iter().filter(|b| !isolated.contains(b)) {
                    net.cut.push((a, b));
                    net.cut.push((b, a));
                }
            }
        } else if rng.gen_bool(0.03) {
            net.cut.clear();
        }
        // Restarts: a node back from its directory must hold its term and vote.
        let due: Vec<u64> = down
            .iter()
            .filter(|(_, (at, _))| healing || *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some((_, before)) = down.remove(&id) else {
                continue;
            };
            // Writes the crashed node had already handed to the kernel land first (in one
            // process they would otherwise land after the restarted node has read its
            // files; a real crash has them land before the next process starts, or never).
            caudal::task::sleep(std::time::Duration::from_millis(20)).await;
            let on_disk = hard_states_on_disk(dir, id, groups);
            let journal_story = journal_story(dir, id, groups);
            let node = open_node_with(dir, id, &voters, groups, journal, config.clone()).await;
            for (g, b) in before.iter().enumerate() {
                let a = node
                    .shard
                    .node(GroupId(g as u64))
                    .map(|r| r.store().durable_hard_state())
                    .unwrap_or_default();
                if a.term < b.term || (a.term == b.term && b.vote != 0 && a.vote != b.vote) {
                    return Err(format!(
                        "node {id} group {g} restarted with term/vote {}/{} after {}/{} (journal {journal:?}, segments of {} bytes; on disk before the restart: {}; journal records: {})",
                        a.term, a.vote, b.term, b.vote, config.segment_bytes, on_disk[g], journal_story[g]
                    ));
                }
            }
            story.push(format!(
                "step {now}: node {id} restarted: {}",
                replica_stories(&node)
            ));
            if tracing() {
                trace_node(&format!("step {now}: restarted"), &node);
            }
            nodes[id as usize - 1] = Some(node);
            verified.retain(|(n, _), _| *n != id);
        }
        let mut crash_in_round = None;
        if !healing && rng.gen_bool(crash_p) && down.len() + 1 < n as usize {
            let id = rng.gen_range(1..=n);
            if nodes[id as usize - 1].is_some() {
                crash_in_round = Some((id, rng.gen_range(0..40u32)));
            }
        }
        for node in nodes.iter_mut().flatten() {
            node.shard.tick();
        }
        if !healing && rng.gen_bool(compact_p) {
            let id = rng.gen_range(1..=n);
            if let Some(node) = nodes[id as usize - 1].as_mut() {
                for g in 0..groups {
                    let end = node.shard.high_watermark(GroupId(g)).unwrap_or(0);
                    match node.shard.compact(GroupId(g), end).await {
                        Ok(Some(start)) => {
                            cuts += 1;
                            story.push(format!(
                                "step {now}: node {id} group {g} cut to offset {start} (asked {end}): {}",
                                replica_story(node, GroupId(g))
                            ));
                        }
                        Ok(None) => {}
                        Err(e) => return Err(format!("step {now}: node {id} group {g}: cut: {e}")),
                    }
                }
            }
        }
        if !healing {
            for g in 0..groups {
                if !rng.gen_bool(0.3) {
                    continue;
                }
                let leader = nodes
                    .iter_mut()
                    .flatten()
                    .find(|x| x.shard.is_leader(GroupId(g)));
                if let Some(leader) = leader {
                    let value = format!("seed {seed} group {g} value {proposed}");
                    proposed += 1;
                    let b = build_batch(0, 1, &[value.as_bytes()], Compression::None);
                    let acks = if rng.gen_bool(0.5) {
                        Acks::All
                    } else {
                        Acks::Leader
                    };
                    let token = u64::from(proposed);
                    if leader.shard.propose(GroupId(g), b, acks, token).is_ok() {
                        sent.insert(token, (g, value.into_bytes(), acks));
                    }
                }
            }
            for g in 0..groups {
                let client = &mut producers[g as usize];
                if client.waiting.is_some_and(|(_, since)| now < since + 40) || !rng.gen_bool(0.3) {
                    continue;
                }
                let Some(leader) = nodes
                    .iter_mut()
                    .flatten()
                    .find(|x| x.shard.is_leader(GroupId(g)))
                else {
                    continue;
                };
                let seq = client.next_seq;
                let value = format!("seed {seed} group {g} producer seq {seq}");
                let mut b = build_batch(0, 1, &[value.as_bytes()], Compression::None);
                set_producer(&mut b, 1000 + g as i64, 0, seq);
                proposed += 1;
                let token = u64::from(proposed);
                match leader.shard.propose(GroupId(g), b, Acks::All, token) {
                    Ok(()) => {
                        client.waiting = Some((token, now));
                        sent.insert(token, (g, value.into_bytes(), Acks::All));
                    }
                    Err(ProposeError::Rejected(e)) => {
                        return Err(format!(
                            "step {now} group {g}: the leader refused producer sequence {seq}, sent only after {} was acknowledged: {e}",
                            seq - 1
                        ));
                    }
                    Err(_) => {}
                }
            }
        }
        // Every node's round at once, as separate machines would run them (their
        // writes overlap); the crashing node's may be cut short after some polls.
        let rounds: Vec<_> = nodes
            .iter_mut()
            .flatten()
            .map(|node| {
                let cut_after = match crash_in_round {
                    Some((crashing, polls)) if crashing == node.id => Some(polls),
                    _ => None,
                };
                let id = node.id;
                async move {
                    let out = match cut_after {
                        Some(polls) => {
                            future::or(async { Some(round(node).await) }, async {
                                after_polls(polls).await;
                                None
                            })
                            .await
                        }
                        None => Some(round(node).await),
                    };
                    (id, out)
                }
            })
            .collect();
        for (id, out) in caudal::task::join_all(rounds).await {
            let crashing = matches!(crash_in_round, Some((c, _)) if c == id);
            let finished = out.is_some();
            if tracing() && crashing {
                eprintln!(
                    "step {now}: node {id} crashes {} its round",
                    if out.is_some() { "after" } else { "in" }
                );
            }
            if let Some((msgs, r)) = out {
                installs += r.installed.len();
                for g in &r.installed {
                    story.push(format!(
                        "step {now}: node {id} group {} installed a snapshot",
                        g.0
                    ));
                }
                for (g, c) in &r.completions {
                    let client = &mut producers[g.0 as usize];
                    if client.waiting.is_some_and(|(t, _)| t == c.token) {
                        client.waiting = None;
                        if c.result.is_ok() {
                            client.next_seq += 1;
                        }
                    }
                }
                for (_, c) in &r.completions {
                    if let (Ok(offset), Some((g, value, Acks::All))) =
                        (&c.result, sent.get(&c.token))
                    {
                        acknowledged.push((*g, *offset, value.clone()));
                    }
                }
                if let Some((g, e)) = r.failed.first() {
                    return Err(format!("node {id} group {}: storage failed: {e}", g.0));
                }
                for (g, m) in msgs {
                    net.send(&mut rng, now, g, m);
                }
            }
            // Crashed during its round or right after it: what was not yet written is lost.
            if crashing {
                if let Some(node) = nodes[id as usize - 1].as_ref() {
                    story.push(format!(
                        "step {now}: node {id} crashed {} its round: {}",
                        if finished { "after" } else { "in" },
                        replica_stories(node)
                    ));
                }
                crash(&mut nodes, &mut down, id, now + rng.gen_range(5..60)).await;
            }
        }
        for (g, m) in net.due(&mut rng, now) {
            if let Some(to) = nodes[m.to as usize - 1].as_mut() {
                if let Some(why) = commit_past_log(to, g, &m) {
                    // raft-rs would stop the process here (its `fatal!`): say what the
                    // replica holds instead, with the schedule's seed.
                    let mine = format!("node {} ", m.to);
                    return Err(format!(
                        "step {now}: {why}; {} (journal {journal:?}, segments of {} bytes, cuts {cuts}, installs {installs}); node {}'s story:\n{}",
                        replica_story(to, g),
                        config.segment_bytes,
                        m.to,
                        story
                            .iter()
                            .filter(|l| l.contains(&mine))
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
                let _ = to.shard.step(g, m);
            }
        }
        for node in nodes.iter().flatten() {
            for g in 0..groups {
                let v = verified.entry((node.id, g)).or_insert(0);
                check_committed(node, GroupId(g), &mut committed[g as usize], v)
                    .await
                    .map_err(|e| format!("step {now}: {e}"))?;
            }
        }
    }
    // Nothing acknowledged with acks=all is lost: it is committed at its offset.
    for (g, offset, value) in &acknowledged {
        match committed[*g as usize].get(offset) {
            Some(v) if v == value => {}
            other => {
                return Err(format!(
                    "group {g}: {:?} acknowledged at offset {offset}, but the log holds {:?} there",
                    String::from_utf8_lossy(value),
                    other.map(|v| String::from_utf8_lossy(v).into_owned())
                ))
            }
        }
    }
    // Healed: everyone at the same commit point, with everything committed.
    let mut total = 0;
    for g in 0..groups {
        let gid = GroupId(g);
        let ends: Vec<i64> = nodes
            .iter()
            .flatten()
            .map(|x| x.shard.high_watermark(gid).unwrap_or(-1))
            .collect();
        if ends.len() != n as usize || ends.iter().any(|e| *e != ends[0]) {
            return Err(format!(
                "group {g}: replicas did not converge: committed offsets {ends:?}"
            ));
        }
        let top = committed[g as usize]
            .keys()
            .next_back()
            .map_or(0, |o| o + 1);
        if ends[0] < top {
            return Err(format!(
                "group {g}: commit point {} below a committed offset {top}",
                ends[0]
            ));
        }
        for node in nodes.iter().flatten() {
            let log = node.shard.node(gid).ok_or("group missing")?.store().log();
            let start = log.log_start_offset();
            for (o, v) in committed[g as usize].range(start..) {
                let r = log.read(*o, 1, ends[0]).await.map_err(|e| e.to_string())?;
                let b = r.batches.first().ok_or(format!("offset {o} gone"))?;
                let got = first_value(b)?;
                if got != *v {
                    return Err(format!(
                        "node {} group {g} lost offset {o}: {:?} where {:?} was committed",
                        node.id,
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(v)
                    ));
                }
            }
        }
        // The idempotent producer's batches are in the log once each, in sequence
        // order, and every acknowledged one is there.
        let prefix = format!("seed {seed} group {g} producer seq ");
        let seqs: Vec<i32> = committed[g as usize]
            .values()
            .filter_map(|v| {
                String::from_utf8_lossy(v)
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()
            })
            .collect();
        let acked = producers[g as usize].next_seq;
        if seqs.len() < acked as usize || seqs.iter().enumerate().any(|(i, s)| *s != i as i32) {
            return Err(format!(
                "group {g}: the idempotent producer's sequences in the log are {seqs:?} (acknowledged up to {})",
                acked - 1
            ));
        }
        total += committed[g as usize].len();
    }
    Ok(Tally {
        committed: total,
        cuts,
        installs,
    })
}

/// Why stepping `m` would stop raft-rs: a heartbeat commits past the receiver's log
/// (the leader counts entries the replica no longer has).
fn commit_past_log(node: &SimNode, g: GroupId, m: &raft::eraftpb::Message) -> Option<String> {
    let raft = node.shard.node(g)?;
    let last = raft.raft.raft_log.last_index();
    let ours = m.term == raft.raft.term;
    (ours
        && m.msg_type == raft::eraftpb::MessageType::MsgHeartbeat
        && m.commit > last
        && m.commit > raft.raft.raft_log.committed)
        .then(|| {
            format!(
                "node {} group {} is sent commit {} by node {} but its log ends at {last}",
                node.id, g.0, m.commit, m.from
            )
        })
}

/// What a replica holds of group `g`, for a failure's message.
fn replica_story(node: &SimNode, g: GroupId) -> String {
    let Some(raft) = node.shard.node(g) else {
        return "no group".into();
    };
    let store = raft.store();
    let t = store.table();
    let log = store.log();
    let point = std::fs::read(log.dir().join("raft.snapshot"))
        .ok()
        .and_then(|b| caudal::replica::raft_snapshot::SnapshotPoint::decode(&b).ok());
    format!(
        "table {}..={} (offsets from {} to {}), log {}..{}, commit {}, applied {}, snapshot point {:?}",
        t.first_index(),
        t.last_index(),
        t.end_offset_at(t.first_index() - 1),
        t.next_offset(),
        log.log_start_offset(),
        log.next_offset(),
        store.durable_hard_state().commit,
        store.applied(),
        point.map(|p| (p.index, p.term, p.start_offset)),
    )
}

/// [`replica_story`] of each group on `node`.
fn replica_stories(node: &SimNode) -> String {
    node.shard
        .group_ids()
        .iter()
        .map(|g| format!("group {}: {}", g.0, replica_story(node, *g)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A client's idempotent producer with one request in flight.
#[derive(Default)]
struct IdempotentClient {
    next_seq: i32,
    /// The request in flight: its token and the step it was sent at.
    waiting: Option<(u64, u64)>,
}

/// For a failure's message: each group's HardState in `raft.state` and the terms/votes
/// of the HardState records in the node's journal files, as the restart will find them.
fn hard_states_on_disk(root: &std::path::Path, id: u64, groups: u64) -> Vec<String> {
    use caudal::log::journal::JournalOp;
    use caudal::replica::raft_state::{RaftRecord, SavedState};
    let dir = super::raft_cluster::node_dir(root, id);
    let records = caudal::log::journal::records_blocking(&dir.join("journal")).unwrap_or_default();
    (0..groups)
        .map(|g| {
            let key = format!("part-{g}");
            let state = std::fs::read(dir.join(&key).join("raft.state"))
                .ok()
                .and_then(|b| SavedState::decode(&b).ok())
                .map(|s| format!("{}/{}", s.hard_state.term, s.hard_state.vote));
            let journaled: Vec<String> = records
                .iter()
                .filter(|(k, _)| *k == key)
                .filter_map(|(_, op)| match op {
                    JournalOp::Raft(p) => match RaftRecord::decode(p) {
                        Ok(RaftRecord::HardState(hs)) => Some(format!("{}/{}", hs.term, hs.vote)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            format!("raft.state {state:?}, journal {journaled:?}")
        })
        .collect()
}

/// For a failure's message: each group's journal records in order, in short (`B` batches
/// first-last@epoch, `T` truncation, `hs`/`cs`/`row` raft records), and its segment
/// files' sizes.
fn journal_story(root: &std::path::Path, id: u64, groups: u64) -> Vec<String> {
    use caudal::log::journal::JournalOp;
    use caudal::protocol::record_batch::check_batch;
    use caudal::replica::raft_state::RaftRecord;
    let dir = super::raft_cluster::node_dir(root, id);
    let records = caudal::log::journal::records_blocking(&dir.join("journal")).unwrap_or_default();
    (0..groups)
        .map(|g| {
            let key = format!("part-{g}");
            let ops: Vec<String> = records
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, op)| match op {
                    JournalOp::Batches(b) => match check_batch(b) {
                        Ok(h) => format!(
                            "B{}-{}@{}",
                            h.base_offset,
                            h.last_offset(),
                            h.partition_leader_epoch
                        ),
                        Err(e) => format!("B?{e}"),
                    },
                    JournalOp::Truncate(at) => format!("T{at}"),
                    JournalOp::Truncated(at) => format!("T{at}done"),
                    JournalOp::Raft(p) => match RaftRecord::decode(p) {
                        Ok(RaftRecord::HardState(hs)) => {
                            format!("hs{}/{}/{}", hs.term, hs.vote, hs.commit)
                        }
                        Ok(RaftRecord::ConfState(_)) => "cs".to_string(),
                        Ok(RaftRecord::Row(r)) => format!("row{}@{}", r.index, r.term),
                        Ok(RaftRecord::Snapshot(p)) => format!("snap{}@{}", p.index, p.term),
                        Err(e) => format!("R?{e}"),
                    },
                })
                .collect();
            let mut segments: Vec<String> = std::fs::read_dir(dir.join(&key))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    format!("{}:{len}", e.file_name().to_string_lossy())
                })
                .collect();
            segments.sort();
            format!(
                "{} records [{}]; files {segments:?}",
                ops.len(),
                ops.join(" ")
            )
        })
        .collect()
}

fn tracing() -> bool {
    std::env::var("RAFT_SIM_TRACE").is_ok()
}

/// With `RAFT_SIM_TRACE` set: each group's raft state on `node`.
fn trace_node(what: &str, node: &SimNode) {
    for g in node.shard.group_ids() {
        let Some(r) = node.shard.node(g) else {
            continue;
        };
        eprintln!(
            "{what} node {} group {}: term {} last {} commit {} durable {:?} log end {} hw {:?}",
            node.id,
            g.0,
            r.raft.term,
            r.raft.raft_log.last_index(),
            r.raft.raft_log.committed,
            r.store().durable_hard_state(),
            r.store().log().next_offset(),
            node.shard.high_watermark(g)
        );
    }
}

/// Takes node `id` down until step `back` (dropped without closing: a crash).
async fn crash(
    nodes: &mut [Option<SimNode>],
    down: &mut BTreeMap<u64, (u64, Vec<HardState>)>,
    id: u64,
    back: u64,
) {
    if let Some(node) = nodes[id as usize - 1].take() {
        if tracing() {
            trace_node("crash", &node);
        }
        let states = node
            .shard
            .group_ids()
            .iter()
            .filter_map(|g| node.shard.node(*g))
            .map(|r| r.store().durable_hard_state())
            .collect();
        down.insert(id, (back, states));
        node.crash().await;
    }
}

/// How many schedules to run, and for how long at most: `RAFT_SIM_SEED` replays one;
/// otherwise seeds from 0 up to `RAFT_SIM_SEEDS` (default 2,000) while
/// `RAFT_SIM_SECONDS` (default 90) last.
fn plan() -> (Vec<u64>, std::time::Duration) {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let budget = std::time::Duration::from_secs(var("RAFT_SIM_SECONDS").unwrap_or(90));
    match var("RAFT_SIM_SEED") {
        Some(seed) => (vec![seed], budget),
        None => {
            // RAFT_SIM_FIRST starts elsewhere (schedules that failed side by side).
            let first = var("RAFT_SIM_FIRST").unwrap_or(0);
            (
                (first..first + var("RAFT_SIM_SEEDS").unwrap_or(2000)).collect(),
                budget,
            )
        }
    }
}

/// Whether schedules cut their logs (`RAFT_SIM_CUTS=0` turns cuts off, to tell a
/// failure of the cuts from one of the rest).
fn cuts_enabled() -> bool {
    std::env::var("RAFT_SIM_CUTS").map_or(true, |v| v != "0")
}

/// The broker's warnings while schedules run (a restart's recovery says what it dropped
/// and why): a failing schedule prints those about its own directory.
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Where the tracing subscriber writes: one line per event into [`WARNINGS`].
struct WarningSink;

impl std::io::Write for WarningSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).trim_end().to_string();
        if let Ok(mut w) = WARNINGS.lock() {
            w.push(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Takes the warnings that name `dir` out of [`WARNINGS`].
fn warnings_about(dir: &std::path::Path) -> Vec<String> {
    let key = dir.display().to_string();
    let Ok(mut w) = WARNINGS.lock() else {
        return Vec::new();
    };
    let (mine, rest): (Vec<String>, Vec<String>) = w.drain(..).partition(|l| l.contains(&key));
    *w = rest;
    mine
}

/// Schedules run side by side on the test's executor: each waits on its disk writes
/// most of the time, so several overlap. A schedule's own choices come from its seed
/// alone, so a failing seed replays by itself.
const SIDE_BY_SIDE: usize = 8;

thread_local! {
    /// The seeds of the schedules under way on this thread: a panic inside raft-rs (its
    /// `fatal!`) names none, so the hook below does.
    static IN_FLIGHT: std::cell::RefCell<std::collections::BTreeSet<u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

#[test]
fn seeded_schedules_with_faults_and_crashes_keep_every_committed_batch_on_every_replica() {
    let (seeds, budget) = plan();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(|| WarningSink)
        .try_init();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let seeds = IN_FLIGHT.with(|f| f.try_borrow().map(|s| s.clone()).unwrap_or_default());
        if !seeds.is_empty() {
            eprintln!(
                "raft schedules under way when this thread panicked: {seeds:?} (replay one: RAFT_SIM_SEED=<seed>)"
            );
        }
        default_hook(info);
    }));
    // The bound: the budget, plus the longest schedule and the cleanup after it.
    run_within(
        budget + std::time::Duration::from_secs(90),
        move |dir| async move {
            let started = std::time::Instant::now();
            let queue = std::cell::RefCell::new(seeds.into_iter());
            // (schedules, schedules that committed none, what they did in all)
            let tally = std::cell::Cell::new((0usize, 0usize, Tally::default()));
            let worker = || async {
                loop {
                    if started.elapsed() > budget {
                        return;
                    }
                    let Some(seed) = queue.borrow_mut().next() else {
                        return;
                    };
                    let sub = dir.join(format!("seed-{seed}"));
                    IN_FLIGHT.with(|f| f.borrow_mut().insert(seed));
                    let outcome = schedule(&sub, seed).await;
                    IN_FLIGHT.with(|f| f.borrow_mut().remove(&seed));
                    match outcome {
                        Ok(t) => {
                            let (count, idle, all) = tally.get();
                            tally.set((
                                count + 1,
                                idle + usize::from(t.committed == 0),
                                Tally {
                                    committed: all.committed + t.committed,
                                    cuts: all.cuts + t.cuts,
                                    installs: all.installs + t.installs,
                                },
                            ));
                        }
                        Err(e) => panic!(
                            "raft schedule seed {seed} failed (replay: RAFT_SIM_SEED={seed}): {e}\nthe broker's warnings about its directory:\n{}",
                            warnings_about(&sub).join("\n")
                        ),
                    }
                    warnings_about(&sub);
                    let _ = std::fs::remove_dir_all(&sub);
                }
            };
            caudal::task::join_all((0..SIDE_BY_SIDE).map(|_| worker()).collect()).await;
            let (count, idle, all) = tally.get();
            eprintln!(
                "{count} raft schedules, {} batches committed ({idle} schedules committed none), {} logs cut, {} snapshots installed, {:.1} s",
                all.committed,
                all.cuts,
                all.installs,
                started.elapsed().as_secs_f64()
            );
            assert!(
                idle * 4 <= count,
                "most schedules commit batches: {idle} of {count} committed none"
            );
            if count >= 100 && cuts_enabled() {
                assert!(
                    all.installs > 0,
                    "replicas behind a cut are sent snapshots ({} cuts, none installed)",
                    all.cuts
                );
            }
        },
    );
}
