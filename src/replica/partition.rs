//! One partition as its replica serves it: leader appends with group commit, reads up to
//! the high watermark, lookups by timestamp, retention, truncation, close.
//!
//! A replicated partition (one with a [`ReplicationGroup`]) leaves all of that to its
//! raft group: appends are proposals, acknowledged as the request's acks ask; the high
//! watermark is the group's commit index; the leader epoch is the group's term; the
//! idempotent producers' state is the group's (`raft_producers`), kept in the log.
//!
//! Durability contract: `append` resolves according to the [`FlushPolicy`]. Under
//! `Durable`, the batch and every batch before it are on disk and synced when it
//! resolves. The *high watermark* is the end of what readers may see: under `Durable` it
//! only covers synced batches, so a consumer never sees a record that a crash could take
//! back; under `Interval` it is the log end, as in Kafka.
//!
//! A `Partition` lives on one shard and is used through `Rc` by that shard's tasks only.
//! Offsets are assigned and bytes buffered in one synchronous step while the log's
//! append slot is held, so file order is offset order; waiting for the disk happens after
//! it is released, so that concurrent appends share each fdatasync.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;
use tracing::warn;

use crate::log::{
    FlushPolicy, Log, LogConfig, LogEnv, LogError, LogResult, Offset, ReadResult, Recovered,
};
use crate::notify::Notify;
use crate::protocol::record_batch::{
    set_offset_and_epoch, validate_produced_batch, BatchError, BatchHeader,
};

use super::error::ReplicaResult;
use super::producer_state::{ProducerStateTable, SequenceCheck};
use super::raft_shard::Acks;
use super::replication::{GroupView, ReplicationGroup};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset given to the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// First offset still in the log.
    pub log_start_offset: Offset,
    /// True when this was a producer's retry of a batch already in the log: nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
}

struct ReplicaState {
    leader_epoch: i32,
    high_watermark: Offset,
    /// Idempotent-producer state, as of the log end.
    producers: ProducerStateTable,
}

/// A partition's replica. See the module docs for its contract.
pub struct Partition {
    log: Rc<Log>,
    state: RefCell<ReplicaState>,
    /// Woken whenever the high watermark moves (the shard's long-polling fetches wait
    /// on it).
    readers: Rc<Notify>,
    /// The raft group of a replicated partition (`None`: the only replica).
    raft: Option<Rc<dyn ReplicationGroup>>,
}

/// Rebuilds the producer state from what the log recovered.
fn rebuild(dir: &Path, recovered: Recovered) -> ProducerStateTable {
    let mut table = match recovered.snapshot.as_deref() {
        Some(bytes) => ProducerStateTable::from_bytes(bytes).unwrap_or_else(|| {
            warn!(dir = %dir.display(), offset = recovered.snapshot_offset, "damaged producer-state snapshot; idempotent producers restart their sequences");
            ProducerStateTable::default()
        }),
        None => ProducerStateTable::default(),
    };
    for h in &recovered.replay {
        table.record(h, h.base_offset);
    }
    table
}

