//! Starting and stopping the shards: one glommio executor per shard, pinned to a CPU.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::task::shared_channel::{self, SharedReceiver, SharedSender};
use tracing::{info, warn};

use crate::config::Config;
use crate::executor::{Builder, Executor};
use crate::log::{FlushPolicy, Journal, JournalOptions, Log};
use crate::metadata::controller_log;
use crate::metadata::node_identity::NodeIdentity;
use crate::metadata::peer_disks::PeerDisks;
use crate::metadata::store::MetaStore;
use crate::metadata::ClusterMetadata;
use crate::metadata::ShardId;
use crate::task::StopSignal;

use super::cluster_tasks;
use super::controller::{ControllerLog, ControllerPlace, ControllerService, CONTROLLER_SHARD};
use super::controller_snapshot::ControllerSnapshots;
use super::mesh;
use super::producer_ids::ProducerIds;
use super::router::{receive_loop, Envelope, Router};
use super::state::{Shard, ShardStats};
use crate::cluster::leaders::LeaderTable;
use crate::cluster::liveness::PeerLiveness;
use crate::cluster::node::ShardRaft;
use crate::cluster::raft_driver::{GroupHandle, RaftDriver};
use crate::cluster::transport::{Identity, Transport};
use crate::group::coordinator::Coordinator;
use crate::replica::raft_shard::{GroupId, GroupSettings, RaftShard};

/// Pause after a failed accept (a full file table): the next accept is likely to fail too.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// How long shutdown waits for in-flight requests before closing the logs anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// A running broker: its shards' counters, and a way to stop it.
pub struct BrokerHandle {
    /// Per-shard counters, by shard.
    pub stats: Vec<Arc<ShardStats>>,
    /// Address each shard listens on, by shard.
    pub addrs: Vec<SocketAddr>,
    stop: Arc<StopSignal>,
    threads: Vec<Executor<()>>,
    metrics: Option<std::thread::JoinHandle<()>>,
}

impl BrokerHandle {
    /// Stops accepting, syncs every partition and waits for the shards to exit.
    pub fn shutdown(mut self) {
        self.stop.stop();
        self.join_all();
    }

    fn join_all(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(m) = self.metrics.take() {
            let _ = m.join();
        }
    }

    /// The signal that stops the broker, from any thread (for signal handlers).
    pub fn stop_signal(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }

    /// Waits for every shard to exit (after the stop flag is set).
    pub fn wait(mut self) {
        self.join_all();
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop.stop();
        self.join_all();
    }
}

/// CPUs this process may run on, from its affinity mask.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this process.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Moves partition directories that no topic in `meta` owns into `<data>/orphaned/`.
/// They are normally left by a crash between deleting a topic and deleting its files,
/// but could also be a topic whose metadata record was damaged: so they are kept for an
/// operator to inspect or delete, never destroyed.
fn set_aside_stray_partitions(data_dir: &Path, meta: &ClusterMetadata) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // `meta`, `orphaned` and internal logs such as `__offsets-shard-0` are not topic
        // partitions.
        if name == "meta" || name == "orphaned" || name.starts_with("__") || !entry.path().is_dir()
        {
            continue;
        }
        let Some((topic, part)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(part) = part.parse::<usize>() else {
            continue;
        };
        let known = meta
            .topics
            .get(topic)
            .is_some_and(|t| part < t.partitions.len());
        if !known {
            let target = data_dir
                .join("orphaned")
                .join(format!("{name}.{}", crate::clock::now_ms()));
            warn!(dir = %entry.path().display(), to = %target.display(), "partition directory of no known topic set aside");
            let moved = std::fs::create_dir_all(data_dir.join("orphaned"))
                .and_then(|_| std::fs::rename(entry.path(), &target));
            if let Err(e) = moved {
                warn!(dir = %entry.path().display(), error = %e, "could not set aside stray partition directory");
            }
        }
    }
}

