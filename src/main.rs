//! The `caudal` broker binary: command line -> Config -> shards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use std::time::Duration;

use caudal::config::Config;
use caudal::group::coordinator::GroupSettings;
use caudal::metadata::topic_config::flush_policy;
use caudal::shard::runtime;
use clap::Parser;

/// Caudal: a Kafka-compatible message broker, one shard per core.
///
/// Each shard listens on its own port (PORT + shard index) and is advertised to clients
/// as its own broker, so Kafka clients send each partition's traffic straight to the
/// core that owns it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Directory for all data (metadata log and partition logs); created if missing.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Address of shard 0; shard k listens on the same host at PORT + k.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Number of shards (one executor pinned per CPU). Default: one per CPU the process
    /// may run on (see `taskset`).
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs to pin shards to, comma-separated (e.g. `2,3`). Default: the affinity mask.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Host name given to clients in Metadata. Default: the listen address.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Node id; each shard's broker id is NODE_ID * 1024 + shard.
    #[arg(long, default_value_t = 0)]
    node_id: i32,
    /// Partitions of auto-created topics (and of CreateTopics with -1).
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Do not create unknown topics when clients ask for their metadata.
    #[arg(long)]
    no_auto_create_topics: bool,
    /// Kafka-like durability: acknowledge produces once written, fsync every MS
    /// milliseconds. Default: fsync before every acknowledgement (group commit).
    #[arg(long, value_name = "MS")]
    flush_interval_ms: Option<u64>,
    /// Largest request accepted, in bytes (socket.request.max.bytes).
    #[arg(long, default_value_t = 100 << 20)]
    socket_request_max_bytes: usize,
    /// Bytes of requests each shard holds in memory before it stops reading sockets.
    #[arg(long, default_value_t = 256 << 20)]
    request_budget_bytes: usize,
    /// Tail cache per shard, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    tail_cache_bytes: usize,
    /// Memory registered with io_uring per shard, in bytes (needs `ulimit -l` to allow it).
    #[arg(long, default_value_t = 2 << 20)]
    io_memory_bytes: usize,
    /// How often each shard applies retention, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    retention_check_ms: u64,
    /// Delay before the first rebalance of an empty consumer group, in milliseconds, so
    /// members starting together land in one generation (Kafka's
    /// group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3000)]
    group_initial_rebalance_delay_ms: u64,
    /// Close connections that send no complete request for this long, in milliseconds
    /// (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// Smallest consumer session timeout accepted, in milliseconds.
    #[arg(long, default_value_t = 6000)]
    group_min_session_timeout_ms: u64,
}

fn config_from(args: Args) -> Config {
    let cpus = if args.cpus.is_empty() {
        runtime::affinity_cpus()
    } else {
        args.cpus
    };
    Config {
        data_dir: args.data_dir,
        listen_host: args.listen.ip(),
        base_port: args.listen.port(),
        shards: args.shards.unwrap_or(cpus.len().max(1)),
        cpus,
        advertised_host: args
            .advertised_host
            .unwrap_or_else(|| args.listen.ip().to_string()),
        node_id: args.node_id,
        default_partitions: args.default_partitions,
        auto_create_topics: !args.no_auto_create_topics,
        flush: flush_policy(args.flush_interval_ms),
        socket_request_max_bytes: args.socket_request_max_bytes,
        request_budget_bytes: args.request_budget_bytes,
        tail_cache_bytes: args.tail_cache_bytes,
        io_memory_bytes: args.io_memory_bytes,
        retention_check_ms: args.retention_check_ms.max(1),
        group: GroupSettings {
            initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(args.group_min_session_timeout_ms),
            ..GroupSettings::default()
        },
        connections_max_idle: Duration::from_millis(args.connections_max_idle_ms.max(1)),
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and so in the shard threads it starts), so
/// that `wait_for_signal` can take them synchronously.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed, then initialised, sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Raises the open-file limit to its hard maximum: every client connection is a file.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit on a plain struct owned by this frame.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    raise_file_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = config_from(args);
    let signals = block_signals();
    let broker = match runtime::start(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("caudal: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("caudal ready: {} shard(s)", broker.addrs.len());
    let sig = wait_for_signal(&signals);
    tracing::info!(signal = sig, "stopping");
    broker.stop_flag().store(true, Ordering::SeqCst);
    broker.wait();
    ExitCode::SUCCESS
}
