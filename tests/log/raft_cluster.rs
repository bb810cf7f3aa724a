//! An in-process cluster of raft replicas over real partition logs: each node is a
//! directory with its own shard journal and one log per group, driven by one
//! `RaftShard`. Nodes crash (dropped without closing: what was not yet written is lost)
//! and restart from their directories. The network is the caller's: `round` returns
//! each node's outgoing messages, already through Caudal's wire framing.
//!
//! Shared by the raft tests and `benches/raft_append.rs` (included there by path).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use caudal::io::dma_writer::IoStats;
use caudal::log::{Journal, JournalOptions, Log, LogConfig, LogEnv};
use caudal::replica::raft_message::{decode, encode};
use caudal::replica::raft_shard::{GroupId, GroupSettings, RaftShard, Round};
use raft::eraftpb::Message;

/// One node: its journal, its logs and the shard that drives its groups.
pub struct SimNode {
    /// The node's id (1-based).
    pub id: u64,
    /// Its groups.
    pub shard: RaftShard,
    /// Its journal, when it has one.
    pub journal: Option<Rc<Journal>>,
}

impl SimNode {
    /// Crashes the node: its journal stops (the checkpoint step under way finishes) and
    /// everything is dropped unclosed, so what was not yet written is lost. In one
    /// process, work cancelled halfway still has file operations queued (a rename of
    /// `raft.state` on the executor's one blocking thread): they must land before the
    /// restart reads the files, as a real crash has them land before the next process
    /// starts or never. A no-op queued behind them waits for them.
    pub async fn crash(self) {
        if let Some(j) = &self.journal {
            j.halt().await;
        }
        drop(self);
        caudal::task::blocking(|| ()).await;
    }
}

/// Where node `id` keeps its data under `root`.
pub fn node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// Opens (or reopens) node `id` with `groups` groups of `voters`; with `journal`, its
/// logs share a shard journal (as a broker's do). `journal_file_bytes` small makes
/// checkpoints frequent.
pub async fn open_node(
    root: &Path,
    id: u64,
    voters: &[u64],
    groups: u64,
    journal_file_bytes: Option<u64>,
) -> SimNode {
    open_node_with(
        root,
        id,
        voters,
        groups,
        journal_file_bytes,
        LogConfig::default(),
    )
    .await
}

/// [`open_node`] with the logs' configuration (small segments make rolls frequent).
pub async fn open_node_with(
    root: &Path,
    id: u64,
    voters: &[u64],
    groups: u64,
    journal_file_bytes: Option<u64>,
    config: LogConfig,
) -> SimNode {
    let opts = NodeOptions {
        groups,
        journal_file_bytes,
        config,
        settings: test_settings(),
    };
    open_node_as(root, id, voters, opts).await
}

/// The raft settings of test nodes: elections within a few rounds.
pub fn test_settings() -> GroupSettings {
    GroupSettings {
        election_tick: 10,
        heartbeat_tick: 2,
        ..GroupSettings::default()
    }
}

/// How a node opens: see [`open_node`] and [`open_node_with`].
#[derive(Clone)]
pub struct NodeOptions {
    /// Groups 0..groups, each over its own log.
    pub groups: u64,
    /// The shard journal's file size, when the node has one.
    pub journal_file_bytes: Option<u64>,
    /// The logs' configuration.
    pub config: LogConfig,
    /// The groups' raft settings.
    pub settings: GroupSettings,
}

/// [`open_node_with`] with the groups' raft settings too.
pub async fn open_node_as(root: &Path, id: u64, voters: &[u64], opts: NodeOptions) -> SimNode {
    let NodeOptions {
        groups,
        journal_file_bytes,
        config,
        settings,
    } = opts;
    let dir = node_dir(root, id);
    let journal = match journal_file_bytes {
        Some(file_bytes) => Some(
            Journal::open(
                &dir.join("journal"),
                JournalOptions {
                    file_bytes,
                    ..JournalOptions::default()
                },
                Default::default(),
                Arc::new(IoStats::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("node {id}: journal: {e}")),
        ),
        None => None,
    };
    let env = LogEnv {
        journal: journal.clone(),
        ..LogEnv::new(16 << 20)
    };
    let mut shard = RaftShard::new(id, settings);
    for g in 0..groups {
        let (log, recovered) =
            Log::open(&dir.join(format!("part-{g}")), config.clone(), env.clone())
                .await
                .unwrap_or_else(|e| panic!("node {id} group {g}: {e}"));
        shard
            .open_group(GroupId(g), log, recovered, voters.to_vec(), None)
            .await
            .unwrap_or_else(|e| panic!("node {id} group {g}: {e}"));
    }
    if let Some(j) = &journal {
        j.recovery_done()
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
    SimNode { id, shard, journal }
}

/// Runs one round on `node` and returns its messages (each through the wire framing)
/// and the round's other results.
pub async fn round(node: &mut SimNode) -> (Vec<(GroupId, Message)>, Round) {
    let mut r = node.shard.round().await;
    let mut msgs = Vec::new();
    for (_, batch) in std::mem::take(&mut r.messages) {
        for (g, m) in batch {
            let m = decode(&encode(&m)).unwrap_or_else(|e| panic!("wire framing: {e}"));
            msgs.push((g, m));
        }
    }
    (msgs, r)
}
