//! The `caudal` broker binary: command line (over an optional config file) -> Config ->
//! shards.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use caudal::config::{Config, ConfigError};
use caudal::config_file::FileConfig;
use caudal::group::coordinator::GroupSettings;
use caudal::metadata::topic_config::flush_policy;
use caudal::shard::runtime;
use clap::Parser;

/// Caudal: a Kafka-compatible message broker, one shard per core.
///
/// Each shard listens on its own port (PORT + shard index) and is advertised to clients
/// as its own broker, so Kafka clients send each partition's traffic straight to the
/// core that owns it. Every flag can also be set in a TOML file given with --config
/// (same names, dashes as underscores); flags override the file.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// TOML config file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration (file, flags, data directory, ports), print it, and exit.
    #[arg(long)]
    check_config: bool,
    /// Directory for all data (metadata log and partition logs); created if missing.
    /// [default: ./data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of shard 0; shard k listens on the same host at PORT + k.
    /// [default: 127.0.0.1:9092]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of shards (one executor pinned per CPU). [default: one per CPU the process
    /// may run on, see `taskset`]
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs to pin shards to, comma-separated (e.g. `2,3`). [default: the affinity mask]
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Host name given to clients in Metadata. [default: the listen address]
    #[arg(long)]
    advertised_host: Option<String>,
    /// Node id; each shard's broker id is NODE_ID * 1024 + shard. [default: 0]
    #[arg(long)]
    node_id: Option<i32>,
    /// Partitions of auto-created topics (and of CreateTopics with -1). [default: 1]
    #[arg(long)]
    default_partitions: Option<i32>,
    /// Do not create unknown topics when clients ask for their metadata.
    #[arg(long)]
    no_auto_create_topics: bool,
    /// Kafka-like durability: acknowledge produces once written, fsync every MS
    /// milliseconds. [default: fsync before every acknowledgement, with group commit]
    #[arg(long, value_name = "MS")]
    flush_interval_ms: Option<u64>,
    /// Largest request accepted, in bytes (socket.request.max.bytes). [default: 100 MiB]
    #[arg(long)]
    socket_request_max_bytes: Option<usize>,
    /// Bytes of requests each shard holds in memory before it stops reading sockets.
    /// [default: 256 MiB]
    #[arg(long)]
    request_budget_bytes: Option<usize>,
    /// Tail cache per shard, in bytes. [default: 256 MiB]
    #[arg(long)]
    tail_cache_bytes: Option<usize>,
    /// Memory registered with io_uring per shard, in bytes (needs `ulimit -l` to allow
    /// it). [default: 2 MiB]
    #[arg(long)]
    io_memory_bytes: Option<usize>,
    /// How often each shard applies retention, in milliseconds. [default: 300000]
    #[arg(long)]
    retention_check_ms: Option<u64>,
    /// Delay before the first rebalance of an empty consumer group, in milliseconds
    /// (group.initial.rebalance.delay.ms). [default: 3000]
    #[arg(long)]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest consumer session timeout accepted, in milliseconds. [default: 6000]
    #[arg(long)]
    group_min_session_timeout_ms: Option<u64>,
    /// Close connections that send no complete request for this long, in milliseconds
    /// (connections.max.idle.ms). [default: 600000]
    #[arg(long)]
    connections_max_idle_ms: Option<u64>,
    /// How long a shard runs tasks before polling for completed I/O again, in
    /// microseconds: lower favours latency, higher throughput; much below 10000 makes
    /// glommio's park-with-ready-tasks defect frequent, each time costing up to one wake
    /// guard period (docs/operations.md). [default: 100000]
    #[arg(long)]
    preempt_timer_us: Option<u64>,
    /// How often the wake guard wakes every shard, in microseconds: the longest a shard
    /// can sleep with work ready (glommio 0.9's park defect) and what an idle shard pays
    /// in wake-ups. 0 turns it off, which brings the hang back: only for measuring its
    /// cost (docs/architecture.md). [default: 10000]
    #[arg(long)]
    wake_guard_us: Option<u64>,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9644).
    /// [default: off]
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Log level or filter (error, warn, info, debug, trace; or a RUST_LOG-style
    /// filter). [default: $RUST_LOG, else info]
    #[arg(long)]
    log_level: Option<String>,
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key} = {value:?}: {why}"))
}

