//! In-memory copy of the newest batches of a partition, so consumers at the head of the
//! log are served without touching the disk and without copying (`Bytes` slices).
//!
//! The cache always holds a contiguous run of batches ending at the log end. Batches
//! leave from the front, and only once they are on disk; the shard-wide byte budget is
//! shared by every partition of the shard.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::Offset;

/// Byte budget of every tail cache on one shard (atomic so metrics can read it).
#[derive(Debug)]
pub struct CacheBudget {
    limit: usize,
    used: AtomicUsize,
}

impl CacheBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<CacheBudget> {
        Arc::new(CacheBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes currently cached on the shard.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// One cached batch.
#[derive(Debug, Clone)]
pub struct CachedBatch {
    /// First offset.
    pub base_offset: Offset,
    /// Last offset.
    pub last_offset: Offset,
    /// Base offset of the segment that holds it on disk.
    pub segment_base: Offset,
    /// Position just past the batch in its segment file.
    pub end_position: u64,
    /// The batch bytes.
    pub data: Bytes,
}

/// The tail cache of one partition.
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    budget: Arc<CacheBudget>,
}

impl TailCache {
    /// An empty cache charging `budget`.
    pub fn new(budget: Arc<CacheBudget>) -> TailCache {
        TailCache {
            batches: VecDeque::new(),
            budget,
        }
    }

    /// Appends the newest batch.
    pub fn push(&mut self, batch: CachedBatch) {
        self.budget
            .used
            .fetch_add(batch.data.len(), Ordering::Relaxed);
        self.batches.push_back(batch);
    }

    /// Drops the oldest batches while the shard is over budget, but only batches that
    /// `on_disk` says can be read back from disk.
    pub fn evict(&mut self, on_disk: impl Fn(&CachedBatch) -> bool) {
        while self.budget.over() {
            match self.batches.front() {
                Some(b) if on_disk(b) => self.pop_front(),
                _ => break,
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(b) = self.batches.pop_front() {
            self.budget.used.fetch_sub(b.data.len(), Ordering::Relaxed);
        }
    }

    /// Drops batches that end before `offset` (after retention moved the log start).
    pub fn drop_before(&mut self, offset: Offset) {
        while self.batches.front().is_some_and(|b| b.last_offset < offset) {
            self.pop_front();
        }
    }

    /// Drops everything (after the log was reopened from disk).
    pub fn clear(&mut self) {
        while !self.batches.is_empty() {
            self.pop_front();
        }
    }

    /// First offset the cache can serve.
    pub fn first_offset(&self) -> Option<Offset> {
        self.batches.front().map(|b| b.base_offset)
    }

    /// Batches from the one holding `from`, stopping before `end` (exclusive) and once
    /// `max_bytes` would be exceeded, always returning at least one batch. `None` when
    /// `from` is older than the cache.
    pub fn read(&self, from: Offset, end: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if from < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset < from);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in self.batches.range(start..) {
            if b.base_offset >= end {
                break;
            }
            if !out.is_empty() && total + b.data.len() > max_bytes {
                break;
            }
            total += b.data.len();
            out.push(b.data.clone());
        }
        Some(out)
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.clear();
    }
}
