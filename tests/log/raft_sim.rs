//! Seeded random schedules over raft groups of 3 and 5 replicas of one partition, in one
//! process, with a network that drops, duplicates, delays and reorders messages and
//! partitions replicas from each other. Messages cross Caudal's wire framing. After
//! each schedule heals: every replica's log is byte-identical up to the commit point,
//! offsets are contiguous from 0, and every batch committed at any time is still there.
//! 200 schedules run by default (15 s optimised, 45 s in a debug build);
//! `RAFT_SIM_SEEDS=n` runs more (`make soak`: 5,000); a failing seed is printed and
//! replays with `RAFT_SIM_SEED=s`.

use std::collections::BTreeMap;

use caudal::protocol::record_batch::{build_batch, check_batch, uncompressed_records, Compression};
use caudal::replica::raft_message::{decode, encode};
use raft::eraftpb::Message;
use raft::{StateRole, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::raft_group::replica;
use super::*;

/// The network between replicas: messages in flight with the step they may arrive at.
struct Net {
    in_flight: Vec<(u64, Message)>,
    /// Pairs (from, to) that cannot talk, while a partition lasts.
    cut: Vec<(u64, u64)>,
    drop_p: f64,
    dup_p: f64,
}

impl Net {
    fn send(&mut self, rng: &mut StdRng, now: u64, m: Message) {
        let m = decode(&encode(&m)).unwrap();
        if self.cut.contains(&(m.from, m.to)) || rng.gen_bool(self.drop_p) {
            return;
        }
        let copies = if rng.gen_bool(self.dup_p) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + rng.gen_range(0..4);
            self.in_flight.push((at, m.clone()));
        }
    }

    /// Messages due at `now`, in a random order.
    fn due(&mut self, rng: &mut StdRng, now: u64) -> Vec<Message> {
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _)| *at <= now);
        self.in_flight = later;
        for i in (1..due.len()).rev() {
            due.swap(i, rng.gen_range(0..=i));
        }
        due.into_iter().map(|(_, m)| m).collect()
    }
}

