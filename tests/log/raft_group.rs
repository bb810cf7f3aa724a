//! Raft groups over partition logs, in one process: replicas elect a leader, take
//! proposals of record batches and end with byte-identical logs whose Kafka offsets are
//! contiguous from 0, raft-only entries taking none; acknowledgements follow acks=1 and
//! acks=all; a replica restarts from its directory with its HardState and log and catches
//! up from the leader's disk; a deposed leader's uncommitted suffix is replaced; torn
//! files recover to a state raft accepts. Messages go through Caudal's own framing.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use caudal::log::raft_index::EntryKind;
use caudal::log::Log;
use caudal::protocol::record_batch::{build_batch, check_batch, Compression};
use caudal::replica::raft_shard::{Acks, Completion, GroupId, GroupSettings, ProposeError};

use super::raft_cluster::{
    node_dir, open_node, open_node_as, open_node_with, round, test_settings, NodeOptions, SimNode,
};
use super::*;

const G: GroupId = GroupId(0);

/// Nodes of a test cluster; `None` while a node is down. Links in `cut` drop messages.
struct Cluster {
    nodes: Vec<Option<SimNode>>,
    cut: Vec<(u64, u64)>,
    completions: BTreeMap<u64, Result<i64, ProposeError>>,
    /// The most any one round read from disk for lagging followers, and the total.
    catch_up_max: usize,
    catch_up_total: usize,
}

impl Cluster {
    async fn start(root: &Path, n: u64, journal: Option<u64>) -> Cluster {
        Cluster::start_with(root, n, journal, caudal::log::LogConfig::default()).await
    }

    /// [`Cluster::start`] with the logs' configuration (small segments roll often).
    async fn start_with(
        root: &Path,
        n: u64,
        journal: Option<u64>,
        config: caudal::log::LogConfig,
    ) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Some(
                open_node_with(root, id, &voters, 1, journal, config.clone()).await,
            ));
        }
        Cluster::of(nodes)
    }

    fn of(nodes: Vec<Option<SimNode>>) -> Cluster {
        Cluster {
            nodes,
            cut: Vec::new(),
            completions: BTreeMap::new(),
            catch_up_max: 0,
            catch_up_total: 0,
        }
    }

    fn node(&self, id: u64) -> &SimNode {
        self.nodes[id as usize - 1].as_ref().unwrap()
    }

    fn node_mut(&mut self, id: u64) -> &mut SimNode {
        self.nodes[id as usize - 1].as_mut().unwrap()
    }

    /// One round on every live node, delivering messages at once.
    async fn drive(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            node.shard.tick();
            let (msgs, r) = round(node).await;
            assert!(r.failed.is_empty(), "storage failed: {:?}", r.failed);
            self.catch_up_max = self.catch_up_max.max(r.catch_up_bytes);
            self.catch_up_total += r.catch_up_bytes;
            for (_, Completion { token, result }) in r.completions {
                self.completions.insert(token, result);
            }
            for (g, m) in msgs {
                if self.cut.contains(&(m.from, m.to)) {
                    continue;
                }
                if let Some(to) = self.nodes[m.to as usize - 1].as_mut() {
                    let _ = to.shard.step(g, m);
                }
            }
        }
    }

    async fn drive_n(&mut self, n: usize) {
        for _ in 0..n {
            self.drive().await;
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .flatten()
            .find(|n| n.shard.is_leader(G))
            .map(|n| n.id)
    }

    /// Node `id` campaigns and, with everyone reachable, leads.
    async fn elect(&mut self, id: u64) {
        self.node_mut(id)
            .shard
            .node_mut(G)
            .unwrap()
            .campaign()
            .unwrap();
        self.drive_n(20).await;
    }

    /// Proposes one batch per value in `values` to `leader` (acks=all, the value as
    /// token), one round after each.
    async fn propose_each(
        &mut self,
        leader: u64,
        values: std::ops::Range<u32>,
        records: usize,
        size: usize,
    ) {
        for i in values {
            self.node_mut(leader)
                .shard
                .propose(G, value_batch(i, records, size), Acks::All, u64::from(i))
                .unwrap();
            self.drive().await;
        }
    }

    fn isolate(&mut self, id: u64) {
        for other in 1..=self.nodes.len() as u64 {
            if other != id {
                self.cut.push((id, other));
                self.cut.push((other, id));
            }
        }
    }
}