/// Flags over file over defaults.
fn resolve(args: Args, file: FileConfig) -> Result<(Config, Option<String>), ConfigError> {
    let d = Config::default();
    let listen = match (args.listen, &file.listen) {
        (Some(a), _) => a,
        (None, Some(s)) => s.parse().map_err(|e| bad("listen", s, e))?,
        (None, None) => SocketAddr::new(d.listen_host, d.base_port),
    };
    let metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
        (Some(a), _) => Some(a),
        (None, Some(s)) => Some(s.parse().map_err(|e| bad("metrics_listen", s, e))?),
        (None, None) => None,
    };
    let cpus = args
        .cpus
        .or(file.cpus)
        .unwrap_or_else(runtime::affinity_cpus);
    let group = GroupSettings {
        initial_rebalance_delay: args
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .map_or(d.group.initial_rebalance_delay, Duration::from_millis),
        min_session_timeout: args
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .map_or(d.group.min_session_timeout, Duration::from_millis),
        ..d.group.clone()
    };
    let config = Config {
        data_dir: args.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
        listen_host: listen.ip(),
        base_port: listen.port(),
        shards: args.shards.or(file.shards).unwrap_or(cpus.len().max(1)),
        advertised_host: args
            .advertised_host
            .or(file.advertised_host)
            .unwrap_or_else(|| listen.ip().to_string()),
        cpus,
        node_id: args.node_id.or(file.node_id).unwrap_or(d.node_id),
        default_partitions: args
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(d.default_partitions),
        auto_create_topics: !args.no_auto_create_topics
            && file.auto_create_topics.unwrap_or(d.auto_create_topics),
        flush: flush_policy(args.flush_interval_ms.or(file.flush_interval_ms)),
        socket_request_max_bytes: args
            .socket_request_max_bytes
            .or(file.socket_request_max_bytes)
            .unwrap_or(d.socket_request_max_bytes),
        request_budget_bytes: args
            .request_budget_bytes
            .or(file.request_budget_bytes)
            .unwrap_or(d.request_budget_bytes),
        tail_cache_bytes: args
            .tail_cache_bytes
            .or(file.tail_cache_bytes)
            .unwrap_or(d.tail_cache_bytes),
        io_memory_bytes: args
            .io_memory_bytes
            .or(file.io_memory_bytes)
            .unwrap_or(d.io_memory_bytes),
        retention_check_ms: args
            .retention_check_ms
            .or(file.retention_check_ms)
            .unwrap_or(d.retention_check_ms)
            .max(1),
        group,
        connections_max_idle: args
            .connections_max_idle_ms
            .or(file.connections_max_idle_ms)
            .map_or(d.connections_max_idle, |ms| {
                Duration::from_millis(ms.max(1))
            }),
        metrics_listen,
        preempt_timer: args
            .preempt_timer_us
            .or(file.preempt_timer_us)
            .map_or(d.preempt_timer, |us| Duration::from_micros(us.max(10))),
        wake_guard_period: args
            .wake_guard_us
            .or(file.wake_guard_us)
            .map_or(d.wake_guard_period, Duration::from_micros),
    };
    config.validate()?;
    Ok((config, args.log_level.or(file.log_level)))
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

fn main() -> ExitCode {
    caudal::alloc_guard::retain_freed_memory();
    // A panicking shard would leave its clients' connections open and unanswered while
    // the other shards carry on: end the whole process instead, so the supervisor
    // restarts it and clients reconnect (recovery makes the restart safe).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        // Not eprintln!: it panics when stderr cannot be written (a full disk).
        let _ = writeln!(
            std::io::stderr(),
            "caudal: a thread panicked; aborting so the broker restarts cleanly"
        );
        std::process::abort();
    }));
    let args = Args::parse();
    let check_only = args.check_config;
    let file = match args.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("caudal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (config, log_level) = match resolve(args, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caudal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = match log_level {
        Some(l) => tracing_subscriber::EnvFilter::try_new(&l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .or_else(|_| tracing_subscriber::EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("caudal: invalid configuration: log_level: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (the log's disk is full, as the data's may
        // be) is dropped: by default the subscriber reports it with eprintln!, which
        // panics when stderr fails, and that ended the broker.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if check_only {
        return match runtime::check(&config) {
            Ok(()) => {
                println!("configuration ok:\n{config:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("caudal: {e}");
                ExitCode::FAILURE
            }
        };
    }
    raise_file_limit();
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
    broker.stop_signal().stop();
    broker.wait();
    tracing::info!("stopped cleanly");
    ExitCode::SUCCESS
}
