//! Partition log benchmarks: validate + append + group commit (durable), and reads from
//! the tail cache and from disk. 1 KiB records in 16 KiB and 1 MiB batches.
//!
//! Run: `cargo bench --bench log_append`. Data goes under `target/`, on the real disk.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use caudal::executor::Builder;
use caudal::log::{LogConfig, LogEnv};
use caudal::protocol::record_batch::{build_batch, Compression};
use caudal::replica::Partition;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const RECORD: usize = 1024;
/// Appends in flight at once, as from a producer pipelining requests.
const IN_FLIGHT: usize = 8;

fn batch_of(bytes: usize) -> Vec<u8> {
    let value = vec![0x5au8; RECORD];
    let values: Vec<&[u8]> = (0..bytes / RECORD).map(|_| value.as_slice()).collect();
    build_batch(0, 1_700_000_000_000, &values, Compression::None)
}

/// Runs `f` on a glommio executor pinned to core 0 and returns its output.
fn on_executor<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    Builder::new("log-append-bench")
        .pin(0)
        .io_memory(8 << 20)
        .spawn(f)
        .and_then(|h| h.join())
        .unwrap_or_else(|e| panic!("executor failed: {e}"))
}

fn config() -> LogConfig {
    LogConfig {
        max_message_bytes: 2 << 20,
        ..LogConfig::default()
    }
}

fn tmpdir() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    tempfile::tempdir_in(root).unwrap_or_else(|e| panic!("{e}"))
}

/// Appends `iters` batches with IN_FLIGHT appenders; returns the time taken.
fn append_run(batch_bytes: usize, iters: u64) -> Duration {
    let dir = tmpdir();
    let path = dir.path().to_path_buf();
    let elapsed = on_executor(move || async move {
        let log = Partition::open(&path, config(), LogEnv::new(64 << 20), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let template = batch_of(batch_bytes);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for a in 0..IN_FLIGHT as u64 {
            let log = log.clone();
            let template = template.clone();
            let mine = iters / IN_FLIGHT as u64 + u64::from(a < iters % IN_FLIGHT as u64);
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..mine {
                    log.append(BytesMut::from(&template[..]))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let elapsed = start.elapsed();
        log.close().await.unwrap_or_else(|e| panic!("{e}"));
        elapsed
    });
    drop(dir);
    elapsed
}

/// Appends `total` bytes of batches, then times `iters` full reads of them.
fn read_run(batch_bytes: usize, total: usize, cached: bool, iters: u64) -> Duration {
    let dir = tmpdir();
    let path = dir.path().to_path_buf();
    let elapsed = on_executor(move || async move {
        let cache = if cached { total * 2 } else { 0 };
        let log = Partition::open(&path, config(), LogEnv::new(cache), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let template = batch_of(batch_bytes);
        for _ in 0..total / template.len() {
            log.append(BytesMut::from(&template[..]))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let start = Instant::now();
        for _ in 0..iters {
            let mut from = 0;
            while from < log.high_watermark() {
                let r = log
                    .read(from, 1 << 20)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let last = r.batches.last().map(|b| {
                    caudal::protocol::record_batch::check_batch(b)
                        .map(|h| h.last_offset())
                        .unwrap_or(from)
                });
                from = last.unwrap_or(from) + 1;
            }
        }
        start.elapsed()
    });
    drop(dir);
    elapsed
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, bytes) in [("16KiB_batches", 16 << 10), ("1MiB_batches", 1 << 20)] {
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| b.iter_custom(|iters| append_run(bytes, iters)));
    }
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    const TOTAL: usize = 64 << 20;
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("tail_cache_1MiB_batches", |b| {
        b.iter_custom(|iters| read_run(1 << 20, TOTAL, true, iters))
    });
    g.bench_function("disk_1MiB_batches", |b| {
        b.iter_custom(|iters| read_run(1 << 20, TOTAL, false, iters))
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);