fn value_batch(i: u32, records: usize, size: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|k| {
            let mut v = format!("value {i}.{k} ").into_bytes();
            v.resize(size.max(v.len()), b'x');
            v
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    build_batch(
        0,
        1_700_000_000_000 + i64::from(i),
        &refs,
        Compression::None,
    )
}

/// Every batch of `log` below `end`, checking that offsets are contiguous from 0.
async fn batches(log: &Rc<Log>, end: i64) -> Vec<Vec<u8>> {
    batches_from(log, 0, end).await
}

fn rows_of(node: &SimNode) -> Vec<caudal::log::raft_index::Row> {
    node.shard.node(G).unwrap().store().table().rows().to_vec()
}

fn hard_state_of(node: &SimNode) -> raft::eraftpb::HardState {
    node.shard.node(G).unwrap().store().durable_hard_state()
}

fn raft_only_rows(rows: &[caudal::log::raft_index::Row]) -> usize {
    rows.iter()
        .filter(|r| matches!(r.kind, EntryKind::RaftOnly { .. }))
        .count()
}

fn log_of(node: &SimNode) -> Rc<Log> {
    node.shard.node(G).unwrap().store().log().clone()
}

#[test]
fn three_replicas_agree_on_a_log_whose_offsets_start_at_zero_and_stay_contiguous() {
    run(|dir| async move {
        let mut c = Cluster::start(&dir, 3, None).await;
        c.elect(1).await;
        assert_eq!(c.leader(), Some(1));
        let mut sent = Vec::new();
        for i in 0..30u32 {
            let b = value_batch(i, 1 + i as usize % 4, 10);
            sent.push(b.clone());
            c.node_mut(1)
                .shard
                .propose(G, b, Acks::All, u64::from(i))
                .unwrap();
            c.drive().await;
        }
        c.drive_n(20).await;
        // A leadership transfer: node 2 takes over (with check-quorum a follower that
        // hears from its leader ignores a plain campaign), its empty entry takes no offset.
        c.node_mut(1).shard.node_mut(G).unwrap().transfer_leader(2);
        c.drive_n(30).await;
        assert_eq!(c.leader(), Some(2));
        let b = value_batch(99, 1, 10);
        sent.push(b.clone());
        c.node_mut(2).shard.propose(G, b, Acks::All, 99).unwrap();
        c.drive_n(20).await;

        // Every proposal was acknowledged at the offset where its records are.
        let mut next = 0;
        for (i, b) in sent.iter().enumerate() {
            let token = if i == 30 { 99 } else { i as u64 };
            assert_eq!(
                c.completions.get(&token),
                Some(&Ok(next)),
                "proposal {token}"
            );
            next += check_batch(b).unwrap().offset_count();
        }
        let mut logs = Vec::new();
        for id in 1..=3 {
            let node = c.node(id);
            assert_eq!(node.shard.high_watermark(G), Some(next), "all committed");
            let got = batches(&log_of(node), next).await;
            assert_eq!(got.len(), sent.len());
            // Two elections, two raft-only entries: in the table, not in the log.
            let raft_only = raft_only_rows(&rows_of(node));
            assert!(
                raft_only >= 2,
                "each new leader's empty entry is a table row"
            );
            logs.push(got);
        }
        assert_eq!(logs[0], logs[1], "replicas hold byte-identical logs");
        assert_eq!(logs[1], logs[2]);
        // The last batch carries the second leader's term as its epoch.
        let last = check_batch(logs[0].last().unwrap()).unwrap();
        let term = c.node(2).shard.node(G).unwrap().raft.term;
        assert_eq!(last.partition_leader_epoch as u64, term);
    });
}

#[test]
fn acks_all_waits_for_a_majority_while_acks_leader_needs_only_the_leaders_copy() {
    run(|dir| async move {
        let mut c = Cluster::start(&dir, 3, Some(64 << 20)).await;
        c.elect(1).await;
        assert_eq!(c.leader(), Some(1));
        // Both followers cut off from the leader: nothing can commit.
        c.cut = vec![(1, 2), (1, 3), (2, 1), (3, 1)];
        c.node_mut(1)
            .shard
            .propose(G, value_batch(1, 1, 10), Acks::Leader, 1)
            .unwrap();
        c.node_mut(1)
            .shard
            .propose(G, value_batch(2, 1, 10), Acks::All, 2)
            .unwrap();
        c.drive_n(3).await;
        assert_eq!(
            c.completions.get(&1),
            Some(&Ok(0)),
            "acks=1: the leader's copy"
        );
        assert_eq!(c.completions.get(&2), None, "acks=all waits for a majority");
        assert_eq!(
            c.node(1).shard.high_watermark(G),
            Some(0),
            "nothing committed"
        );
        c.cut.clear();
        c.drive_n(10).await;
        assert_eq!(c.completions.get(&2), Some(&Ok(1)));
        assert_eq!(c.node(1).shard.high_watermark(G), Some(2));
        // A follower refuses proposals.
        assert_eq!(
            c.node_mut(2)
                .shard
                .propose(G, value_batch(3, 1, 10), Acks::All, 3),
            Err(ProposeError::NotLeader)
        );
    });
}

#[test]
fn deposed_leaders_uncommitted_suffix_is_replaced_and_never_acknowledged() {
    run(|dir| async move {
        let mut c = Cluster::start(&dir, 3, Some(64 << 20)).await;
        c.elect(1).await;
        c.propose_each(1, 0..5, 2, 10).await;
        c.drive_n(5).await;
        assert_eq!(c.node(1).shard.high_watermark(G), Some(10));
        // The leader is cut off and takes proposals it can never commit.
        c.isolate(1);
        c.propose_each(1, 10..15, 3, 10).await;
        assert!(
            log_of(c.node(1)).next_offset() > 10,
            "the old leader wrote a suffix"
        );
        // The others elect a new leader and commit other batches at those offsets.
        c.node_mut(2).shard.node_mut(G).unwrap().campaign().unwrap();
        c.drive_n(30).await;
        let leader = c.leader_among(&[2, 3]).expect("a new leader among 2 and 3");
        c.propose_each(leader, 20..23, 1, 10).await;
        c.drive_n(5).await;
        c.cut.clear();
        c.drive_n(60).await;
        for i in 10..15u64 {
            assert_eq!(
                c.completions.get(&i),
                Some(&Err(ProposeError::Unknown)),
                "a deposed leader's proposal {i} is never acknowledged"
            );
        }
        for (k, i) in (20..23u64).enumerate() {
            assert_eq!(c.completions.get(&i), Some(&Ok(10 + k as i64)));
        }
        let end = c.node(leader).shard.high_watermark(G).unwrap();
        assert_eq!(end, 13);
        let reference = batches(&log_of(c.node(leader)), end).await;
        for id in 1..=3 {
            assert_eq!(log_of(c.node(id)).next_offset(), 13, "node {id} log end");
            assert_eq!(
                batches(&log_of(c.node(id)), end).await,
                reference,
                "node {id}"
            );
        }
    });
}

impl Cluster {
    fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        ids.iter()
            .copied()
            .find(|&id| self.node(id).shard.is_leader(G))
    }
}

