//! Scanning a segment file: find its valid prefix and rebuild its indexes.
//!
//! A scan walks batch headers from the start of the file, checks each batch's length,
//! magic, CRC and that its base offset continues the previous batch, and stops at the
//! first batch that fails. Everything before that point is the segment's valid data;
//! everything after it is a torn or corrupt tail that recovery cuts off.

use std::io;

use crate::io::DmaFile;

use crate::io::dma_writer::{align_down, align_up};
use crate::protocol::record_batch::{check_batch, peek_batch_size, BatchHeader, LOG_OVERHEAD};

use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use super::Offset;

/// Bytes read per scan step. Large reads keep recovery of a 1 GiB segment near the
/// disk's sequential read speed.
const SCAN_READ: usize = 8 << 20;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Offset after the last valid batch.
    pub next_offset: Offset,
    /// Largest batch max timestamp seen, or -1.
    pub max_timestamp: i64,
    /// Valid batches found.
    pub batches: u64,
    /// Rebuilt sparse offset index.
    pub offset_index: OffsetIndex,
    /// Rebuilt time index.
    pub time_index: TimeIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped_by: Option<String>,
    /// Headers of the valid batches written by idempotent producers, in log order, to
    /// rebuild the producer state.
    pub producer_batches: Vec<BatchHeader>,
    /// Where each epoch begins among the valid batches: (epoch, base offset), one entry
    /// per change, so the epoch table is rebuilt exactly.
    pub epochs: Vec<(i32, Offset)>,
}

/// Builds the indexes while batches are appended or scanned, adding an entry every
/// `interval` bytes of log.
#[derive(Debug)]
pub struct IndexBuilder {
    interval: u64,
    bytes_since_entry: u64,
    max_timestamp: i64,
}

impl IndexBuilder {
    /// Starts with nothing indexed; the first batch of a segment is found from position
    /// 0 without an entry.
    pub fn new(interval: u64) -> IndexBuilder {
        IndexBuilder {
            interval: interval.max(1),
            bytes_since_entry: 0,
            max_timestamp: -1,
        }
    }

    /// Resumes after a scan that saw `max_timestamp`.
    pub fn resume(interval: u64, max_timestamp: i64) -> IndexBuilder {
        IndexBuilder {
            max_timestamp,
            ..IndexBuilder::new(interval)
        }
    }

    /// Records a batch of `size` bytes at `position` with relative base offset `rel`.
    pub fn on_batch(
        &mut self,
        offsets: &mut OffsetIndex,
        times: &mut TimeIndex,
        rel: u32,
        position: u32,
        size: u64,
        max_timestamp: i64,
    ) {
        if self.bytes_since_entry >= self.interval {
            offsets.push(rel, position);
            if self.max_timestamp >= 0 {
                times.push(self.max_timestamp, rel);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// Largest timestamp seen.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
}

/// Scans `file` (of `file_len` bytes) holding a segment with base offset `base_offset`.
pub async fn scan_segment(
    file: &DmaFile,
    file_len: u64,
    base_offset: Offset,
    index_interval: u64,
) -> io::Result<ScanResult> {
    let mut res = ScanResult {
        next_offset: base_offset,
        max_timestamp: -1,
        ..ScanResult::default()
    };
    let mut builder = IndexBuilder::new(index_interval);
    let mut pos: u64 = 0;
    'outer: while pos < file_len {
        let read_start = align_down(pos);
        let want = (SCAN_READ as u64).min(file_len - read_start) as usize;
        let want = align_up(want.max(1) as u64) as usize;
        let buf = file
            .read_at_aligned(read_start, want)
            .await
            .map_err(io::Error::from)?;
        let buf_end = read_start + buf.len() as u64;
        let mut progressed = false;
        loop {
            if pos >= file_len {
                break 'outer;
            }
            let at = (pos - read_start) as usize;
            let window = buf.get(at..).unwrap_or(&[]);
            let window = &window[..window.len().min((file_len - pos) as usize)];
            if window.len() < LOG_OVERHEAD {
                if buf_end >= file_len {
                    res.stopped_by = Some(format!("{} trailing bytes", file_len - pos));
                    break 'outer;
                }
                break;
            }
            let Some(size) = peek_batch_size(window) else {
                res.stopped_by = Some("invalid batch length".into());
                break 'outer;
            };
            if pos + size as u64 > file_len {
                res.stopped_by = Some(format!(
                    "batch of {size} bytes runs past the end of the file"
                ));
                break 'outer;
            }
            if size > window.len() {
                if !progressed && at == 0 {
                    // A single batch larger than one read: read exactly that batch.
                    let big = file.read_at(pos, size).await.map_err(io::Error::from)?;
                    if !accept(&big, pos, base_offset, &mut res, &mut builder) {
                        break 'outer;
                    }
                    pos += size as u64;
                    continue 'outer;
                }
                break;
            }
            if !accept(&window[..size], pos, base_offset, &mut res, &mut builder) {
                break 'outer;
            }
            pos += size as u64;
            progressed = true;
        }
    }
    res.valid_len = pos.min(file_len);
    if res.stopped_by.is_none() && res.valid_len < file_len {
        res.stopped_by = Some("trailing bytes".into());
    }
    res.max_timestamp = builder.max_timestamp();
    Ok(res)
}

/// Checks one batch and records it; false (with the reason in `res`) if it is invalid.
fn accept(
    batch: &[u8],
    pos: u64,
    segment_base: Offset,
    res: &mut ScanResult,
    builder: &mut IndexBuilder,
) -> bool {
    let header = match check_batch(batch) {
        Ok(h) => h,
        Err(e) => {
            res.stopped_by = Some(e.to_string());
            return false;
        }
    };
    if header.base_offset != res.next_offset
        || header.last_offset_delta < 0
        || header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta) + 1)
            .is_none()
    {
        res.stopped_by = Some(format!(
            "batch base offset {} does not follow {}",
            header.base_offset, res.next_offset
        ));
        return false;
    }
    let Ok(rel) = u32::try_from(header.base_offset - segment_base) else {
        res.stopped_by = Some("batch offset too far from the segment base".into());
        return false;
    };
    res.batches += 1;
    res.next_offset = header.last_offset() + 1;
    if res
        .epochs
        .last()
        .is_none_or(|&(e, _)| e != header.partition_leader_epoch)
    {
        res.epochs
            .push((header.partition_leader_epoch, header.base_offset));
    }
    if header.producer_id >= 0 {
        res.producer_batches.push(header);
    }
    builder.on_batch(
        &mut res.offset_index,
        &mut res.time_index,
        rel,
        pos as u32,
        header.size as u64,
        header.max_timestamp,
    );
    true
}