/// One schedule: the number of batches committed, or what broke.
async fn schedule(dir: &std::path::Path, seed: u64) -> Result<usize, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: u64 = if rng.gen_bool(0.5) { 3 } else { 5 };
    let voters: Vec<u64> = (1..=n).collect();
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(replica(dir, id, &voters).await);
    }
    let mut net = Net {
        in_flight: Vec::new(),
        cut: Vec::new(),
        drop_p: rng.gen_range(0.0..0.2),
        dup_p: rng.gen_range(0.0..0.1),
    };
    // Every value ever seen committed, by the offset it was committed at.
    let mut committed: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut proposed = 0u32;
    let steps = 400u64;
    for now in 0..steps + 300 {
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
        for node in nodes.iter_mut() {
            node.tick();
        }
        if !healing && rng.gen_bool(0.3) {
            if let Some(leader) = nodes.iter_mut().find(|x| x.raft.state == StateRole::Leader) {
                let value = format!("seed {seed} value {proposed}");
                proposed += 1;
                let b = build_batch(0, 1, &[value.as_bytes()], Compression::None);
                let _ = leader.propose(vec![], b);
            }
        }
        for node in nodes.iter_mut() {
            if !node.has_ready() {
                continue;
            }
            let mut rd = node.ready();
            for m in rd.take_messages() {
                net.send(&mut rng, now, m);
            }
            node.store()
                .append(rd.entries())
                .await
                .map_err(|e| format!("append: {e}"))?;
            if let Some(hs) = rd.hs() {
                node.store().set_hard_state(hs.clone());
            }
            for m in rd.take_persisted_messages() {
                net.send(&mut rng, now, m);
            }
            let mut applied = rd.take_committed_entries().last().map(|e| e.index);
            let mut light = node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = node.store().initial_state().unwrap().hard_state;
                hs.commit = commit;
                node.store().set_hard_state(hs);
            }
            for m in light.take_messages() {
                net.send(&mut rng, now, m);
            }
            if let Some(last) = light.take_committed_entries().last() {
                applied = Some(last.index);
            }
            node.advance_apply();
            if let Some(a) = applied {
                node.store().set_applied(a);
            }
        }
        for m in net.due(&mut rng, now) {
            let to = m.to as usize;
            let _ = nodes[to - 1].step(m);
        }
        // What each replica has committed must agree with what any replica committed.
        for node in &nodes {
            let store = node.store();
            let upto = store.committed_offset();
            let log = store.log();
            let mut from = committed
                .range(..upto)
                .next_back()
                .map_or(0, |(o, _)| *o + 1);
            while from < upto {
                let r = log
                    .read(from, 1 << 20, upto)
                    .await
                    .map_err(|e| format!("read at {from}: {e}"))?;
                if r.batches.is_empty() {
                    break;
                }
                for b in r.batches {
                    let h = check_batch(&b).map_err(|e| e.to_string())?;
                    if h.base_offset != from {
                        return Err(format!("offset {} where {from} was due", h.base_offset));
                    }
                    let v = uncompressed_records(&b).map_err(|e| e.to_string())?[0]
                        .value
                        .as_ref()
                        .map(|v| v.to_vec())
                        .unwrap_or_default();
                    if let Some(seen) = committed.get(&from) {
                        if *seen != v {
                            return Err(format!(
                                "replica {} committed {:?} at offset {from}, another {:?}",
                                node.raft.id,
                                String::from_utf8_lossy(&v),
                                String::from_utf8_lossy(seen)
                            ));
                        }
                    }
                    committed.insert(from, v);
                    from = h.last_offset() + 1;
                }
            }
        }
    }
    // Healed: one leader, everyone at the same commit point, with everything committed.
    let ends: Vec<i64> = nodes.iter().map(|x| x.store().committed_offset()).collect();
    if ends.iter().any(|e| *e != ends[0]) {
        return Err(format!(
            "replicas did not converge: committed offsets {ends:?}"
        ));
    }
    let top = committed.keys().next_back().map_or(0, |o| o + 1);
    if ends[0] < top {
        return Err(format!(
            "commit point {} below a committed offset {top}",
            ends[0]
        ));
    }
    for node in &nodes {
        for (o, v) in &committed {
            let r = node
                .store()
                .log()
                .read(*o, 1, ends[0])
                .await
                .map_err(|e| e.to_string())?;
            let b = r.batches.first().ok_or(format!("offset {o} gone"))?;
            let got = uncompressed_records(b).map_err(|e| e.to_string())?[0]
                .value
                .as_ref()
                .map(|v| v.to_vec())
                .unwrap_or_default();
            if got != *v {
                return Err(format!("replica {} lost offset {o}", node.raft.id));
            }
        }
    }
    Ok(committed.len())
}

#[test]
fn seeded_schedules_with_a_faulty_network_keep_every_committed_batch_on_every_replica() {
    let seeds: Vec<u64> = match std::env::var("RAFT_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("RAFT_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("RAFT_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200u64);
            (0..n).collect()
        }
    };
    run(move |dir| async move {
        let started = std::time::Instant::now();
        let (mut total, mut idle) = (0usize, 0usize);
        let count = seeds.len();
        for seed in seeds {
            let sub = dir.join(format!("seed-{seed}"));
            match schedule(&sub, seed).await {
                Ok(n) => {
                    total += n;
                    idle += usize::from(n == 0);
                }
                Err(e) => {
                    panic!("raft schedule seed {seed} failed (replay: RAFT_SIM_SEED={seed}): {e}")
                }
            }
            let _ = std::fs::remove_dir_all(&sub);
        }
        eprintln!(
            "{count} raft schedules, {total} batches committed ({idle} schedules committed none), {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            idle * 4 <= count,
            "most schedules commit batches: {idle} of {count} committed none"
        );
    });
}