#[test]
fn restarted_replica_recovers_its_hard_state_and_log_and_catches_up_from_the_leaders_disk() {
    run(|dir| async move {
        // Small journal files: checkpoints (and raft.state saves) happen along the way.
        let journal = Some(1 << 20);
        let mut c = Cluster::start(&dir, 3, journal).await;
        c.elect(1).await;
        c.propose_each(1, 0..20, 4, 1000).await;
        c.drive_n(5).await;
        let before = hard_state_of(c.node(3));
        let end_before = log_of(c.node(3)).next_offset();
        assert_eq!(end_before, 80);
        // Node 3 crashes; the others go on past what the leader keeps in memory (8 MiB
        // of recent entries, 16 MiB of tail cache), so node 3's catch-up reads the
        // leader's disk.
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        c.propose_each(1, 20..520, 64, 1000).await;
        c.drive_n(5).await;
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 80 + 500 * 64);
        c.nodes[2] = Some(open_node(&dir, 3, &[1, 2, 3], 1, journal).await);
        let after = hard_state_of(c.node(3));
        assert_eq!((after.term, after.vote), (before.term, before.vote));
        // A commit index that only moved is written without waiting (raft learns it
        // again from the leader), so it may come back a little lower.
        assert!(
            after.commit <= before.commit && after.commit > 0,
            "{after:?} vs {before:?}"
        );
        assert_eq!(
            log_of(c.node(3)).next_offset(),
            end_before,
            "its log came back"
        );
        for _ in 0..1000 {
            c.drive().await;
            if log_of(c.node(3)).next_offset() == end {
                break;
            }
        }
        c.drive_n(5).await;
        assert_eq!(log_of(c.node(3)).next_offset(), end, "node 3 caught up");
        // From the leader's disk, a budget's worth a round at most (one entry past it at
        // worst: each is 64 KB here).
        let budget = caudal::replica::raft_shard::GroupSettings::default().catch_up_bytes_per_round;
        assert!(
            c.catch_up_total > 1 << 20,
            "read {} bytes from disk",
            c.catch_up_total
        );
        assert!(
            c.catch_up_max <= budget + (100 << 10),
            "a round read {} bytes for the follower (budget {budget})",
            c.catch_up_max
        );
        let reference = batches(&log_of(c.node(1)), end).await;
        assert_eq!(batches(&log_of(c.node(3)), end).await, reference);
    });
}

#[test]
fn a_round_stops_reading_for_lagging_replicas_once_its_time_is_spent_and_they_still_catch_up() {
    // The soak's stall: one round fed a new replica megabytes of small entries, a disk
    // read each, and its loop neither ticked nor heard newer terms for 55 s. Here the
    // round's time for those reads is zero, so past the first entry, every further read
    // waits for a later round — across groups too, not once per group.
    run(|dir| async move {
        let journal = Some(1 << 20);
        let groups = [GroupId(0), GroupId(1)];
        let opts = NodeOptions {
            groups: 2,
            journal_file_bytes: journal,
            config: caudal::log::LogConfig::default(),
            settings: GroupSettings {
                catch_up_time_per_round: std::time::Duration::ZERO,
                ..test_settings()
            },
        };
        let open = |id: u64| {
            let dir = dir.clone();
            let opts = opts.clone();
            async move { open_node_as(&dir, id, &[1, 2, 3], opts).await }
        };
        let mut nodes = Vec::new();
        for id in 1..=3 {
            nodes.push(Some(open(id).await));
        }
        let mut c = Cluster::of(nodes);
        for g in groups {
            c.node_mut(1).shard.node_mut(g).unwrap().campaign().unwrap();
        }
        c.drive_n(20).await;
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        // Past what the leader keeps in memory (8 MiB of recent entries a group, 16 MiB
        // of tail cache for the node): node 3's catch-up reads the leader's disk.
        let entries = 160u32;
        let entry = value_batch(0, 80, 1000).len();
        for i in 0..entries {
            for g in groups {
                c.node_mut(1)
                    .shard
                    .propose(g, value_batch(i, 80, 1000), Acks::All, u64::from(i))
                    .unwrap();
            }
            c.drive().await;
        }
        c.drive_n(5).await;
        let end = i64::from(entries) * 80;
        for g in groups {
            assert_eq!(c.node(1).shard.high_watermark(g), Some(end), "{g:?}");
        }
        c.nodes[2] = Some(open(3).await);
        let caught_up = |c: &Cluster| {
            groups
                .iter()
                .all(|&g| c.node(3).shard.node(g).unwrap().store().log().next_offset() == end)
        };
        for _ in 0..5000 {
            c.drive().await;
            if caught_up(&c) {
                break;
            }
        }
        let ends: Vec<i64> = groups
            .iter()
            .map(|&g| c.node(3).shard.node(g).unwrap().store().log().next_offset())
            .collect();
        assert!(
            caught_up(&c),
            "node 3 caught up on both groups: at {ends:?} of {end}, {} bytes read",
            c.catch_up_total
        );
        assert!(
            c.catch_up_total > 4 * entry,
            "read {} bytes from disk for node 3",
            c.catch_up_total
        );
        assert!(
            c.catch_up_max <= entry,
            "a round read {} bytes for lagging replicas with no time to spend (one entry: {entry})",
            c.catch_up_max
        );
        for g in groups {
            let log = |id: u64| c.node(id).shard.node(g).unwrap().store().log().clone();
            let reference = batches(&log(1), end).await;
            assert_eq!(batches(&log(3), end).await, reference, "{g:?}");
        }
    });
}