/// Opens shard `id`'s journal when the durability policy uses one.
async fn open_journal(
    config: &Config,
    id: ShardId,
    stats: &ShardStats,
) -> std::io::Result<Option<Rc<Journal>>> {
    if !matches!(config.flush, FlushPolicy::Durable) || config.journal_file_bytes == 0 {
        return Ok(None);
    }
    let dir = config.data_dir.join(format!("__journal-shard-{id}"));
    let opts = JournalOptions {
        file_bytes: config.journal_file_bytes,
        ..JournalOptions::default()
    };
    Ok(Some(
        Journal::open(&dir, opts, Default::default(), stats.io.clone()).await?,
    ))
}

/// Checks what `start` would need, without starting: the config, that the data
/// directory can be created and written, and that every port is free.
pub fn check(config: &Config) -> std::io::Result<()> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir)?;
    let probe = config.data_dir.join(".caudal-write-check");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)?;
    for k in 0..config.shards {
        let addr = SocketAddr::new(config.listen_host, config.shard_port(k));
        std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    }
    if let Some(addr) = config.metrics_listen {
        std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
        })?;
    }
    Ok(())
}

/// Starts every shard and returns once all of them listen.
pub fn start(config: Config) -> std::io::Result<BrokerHandle> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir)?;
    let (store, meta) = MetaStore::open(&config.data_dir.join("meta"), config.node_id)?;
    if !config.peers.is_empty() && meta.brokers.is_empty() && !meta.topics.is_empty() {
        // A log with topics but no brokers is a single node's: its topics are not the
        // cluster's, and joining would lose track of them.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} holds the topics of a single node ({}); a node joins a cluster on an empty data directory (or keep serving them without --peers)",
                config.data_dir.display(),
                meta.topics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // A data directory belongs to one node of one cluster (Kafka's meta.properties).
    let identity = NodeIdentity::load_or_create(
        &config.data_dir.join("meta"),
        u64::try_from(config.node_id).unwrap_or(0),
        &config.cluster_id,
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    info!(node = identity.node, cluster = %identity.cluster_id, "data directory identity");
    set_aside_stray_partitions(&config.data_dir, &meta);
    let meta = Arc::new(meta);
    let config = Arc::new(config);
    let leaders = Arc::new(LeaderTable::default());
    let liveness = Arc::new(PeerLiveness::default());
    let peer_disks = PeerDisks::load(&config.data_dir.join("meta"))?;
    let n = config.shards;
    let cpus = if config.cpus.is_empty() {
        affinity_cpus()
    } else {
        config.cpus.clone()
    };

    // One channel per ordered pair of shards.
    let mut senders: Vec<Vec<Option<SharedSender<Envelope>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<Option<SharedReceiver<Envelope>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(1024);
                senders[from][to] = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }

    crate::executor::wake_guard::set_period(config.wake_guard_period);
    let stop = StopSignal::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let mut store = Some(store);
    let mut stats = Vec::new();
    let mut threads = Vec::new();
    for (k, (my_senders, my_receivers)) in senders.into_iter().zip(receivers).enumerate() {
        let cpu = cpus.get(k % cpus.len().max(1)).copied().unwrap_or(0);
        let shard_stats = Arc::new(ShardStats::new(
            Arc::new(crate::io::dma_writer::IoStats::default()),
            crate::log::tail_cache::CacheBudget::new(config.tail_cache_bytes),
        ));
        stats.push(shard_stats.clone());
        let args = ShardArgs {
            id: k,
            cpu,
            config: config.clone(),
            meta: meta.clone(),
            store: if k == CONTROLLER_SHARD {
                store.take()
            } else {
                None
            },
            senders: my_senders,
            receivers: my_receivers,
            stats: shard_stats,
            stop: stop.clone(),
            ready: ready_tx.clone(),
            disk_id: identity.disk_id,
            leaders: leaders.clone(),
            liveness: liveness.clone(),
            peer_disks: peer_disks.clone(),
        };
        let handle = Builder::new(&format!("shard-{k}"))
            .pin(cpu)
            .io_memory(config.io_memory_bytes)
            // How long tasks may run before the executor polls io_uring again: a busy shard
            // leaves completed socket and disk I/O unreaped for up to that long.
            .preempt_timer(config.preempt_timer)
            .spawn(move || shard_main(args))
            .map_err(|e| std::io::Error::other(format!("starting shard {k}: {e}")))?;
        threads.push(handle);
    }
    drop(ready_tx);
    let mut addrs = vec![None; n];
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(addr)) => {
                let k = usize::from(addr.port() - config.base_port);
                if let Some(slot) = addrs.get_mut(k) {
                    *slot = Some(addr);
                }
            }
            Ok(Err(e)) => {
                stop.stop();
                return Err(std::io::Error::other(e));
            }
            Err(_) => {
                stop.stop();
                return Err(std::io::Error::other("a shard exited during start-up"));
            }
        }
    }
    let metrics = match config.metrics_listen {
        Some(addr) => match crate::net::metrics_http::serve(addr, stats.clone(), stop.clone()) {
            Ok(t) => {
                info!(%addr, "serving metrics on /metrics");
                Some(t)
            }
            Err(e) => {
                stop.stop();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot serve metrics on {addr}: {e}"),
                ));
            }
        },
        None => None,
    };
    Ok(BrokerHandle {
        metrics,
        stats,
        addrs: addrs.into_iter().flatten().collect(),
        stop,
        threads,
    })
}