impl Partition {
    /// Opens (creating if needed) the partition in `dir`; `readers` is woken whenever
    /// its high watermark moves.
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        env: LogEnv,
        readers: Rc<Notify>,
    ) -> LogResult<Rc<Partition>> {
        let (log, recovered) = Log::open(dir, config, env).await?;
        let producers = rebuild(dir, recovered);
        let next = log.next_offset();
        Ok(Rc::new(Partition {
            state: RefCell::new(ReplicaState {
                leader_epoch: log.last_epoch().unwrap_or(0),
                high_watermark: next,
                producers,
            }),
            log,
            readers,
            raft: None,
        }))
    }

    /// A replicated partition over `log`, whose raft group `group` already opened it.
    pub fn replicated(
        log: Rc<Log>,
        group: Rc<dyn ReplicationGroup>,
        readers: Rc<Notify>,
    ) -> Rc<Partition> {
        Rc::new(Partition {
            state: RefCell::new(ReplicaState {
                leader_epoch: 0,
                high_watermark: 0,
                producers: ProducerStateTable::default(),
            }),
            log,
            readers,
            raft: Some(group),
        })
    }

    /// True when a raft group keeps this partition's replicas.
    pub fn is_replicated(&self) -> bool {
        self.raft.is_some()
    }

    /// The raft group's state, for a replicated partition that has had a round.
    pub fn view(&self) -> Option<GroupView> {
        self.raft.as_ref().and_then(|g| g.view())
    }

    /// True when this replica takes appends: always for the only replica, and for a
    /// replicated partition when its raft group has it lead.
    pub fn is_leader(&self) -> bool {
        match &self.raft {
            None => true,
            Some(g) => g.view().is_some_and(|v| v.is_leader),
        }
    }

    /// Replicas in sync with the leader, as `min.insync.replicas` counts them.
    pub fn in_sync_replicas(&self) -> usize {
        match &self.raft {
            None => 1,
            Some(g) => g.view().map_or(0, |v| v.in_sync.len()),
        }
    }

    /// The storage under this replica.
    pub fn log(&self) -> &Rc<Log> {
        &self.log
    }

    /// True when the log was opened after a clean shutdown, without scanning.
    pub fn opened_clean(&self) -> bool {
        self.log.opened_clean()
    }

    /// Directory holding the segments.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// Current settings.
    pub fn config(&self) -> LogConfig {
        self.log.config()
    }

    /// Replaces the settings (retention and roll limits take effect at the next check).
    pub fn set_config(&self, config: LogConfig) {
        self.log.set_config(config);
    }

    /// Sets the leader epoch stamped into appended batches (a replicated partition's is
    /// its raft term, set by no one else).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.state.borrow_mut().leader_epoch = epoch;
    }

    /// The leader epoch stamped into appended batches.
    pub fn leader_epoch(&self) -> i32 {
        match &self.raft {
            None => self.state.borrow().leader_epoch,
            Some(g) => g.view().map_or(0, |v| v.leader_epoch()),
        }
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> Offset {
        self.log.next_offset()
    }

    /// End of what readers may see.
    pub fn high_watermark(&self) -> Offset {
        match &self.raft {
            None => self.state.borrow().high_watermark,
            Some(g) => g.view().map_or(0, |v| v.high_watermark),
        }
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.log.segment_bases()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.borrow().producers.to_bytes()
    }

    /// Moves the high watermark forward to `to` and wakes readers.
    fn advance_high_watermark(&self, to: Offset) {
        let moved = {
            let mut st = self.state.borrow_mut();
            let moved = to > st.high_watermark;
            st.high_watermark = st.high_watermark.max(to);
            moved
        };
        if moved {
            self.readers.notify();
        }
    }

    /// After the log dropped a suffix (an I/O error or a truncation): the producer state
    /// as of the new end, and a high watermark no further than it.
    fn rebased(&self, recovered: Recovered) {
        let producers = rebuild(self.log.dir(), recovered);
        let next = self.log.next_offset();
        let mut st = self.state.borrow_mut();
        st.producers = producers;
        st.high_watermark = st.high_watermark.min(next);
    }

    /// Appends `records` as a Produce request with `acks` asks: for a replicated
    /// partition, proposed to its raft group and acknowledged once the leader (acks=1)
    /// or a majority (acks=all) holds it durably; otherwise as [`Partition::append`].
    pub async fn append_with_acks(
        &self,
        records: BytesMut,
        acks: i16,
    ) -> ReplicaResult<AppendResult> {
        let Some(group) = &self.raft else {
            return self.append_local(records).await;
        };
        let headers = self.validate(&records)?;
        let offsets: i64 = headers.iter().map(BatchHeader::offset_count).sum();
        let acks = if acks == -1 && !super::planted::ack_before_commit() {
            Acks::All
        } else {
            Acks::Leader
        };
        let base_offset = group.propose(records.to_vec(), acks).await?;
        Ok(AppendResult {
            base_offset,
            last_offset: base_offset + offsets - 1,
            log_start_offset: self.log.log_start_offset(),
            duplicate: false,
        })
    }

    /// Validates `records` (one or more v2 batches, as in a Produce request), assigns
    /// them offsets and the leader epoch and appends them. Resolves per the flush
    /// policy. On a validation error nothing is written. (A replicated partition's
    /// append is an acks=all proposal.)
    pub async fn append(&self, records: BytesMut) -> ReplicaResult<AppendResult> {
        self.append_with_acks(records, -1).await
    }

    async fn append_local(&self, mut records: BytesMut) -> ReplicaResult<AppendResult> {
        let headers = self.validate(&records)?;
        let total = records.len() as u64;
        let offsets: i64 = headers.iter().map(BatchHeader::offset_count).sum();
        let (pending, result) = {
            let mut slot = self.log.reserve(total, offsets, || self.snapshot()).await?;
            if let Some(recovered) = slot.take_reopened() {
                self.rebased(recovered);
            }
            let lenient = self.log.log_start_offset() > 0;
            let mut st = self.state.borrow_mut();
            let mut duplicates = Vec::new();
            for h in &headers {
                match st.producers.check(h, lenient)? {
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate(b) => duplicates.push(b),
                }
            }
            if !duplicates.is_empty() {
                if duplicates.len() != headers.len() {
                    return Err(
                        BatchError::InvalidHeader("request mixes retried and new batches").into(),
                    );
                }
                let (first, last) = (duplicates[0], duplicates[duplicates.len() - 1]);
                let result = AppendResult {
                    base_offset: first.base_offset,
                    last_offset: last.last_offset,
                    log_start_offset: self.log.log_start_offset(),
                    duplicate: true,
                };
                (None, result)
            } else {
                let epoch = st.leader_epoch;
                let base_offset = slot.next_offset();
                let mut stamped = headers;
                let mut next = base_offset;
                let mut at = 0usize;
                for h in &mut stamped {
                    set_offset_and_epoch(&mut records[at..], next, epoch);
                    h.base_offset = next;
                    h.partition_leader_epoch = epoch;
                    next += h.offset_count();
                    at += h.size;
                }
                let pending = slot.write(records, &stamped)?;
                for h in &stamped {
                    st.producers.record(h, h.base_offset);
                }
                let result = AppendResult {
                    base_offset,
                    last_offset: next - 1,
                    log_start_offset: self.log.log_start_offset(),
                    duplicate: false,
                };
                (Some(pending), result)
            }
        };
        let durable = matches!(self.log.config().flush, FlushPolicy::Durable);
        let Some(pending) = pending else {
            // The original may still be on its way to disk: answer once it is there.
            self.log.flush().await?;
            return Ok(result);
        };
        if durable {
            pending.durable(&self.log).await?;
        } else {
            // As Kafka: visible once written to the log, before any sync.
            self.advance_high_watermark(result.last_offset + 1);
            pending.written(&self.log).await?;
        }
        self.advance_high_watermark(result.last_offset + 1);
        Ok(result)
    }

    fn validate(&self, records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
        let limit = self.log.config().max_message_bytes;
        let mut headers = Vec::new();
        let mut rest = records;
        if rest.is_empty() {
            return Err(BatchError::Truncated {
                available: 0,
                needed: crate::protocol::record_batch::HEADER_LEN,
            });
        }
        while !rest.is_empty() {
            let h = validate_produced_batch(rest)?;
            if h.size > limit {
                return Err(BatchError::TooLarge {
                    size: h.size,
                    limit,
                });
            }
            rest = &rest[h.size..];
            headers.push(h);
        }
        Ok(headers)
    }

    /// Reads whole batches from the one holding `from`, up to about `max_bytes` and not
    /// past the high watermark (at least one batch when any is available, as Kafka).
    pub async fn read(&self, from: Offset, max_bytes: usize) -> LogResult<ReadResult> {
        self.log.read(from, max_bytes, self.high_watermark()).await
    }

    /// Finds the first visible record whose timestamp is at least `timestamp`: its
    /// offset and timestamp.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> LogResult<Option<(Offset, i64)>> {
        self.log
            .offset_for_timestamp(timestamp, self.high_watermark())
            .await
    }

    /// Deletes segments past retention (see `Log::apply_retention`). A replicated
    /// partition's raft group cuts its log itself, with raft's entries, and only what
    /// every replica has applied (`RaftLog::compact`): its active segment stays even
    /// when expired. Returns how many segments went.
    pub async fn apply_retention(&self, now_ms: i64) -> LogResult<usize> {
        let Some(raft) = &self.raft else {
            return self.log.apply_retention(now_ms, || self.snapshot()).await;
        };
        let target = self.log.retention_point(now_ms);
        if target <= self.log.log_start_offset() {
            return Ok(0);
        }
        let before = self.log.segment_bases().len();
        raft.compact(target)
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e)))?;
        Ok(before.saturating_sub(self.log.segment_bases().len()))
    }

    /// Drops every batch at or after `offset` (a follower's conflicting tail) and rolls
    /// the producer state back to it. Never below the high watermark: what readers saw
    /// stays.
    pub async fn truncate_to(&self, offset: Offset) -> LogResult<()> {
        let hw = self.high_watermark();
        if offset < hw {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: hw,
                log_end: self.next_offset(),
            });
        }
        let recovered = self.log.truncate_suffix(offset).await?;
        self.rebased(recovered);
        Ok(())
    }

    /// Writes and syncs everything appended so far.
    pub async fn flush(&self) -> LogResult<()> {
        self.log.flush().await
    }

    /// Closes the log cleanly, saving the producer state with it. A replicated
    /// partition's log is closed by its raft group.
    pub async fn close(&self) -> LogResult<()> {
        if self.raft.is_some() {
            return Ok(());
        }
        self.log.close(self.snapshot()).await
    }
}