/// Cuts `drop` bytes off the data of the newest file of `dir` whose name ends with
/// `suffix` (data: up to its last non-zero byte; files are preallocated).
fn tear_newest(dir: &Path, suffix: &str, drop: u64) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    if let Some(f) = files.last() {
        let data = std::fs::read(f).unwrap();
        let len = data
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p as u64 + 1);
        let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
        file.set_len(len.saturating_sub(drop)).unwrap();
    }
}

#[test]
fn torn_journal_and_segment_tails_recover_to_a_state_raft_accepts() {
    run(|dir| async move {
        for (k, (journal_drop, segment_drop)) in
            [(100u64, 0u64), (0, 3000), (5000, 700), (1 << 20, 1 << 20)]
                .into_iter()
                .enumerate()
        {
            let root = dir.join(format!("case-{k}"));
            let mut c = Cluster::start(&root, 3, Some(64 << 20)).await;
            c.elect(1).await;
            c.propose_each(1, 0..40, 2, 500).await;
            c.drive_n(5).await;
            // Node 3 crashes and its files lose their tails, as after a power cut
            // in the middle of writes.
            if let Some(n) = c.nodes[2].take() {
                n.crash().await;
            }
            let n3 = node_dir(&root, 3);
            tear_newest(&n3.join("journal"), ".journal", journal_drop);
            tear_newest(&n3.join("part-0"), ".log", segment_drop);
            c.nodes[2] = Some(open_node(&root, 3, &[1, 2, 3], 1, Some(64 << 20)).await);
            let end = c.node(1).shard.high_watermark(G).unwrap();
            c.drive_n(60).await;
            assert_eq!(log_of(c.node(3)).next_offset(), end, "case {k}: caught up");
            let reference = batches(&log_of(c.node(1)), end).await;
            assert_eq!(
                batches(&log_of(c.node(3)), end).await,
                reference,
                "case {k}"
            );
        }
    });
}

/// Yields `n` times.
async fn after_polls(n: u32) {
    for _ in 0..n {
        futures_lite::future::yield_now().await;
    }
}

#[test]
fn crash_anywhere_in_the_round_that_truncates_a_stale_suffix_recovers() {
    run(|dir| async move {
        let mut cases = 0;
        for round_no in 0..3u32 {
            for polls in (0..40u32).step_by(4) {
                let root = dir.join(format!("r{round_no}-p{polls}"));
                let mut c = Cluster::start(&root, 3, Some(64 << 20)).await;
                c.elect(1).await;
                c.propose_each(1, 0..4, 2, 100).await;
                c.drive_n(5).await;
                // Node 1 is cut off with a suffix of its own; node 2 leads and commits
                // other batches at those offsets.
                c.isolate(1);
                c.propose_each(1, 10..14, 3, 100).await;
                c.node_mut(2).shard.node_mut(G).unwrap().campaign().unwrap();
                c.drive_n(30).await;
                let leader = c.leader_among(&[2, 3]).expect("a leader among 2 and 3");
                c.propose_each(leader, 20..23, 1, 100).await;
                c.drive_n(5).await;
                let end = c.node(leader).shard.high_watermark(G).unwrap();
                // Healed: node 1 learns it must cut its suffix, and crashes `polls` polls
                // into its `round_no`-th round from here (mid-truncation or mid-append).
                c.cut.clear();
                let mut crashed = false;
                for r in 0..10u32 {
                    if r == round_no {
                        let node = c.node_mut(1);
                        node.shard.tick();
                        let cut_short =
                            futures_lite::future::or(async { Some(round(node).await) }, async {
                                after_polls(polls).await;
                                None
                            })
                            .await;
                        if cut_short.is_none() {
                            if let Some(n) = c.nodes[0].take() {
                                n.crash().await;
                            }
                            crashed = true;
                            break;
                        }
                    }
                    c.drive().await;
                }
                if crashed {
                    caudal::task::sleep(std::time::Duration::from_millis(10)).await;
                    c.nodes[0] = Some(open_node(&root, 1, &[1, 2, 3], 1, Some(64 << 20)).await);
                    cases += 1;
                }
                c.drive_n(60).await;
                let reference = batches(&log_of(c.node(leader)), end).await;
                for id in 1..=3 {
                    assert_eq!(
                        log_of(c.node(id)).next_offset(),
                        end,
                        "round {round_no}, {polls} polls: node {id} log end"
                    );
                    assert_eq!(
                        batches(&log_of(c.node(id)), end).await,
                        reference,
                        "round {round_no}, {polls} polls: node {id}"
                    );
                }
                let _ = std::fs::remove_dir_all(&root);
            }
        }
        assert!(cases >= 10, "only {cases} runs crashed inside a round");
    });
}

