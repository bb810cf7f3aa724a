//! Raft groups driven by their shards' loops over real TCP connections on loopback
//! (`cluster::transport`, `cluster::raft_driver`): three nodes in one process, each with
//! its own listener, journal and logs. A leader is elected, acks=all appends come back
//! with contiguous offsets and are on every replica, a leader's node that stops is
//! replaced, and the survivors go on taking appends.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caudal::cluster::raft_driver::RaftDriver;
use caudal::cluster::transport::{Identity, Transport};
use caudal::config::Peer;
use caudal::io::dma_writer::IoStats;
use caudal::log::{Journal, JournalOptions, Log, LogConfig, LogEnv};
use caudal::protocol::record_batch::{build_batch, check_batch, Compression};
use caudal::replica::raft_shard::{Acks, GroupId, GroupSettings, RaftShard};

use super::raft_cluster::node_dir;
use super::*;

const G: GroupId = GroupId(7);

struct TcpNode {
    driver: RaftDriver,
    log: Rc<Log>,
    _journal: Rc<Journal>,
}

async fn start_node(
    root: &std::path::Path,
    id: u64,
    listener: caudal::io::TcpListener,
    peers: &[Peer],
    tick: Duration,
) -> TcpNode {
    let dir = node_dir(root, id);
    let journal = Journal::open(
        &dir.join("journal"),
        JournalOptions::default(),
        Default::default(),
        Arc::new(IoStats::default()),
    )
    .await
    .unwrap();
    let env = LogEnv {
        journal: Some(journal.clone()),
        ..LogEnv::new(16 << 20)
    };
    let (log, recovered) = Log::open(&dir.join("part-7"), LogConfig::default(), env)
        .await
        .unwrap();
    let me = Identity {
        cluster_id: "test".into(),
        node: id,
        shard: 0,
        disk_id: [id as u8; 16],
    };
    let transport = Transport::start(me, listener, peers, None).unwrap();
    let shard = RaftShard::new(id, GroupSettings::default());
    let driver = RaftDriver::start_ticking(
        shard,
        std::rc::Rc::new(transport),
        Duration::from_secs(10),
        tick,
    );
    driver
        .open_group(
            G,
            log.clone(),
            recovered,
            peers.iter().map(|p| p.node).collect(),
            None,
        )
        .await
        .unwrap();
    journal.recovery_done().await.unwrap();
    TcpNode {
        driver,
        log,
        _journal: journal,
    }
}

/// Waits until `check` holds, polling every 10 ms; panics with `what` after `bound`.
async fn eventually(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        caudal::task::sleep(Duration::from_millis(10)).await;
    }
}

fn value(i: u32) -> Vec<u8> {
    build_batch(0, 1, &[format!("value-{i}").as_bytes()], Compression::None)
}

async fn values(log: &Log, end: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < end {
        let r = log.read(from, 1 << 20, end).await.unwrap();
        assert!(!r.batches.is_empty(), "nothing at {from} below {end}");
        for b in r.batches {
            let h = check_batch(&b).unwrap();
            assert_eq!(h.base_offset, from, "offsets contiguous from 0");
            from = h.last_offset() + 1;
            let records = caudal::protocol::record_batch::uncompressed_records(&b).unwrap();
            out.push(records[0].value.unwrap().to_vec());
        }
    }
    out
}

#[test]
fn raft_over_tcp_elects_replicates_acks_all_and_fails_over() {
    run(|dir| async move {
        let mut nodes: Vec<Option<TcpNode>> = three_nodes(&dir, caudal::cluster::raft_driver::TICK)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let n1 = nodes[0].as_ref().unwrap();
        for i in 0..50u32 {
            let offset = n1.driver.propose(G, value(i), Acks::All).await.unwrap();
            assert_eq!(offset, i64::from(i), "acks=all offsets are contiguous");
        }
        assert_eq!(n1.driver.view(G).unwrap().high_watermark, 50);
        eventually("every voter in sync", Duration::from_secs(20), || {
            n1.driver.view(G).is_some_and(|v| v.in_sync.len() == 3)
        })
        .await;
        for n in nodes.iter().flatten() {
            let driver = &n.driver;
            eventually(
                "every replica at the high watermark",
                Duration::from_secs(20),
                || driver.view(G).is_some_and(|v| v.high_watermark == 50),
            )
            .await;
        }
        let expected: Vec<Vec<u8>> = (0..50).map(|i| format!("value-{i}").into_bytes()).collect();
        for n in nodes.iter().flatten() {
            assert_eq!(values(&n.log, 50).await, expected);
        }

        // Node 1 stops (its listener and loop with it): one of the others takes over.
        let old_term = nodes[0].as_ref().unwrap().driver.view(G).unwrap().term;
        nodes[0] = None;
        let (n2, n3) = (nodes[1].as_ref().unwrap(), nodes[2].as_ref().unwrap());
        eventually("a new leader", Duration::from_secs(30), || {
            [n2, n3].iter().any(|n| {
                n.driver
                    .view(G)
                    .is_some_and(|v| v.is_leader && v.term > old_term)
            })
        })
        .await;
        let leader = if n2.driver.view(G).is_some_and(|v| v.is_leader) {
            n2
        } else {
            n3
        };
        for i in 50..60u32 {
            let offset = leader.driver.propose(G, value(i), Acks::All).await.unwrap();
            assert_eq!(
                offset,
                i64::from(i),
                "no offset lost or reused at the failover"
            );
        }
        let expected: Vec<Vec<u8>> = (0..60).map(|i| format!("value-{i}").into_bytes()).collect();
        assert_eq!(values(&leader.log, 60).await, expected);
        let view = leader.driver.view(G).unwrap();
        assert_eq!(
            view.in_sync.len(),
            2,
            "the stopped node falls out of sync: {view:?}"
        );
    });
}

/// Three nodes on loopback whose drivers tick every `tick`, node 1 leading.
async fn three_nodes(dir: &std::path::Path, tick: Duration) -> Vec<TcpNode> {
    let listeners: Vec<caudal::io::TcpListener> = (0..3)
        .map(|_| caudal::net::listener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap())
        .collect();
    let peers: Vec<Peer> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Peer {
            node: i as u64 + 1,
            host: "127.0.0.1".into(),
            port: l.local_addr().unwrap().port(),
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(start_node(dir, i as u64 + 1, l, &peers, tick).await);
    }
    nodes[0].driver.campaign(G);
    let n1 = &nodes[0];
    eventually("node 1 leads", Duration::from_secs(20), || {
        n1.driver.view(G).is_some_and(|v| v.is_leader)
    })
    .await;
    nodes
}

#[test]
fn an_election_replication_and_acks_need_no_tick() {
    run(|dir| async move {
        // A minute per tick: an election, a replication or an acknowledgement that
        // waited for one would not finish within the bounds below.
        let nodes = three_nodes(&dir, Duration::from_secs(60)).await;
        let start = Instant::now();
        for i in 0..30u32 {
            let offset = nodes[0]
                .driver
                .propose(G, value(i), Acks::All)
                .await
                .unwrap();
            assert_eq!(offset, i64::from(i));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "30 acks=all appends took {:?}: some waited for a tick",
            start.elapsed()
        );
    });
}
