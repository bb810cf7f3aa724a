//! Opening a partition's storage: listing its segments, trusting a clean shutdown's
//! marker or scanning the active segment, loading the epoch table, and starting the
//! interval flusher when the flush policy has one.

use std::cell::RefCell;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::Duration;

use tracing::warn;

use crate::task::{Semaphore, TaskSet};

use super::config::{FlushPolicy, LogConfig};
use super::epochs::EpochTable;
use super::error::LogResult;
use super::format::parse_segment_name;
use super::replay::recover_state;
use super::segment::Segment;
use super::storage::{segment_writer_options, Log, LogEnv, LogState, Recovered};
use super::tail_cache::TailCache;
use super::Offset;

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it from whatever a crash
    /// left behind; also returns what the replica above needs to rebuild its state.
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        env: LogEnv,
    ) -> LogResult<(Rc<Log>, Recovered)> {
        let listing = dir.to_path_buf();
        // Creating and listing the directory are blocking calls: off the shard's thread.
        let mut bases = crate::task::blocking(move || -> std::io::Result<Vec<Offset>> {
            std::fs::create_dir_all(&listing)?;
            let mut bases = Vec::new();
            for entry in std::fs::read_dir(&listing)? {
                if let Some(base) = entry?.file_name().to_str().and_then(parse_segment_name) {
                    bases.push(base);
                }
            }
            Ok(bases)
        })
        .await?;
        crate::io::device_probe::ensure_probed(dir).await?;
        bases.sort_unstable();
        let interval = config.index_interval_bytes;
        let writer = segment_writer_options(&env, &config);
        let marker = super::clean_marker::read(dir).await?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut active_batches = Vec::new();
        let mut scanned = Vec::new();
        let mut clean_snapshot = None;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(&next) = bases.get(i + 1) {
                segments.push(Segment::open_sealed(dir, base, next, interval).await?);
                continue;
            }
            if let Some(m) = marker.as_ref().filter(|m| m.active_base == base) {
                let seg =
                    Segment::open_clean(dir, base, m.state, interval, writer, env.stats.clone())
                        .await?;
                if let Some(seg) = seg {
                    segments.push(seg);
                    clean_snapshot = Some(m.replica_state.clone());
                    continue;
                }
            }
            let (seg, batches, epochs) =
                Segment::recover_active(dir, base, interval, writer, env.stats.clone()).await?;
            segments.push(seg);
            active_batches = batches;
            scanned = epochs;
        }
        super::clean_marker::remove(dir).await?;
        let opened_clean = clean_snapshot.is_some();
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, interval, writer, env.stats.clone()).await?);
        }
        let start = segments.first().map_or(0, |s| s.base_offset);
        let next = segments.last().map_or(0, |s| s.next_offset);
        let epochs = EpochTable::open(dir, start, next, &scanned).await?;
        let recovered = match clean_snapshot {
            Some(snapshot) => Recovered {
                snapshot: Some(snapshot),
                snapshot_offset: next,
                replay: Vec::new(),
            },
            None => recover_state(dir, &segments, active_batches, interval).await?,
        };
        let flush = config.flush;
        let journal_key = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = Rc::new_cyclic(|me: &Weak<Log>| Log {
            me: me.clone(),
            journal_key,
            raft_records: RefCell::new(Vec::new()),
            raft_checkpoint: RefCell::new(None),
            reopened: RefCell::new(None),
            dir: dir.to_path_buf(),
            config: RefCell::new(config),
            state: RefCell::new(LogState {
                segments,
                tail: TailCache::new(env.cache.clone()),
                failed: false,
                epochs,
                direct_end: 0,
            }),
            env,
            append_lock: Semaphore::new(1),
            opened_clean,
            prefetch: RefCell::new(None),
            tasks: TaskSet::new(format!("log {}", dir.display())),
        });
        // What the shard's journal holds beyond the segments (acknowledged appends not yet
        // synced there when the last run stopped) goes back in before anyone reads.
        let journaled = log
            .env
            .journal
            .as_ref()
            .map(|j| j.take_recovered(&log.journal_key))
            .unwrap_or_default();
        let recovered = if !journaled.is_empty() && log.apply_journal(journaled).await? {
            log.recover_current().await?
        } else {
            recovered
        };
        if let FlushPolicy::Interval(every) = flush {
            log.tasks.spawn(
                "interval flush",
                interval_flusher(Rc::downgrade(&log), every),
            );
        }
        Ok((log, recovered))
    }
}

/// Syncs the log every `every` (the `Interval` flush policy).
async fn interval_flusher(log: Weak<Log>, every: Duration) {
    loop {
        crate::task::sleep(every).await;
        let Some(log) = log.upgrade() else { return };
        if let Err(e) = log.flush().await {
            warn!(dir = %log.dir.display(), error = %e, "periodic flush failed");
            log.state.borrow_mut().failed = true;
        }
    }
}