#[test]
fn sealed_segments_keep_their_raft_index_tables_and_a_restart_reads_them_back() {
    run(|dir| async move {
        let config = caudal::log::LogConfig {
            segment_bytes: 8 << 10,
            ..caudal::log::LogConfig::default()
        };
        let voters = [1, 2, 3];
        let mut c = Cluster::start_with(&dir, 3, Some(64 << 20), config.clone()).await;
        c.elect(1).await;
        for i in 0..100u32 {
            c.node_mut(1)
                .shard
                .propose(G, value_batch(i, 2, 200), Acks::All, u64::from(i))
                .unwrap();
            c.drive().await;
            if i == 50 {
                // A new leader in the middle: a raft-only row among the sealed ones.
                c.node_mut(1).shard.node_mut(G).unwrap().transfer_leader(2);
                c.drive_n(20).await;
                c.node_mut(2).shard.node_mut(G).unwrap().transfer_leader(1);
                c.drive_n(20).await;
                assert_eq!(c.leader(), Some(1));
            }
        }
        c.drive_n(5).await;
        let part = node_dir(&dir, 2).join("part-0");
        let segments = log_of(c.node(2)).segment_count();
        assert!(segments >= 5, "small segments rolled: {segments}");
        let tables = std::fs::read_dir(&part)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".raftindex"))
            .count();
        assert_eq!(tables, segments - 1, "one table per sealed segment");
        let rows_before: Vec<_> = rows_of(c.node(2));
        // A checkpoint-style save keeps only the rows after the sealed segments.
        let state = caudal::replica::raft_state::SavedState::load(&part)
            .await
            .unwrap()
            .unwrap();
        assert!(
            state.table.rows().len() < rows_before.len() / 2,
            "raft.state holds the tail only"
        );

        if let Some(n) = c.nodes[1].take() {
            n.crash().await;
        }
        caudal::task::sleep(std::time::Duration::from_millis(10)).await;
        c.nodes[1] =
            Some(open_node_with(&dir, 2, &voters, 1, Some(64 << 20), config.clone()).await);
        let rows_after: Vec<_> = rows_of(c.node(2));
        assert_eq!(
            rows_after, rows_before,
            "the table came back from the sealed tables and raft.state"
        );
        let raft_only = raft_only_rows(&rows_after);
        assert!(
            raft_only >= 3,
            "the leaders' empty entries are rows: {raft_only}"
        );
        c.propose_each(1, 100..110, 2, 200).await;
        c.drive_n(10).await;
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 220);
        let reference = batches(&log_of(c.node(1)), end).await;
        for id in 2..=3 {
            assert_eq!(
                batches(&log_of(c.node(id)), end).await,
                reference,
                "node {id}"
            );
        }
    });
}

/// Batch `i` of idempotent producer `pid`: `records` records from sequence `seq`.
fn producer_batch(pid: i64, seq: i32, i: u32, records: usize) -> Vec<u8> {
    let mut b = value_batch(i, records, 10);
    caudal::protocol::record_batch::set_producer(&mut b, pid, 0, seq);
    b
}

impl Cluster {
    /// Stops node `id` as a clean shutdown does: its groups' logs, then its journal.
    async fn close_cleanly(&mut self, id: u64) {
        if let Some(mut n) = self.nodes[id as usize - 1].take() {
            n.shard.close().await.unwrap();
            if let Some(j) = &n.journal {
                j.close().await.unwrap();
            }
        }
    }

    /// Proposes `batch` to `leader` under `token` and drives until its outcome is known.
    async fn propose_and_wait(
        &mut self,
        leader: u64,
        batch: Vec<u8>,
        token: u64,
    ) -> Result<i64, ProposeError> {
        self.node_mut(leader)
            .shard
            .propose(G, batch, Acks::All, token)?;
        for _ in 0..50 {
            self.drive().await;
            if let Some(r) = self.completions.get(&token) {
                return r.clone();
            }
        }
        panic!("proposal {token} undecided after 50 rounds");
    }
}

#[test]
fn idempotent_retries_get_their_original_offsets_across_a_failover_and_a_restart() {
    run(|dir| async move {
        let journal = Some(64 << 20);
        let mut c = Cluster::start(&dir, 3, journal).await;
        c.elect(1).await;
        // Producer 7 sends batches of 3 records; its retry of the second is answered
        // with the original offsets and not written again.
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 0, 0, 3), 1).await,
            Ok(0)
        );
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 3, 1, 3), 2).await,
            Ok(3)
        );
        // Already acknowledged: answered by the very next round.
        c.node_mut(1)
            .shard
            .propose(G, producer_batch(7, 3, 1, 3), Acks::All, 3)
            .unwrap();
        c.drive().await;
        assert_eq!(c.completions.get(&3), Some(&Ok(3)));
        assert_eq!(log_of(c.node(1)).next_offset(), 6);
        // A gap in its sequence is refused before anything is proposed.
        let gap = c
            .node_mut(1)
            .shard
            .propose(G, producer_batch(7, 9, 2, 1), Acks::All, 4);
        assert!(
            matches!(gap, Err(ProposeError::Rejected(_))),
            "out of order: {gap:?}"
        );

        // Node 1 goes; another leads and knows producer 7 from the replicated log.
        if let Some(n) = c.nodes[0].take() {
            n.crash().await;
        }
        c.node_mut(2).shard.node_mut(G).unwrap().campaign().unwrap();
        c.drive_n(40).await;
        let leader = c.leader_among(&[2, 3]).expect("a new leader among 2 and 3");
        assert_eq!(
            c.propose_and_wait(leader, producer_batch(7, 3, 1, 3), 5)
                .await,
            Ok(3)
        );
        assert_eq!(
            c.propose_and_wait(leader, producer_batch(7, 6, 3, 2), 6)
                .await,
            Ok(6)
        );
        assert_eq!(log_of(c.node(leader)).next_offset(), 8);

        // The leader's node restarts from its directory and, leading again (node 1 is
        // still down, so the other must wait for it), still knows them.
        let other = 5 - leader;
        if let Some(n) = c.nodes[leader as usize - 1].take() {
            n.crash().await;
        }
        c.nodes[leader as usize - 1] = Some(open_node(&dir, leader, &[1, 2, 3], 1, journal).await);
        c.drive_n(5).await;
        c.node_mut(leader)
            .shard
            .node_mut(G)
            .unwrap()
            .campaign()
            .unwrap();
        c.drive_n(40).await;
        let now = c.leader_among(&[leader, other]).expect("a leader");
        assert_eq!(
            c.propose_and_wait(now, producer_batch(7, 6, 3, 2), 7).await,
            Ok(6)
        );
        assert_eq!(
            c.propose_and_wait(now, producer_batch(7, 8, 4, 1), 8).await,
            Ok(8)
        );
        let end = c.node(now).shard.high_watermark(G).unwrap();
        assert_eq!(end, 9, "every batch once");
    });
}

