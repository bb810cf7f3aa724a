//! Replicated append: a raft group of 3 in-process replicas over real partition logs and
//! shard journals, messages through Caudal's wire framing over a loopback "network" (all
//! on one core, one disk), beside the same path with a single replica. 1 KiB records in
//! 16 KiB and 1 MiB batches, 8 proposals in flight (a producer pipelining requests);
//! a proposal counts when acks=all would answer it (its entry is committed).
//!
//! Run: `cargo bench --bench raft_append`. Data goes under `target/`, on the real disk.
//! Figures and the command are in docs/benchmarks.md ("Replicated append").

#[path = "../tests/log/raft_cluster.rs"]
mod raft_cluster;

use std::time::{Duration, Instant};

use caudal::executor::Builder;
use caudal::protocol::record_batch::{build_batch, Compression};
use caudal::replica::raft_shard::{Acks, GroupId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_cluster::{open_node, round, SimNode};

const RECORD: usize = 1024;
const IN_FLIGHT: u64 = 8;
const G: GroupId = GroupId(0);

fn batch_of(bytes: usize) -> Vec<u8> {
    let value = vec![0x5au8; RECORD];
    let values: Vec<&[u8]> = (0..bytes / RECORD).map(|_| value.as_slice()).collect();
    build_batch(0, 1_700_000_000_000, &values, Compression::None)
}

fn tmpdir() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    tempfile::tempdir_in(root).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every node's round at once, then delivers the messages; returns the number of
/// proposals completed.
async fn drive(nodes: &mut [SimNode]) -> u64 {
    let rounds: Vec<_> = nodes.iter_mut().map(round).collect();
    let mut done = 0;
    let mut msgs = Vec::new();
    for (m, r) in caudal::task::join_all(rounds).await {
        assert!(r.failed.is_empty(), "storage failed: {:?}", r.failed);
        for (_, c) in r.completions {
            c.result.unwrap_or_else(|e| panic!("proposal failed: {e}"));
            done += 1;
        }
        msgs.extend(m);
    }
    for (g, m) in msgs {
        let to = m.to as usize - 1;
        nodes[to]
            .shard
            .step(g, m)
            .unwrap_or_else(|e| panic!("step: {e}"));
    }
    done
}

/// Commits `iters` batches of `batch_bytes` through a group of `replicas`; returns the
/// time taken (elections and setup excluded).
fn replicated_run(replicas: u64, batch_bytes: usize, iters: u64) -> Duration {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    let elapsed = Builder::new("raft-append-bench")
        .pin(0)
        .io_memory(8 << 20)
        .spawn(move || async move {
            let voters: Vec<u64> = (1..=replicas).collect();
            let mut nodes = Vec::new();
            for id in 1..=replicas {
                nodes.push(open_node(&root, id, &voters, 1, Some(64 << 20)).await);
            }
            if let Some(n) = nodes[0].shard.node_mut(G) {
                n.campaign().unwrap_or_else(|e| panic!("{e}"));
            }
            for _ in 0..20 {
                drive(&mut nodes).await;
            }
            assert!(nodes[0].shard.is_leader(G), "node 1 leads");
            let template = batch_of(batch_bytes);
            let start = Instant::now();
            let (mut proposed, mut done) = (0u64, 0u64);
            while done < iters {
                while proposed < iters && proposed - done < IN_FLIGHT {
                    nodes[0]
                        .shard
                        .propose(G, template.clone(), Acks::All, proposed)
                        .unwrap_or_else(|e| panic!("{e}"));
                    proposed += 1;
                }
                done += drive(&mut nodes).await;
            }
            start.elapsed()
        })
        .and_then(|h| h.join())
        .unwrap_or_else(|e| panic!("executor failed: {e}"));
    drop(dir);
    elapsed
}

fn bench_replicated(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_append");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (size, bytes) in [("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
        g.throughput(Throughput::Bytes(bytes as u64));
        for replicas in [1u64, 3] {
            g.bench_function(format!("{replicas}_replicas_{size}_batches"), |b| {
                b.iter_custom(|iters| replicated_run(replicas, bytes, iters))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_replicated);
criterion_main!(benches);
