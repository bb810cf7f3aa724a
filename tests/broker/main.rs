//! Broker scenarios driven over TCP by a minimal client of our own (the real-client
//! suites live in tests/clients). One module per behaviour, one test binary.

mod bad_input;
mod cluster;
mod disk_full;
mod groups;
mod idempotent_produce;
mod leader_epochs;
mod long_poll;
mod metrics;
mod old_versions;
mod operations;
mod restart;
mod shard_routing;
mod upgrade;

#[path = "../common/mod.rs"]
mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use caudal::config::Config;
use caudal::executor::deadline::Deadline;
use caudal::shard::runtime::{self, BrokerHandle};
pub use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

/// A broker started in this process on free loopback ports with a temporary data dir.
pub struct TestBroker {
    pub handle: Option<BrokerHandle>,
    pub config: Config,
    _dir: tempfile::TempDir,
    /// Aborts the test binary, with every thread's backtrace, if the test outlives it.
    _bound: Deadline,
}

/// The longest a test may keep its broker (the slowest takes well under a minute).
const TEST_BOUND: Duration = Duration::from_secs(240);

impl TestBroker {
    pub fn start(shards: usize) -> TestBroker {
        TestBroker::start_in(TestBroker::temp_dir(), shards)
    }

    /// A temporary directory for a broker's data, on the target's disk (brokers write
    /// with O_DIRECT, which tmpfs refuses).
    pub fn temp_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("caudal-broker-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
    }

    /// Starts a broker of `shards` shards on the data directory `dir`, which may already
    /// hold data.
    pub fn start_in(dir: tempfile::TempDir, shards: usize) -> TestBroker {
        let data_dir = dir.path().to_path_buf();
        TestBroker::start_on_free_ports(dir, shards, |base_port| Config {
            data_dir: data_dir.clone(),
            base_port,
            shards,
            cpus: vec![0],
            tail_cache_bytes: 16 << 20,
            socket_request_max_bytes: 1 << 20,
            group: caudal::group::coordinator::GroupSettings {
                initial_rebalance_delay: Duration::ZERO,
                min_session_timeout: Duration::from_millis(100),
                ..Default::default()
            },
            ..Config::default()
        })
    }

    /// Starts the broker `config(base_port)` describes on `shards` free ports.
    ///
    /// Another test (or process) may take a probed port before the broker binds it:
    /// the broker then refuses to start ("address in use") and we probe again.
    pub fn start_on_free_ports(
        dir: tempfile::TempDir,
        shards: usize,
        config: impl Fn(u16) -> Config,
    ) -> TestBroker {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let config = config(free_ports(shards as u16));
            match runtime::start(config.clone()) {
                Ok(handle) => {
                    let test = std::thread::current()
                        .name()
                        .unwrap_or("a broker test")
                        .to_string();
                    return TestBroker {
                        handle: Some(handle),
                        config,
                        _dir: dir,
                        _bound: Deadline::start(test, TEST_BOUND),
                    };
                }
                Err(e) if e.to_string().contains("in use") && attempts < 5 => {}
                Err(e) => panic!("broker did not start: {e}"),
            }
        }
    }

    pub fn addr(&self, shard: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.shard_port(shard)))
    }

    pub fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.handle = Some(runtime::start(self.config.clone()).unwrap());
    }

    pub fn stat(
        &self,
        shard: usize,
        f: impl Fn(&caudal::shard::state::ShardStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        f(&self.handle.as_ref().unwrap().stats[shard]).load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}