#[test]
fn a_deposed_leaders_unacknowledged_batch_is_new_again_for_the_next_leader() {
    run(|dir| async move {
        let mut c = Cluster::start(&dir, 3, Some(64 << 20)).await;
        c.elect(1).await;
        assert_eq!(
            c.propose_and_wait(1, producer_batch(5, 0, 0, 2), 1).await,
            Ok(0)
        );
        // Node 1 is cut off and takes the producer's next batch, which never commits.
        c.isolate(1);
        c.node_mut(1)
            .shard
            .propose(G, producer_batch(5, 2, 1, 2), Acks::All, 2)
            .unwrap();
        c.drive_n(3).await;
        c.node_mut(2).shard.node_mut(G).unwrap().campaign().unwrap();
        c.drive_n(30).await;
        let leader = c.leader_among(&[2, 3]).expect("a new leader");
        // The producer retries at the new leader: a new batch there, at offset 2.
        assert_eq!(
            c.propose_and_wait(leader, producer_batch(5, 2, 1, 2), 3)
                .await,
            Ok(2)
        );
        c.cut.clear();
        c.drive_n(40).await;
        assert_eq!(c.completions.get(&2), Some(&Err(ProposeError::Unknown)));
        // Node 1 took the new leader's log: its own proposal is gone from its producer
        // state too, so were it to lead, the retry would be a duplicate at offset 2.
        assert_eq!(log_of(c.node(1)).next_offset(), 4);
        c.node_mut(leader)
            .shard
            .node_mut(G)
            .unwrap()
            .transfer_leader(1);
        c.drive_n(40).await;
        assert!(
            c.node(1).shard.is_leader(G),
            "leadership moved back to node 1"
        );
        assert_eq!(
            c.propose_and_wait(1, producer_batch(5, 2, 1, 2), 4).await,
            Ok(2)
        );
        assert_eq!(log_of(c.node(1)).next_offset(), 4);
    });
}

#[test]
fn a_clean_close_reopens_without_a_scan_and_keeps_the_idempotent_producers() {
    run(|dir| async move {
        let journal = Some(64 << 20);
        let mut c = Cluster::start(&dir, 3, journal).await;
        c.elect(1).await;
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 0, 0, 3), 1).await,
            Ok(0)
        );
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 3, 1, 3), 2).await,
            Ok(3)
        );
        c.drive_n(5).await;
        for id in 1..=3 {
            c.close_cleanly(id).await;
        }
        for id in 1..=3u64 {
            c.nodes[id as usize - 1] = Some(open_node(&dir, id, &[1, 2, 3], 1, journal).await);
            assert!(
                log_of(c.node(id)).opened_clean(),
                "node {id} opened without a scan"
            );
            assert_eq!(log_of(c.node(id)).next_offset(), 6);
        }
        c.elect(1).await;
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 3, 1, 3), 3).await,
            Ok(3)
        );
        assert_eq!(
            c.propose_and_wait(1, producer_batch(7, 6, 2, 1), 4).await,
            Ok(6)
        );
        assert!(c
            .node_mut(1)
            .shard
            .propose(G, producer_batch(7, 9, 3, 1), Acks::All, 5)
            .is_err());
    });
}

#[test]
fn a_clean_close_with_uncommitted_batches_saves_no_producer_state_that_could_lie() {
    run(|dir| async move {
        let journal = Some(64 << 20);
        let mut c = Cluster::start(&dir, 3, journal).await;
        c.elect(1).await;
        assert_eq!(
            c.propose_and_wait(1, producer_batch(5, 0, 0, 2), 1).await,
            Ok(0)
        );
        // Node 1 is cut off, takes the producer's next batch (never committed) and is
        // closed cleanly with it in its log.
        c.isolate(1);
        c.node_mut(1)
            .shard
            .propose(G, producer_batch(5, 2, 1, 2), Acks::All, 2)
            .unwrap();
        c.drive_n(3).await;
        assert_eq!(log_of(c.node(1)).next_offset(), 4);
        c.close_cleanly(1).await;
        c.nodes[0] = Some(open_node(&dir, 1, &[1, 2, 3], 1, journal).await);
        assert!(
            !log_of(c.node(1)).opened_clean(),
            "an uncommitted tail leaves no clean marker: the next open scans"
        );
        // The others elect a leader and take another producer's batch at offset 2.
        c.node_mut(2).shard.node_mut(G).unwrap().campaign().unwrap();
        c.drive_n(40).await;
        let leader = c.leader_among(&[2, 3]).expect("a new leader");
        assert_eq!(
            c.propose_and_wait(leader, producer_batch(9, 0, 2, 1), 3)
                .await,
            Ok(2)
        );
        c.cut.clear();
        c.drive_n(40).await;
        assert_eq!(
            log_of(c.node(1)).next_offset(),
            3,
            "node 1's stale batch replaced"
        );
        // Node 1 leads again: producer 5's retry is a new batch, not a duplicate of the
        // batch that was replaced.
        c.node_mut(leader)
            .shard
            .node_mut(G)
            .unwrap()
            .transfer_leader(1);
        c.drive_n(40).await;
        assert!(c.node(1).shard.is_leader(G));
        assert_eq!(
            c.propose_and_wait(1, producer_batch(5, 2, 1, 2), 4).await,
            Ok(3)
        );
    });
}

/// The voters (and those of a joint configuration's other half) and learners of node
/// `id`'s replica, sorted.
fn membership(c: &Cluster, id: u64) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let raft = &c.node(id).shard.node(G).unwrap().raft;
    let conf = raft.prs().conf().to_conf_state();
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    (
        sorted(conf.voters),
        sorted(conf.voters_outgoing),
        sorted(conf.learners),
    )
}

