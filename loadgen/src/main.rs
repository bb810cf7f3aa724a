//! `caudal-loadgen`: command line -> `runner::execute`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use caudal_loadgen::batch::Codec;
use caudal_loadgen::history::History;
use caudal_loadgen::run::{CommonOpts, ConsumeOpts, ProduceOpts, StartFrom};
use caudal_loadgen::runner::{self, Job};
use caudal_loadgen::verify::VerifyOpts;
use caudal_loadgen::{checker, cluster, recovery, report};
use clap::{Args, Parser, Subcommand};

/// The load generator decodes whatever a broker answers: the same guard against hostile
/// length fields as the broker (see `caudal_runtime::alloc_guard`).
#[global_allocator]
static ALLOCATOR: caudal_runtime::alloc_guard::GuardedAlloc =
    caudal_runtime::alloc_guard::GuardedAlloc;

/// Kafka-protocol load generator: produce, consume and end-to-end latency.
///
/// Works against any Kafka-compatible broker. Latency is recorded in HdrHistogram
/// (µs, 3 significant digits); with --rate, from each message's scheduled send time.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce to a topic and record acknowledgement latency.
    Produce {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        produce: ProduceArgs,
    },
    /// Consume from a topic (manually assigned partitions or a consumer group).
    Consume {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        consume: ConsumeArgs,
    },
    /// Produce and consume together; each value carries its send time, and the
    /// consumer records end-to-end latency and checks every message arrived.
    E2e {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        produce: ProduceArgs,
        #[command(flatten)]
        consume: ConsumeArgs,
        /// Independent consumer groups (fan-out); with --group G they are G-0, G-1, ...
        #[arg(long, default_value_t = 1)]
        groups: usize,
    },
    /// Jepsen-style verification: producers send unique values (acks=all, one in
    /// flight each), consumers read in assign mode, a last reader reads every partition
    /// after the run; the history is then checked for lost, unseen, duplicated and
    /// reordered records. Prints the checker's report as JSON; exits 2 on any anomaly.
    Verify(VerifyArgs),
    /// Check a history saved by `verify --history` again; exits 2 on any anomaly.
    Check {
        /// The history (JSON lines).
        history: PathBuf,
    },
    /// Measure a saved history against the faults a nemesis injected: time from each
    /// fault aimed at a leader to produce succeeding again on its partition, and
    /// acknowledgement latency during and outside faults. Prints JSON.
    Recovery {
        /// The history (JSON lines).
        history: PathBuf,
        /// The faults: a JSON list of {kind, partition, at_ms, healed_ms}.
        #[arg(long)]
        faults: PathBuf,
    },
    /// Move one partition to a new set of replicas (AlterPartitionReassignments); returns
    /// once the move has started.
    Reassign {
        /// Any broker, host:port.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// The new replicas' broker ids, comma-separated, the preferred leader first.
        #[arg(long)]
        replicas: String,
    },
    /// Print the APIs and versions a broker supports.
    Probe {
        /// Any broker, host:port.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    /// Combine a bench results directory into summary.json and latency.svg.
    Summarize {
        /// Results directory (bench/results/<run>).
        dir: PathBuf,
    },
    /// Regenerate the generated section of docs/benchmarks.md.
    Report {
        /// Results directories; the first is the main run.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Markdown file to update.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// Where to copy the main run's plot (linked from the doc).
        #[arg(long, default_value = "bench/latency.svg")]
        plot: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Any broker of the cluster, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic.
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// A topic config for a topic the run creates, KEY=VALUE (repeatable), e.g.
    /// retention.bytes=4294967296 so a long run does not fill the disk.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_config: Vec<String>,
    /// Seconds to run (default 10 unless --messages is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of load before measuring starts: messages, bytes and latencies of the
    /// warm-up are left out of the results (the run lasts warm-up plus --duration).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Messages to produce (or consume), in total.
    #[arg(long)]
    messages: Option<u64>,
    /// Write the result here as JSON, with the latency histogram beside it (.hgrm).
    #[arg(long)]
    json: Option<PathBuf>,
    /// CPUs to run on, one executor each: "1", "0,1", "2-3". Default: every CPU the
    /// process may use.
    #[arg(long)]
    cores: Option<String>,
    /// Client id in request headers.
    #[arg(long, default_value = "caudal-loadgen")]
    client_id: String,
    /// Give up (exit 1, no results) when no message is acknowledged or consumed for this
    /// many seconds: a broker that holds its connections open but stopped answering.
    #[arg(long, default_value_t = 60)]
    stall_limit: u64,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Largest batch (record bytes) per partition per request.
    #[arg(long, default_value_t = 16384)]
    batch_bytes: usize,
    /// With --rate: how long a batch may wait for messages (fractions allowed: 0.5).
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Producers; each opens one connection per partition leader.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Messages per second over all producers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Produce request timeout (ms) sent to the broker.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: i32,
    /// Largest produce request in bytes: one request carries a batch for each of as many
    /// partitions of its broker as fit, like the Java client (max.request.size, 1 MiB)
    /// and librdkafka.
    #[arg(long, default_value_t = 1 << 20)]
    max_request_bytes: usize,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// Consumer group (classic protocol, range assignment). Without it, partitions are
    /// assigned manually, starting at --from.
    #[arg(long)]
    group: Option<String>,
    /// Where to start without a committed offset: earliest or latest.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Consumers (group members, or manual readers splitting the partitions).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Fetch max_bytes.
    #[arg(long, default_value_t = 64 << 20)]
    fetch_max_bytes: i32,
    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 8 << 20)]
    partition_max_bytes: i32,
    /// Fetch max_wait_ms.
    #[arg(long, default_value_t = 500)]
    fetch_max_wait_ms: i32,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Brokers to ask for metadata, comma-separated; tried in turn.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (created with the brokers' default replication factor if missing).
    #[arg(long, default_value = "verify")]
    topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Replicas of each partition, if the topic has to be created.
    #[arg(long, default_value_t = 3)]
    replication_factor: i16,
    /// The topic's min.insync.replicas, if it has to be created.
    #[arg(long, default_value_t = 2)]
    min_insync_replicas: i16,
    /// Producers, one send in flight each.
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Consumers in assign mode, each reading every partition.
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Consumers in one group, sharing the partitions and committing what they read.
    #[arg(long, default_value_t = 2)]
    group_consumers: u32,
    /// The group's id (default: the topic's name with "-group").
    #[arg(long)]
    group: Option<String>,
    /// Seconds producers and consumers run.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds the last read may take to reach every partition's end after the run.
    #[arg(long, default_value_t = 60.0)]
    settle: f64,
    /// Idempotent producers.
    #[arg(long)]
    idempotent: bool,
    /// Produce request timeout (ms) sent to the broker.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// Save the history here (JSON lines), for `caudal-loadgen check`.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Write the report here as JSON too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Client id in request headers.
    #[arg(long, default_value = "caudal-verify")]
    client_id: String,
}

