//! Every broker setting, declared once in the `settings!` table at the end of this file.
//!
//! One entry gives a setting's name (the `--flag`, with dashes, and the TOML key), its
//! type, its default, its help text, and the `Config` fields it fills. From the table
//! come `Flags` (the clap arguments), `FileConfig` (the TOML file), `Settings` (command
//! line over file over default) and `Config` (what the shards run with).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, FlushPolicy, GroupSettings, Host, Peer, PeerList};

/// Generates the settings types from one table.
///
/// The table starts with `host;`, the name the defaults below use for the `Host`, then
/// has one entry per setting, in `--help` order:
///
/// ```text
/// /// Help text, a single paragraph (clap's rules: lines joined, a final period dropped).
/// #[arg(...)]           // optional, any number: extra clap attributes for the flag
/// #[file(string)]       // optional: the TOML value is a string, parsed like the flag
/// #[shown("text")]      // optional: how --help shows the default, instead of its Display
/// name: Type = default  // `= default` optional: without it the value is an Option
///     => field: FieldType = expression, ...;  // `=> ...` optional: Config fields it fills
/// ```
///
/// A default may use `host` and the settings before it; a `Config` field's expression may
/// use every setting, by name. The table ends with `also { ... }`: `Config` fields that
/// several settings fill together.
macro_rules! settings {
    // What --help shows as the default, if anything.
    (@shown [$shown:literal] [$($default:expr)?]) => {
        Some(String::from($shown))
    };
    (@shown [] [$default:expr]) => {
        Some(($default).to_string())
    };
    (@shown [] []) => {
        None
    };
    // A setting's type in `Settings`: without a default it may stay unset.
    (@value_type $ty:ty) => { Option<$ty> };
    (@value_type $ty:ty, $default:expr) => { $ty };
    (@or_default $given:expr) => { $given };
    (@or_default $given:expr, $default:expr) => {
        match $given {
            Some(value) => value,
            None => $default,
        }
    };
    // A setting's type in the TOML file.
    (@file_type $ty:ty) => { Option<$ty> };
    (@file_type $ty:ty, string) => { Option<String> };
    (@from_file $value:expr, $key:expr) => { $value };
    (@from_file $value:expr, $key:expr, string) => {
        match $value {
            Some(text) => Some(text.parse().map_err(|e| bad($key, &text, e))?),
            None => None,
        }
    };

    (
        $host:ident;
        $(
            $(#[doc = $doc:literal])+
            $(#[arg($($clap:tt)+)])*
            $(#[file($file:ident)])?
            $(#[shown($shown:literal)])?
            $name:ident: $ty:ty $(= $default:expr)?
            $(=> $($(#[doc = $field_doc:literal])* $field:ident: $field_ty:ty = $field_value:expr),+)?;
        )+
        also {
            $($(#[doc = $also_doc:literal])+ $also:ident: $also_ty:ty = $also_value:expr),* $(,)?
        }
    ) => {
        /// The settings as given on the command line; flatten into the binary's arguments.
        #[derive(clap::Args, Debug, Default)]
        pub struct Flags {
            $(
                #[arg(long, help = help_text(
                    &[$($doc),+],
                    settings!(@shown [$($shown)?] [$($default)?]),
                ))]
                $(#[arg($($clap)+)])*
                $name: Option<$ty>,
            )+
        }

        /// Settings as read from the TOML file; `None` means "not set here".
        #[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(
                $(#[doc = $doc])+
                pub $name: settings!(@file_type $ty $(, $file)?),
            )+
        }

        /// Every setting's value: from the command line, else the file, else its default.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                pub $name: settings!(@value_type $ty $(, $default)?),
            )+
        }

        /// Settings given on the command line or in the file, not yet defaulted.
        #[derive(Default)]
        struct Given {
            $($name: Option<$ty>,)+
        }

        impl Given {
            /// The command line wins over the file; a file value is only parsed when the
            /// command line leaves it in use.
            fn merge(flags: Flags, file: FileConfig) -> Result<Given, ConfigError> {
                Ok(Given {
                    $(
                        $name: match flags.$name {
                            Some(value) => Some(value),
                            None => settings!(@from_file file.$name, stringify!($name) $(, $file)?),
                        },
                    )+
                })
            }
        }

        impl Settings {
            /// Command line over file over defaults.
            pub fn resolve(
                flags: Flags,
                file: FileConfig,
                host: &Host,
            ) -> Result<Settings, ConfigError> {
                Ok(Settings::complete(Given::merge(flags, file)?, host))
            }

            /// Every setting at its default.
            pub fn defaults(host: &Host) -> Settings {
                Settings::complete(Given::default(), host)
            }

            // In table order, so that a default can use the settings before it.
            fn complete(given: Given, $host: &Host) -> Settings {
                let Given { $($name),+ } = given;
                $(let $name = settings!(@or_default $name $(, $default)?);)+
                Settings { $($name),+ }
            }

            /// The `Config` these settings describe; not yet validated.
            // Settings that fill no `Config` field (the log level) are bound here too.
            #[allow(unused_variables)]
            pub fn config(&self) -> Config {
                let Settings { $($name),+ } = self.clone();
                Config {
                    $($($($field: $field_value,)+)?)+
                    $($also: $also_value,)*
                }
            }
        }

        /// Everything a broker process needs to start.
        #[derive(Debug, Clone)]
        pub struct Config {
            $($($(
                $(#[doc = $field_doc])*
                #[doc = concat!("From the setting [`", stringify!($name), "`](Settings::", stringify!($name), ").")]
                pub $field: $field_ty,
            )+)?)+
            $(
                $(#[doc = $also_doc])+
                pub $also: $also_ty,
            )*
        }
    };
}

/// One flag's help: its doc lines as clap formats a one-paragraph doc comment, then the
/// default.
fn help_text(doc: &[&str], default: Option<String>) -> String {
    let text = doc
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ");
    match default {
        Some(default) => format!("{text} [default: {default}]"),
        None => match text.strip_suffix('.') {
            Some(cut) if !cut.ends_with('.') => cut.to_string(),
            _ => text,
        },
    }
}

/// A file value that does not parse, named by its key.
fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key} = {value:?}: {why}"))
}

settings! {
    host;

    /// Directory for all data (metadata log and partition logs); created if missing.
    #[shown("./data")]
    data_dir: PathBuf = PathBuf::from("./data")
        => data_dir: PathBuf = data_dir;

    /// Address of shard 0; shard k listens on the same host at PORT + k.
    #[file(string)]
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9092))
        => /// Address every shard listens on.
           listen_host: IpAddr = listen.ip(),
           /// Port of shard 0; shard k listens on `base_port + k`.
           base_port: u16 = listen.port();

    /// Number of shards (one executor pinned per CPU).
    #[shown("one per CPU the process may run on, see `taskset`")]
    shards: usize
        => shards: usize = shards.unwrap_or(cpus.len().max(1));

    /// CPUs to pin shards to, comma-separated (e.g. `2,3`).
    #[arg(value_delimiter = ',')]
    #[shown("the affinity mask")]
    cpus: Vec<usize> = (host.cpus)()
        => /// In shard order; empty means the process's affinity mask.
           cpus: Vec<usize> = cpus;

    /// Host name given to clients in Metadata.
    #[shown("the listen address")]
    advertised_host: String = listen.ip().to_string()
        => advertised_host: String = advertised_host;

    /// Node id; each shard's broker id is NODE_ID * 1024 + shard.
    node_id: i32 = 0
        => node_id: i32 = node_id;

    /// Every node of the cluster, this one too, as `ID@HOST:PORT,...`; shard k of a node
    /// takes inter-node traffic on PORT + k.
    #[file(string)]
    #[shown("none: a single node")]
    peers: PeerList
        => peers: Vec<Peer> = peers.map(|p| p.0).unwrap_or_default();

    /// Nodes that keep the controller log (its raft voters), comma-separated ids of
    /// `--peers`; every other node follows the metadata they decide.
    #[arg(value_delimiter = ',')]
    #[shown("the first three nodes of --peers (all of them when fewer)")]
    controller_voters: Vec<u64> = Vec::new()
        => /// As set; `Config::controller_voters` applies the default.
           controller_voters_set: Vec<u64> = controller_voters;

    /// Size of a segment of the controller log, in bytes (Kafka's
    /// `metadata.log.segment.bytes`): once a segment is sealed and applied, the log
    /// before it is cut, and a voter that was away longer gets a snapshot.
    metadata_log_segment_bytes: u64 = 1 << 20
        => metadata_log_segment_bytes: u64 = metadata_log_segment_bytes;

    /// Name of the cluster: a node refuses connections from peers of another.
    cluster_id: String = String::from("caudal")
        => cluster_id: String = cluster_id;

    /// Replicas of a topic created without a replication factor (CreateTopics with -1,
    /// auto-created topics).
    default_replication_factor: i16 = 1
        => default_replication_factor: i16 = default_replication_factor;

    /// How long a replica may lag its partition's leader and still count as in sync
    /// (replica.lag.time.max.ms), in milliseconds.
    replica_lag_time_max_ms: u64 = 30_000
        => /// Kafka's `replica.lag.time.max.ms`.
           replica_lag_time_max_ms: u64 = replica_lag_time_max_ms;

    /// Partitions of the cluster's internal topic of committed offsets,
    /// `__consumer_offsets` (offsets.topic.num.partitions); read when the controller
    /// creates it.
    offsets_topic_num_partitions: i32 = 50
        => offsets_topic_num_partitions: i32 = offsets_topic_num_partitions;

    /// Replicas of each `__consumer_offsets` partition (offsets.topic.replication.factor),
    /// at most the cluster's node count.
    offsets_topic_replication_factor: i16 = 3
        => offsets_topic_replication_factor: i16 = offsets_topic_replication_factor;

    /// Partitions of auto-created topics (and of CreateTopics with -1).
    default_partitions: i32 = 1
        => default_partitions: i32 = default_partitions;

    /// Create unknown topics when clients ask for their metadata (on Metadata requests
    /// that allow it).
    // The command line can only turn it off, with a flag that takes no value.
    #[arg(long = "no-auto-create-topics", num_args = 0, default_missing_value = "false")]
    #[arg(help = "Do not create unknown topics when clients ask for their metadata")]
    auto_create_topics: bool = true
        => auto_create_topics: bool = auto_create_topics;

    /// Kafka-like durability: acknowledge produces once written, fsync every MS
    /// milliseconds.
    #[arg(value_name = "MS")]
    #[shown("fsync before every acknowledgement, with group commit")]
    flush_interval_ms: u64
        => /// Default durability of produce requests with acks != 0.
           flush: FlushPolicy = match flush_interval_ms {
               Some(ms) => FlushPolicy::Interval(Duration::from_millis(ms)),
               None => FlushPolicy::Durable,
           };

    /// Size of each file of a shard's journal, in bytes: under the default durability,
    /// small appends of all the shard's partitions are made durable there with one write
    /// per round; 0 turns it off (each partition's segment write is durable itself).
    #[shown("64 MiB")]
    journal_file_bytes: u64 = 64 << 20
        => /// 0 when there is no journal.
           journal_file_bytes: u64 = journal_file_bytes;

    /// Largest request accepted, in bytes (socket.request.max.bytes).
    #[shown("100 MiB")]
    socket_request_max_bytes: usize = 100 << 20
        => /// Checked before the request is buffered; at least 1 KiB.
           socket_request_max_bytes: usize = socket_request_max_bytes;

    /// Bytes of requests each shard holds in memory before it stops reading sockets.
    #[shown("256 MiB")]
    request_budget_bytes: usize = 256 << 20
        => /// One request of up to `socket_request_max_bytes` is always admitted alone.
           request_budget_bytes: usize = request_budget_bytes;

    /// Tail cache per shard, in bytes.
    #[shown("256 MiB")]
    tail_cache_bytes: usize = 256 << 20
        => tail_cache_bytes: usize = tail_cache_bytes;

    /// Memory registered with io_uring per shard, in bytes (needs `ulimit -l` to allow
    /// it).
    #[shown("2 MiB")]
    io_memory_bytes: usize = 2 << 20
        => io_memory_bytes: usize = io_memory_bytes;

    /// How often each shard applies retention, in milliseconds.
    retention_check_ms: u64 = 300_000
        => /// Kafka's `log.retention.check.interval.ms`; at least 1.
           retention_check_ms: u64 = retention_check_ms.max(1);

    /// Delay before the first rebalance of an empty consumer group, in milliseconds
    /// (group.initial.rebalance.delay.ms).
    group_initial_rebalance_delay_ms: u64 =
        GroupSettings::default().initial_rebalance_delay.as_millis() as u64;

    /// Smallest consumer session timeout accepted, in milliseconds.
    group_min_session_timeout_ms: u64 =
        GroupSettings::default().min_session_timeout.as_millis() as u64;

    /// Close connections that send no complete request for this long, in milliseconds
    /// (connections.max.idle.ms).
    connections_max_idle_ms: u64 = 600_000
        => /// At least 1 ms.
           connections_max_idle: Duration = Duration::from_millis(connections_max_idle_ms.max(1));

    /// How long a shard runs tasks before polling for completed I/O again, in
    /// microseconds: lower favours latency, higher throughput; much below 10000 makes
    /// glommio's park-with-ready-tasks defect frequent, each time costing up to one wake
    /// guard period (docs/operations.md).
    // 100 ms is glommio's own; the timer is never under 10 µs.
    preempt_timer_us: u64 = 100_000
        => preempt_timer: Duration = Duration::from_micros(preempt_timer_us.max(10));

    /// How often the wake guard wakes every shard, in microseconds: the longest a shard
    /// can sleep with work ready (glommio 0.9's park defect) and what an idle shard pays
    /// in wake-ups. 0 turns it off, which brings the hang back: only for measuring its
    /// cost (docs/architecture.md).
    wake_guard_us: u64 = crate::executor::wake_guard::DEFAULT_PERIOD.as_micros() as u64
        => /// See `crate::executor::wake_guard`.
           wake_guard_period: Duration = Duration::from_micros(wake_guard_us);

    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9644).
    #[file(string)]
    #[shown("off")]
    metrics_listen: SocketAddr
        => metrics_listen: Option<SocketAddr> = metrics_listen;

    /// Log level or filter (error, warn, info, debug, trace; or a RUST_LOG-style
    /// filter).
    #[shown("$RUST_LOG, else info")]
    log_level: String;

    also {
        /// Consumer-group coordinator settings: the flags set two of them.
        group: GroupSettings = GroupSettings {
            initial_rebalance_delay: Duration::from_millis(group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(group_min_session_timeout_ms),
            ..GroupSettings::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The settings alone, as the binary flattens them into its arguments.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn flags(args: &[&str]) -> Flags {
        Cli::try_parse_from(std::iter::once("caudal").chain(args.iter().copied()))
            .unwrap()
            .flags
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn resolve(args: &[&str], toml: &str) -> Settings {
        let host = Host {
            cpus: || vec![4, 5, 6],
        };
        Settings::resolve(flags(args), file(toml), &host).unwrap()
    }

    #[test]
    fn the_command_line_overrides_the_file_which_overrides_the_default() {
        let toml = "shards = 3\nlisten = \"10.0.0.1:7000\"\nflush_interval_ms = 250\n\
                    auto_create_topics = false\ndata_dir = \"/from/file\"\n";
        let cli = [
            "--shards",
            "2",
            "--listen",
            "10.0.0.2:8000",
            "--flush-interval-ms",
            "5",
            "--data-dir",
            "/from/cli",
        ];

        let neither = resolve(&[], "").config();
        assert_eq!(neither.shards, 3, "one per CPU of the host");
        assert_eq!(
            (neither.listen_host.to_string(), neither.base_port),
            ("127.0.0.1".into(), 9092)
        );
        assert_eq!(neither.flush, FlushPolicy::Durable);
        assert!(neither.auto_create_topics);
        assert_eq!(neither.data_dir, PathBuf::from("./data"));

        let file_only = resolve(&[], toml).config();
        assert_eq!(file_only.shards, 3);
        assert_eq!(
            (file_only.listen_host.to_string(), file_only.base_port),
            ("10.0.0.1".into(), 7000)
        );
        assert_eq!(
            file_only.flush,
            FlushPolicy::Interval(Duration::from_millis(250))
        );
        assert!(!file_only.auto_create_topics);
        assert_eq!(file_only.data_dir, PathBuf::from("/from/file"));

        let both = resolve(&cli, toml).config();
        assert_eq!(both.shards, 2);
        assert_eq!(
            (both.listen_host.to_string(), both.base_port),
            ("10.0.0.2".into(), 8000)
        );
        assert_eq!(both.flush, FlushPolicy::Interval(Duration::from_millis(5)));
        assert_eq!(both.data_dir, PathBuf::from("/from/cli"));
        // The flag can only turn auto creation off: it wins over a file that turns it on.
        let off = resolve(&["--no-auto-create-topics"], "auto_create_topics = true\n");
        assert!(!off.config().auto_create_topics);
        let on = resolve(&[], "auto_create_topics = true\n");
        assert!(on.config().auto_create_topics);
    }

    #[test]
    fn defaults_that_follow_other_settings_follow_them_from_any_source() {
        let s = resolve(&["--cpus", "1,2"], "listen = \"10.0.0.9:9000\"\n");
        let c = s.config();
        assert_eq!(c.shards, 2, "one shard per listed CPU");
        assert_eq!(c.advertised_host, "10.0.0.9");
        assert_eq!(s.log_level, None);
    }

    #[test]
    fn a_bad_file_value_is_refused_by_key_unless_the_command_line_replaces_it() {
        let host = Host { cpus: Vec::new };
        let e =
            Settings::resolve(flags(&[]), file("metrics_listen = \"nope\"\n"), &host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: metrics_listen = \"nope\": invalid socket address syntax"
        );
        let s = Settings::resolve(
            flags(&["--metrics-listen", "127.0.0.1:9644"]),
            file("metrics_listen = \"nope\"\n"),
            &host,
        )
        .unwrap();
        assert_eq!(
            s.config().metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9644)))
        );
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(
            (c.listen_host, c.base_port),
            (IpAddr::from([127, 0, 0, 1]), 9092)
        );
        assert_eq!((c.shards, c.cpus.len()), (1, 0));
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!((c.node_id, c.default_partitions), (0, 1));
        assert!(c.auto_create_topics);
        assert_eq!(c.flush, FlushPolicy::Durable);
        assert_eq!(c.socket_request_max_bytes, 100 << 20);
        assert_eq!(
            (c.request_budget_bytes, c.tail_cache_bytes),
            (256 << 20, 256 << 20)
        );
        assert_eq!(c.io_memory_bytes, 2 << 20);
        assert_eq!(c.retention_check_ms, 300_000);
        assert_eq!(c.connections_max_idle, Duration::from_secs(600));
        assert_eq!(c.preempt_timer, Duration::from_millis(100));
        assert_eq!(c.wake_guard_period, Duration::from_millis(10));
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.group.initial_rebalance_delay, Duration::from_secs(3));
        assert_eq!(c.group.min_session_timeout, Duration::from_secs(6));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_cluster_node_is_named_among_its_peers_from_flags_or_file() {
        let peers = "1@10.0.0.1:9300,2@10.0.0.2:9300,3@10.0.0.3:9300";
        let c = resolve(&["--node-id", "2", "--peers", peers], "").config();
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[1].shard_addr(1), "10.0.0.2:9301");
        assert_eq!(c.cluster_id, "caudal");
        assert!(c.validate().is_ok());
        let from_file = resolve(
            &[],
            &format!("node_id = 3\npeers = \"{peers}\"\ndefault_replication_factor = 3\n"),
        )
        .config();
        assert_eq!(
            (from_file.node_id, from_file.default_replication_factor),
            (3, 3)
        );
        assert!(from_file.validate().is_ok());
        for (args, says) in [
            (
                vec!["--node-id", "4", "--peers", peers],
                "does not name this node",
            ),
            (vec!["--peers", peers], "--node-id 1 or above"),
            (vec!["--default-replication-factor", "2"], "must be 1..=1"),
        ] {
            let err = resolve(&args, "").config().validate().unwrap_err();
            assert!(err.to_string().contains(says), "{args:?}: {err}");
        }
        let host = Host { cpus: || vec![0] };
        let err = Settings::resolve(flags(&[]), file("peers = \"1@a\"\n"), &host).unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
    }

    #[test]
    fn help_shows_each_declared_default() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd.render_help().to_string();
        for shown in [
            "created if missing. [default: ./data]",
            "at PORT + k. [default: 127.0.0.1:9092]",
            "in milliseconds. [default: 300000]",
            "(group.initial.rebalance.delay.ms). [default: 3000]",
            "in milliseconds. [default: 6000]",
            "(docs/architecture.md). [default: 10000]",
            "(docs/operations.md). [default: 100000]",
            "ask for their metadata\n",
        ] {
            assert!(help.contains(shown), "{shown:?} not in:\n{help}");
        }
    }
}