struct ShardArgs {
    id: usize,
    cpu: usize,
    config: Arc<Config>,
    meta: Arc<ClusterMetadata>,
    store: Option<MetaStore>,
    senders: Vec<Option<SharedSender<Envelope>>>,
    receivers: Vec<Option<SharedReceiver<Envelope>>>,
    stats: Arc<ShardStats>,
    stop: Arc<StopSignal>,
    ready: mpsc::Sender<Result<SocketAddr, String>>,
    /// The data directory's identity, told to peers.
    disk_id: [u8; 16],
    /// Leadership of the node's raft groups, shared by its shards.
    leaders: Arc<LeaderTable>,
    /// Which peers are up, shared by its shards.
    liveness: Arc<PeerLiveness>,
    /// The peers' disk identities, shared by its shards.
    peer_disks: Arc<PeerDisks>,
}

/// Starts shard `id`'s peer listener, connections and raft loop (a node of a cluster).
fn start_raft(
    config: &Config,
    id: ShardId,
    disk_id: [u8; 16],
    leaders: Arc<LeaderTable>,
    liveness: Arc<PeerLiveness>,
    disks: Arc<PeerDisks>,
) -> std::io::Result<ShardRaft> {
    let node = u64::try_from(config.node_id).unwrap_or(0);
    let me = config
        .peers
        .iter()
        .find(|p| p.node == node)
        .ok_or_else(|| std::io::Error::other("--peers does not name this node"))?;
    let port = u16::try_from(usize::from(me.port) + id)
        .map_err(|_| std::io::Error::other("peer port + shard exceeds 65535"))?;
    let addr = SocketAddr::new(config.listen_host, port);
    let listener = crate::net::listener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot take peer connections on {addr}: {e}"),
        )
    })?;
    let identity = Identity {
        cluster_id: config.cluster_id.clone(),
        node,
        shard: u16::try_from(id).unwrap_or(u16::MAX),
        disk_id,
    };
    let transport = Rc::new(Transport::start(
        identity,
        listener,
        &config.peers,
        Some(disks),
    )?);
    let driver = Rc::new(RaftDriver::start(
        RaftShard::new(node, GroupSettings::default()),
        transport.clone(),
        Duration::from_millis(config.replica_lag_time_max_ms),
    ));
    info!(shard = id, %addr, "taking peer connections");
    Ok(ShardRaft {
        driver,
        transport,
        leaders,
        liveness,
    })
}

