//! Reading a partition's storage: whole batches from the tail cache or from the segment
//! files (one direct read, then a read-ahead for a consumer that keeps going), and the
//! lookup of an offset by timestamp.

use std::rc::Rc;

use bytes::Bytes;
use tracing::warn;

use crate::protocol::record_batch::{check_batch, peek_batch_size};

use super::error::{LogError, LogResult};
use super::segment::rel_offset;
use super::storage::{Log, Prefetch};
use super::Offset;

/// Batches returned by a read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole batches, in offset order; the first may start before the requested offset.
    pub batches: Vec<Bytes>,
    /// End of the visible log when the read ran.
    pub high_watermark: Offset,
    /// First offset in the log.
    pub log_start_offset: Offset,
}

impl ReadResult {
    /// Total bytes in the batches.
    pub fn byte_len(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// Batches read from a segment, and where the next read would continue.
struct DiskRead {
    batches: Vec<Bytes>,
    next_pos: u64,
    next_offset: Offset,
}

/// Bytes to read from disk for a request of `max_bytes`.
fn read_chunk(max_bytes: usize) -> u64 {
    let wanted = (max_bytes as u64).clamp(64 << 10, 16 << 20);
    wanted + (wanted / 8).max(64 << 10)
}

/// One direct read, copied out of the DMA buffer.
pub(super) async fn read_bytes(
    file: &crate::io::DmaFile,
    pos: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let data = file.read_at(pos, len).await.map_err(std::io::Error::from)?;
    Ok(Bytes::copy_from_slice(&data))
}

impl Log {
    /// Whole batches from the one holding `from` up to about `max_bytes`, not past `end`,
    /// if the tail cache holds them all; never waits for the disk (raft reads entries
    /// synchronously, and asks again later for what is only on disk).
    pub fn read_cached(&self, from: Offset, end: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        self.state.borrow().tail.read(from, end, max_bytes)
    }

    /// Reads whole batches from the one holding `from`, up to about `max_bytes` and
    /// not past `end` (the replica's high watermark: what readers may see). At least one
    /// batch is returned when any is available, as Kafka does.
    pub async fn read(&self, from: Offset, max_bytes: usize, end: Offset) -> LogResult<ReadResult> {
        let (file, pos, limit, hw, start, seg_name) = {
            let st = self.state.borrow();
            let hw = end.min(st.next_offset());
            let start = st.log_start();
            if from < start || from > hw {
                return Err(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start: start,
                    log_end: hw,
                });
            }
            let mut res = ReadResult {
                batches: Vec::new(),
                high_watermark: hw,
                log_start_offset: start,
            };
            if from == hw {
                return Ok(res);
            }
            if let Some(batches) = st.tail.read(from, hw, max_bytes) {
                res.batches = batches;
                return Ok(res);
            }
            let seg = &st.segments[st.segment_for(from)];
            let pos = seg.offset_index.lookup(rel_offset(seg.base_offset, from));
            (
                seg.file.clone(),
                u64::from(pos),
                seg.readable_len(),
                hw,
                start,
                seg.base_offset,
            )
        };
        // A consumer reading on from where the last disk read ended finds the next
        // stretch already read ahead.
        let prefetch = self
            .prefetch
            .borrow_mut()
            .take()
            .filter(|p| p.segment_base == seg_name && p.next_offset == from);
        let pos = prefetch.as_ref().map_or(pos, |p| p.pos);
        let read = match self
            .read_disk(&file, seg_name, pos, limit, from, hw, max_bytes, prefetch)
            .await
        {
            // A damaged index can point into the middle of a batch: read from the
            // segment start instead (slower, but correct) before calling the data corrupt.
            Err(LogError::Corrupt { detail, .. }) if pos > 0 => {
                warn!(dir = %self.dir.display(), segment = seg_name, position = pos, %detail, "index entry looks wrong; reading from the segment start");
                self.read_disk(&file, seg_name, 0, limit, from, hw, max_bytes, None)
                    .await?
            }
            other => other?,
        };
        if !read.batches.is_empty() && read.next_pos < limit {
            let len = read_chunk(max_bytes).min(limit - read.next_pos) as usize;
            let (task_file, at) = (file.clone(), read.next_pos);
            let task =
                crate::task::spawn(async move { read_bytes(&task_file, at, len).await }).detach();
            *self.prefetch.borrow_mut() = Some(Prefetch {
                segment_base: seg_name,
                pos: read.next_pos,
                next_offset: read.next_offset,
                task,
            });
        }
        Ok(ReadResult {
            batches: read.batches,
            high_watermark: hw,
            log_start_offset: start,
        })
    }

    /// Reads batches from a segment file starting the scan at `pos`, skipping batches
    /// before `from`, stopping at `limit` bytes, offset `end` or about `max_bytes`.
    /// `first` is a read already under way for `pos` (read-ahead), used if it matches.
    #[allow(clippy::too_many_arguments)]
    async fn read_disk(
        &self,
        file: &Rc<crate::io::DmaFile>,
        segment_base: Offset,
        mut pos: u64,
        limit: u64,
        from: Offset,
        end: Offset,
        max_bytes: usize,
        mut first: Option<Prefetch>,
    ) -> LogResult<DiskRead> {
        let corrupt = |position: u64, detail: String| LogError::Corrupt {
            file: format!("{}/{:020}.log", self.dir.display(), segment_base),
            position,
            detail,
        };
        let mut read = DiskRead {
            batches: Vec::new(),
            next_pos: pos,
            next_offset: from,
        };
        let mut total = 0usize;
        // Read enough for the requested bytes, plus room for the skip from the index entry
        // and for the first batch to run past `max_bytes` (it is returned whole), so one
        // read usually suffices.
        let chunk = read_chunk(max_bytes);
        'reads: while pos < limit {
            let want = chunk.min(limit - pos) as usize;
            let buf = match first.take().filter(|p| p.pos == pos) {
                Some(p) => match p.task.await {
                    Some(Ok(b)) if !b.is_empty() => b,
                    _ => read_bytes(file, pos, want).await?,
                },
                None => read_bytes(file, pos, want).await?,
            };
            let mut at = 0usize;
            loop {
                let rest = &buf[at..];
                let Some(size) = peek_batch_size(rest) else {
                    if rest.len() >= 12 {
                        return Err(corrupt(pos + at as u64, "invalid batch length".into()));
                    }
                    break;
                };
                let (batch, batch_pos) = if size > rest.len() {
                    if at != 0 {
                        break;
                    }
                    // One batch larger than the read: fetch exactly it.
                    let whole = read_bytes(file, pos, size).await?;
                    if whole.len() < size {
                        return Err(corrupt(pos, "batch runs past end of file".into()));
                    }
                    (whole.slice(..size), pos)
                } else {
                    (buf.slice(at..at + size), pos + at as u64)
                };
                let h = check_batch(&batch).map_err(|e| corrupt(batch_pos, e.to_string()))?;
                if h.base_offset >= end {
                    break 'reads;
                }
                if h.last_offset() >= from {
                    if !read.batches.is_empty() && total + size > max_bytes {
                        break 'reads;
                    }
                    total += size;
                    read.batches.push(batch);
                    read.next_offset = h.last_offset() + 1;
                }
                read.next_pos = batch_pos + size as u64;
                if size > rest.len() {
                    at = size;
                    break;
                }
                at += size;
                if total >= max_bytes {
                    break 'reads;
                }
            }
            if at == 0 {
                break;
            }
            pos += at as u64;
        }
        Ok(read)
    }