/// Runs `verify` and prints its report; true when the history is clean.
fn verify(a: VerifyArgs) -> Result<bool> {
    let seconds = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).map_err(|_| anyhow!("--{name} {v}: give seconds, 0 or more"))
    };
    let opts = VerifyOpts {
        bootstrap: a
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        group: a.group.unwrap_or_else(|| format!("{}-group", a.topic)),
        topic: a.topic,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        min_insync_replicas: a.min_insync_replicas,
        producers: a.producers,
        consumers: a.consumers,
        group_consumers: a.group_consumers,
        duration: seconds("duration", a.duration)?,
        settle: seconds("settle", a.settle)?,
        idempotent: a.idempotent,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        client_id: a.client_id,
    };
    let (history, facts) = caudal_loadgen::verify::run(opts)?;
    if let Some(path) = &a.history {
        history.save(path)?;
    }
    let report = checker::check(&history);
    let outages = checker::outages(&history, 500);
    let out = serde_json::json!({ "report": report, "run": facts, "outages": outages });
    let text = serde_json::to_string_pretty(&out)?;
    if let Some(path) = &a.json {
        std::fs::write(path, &text).map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    }
    println!("{text}");
    Ok(report.is_clean())
}

/// Parses "1", "0,1", "2-3", "0,2-3".
fn parse_cpus(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>()?..=b.parse::<usize>()?),
            None => out.push(part.parse()?),
        }
    }
    if out.is_empty() {
        bail!("--cores names no CPU");
    }
    Ok(out)
}