#[test]
fn a_learner_catches_up_from_the_first_entry_is_promoted_and_replaces_a_voter_for_good() {
    use caudal::replica::conf_change::proposal;
    use raft::eraftpb::ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    run(|dir| async move {
        let journal = Some(1 << 20);
        let mut c = Cluster::start(&dir, 3, journal).await;
        // Node 4 starts empty, knowing the group's first configuration: it follows every
        // change from the log's start.
        c.nodes
            .push(Some(open_node(&dir, 4, &[1, 2, 3], 1, journal).await));
        c.elect(1).await;
        c.propose_each(1, 0..20, 4, 1000).await;
        c.node_mut(1)
            .shard
            .propose_conf_change(G, proposal(&[(AddLearnerNode, 4)]))
            .unwrap();
        c.drive_n(30).await;
        assert_eq!(membership(&c, 1), (vec![1, 2, 3], vec![], vec![4]));
        assert_eq!(membership(&c, 4), (vec![1, 2, 3], vec![], vec![4]));
        assert_eq!(log_of(c.node(4)).next_offset(), 80, "the learner caught up");
        // Promote 4 and remove 3 at once: joint consensus, left automatically.
        c.node_mut(1)
            .shard
            .propose_conf_change(G, proposal(&[(AddNode, 4), (RemoveNode, 3)]))
            .unwrap();
        c.drive_n(40).await;
        for id in [1, 2, 4] {
            assert_eq!(
                membership(&c, id),
                (vec![1, 2, 4], vec![], vec![]),
                "node {id}"
            );
        }
        // Node 3 is out: with it gone, 1, 2 and 4 commit; acks=all waits for them.
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        c.propose_each(1, 20..40, 4, 1000).await;
        c.drive_n(10).await;
        assert_eq!(c.node(1).shard.high_watermark(G), Some(160));
        assert_eq!(log_of(c.node(4)).next_offset(), 160);
        // The configuration is kept: node 4 restarted (given the first configuration
        // again) comes back a voter of 1, 2 and 4.
        if let Some(n) = c.nodes[3].take() {
            n.crash().await;
        }
        c.nodes[3] = Some(open_node(&dir, 4, &[1, 2, 3], 1, journal).await);
        assert_eq!(membership(&c, 4), (vec![1, 2, 4], vec![], vec![]));
        c.propose_each(1, 40..45, 4, 1000).await;
        c.drive_n(10).await;
        assert_eq!(c.node(1).shard.high_watermark(G), Some(180));
        let reference = batches(&log_of(c.node(1)), 180).await;
        assert_eq!(batches(&log_of(c.node(4)), 180).await, reference);
    });
}

/// Every batch of `log` in `from..end`, checking that offsets are contiguous.
async fn batches_from(log: &Rc<Log>, from: i64, end: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < end {
        let r = log.read(at, 1 << 20, end).await.unwrap();
        assert!(
            !r.batches.is_empty(),
            "read at {at} below {end} found nothing"
        );
        for b in r.batches {
            let h = check_batch(&b).unwrap();
            assert_eq!(h.base_offset, at, "offsets contiguous");
            at = h.last_offset() + 1;
            out.push(b.to_vec());
        }
    }
    out
}