/// On shard 0 of a controller voter: opens the controller log as raft group 0, hands it
/// to the controller service and starts applying it.
async fn open_controller_log(shard: &Rc<Shard>) -> Result<(), String> {
    let (Some(raft), Some(service)) = (shard.raft.as_ref(), shard.controller.as_ref()) else {
        return Ok(());
    };
    let voters = shard.config.controller_voters();
    if !voters.contains(&u64::try_from(shard.config.node_id).unwrap_or(0)) {
        return Ok(());
    }
    let dir = shard.config.data_dir.join(controller_log::LOG_DIR);
    let mut config =
        crate::metadata::topic_config::log_config(&Default::default(), shard.config.flush);
    // Small segments, cut once applied (see `shard::controller_snapshot`); never by time.
    config.segment_bytes = shard.config.metadata_log_segment_bytes.max(4096);
    config.retention_ms = -1;
    let (log, recovered) = Log::open(&dir, config, shard.env.clone())
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let group = GroupId(controller_log::CONTROLLER_GROUP);
    // The controller has no preferred leader: moving it back and forth would only make
    // clients retry their admin requests (Kafka's controller stays where elected too).
    raft.driver.assign(group, None, None);
    raft.driver
        .open_group(
            group,
            log.clone(),
            recovered,
            voters,
            Some(Rc::new(ControllerSnapshots {
                shard: Rc::downgrade(shard),
            })),
        )
        .await?;
    service.attach_log(ControllerLog {
        log,
        group: Rc::new(GroupHandle {
            driver: raft.driver.clone(),
            group,
        }),
    });
    shard.tasks.spawn(
        "controller: apply the controller log",
        cluster_tasks::apply_controller_log(shard.clone()),
    );
    Ok(())
}