fn common(a: CommonArgs) -> Result<CommonOpts> {
    Ok(CommonOpts {
        bootstrap: a.bootstrap,
        topic: a.topic,
        partitions: a.partitions,
        duration: a.duration.map(Duration::from_secs_f64),
        warmup: Duration::try_from_secs_f64(a.warmup)
            .map_err(|_| anyhow!("--warmup {}: give seconds, 0 or more", a.warmup))?,
        messages: a.messages,
        json: a.json,
        cores: a
            .cores
            .as_deref()
            .map(parse_cpus)
            .transpose()?
            .unwrap_or_default(),
        client_id: a.client_id,
        stall_limit: Duration::from_secs(a.stall_limit.max(1)),
        topic_configs: a
            .topic_config
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(anyhow!("--topic-config {kv}: give KEY=VALUE")),
            })
            .collect::<Result<_>>()?,
    })
}

fn produce(a: ProduceArgs) -> Result<ProduceOpts> {
    let acks = match a.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => bail!("--acks {other}: use 0, 1 or all"),
    };
    if a.producers == 0 || a.max_in_flight == 0 || a.message_size == 0 {
        bail!("--producers, --max-in-flight and --message-size must be positive");
    }
    Ok(ProduceOpts {
        message_size: a.message_size,
        batch_bytes: a.batch_bytes,
        linger_ms: a.linger_ms,
        acks,
        codec: Codec::parse(&a.compression)?,
        producers: a.producers,
        rate: a.rate.max(0.0),
        max_in_flight: a.max_in_flight,
        request_timeout_ms: a.request_timeout_ms,
        max_request_bytes: a.max_request_bytes,
    })
}

fn consume(a: ConsumeArgs) -> Result<ConsumeOpts> {
    Ok(ConsumeOpts {
        group: a.group,
        from: match a.from.as_str() {
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            other => bail!("--from {other}: use earliest or latest"),
        },
        consumers: a.consumers.max(1),
        fetch_max_bytes: a.fetch_max_bytes,
        partition_max_bytes: a.partition_max_bytes,
        fetch_max_wait_ms: a.fetch_max_wait_ms,
    })
}

fn run(cli: Cli) -> Result<bool> {
    let job = match cli.command {
        Command::Produce {
            common: c,
            produce: p,
        } => Job::Produce(common(c)?, produce(p)?),
        Command::Consume {
            common: c,
            consume: o,
        } => Job::Consume(common(c)?, consume(o)?),
        Command::E2e {
            common: c,
            produce: p,
            consume: o,
            groups,
        } => Job::E2e(common(c)?, produce(p)?, consume(o)?, groups.max(1)),
        Command::Probe { bootstrap } => {
            let text = runner::block_on(move || async move {
                cluster::probe(&bootstrap, "caudal-loadgen").await
            })?;
            print!("{text}");
            return Ok(true);
        }
        Command::Verify(a) => return verify(a),
        Command::Check { history } => {
            let report = checker::check(&History::load(&history)?);
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(report.is_clean());
        }
        Command::Recovery { history, faults } => {
            let text = std::fs::read_to_string(&faults)
                .map_err(|e| anyhow!("reading {}: {e}", faults.display()))?;
            let faults: Vec<recovery::Fault> =
                serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", faults.display()))?;
            let report = recovery::recovery(&History::load(&history)?, &faults);
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(true);
        }
        Command::Reassign {
            bootstrap,
            topic,
            partition,
            replicas,
        } => {
            let replicas = replicas
                .split(',')
                .map(|b| b.trim().parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("--replicas {replicas}: {e}"))?;
            runner::block_on(move || async move {
                cluster::reassign(&bootstrap, "caudal-loadgen", &topic, partition, &replicas).await
            })?;
            return Ok(true);
        }
        Command::Summarize { dir } => {
            report::summarize(&dir)?;
            return Ok(true);
        }
        Command::Report { dirs, doc, plot } => {
            report::report(&dirs, &doc, &plot)?;
            return Ok(true);
        }
    };
    let result = runner::execute(job)?;
    // Failed requests, or e2e messages that never arrived, fail the command.
    let errors = result["errors"].as_u64().unwrap_or(0);
    let verified = result.get("verified").is_none_or(|v| v == true);
    Ok(errors == 0 && verified)
}

fn main() -> ExitCode {
    caudal_runtime::alloc_guard::retain_freed_memory();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("caudal-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert_eq!(parse_cpus("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
