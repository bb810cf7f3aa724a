//! Raft groups over partition logs, in one process: three replicas elect a leader, take
//! proposals of record batches, and end with byte-identical logs whose Kafka offsets are
//! contiguous from 0, raft-only entries taking none. Messages go through Caudal's own
//! framing, as they will between nodes.

use std::collections::VecDeque;
use std::rc::Rc;

use caudal::log::{Log, LogConfig, LogEnv};
use caudal::protocol::record_batch::{build_batch, check_batch, Compression};
use caudal::replica::raft_log::RaftLog;
use caudal::replica::raft_message::{decode, encode};
use raft::eraftpb::Message;
use raft::{Config, RawNode, StateRole, Storage};

use super::*;

/// Replica `id` of a group of `voters`, its log in `dir/replica-<id>` (pre-vote and
/// check-quorum on, as the cluster will run them).
pub async fn replica(dir: &std::path::Path, id: u64, voters: &[u64]) -> RawNode<RaftLog> {
    let (log, _) = Log::open(
        &dir.join(format!("replica-{id}")),
        LogConfig::default(),
        LogEnv::new(16 << 20),
    )
    .await
    .unwrap();
    let config = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        pre_vote: true,
        check_quorum: true,
        ..Config::default()
    };
    config.validate().unwrap();
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    RawNode::new(&config, RaftLog::new(log, voters.to_vec()), &logger).unwrap()
}

/// Handles every replica's ready once: persists, records the hard state, queues the
/// messages (through the wire framing), advances. Returns entries committed.
async fn drive(nodes: &mut [RawNode<RaftLog>], wire: &mut VecDeque<Message>) -> usize {
    let mut committed = 0;
    for node in nodes.iter_mut() {
        if !node.has_ready() {
            continue;
        }
        let mut rd = node.ready();
        let send = |wire: &mut VecDeque<Message>, msgs: Vec<Message>| {
            for m in msgs {
                wire.push_back(decode(&encode(&m)).unwrap());
            }
        };
        send(wire, rd.take_messages());
        node.store().append(rd.entries()).await.unwrap();
        if let Some(hs) = rd.hs() {
            node.store().set_hard_state(hs.clone());
        }
        send(wire, rd.take_persisted_messages());
        committed += rd.take_committed_entries().len();
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = node.store().initial_state().unwrap().hard_state;
            hs.commit = commit;
            node.store().set_hard_state(hs);
        }
        send(wire, light.take_messages());
        committed += light.take_committed_entries().len();
        node.advance_apply();
    }
    while let Some(m) = wire.pop_front() {
        let to = m.to as usize;
        nodes[to - 1].step(m).unwrap();
    }
    committed
}

#[test]
fn three_replicas_agree_on_a_log_whose_offsets_start_at_zero_and_stay_contiguous() {
    run(|dir| async move {
        let mut nodes = Vec::new();
        for id in 1..=3 {
            nodes.push(replica(&dir, id, &[1, 2, 3]).await);
        }
        let mut wire = VecDeque::new();
        nodes[0].campaign().unwrap();
        for _ in 0..20 {
            drive(&mut nodes, &mut wire).await;
        }
        assert_eq!(nodes[0].raft.state, StateRole::Leader);
        let mut sent = Vec::new();
        for i in 0..30u8 {
            let values: Vec<Vec<u8>> = (0..1 + i % 4).map(|k| vec![i; 10 + k as usize]).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let b = build_batch(0, 1_700_000_000_000, &refs, Compression::None);
            sent.push(b.clone());
            nodes[0].propose(vec![], b).unwrap();
            drive(&mut nodes, &mut wire).await;
        }
        for _ in 0..20 {
            drive(&mut nodes, &mut wire).await;
        }
        // A leadership transfer: node 2 takes over (with check-quorum a follower that
        // hears from its leader ignores a plain campaign), its empty entry takes no offset.
        nodes[0].transfer_leader(2);
        for _ in 0..30 {
            drive(&mut nodes, &mut wire).await;
        }
        assert_eq!(nodes[1].raft.state, StateRole::Leader);
        let b = build_batch(0, 1_700_000_000_001, &[b"after"], Compression::None);
        sent.push(b.clone());
        nodes[1].propose(vec![], b).unwrap();
        for _ in 0..20 {
            drive(&mut nodes, &mut wire).await;
        }

        let expected_records: i64 = sent
            .iter()
            .map(|b| check_batch(b).unwrap().offset_count())
            .sum();
        let mut logs = Vec::new();
        for node in &nodes {
            let store = node.store();
            assert_eq!(store.committed_offset(), expected_records, "all committed");
            let log: &Rc<Log> = store.log();
            let mut batches = Vec::new();
            let mut from = 0;
            while from < log.next_offset() {
                let r = log.read(from, 1 << 20, log.next_offset()).await.unwrap();
                for b in r.batches {
                    let h = check_batch(&b).unwrap();
                    assert_eq!(h.base_offset, from, "offsets contiguous from 0");
                    from = h.last_offset() + 1;
                    batches.push(b.to_vec());
                }
            }
            assert_eq!(batches.len(), sent.len());
            // Two elections, two raft-only entries: in the table, not in the log.
            let raft_only = store
                .table()
                .rows()
                .iter()
                .filter(|r| matches!(r.kind, caudal::log::raft_index::EntryKind::RaftOnly { .. }))
                .count();
            assert!(
                raft_only >= 2,
                "each new leader's empty entry is a table row"
            );
            logs.push(batches);
        }
        assert_eq!(logs[0], logs[1], "replicas hold byte-identical logs");
        assert_eq!(logs[1], logs[2]);
        // The last batch carries the second leader's term as its epoch.
        let last = check_batch(logs[0].last().unwrap()).unwrap();
        assert_eq!(last.partition_leader_epoch as u64, nodes[1].raft.term);
    });
}