    /// Finds the first record whose timestamp is at least `timestamp`: its offset and
    /// timestamp. `None` when no visible record is that new.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
        end: Offset,
    ) -> LogResult<Option<(Offset, i64)>> {
        let start = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            seg.base_offset + i64::from(seg.time_index.lookup(timestamp))
        };
        let mut from = start.max(self.log_start_offset());
        loop {
            let res = match self.read(from, 1 << 20, end).await {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if res.batches.is_empty() {
                return Ok(None);
            }
            for b in &res.batches {
                let h = check_batch(b)?;
                if h.max_timestamp >= timestamp && h.last_offset() >= from {
                    // The first record of the batch at or after the target, as Kafka
                    // answers (decompressing if needed; this is not the data path).
                    let limit = self.config.borrow().max_message_bytes.max(1 << 20) * 64;
                    let records = crate::protocol::record_batch::record_timestamps(b, limit)?;
                    let found = records
                        .iter()
                        .map(|&(delta, ts)| (h.base_offset + delta, ts))
                        .find(|&(offset, ts)| ts >= timestamp && offset >= from);
                    return Ok(Some(
                        found.unwrap_or((h.base_offset.max(from), h.max_timestamp)),
                    ));
                }
                from = from.max(h.last_offset() + 1);
            }
        }
    }
}
