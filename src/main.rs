//! The `caudal` broker binary: command line (over an optional config file) -> Config ->
//! shards.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use caudal::config::{Config, ConfigError, Flags, Host, Settings};
use caudal::config_file::FileConfig;
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
    #[command(flatten)]
    settings: Flags,
}

/// Flags over file over defaults, validated; and the log level, which is not the shards'.
fn resolve(flags: Flags, file: FileConfig) -> Result<(Config, Option<String>), ConfigError> {
    let host = Host {
        cpus: runtime::affinity_cpus,
    };
    let settings = Settings::resolve(flags, file, &host)?;
    let config = settings.config();
    config.validate()?;
    Ok((config, settings.log_level))
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

/// How long the broker must be quiet before freed memory goes back to the kernel.
const MEMORY_RETURN_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

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
    let (config, log_level) = match resolve(args.settings, file) {
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
    // Freed buffers are kept for reuse while busy (above); once a load ends they go back.
    if let Err(e) = caudal::alloc_guard::return_memory_when_quiet(MEMORY_RETURN_PERIOD) {
        tracing::warn!(error = %e, "could not start the memory-return thread: freed memory stays with the broker");
    }
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
