//! Partition log scenarios, one module per behaviour. They share one test binary to
//! keep link time down on small machines.

mod bad_batches;
mod clean_shutdown;
mod crash_recovery;
mod dma_writer;
mod group_commit;
mod idempotence;
mod index_rebuild;
mod journal;
mod raft_cluster;
mod raft_group;
mod raft_sim;
mod raft_tcp;
mod retention;
mod roll;
mod round_trip;
mod truncate;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use caudal::executor::deadline::Deadline;
use caudal::executor::Builder;
use caudal::log::{LogConfig, LogEnv};
use caudal::protocol::record_batch::{build_batch, check_batch, Compression};
use caudal::replica::Partition;

/// Runs `f` on a fresh executor, with a temporary directory on a real disk (O_DIRECT does
/// not work on tmpfs), and aborts with every thread's backtrace if it takes over
/// [`TEST_BOUND`].
pub fn run<F, Fut>(f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    run_within(TEST_BOUND, f)
}

/// [`run`] with its own bound (for runs whose length the caller sets, such as soaks).
pub fn run_within<F, Fut>(bound: std::time::Duration, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::Builder::new()
        .prefix("caudal-log-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let path = dir.path().to_path_buf();
    let test = std::thread::current()
        .name()
        .unwrap_or("a log test")
        .to_string();
    let _bound = Deadline::start(test.clone(), bound);
    Builder::new("log-test")
        .io_memory(2 << 20)
        .spawn(move || f(path))
        .unwrap()
        .join()
        .unwrap();
    drop(dir);
}

/// The longest any log test may run (the slowest takes seconds).
pub const TEST_BOUND: std::time::Duration = std::time::Duration::from_secs(180);

/// A batch of `n` records of `size` bytes each; record `i` is filled with byte `seed+i`.
pub fn batch(n: usize, size: usize, seed: u8, ts: i64, compression: Compression) -> BytesMut {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| vec![seed.wrapping_add(i as u8); size])
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    BytesMut::from(&build_batch(0, ts, &refs, compression)[..])
}

/// Opens a log with the default environment (16 MiB tail cache).
pub async fn open(dir: &Path, config: LogConfig) -> Rc<Partition> {
    Partition::open(dir, config, LogEnv::new(16 << 20), Default::default())
        .await
        .unwrap()
}

/// Opens a log whose tail cache is empty, so reads go to disk.
pub async fn open_uncached(dir: &Path, config: LogConfig) -> Rc<Partition> {
    Partition::open(dir, config, LogEnv::new(0), Default::default())
        .await
        .unwrap()
}

/// Reads every batch from `from` to the high watermark; returns (base offset, bytes).
pub async fn read_all(log: &Partition, mut from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let res = log.read(from, 1 << 20).await.unwrap();
        if res.batches.is_empty() {
            return out;
        }
        for b in res.batches {
            let h = check_batch(&b).unwrap();
            if h.last_offset() < from {
                continue;
            }
            from = h.last_offset() + 1;
            out.push((h.base_offset, b.to_vec()));
        }
    }
}

/// Appends one 2-record batch of 1,000-byte values at the log end with `epoch`, as a
/// follower would: the offsets and epoch are already in the batch.
pub async fn append_at(log: &caudal::log::Log, epoch: i32, seed: u8) {
    let mut b = batch(2, 1000, seed, 1, Compression::None);
    let slot = log.reserve(b.len() as u64, 2, Vec::new).await.unwrap();
    caudal::protocol::record_batch::set_offset_and_epoch(&mut b, slot.next_offset(), epoch);
    let h = check_batch(&b).unwrap();
    slot.write(b, &[h]).unwrap().durable(log).await.unwrap();
}

/// The batch bytes with the base offset field zeroed, for comparing with what was sent.
pub fn without_offset(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v[..8].fill(0);
    v
}