#[test]
fn a_replica_behind_the_leaders_log_start_installs_a_snapshot_and_serves_as_a_voter_again() {
    run(|dir| async move {
        let config = caudal::log::LogConfig {
            segment_bytes: 8 << 10,
            ..caudal::log::LogConfig::default()
        };
        let voters = [1, 2, 3];
        let mut c = Cluster::start_with(&dir, 3, Some(64 << 20), config.clone()).await;
        c.elect(1).await;
        c.propose_each(1, 0..20, 2, 200).await;
        c.drive_n(5).await;
        let behind = log_of(c.node(3)).next_offset();
        assert_eq!(behind, 40);
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        c.propose_each(1, 20..150, 2, 200).await;
        c.drive_n(5).await;
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 300);
        // Retention on the two that stayed: everything sealed and applied goes. Node 2's
        // files as they were before are kept, to crash it between the cut's two steps.
        let before_cut = dir.join("node-2-before-cut");
        copy_dir(&node_dir(&dir, 2), &before_cut);
        for id in 1..=2 {
            let start = c.node_mut(id).shard.compact(G, end).await.unwrap();
            let start = start.unwrap_or_else(|| panic!("node {id} cut nothing"));
            assert!(start > behind, "node {id} cut past node 3's end: {start}");
            assert_eq!(log_of(c.node(id)).log_start_offset(), start);
        }
        let start = log_of(c.node(1)).log_start_offset();
        let first = c
            .node(1)
            .shard
            .node(G)
            .unwrap()
            .store()
            .table()
            .first_index();
        // Node 2 crashes with the cut's file written and its segments not yet deleted:
        // the next open finishes the cut.
        std::fs::copy(
            node_dir(&dir, 2).join("part-0/raft.snapshot"),
            before_cut.join("part-0/raft.snapshot"),
        )
        .unwrap();
        if let Some(n) = c.nodes[1].take() {
            n.crash().await;
        }
        caudal::task::sleep(std::time::Duration::from_millis(10)).await;
        std::fs::remove_dir_all(node_dir(&dir, 2)).unwrap();
        std::fs::rename(&before_cut, node_dir(&dir, 2)).unwrap();
        c.nodes[1] =
            Some(open_node_with(&dir, 2, &voters, 1, Some(64 << 20), config.clone()).await);
        assert_eq!(
            log_of(c.node(2)).log_start_offset(),
            start,
            "the cut was finished"
        );
        assert_eq!(
            c.node(2)
                .shard
                .node(G)
                .unwrap()
                .store()
                .table()
                .first_index(),
            first
        );
        assert!(
            matches!(
                raft::Storage::entries(
                    c.node(1).shard.node(G).unwrap().store(),
                    first - 1,
                    first,
                    None,
                    raft::GetEntriesContext::empty(false),
                ),
                Err(raft::Error::Store(raft::StorageError::Compacted))
            ),
            "raft's entries before the cut are gone"
        );

        let before_install = dir.join("node-3-before-install");
        copy_dir(&node_dir(&dir, 3), &before_install);
        c.nodes[2] =
            Some(open_node_with(&dir, 3, &voters, 1, Some(64 << 20), config.clone()).await);
        let snapshot_file = node_dir(&dir, 3).join("part-0/raft.snapshot");
        for _ in 0..40 {
            if snapshot_file.exists() {
                break;
            }
            c.drive().await;
        }
        assert!(
            snapshot_file.exists(),
            "node 3 was sent the leader's snapshot"
        );
        // It crashes in the middle of the install (its file written, nothing else): the
        // next open finishes the install, and the replica catches up from there.
        std::fs::copy(&snapshot_file, before_install.join("part-0/raft.snapshot")).unwrap();
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        caudal::task::sleep(std::time::Duration::from_millis(10)).await;
        std::fs::remove_dir_all(node_dir(&dir, 3)).unwrap();
        std::fs::rename(&before_install, node_dir(&dir, 3)).unwrap();
        c.nodes[2] =
            Some(open_node_with(&dir, 3, &voters, 1, Some(64 << 20), config.clone()).await);
        let log3 = log_of(c.node(3));
        assert_eq!(log3.log_start_offset(), start, "the install was finished");
        assert_eq!(log3.next_offset(), start, "its log starts over, empty");
        c.drive_n(40).await;
        let log3 = log_of(c.node(3));
        assert_eq!(
            log3.log_start_offset(),
            start,
            "node 3 starts where the leader's log does"
        );
        assert_eq!(log3.next_offset(), end, "and caught up after the snapshot");
        let reference = batches_from(&log_of(c.node(1)), start, end).await;
        assert_eq!(batches_from(&log3, start, end).await, reference);

        // Node 3 counts for acks=all again: with node 2 cut off, writes commit with it.
        c.isolate(2);
        c.propose_each(1, 150..155, 2, 200).await;
        c.drive_n(10).await;
        for i in 150..155u64 {
            assert!(
                matches!(c.completions.get(&i), Some(Ok(_))),
                "proposal {i} committed with node 3: {:?}",
                c.completions.get(&i)
            );
        }
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 310);

        // And it restarts from what the install left.
        let rows_before = rows_of(c.node(3));
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        caudal::task::sleep(std::time::Duration::from_millis(10)).await;
        c.nodes[2] =
            Some(open_node_with(&dir, 3, &voters, 1, Some(64 << 20), config.clone()).await);
        assert_eq!(rows_of(c.node(3)), rows_before);
        assert_eq!(log_of(c.node(3)).log_start_offset(), start);
        let reference = batches_from(&log_of(c.node(1)), start, end).await;
        assert_eq!(
            batches_from(&log_of(c.node(3)), start, end).await,
            reference
        );
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_learner_added_after_the_log_was_cut_installs_a_snapshot_and_becomes_a_voter() {
    use caudal::replica::conf_change::proposal;
    use raft::eraftpb::ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    run(|dir| async move {
        let journal = Some(1 << 20);
        let config = caudal::log::LogConfig {
            segment_bytes: 8 << 10,
            ..caudal::log::LogConfig::default()
        };
        let mut c = Cluster::start_with(&dir, 3, journal, config.clone()).await;
        c.elect(1).await;
        c.propose_each(1, 0..60, 2, 400).await;
        c.drive_n(5).await;
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 120);
        for id in 1..=3 {
            assert!(c
                .node_mut(id)
                .shard
                .compact(G, end)
                .await
                .unwrap()
                .is_some());
        }
        let start = log_of(c.node(1)).log_start_offset();
        // Node 4 starts empty with the group's first configuration, as a moving
        // partition's new replica does; the entries it would follow from are gone.
        c.nodes.push(Some(
            open_node_with(&dir, 4, &[1, 2, 3], 1, journal, config.clone()).await,
        ));
        c.node_mut(1)
            .shard
            .propose_conf_change(G, proposal(&[(AddLearnerNode, 4)]))
            .unwrap();
        c.drive_n(40).await;
        assert_eq!(membership(&c, 4), (vec![1, 2, 3], vec![], vec![4]));
        let log4 = log_of(c.node(4));
        assert_eq!(
            log4.log_start_offset(),
            start,
            "installed the leader's snapshot"
        );
        assert_eq!(log4.next_offset(), end, "and caught up");
        c.node_mut(1)
            .shard
            .propose_conf_change(G, proposal(&[(AddNode, 4), (RemoveNode, 3)]))
            .unwrap();
        c.drive_n(40).await;
        for id in [1, 2, 4] {
            assert_eq!(
                membership(&c, id),
                (vec![1, 2, 4], vec![], vec![]),
                "node {id}"
            );
        }
        if let Some(n) = c.nodes[2].take() {
            n.crash().await;
        }
        c.isolate(2);
        c.propose_each(1, 60..65, 2, 400).await;
        c.drive_n(10).await;
        for i in 60..65u64 {
            assert!(
                matches!(c.completions.get(&i), Some(Ok(_))),
                "proposal {i} committed by 1 and 4: {:?}",
                c.completions.get(&i)
            );
        }
        let end = c.node(1).shard.high_watermark(G).unwrap();
        assert_eq!(end, 130);
        let reference = batches_from(&log_of(c.node(1)), start, end).await;
        assert_eq!(
            batches_from(&log_of(c.node(4)), start, end).await,
            reference
        );
    });
}