async fn shard_main(args: ShardArgs) {
    let id = args.id;
    // Each end of a channel waits for the other to connect, so connect all at once.
    let sender_tasks: Vec<_> = args
        .senders
        .into_iter()
        .map(|s| s.map(|s| crate::task::spawn(s.connect())))
        .collect();
    let receiver_tasks: Vec<_> = args
        .receivers
        .into_iter()
        .enumerate()
        .filter_map(|(from, r)| r.map(|r| (from, crate::task::spawn(r.connect()))))
        .collect();
    let mut connected_senders = Vec::with_capacity(sender_tasks.len());
    for t in sender_tasks {
        connected_senders.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let mut connected_receivers = Vec::with_capacity(receiver_tasks.len());
    for (from, t) in receiver_tasks {
        connected_receivers.push((from, t.await));
    }
    let router = Rc::new(Router::new(args.config.node_id, id, connected_senders));
    let journal = match open_journal(&args.config, id, &args.stats).await {
        Ok(j) => j,
        Err(e) => {
            let _ = args
                .ready
                .send(Err(format!("shard {id}: opening its journal: {e}")));
            return;
        }
    };
    let raft = if args.config.peers.is_empty() {
        None
    } else {
        match start_raft(
            &args.config,
            id,
            args.disk_id,
            args.leaders.clone(),
            args.liveness.clone(),
            args.peer_disks.clone(),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                let _ = args.ready.send(Err(format!("shard {id}: {e}")));
                return;
            }
        }
    };
    let place = ControllerPlace {
        node: args.config.node_id,
        shards: args.config.shards,
        nodes: args
            .config
            .peers
            .iter()
            .map(|p| i32::try_from(p.node).unwrap_or(i32::MAX))
            .collect(),
        default_replication_factor: args.config.default_replication_factor,
    };
    let shard = Rc::new(Shard::new(
        id,
        args.config.clone(),
        args.stats,
        router.clone(),
        args.store
            .map(|store| ControllerService::new(store, (*args.meta).clone(), place)),
        raft,
        journal.clone(),
    ));
    if shard.raft.is_some() {
        shard.tasks.spawn(
            "raft: publish leadership",
            cluster_tasks::publish_leadership(shard.clone()),
        );
        shard.tasks.spawn(
            "groups: follow offsets partition leadership",
            super::group_coordinators::follow_offsets_leadership(shard.clone()),
        );
        if shard.controller.is_some() {
            shard.tasks.spawn(
                "cluster: exchange metadata",
                cluster_tasks::exchange_metadata(shard.clone()),
            );
        }
    }
    for (from, rx) in connected_receivers {
        let server = shard.clone();
        let router = router.clone();
        shard.tasks.spawn(
            format!("mesh: requests from shard {from}"),
            receive_loop(from, rx, router.clone(), move |from, req_id, request| {
                let shard = server.clone();
                let router = router.clone();
                async move {
                    let response = mesh::serve(shard, request).await;
                    router.reply(from, req_id, response).await;
                }
            }),
        );
    }
    if let Err(e) = shard.apply_metadata(args.meta).await {
        let _ = args.ready.send(Err(format!("shard {id}: {e}")));
        return;
    }
    // Before the journal's recovery ends: the controller log takes back its records too.
    if let Err(e) = open_controller_log(&shard).await {
        let _ = args
            .ready
            .send(Err(format!("shard {id}: opening the controller log: {e}")));
        return;
    }
    // A single node's groups hash to its shards; a cluster's live in `__consumer_offsets`
    // (`group_coordinators`).
    if args.config.peers.is_empty() {
        let offsets_dir = args.config.data_dir.join(format!("__offsets-shard-{id}"));
        let opened = Coordinator::open(
            &offsets_dir,
            shard.env.clone(),
            args.config.group.clone(),
            shard.stats.registry.committed.clone(),
        )
        .await;
        match opened {
            Ok(c) => {
                let _ = shard.coordinator.set(c);
            }
            Err(e) => {
                let _ = args.ready.send(Err(format!(
                    "shard {id}: opening {}: {e}",
                    offsets_dir.display()
                )));
                return;
            }
        }
    }
    // Every log of the shard has now taken back what the journal held for it.
    if let Some(j) = journal {
        if let Err(e) = j.recovery_done().await {
            let _ = args.ready.send(Err(format!("shard {id}: journal: {e}")));
            return;
        }
    }
    match ProducerIds::open(args.config.data_dir.join("meta"), args.config.node_id, id).await {
        Ok(p) => {
            let _ = shard.producer_ids.set(p);
        }
        Err(e) => {
            let _ = args.ready.send(Err(format!("shard {id}: {e}")));
            return;
        }
    }
    let addr = SocketAddr::new(args.config.listen_host, args.config.shard_port(id));
    let listener = match crate::net::listener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = args
                .ready
                .send(Err(format!("shard {id}: cannot listen on {addr}: {e}")));
            return;
        }
    };
    let clean = shard.stats.opened_clean.load(Ordering::Relaxed);
    let scanned = shard.stats.opened_scanned.load(Ordering::Relaxed);
    if clean + scanned > 0 {
        info!(
            shard = id,
            clean, scanned, "partitions recovered (clean: after a clean shutdown, no scan)"
        );
    }
    info!(shard = id, core = args.cpu, %addr, "shard listening");
    println!(
        "shard {id} on core {} listening on {addr} as broker {}",
        args.cpu,
        args.config.broker_id(id)
    );
    let _ = args.ready.send(Ok(addr));

    let retention_shard = shard.clone();
    shard.tasks.spawn("retention", async move {
        loop {
            crate::task::sleep(Duration::from_millis(
                retention_shard.config.retention_check_ms,
            ))
            .await;
            retention_shard.apply_retention().await;
        }
    });

    let stop = args.stop;
    // Whether the last connection was closed unserved, so the log says it once a spell.
    let mut refusing = false;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.stopped().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                if !shard.serves_clients() {
                    if !refusing {
                        info!(
                            shard = id,
                            "closing client connections until this node is registered with the cluster's controller"
                        );
                    }
                    refusing = true;
                    shard
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                if refusing {
                    info!(
                        shard = id,
                        "registered with the controller: serving clients"
                    );
                    refusing = false;
                }
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
                shard.tasks.spawn(
                    format!("connection from {peer}"),
                    crate::net::connection::serve(shard.clone(), stream),
                );
            }
            Some(Err(e)) => {
                warn!(shard = id, error = %e, "accept failed");
                crate::task::sleep(ACCEPT_RETRY).await;
            }
        }
    }
    // Stop taking requests, let the ones in flight finish (bounded), then sync and close.
    drop(listener);
    shard.begin_shutdown();
    let drain_deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while (shard.open_connections() > 0 || shard.requests_in_flight() > 0)
        && std::time::Instant::now() < drain_deadline
    {
        crate::task::sleep(Duration::from_millis(5)).await;
    }
    if shard.requests_in_flight() > 0 {
        warn!(
            shard = id,
            requests = shard.requests_in_flight(),
            "requests still in flight at shutdown"
        );
    }
    shard.close_all().await;
    let left = shard.tasks.running();
    if !left.is_empty() {
        info!(shard = id, tasks = ?left, "stopping the shard's tasks");
    }
    shard.tasks.stop_all();
    info!(shard = id, "shard stopped");
}
