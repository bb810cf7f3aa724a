//! One segment: a `.log` file of record batches plus its offset and time indexes.
//!
//! The newest segment of a partition is *active*: it has a [`DmaWriter`] and its indexes
//! live in memory. Sealing it flushes and syncs the writer, cuts the file to its data and
//! writes both index files durably; a sealed segment never changes again until retention
//! deletes it whole.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::io::{DmaFile, OpenOptions};
use tracing::{info, warn};

use crate::io::dma_writer::{DmaWriter, IoStats, WriterOptions};
use crate::io::small_file;

use super::format::{
    segment_path, INDEX_SUFFIX, LOG_SUFFIX, RAFT_INDEX_SUFFIX, SNAPSHOT_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::offset_index::OffsetIndex;
use super::recovery::{scan_segment, IndexBuilder};
use super::time_index::TimeIndex;
use super::Offset;
use crate::protocol::record_batch::BatchHeader;

/// What a clean shutdown records about the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanState {
    /// Bytes of data.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: Offset,
    /// Largest batch timestamp, or -1.
    pub max_timestamp: i64,
}

/// One segment of a partition log.
pub struct Segment {
    /// Offset of the first batch; also the file name.
    pub base_offset: Offset,
    /// The segment file, open for direct reads (and writes while active).
    pub file: Rc<DmaFile>,
    /// The appender, while this is the active segment.
    pub writer: Option<Rc<DmaWriter>>,
    /// Bytes of valid data.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: Offset,
    /// Largest batch timestamp in the segment, or -1.
    pub max_timestamp: i64,
    /// When this segment started taking appends (this process's clock), for `segment_ms`.
    pub opened_at: Instant,
    /// Sparse offset index.
    pub offset_index: OffsetIndex,
    /// Time index.
    pub time_index: TimeIndex,
    indexer: IndexBuilder,
}

/// Opens a segment file for direct I/O; with `durable_writes`, every write returns only
/// once it is on stable storage (`O_DSYNC`), so no separate fdatasync is needed.
async fn open_rw(path: &Path, durable_writes: bool) -> io::Result<DmaFile> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    if durable_writes {
        options.custom_flags(libc::O_DSYNC);
    }
    options.dma_open(path).await.map_err(io::Error::from)
}

impl Segment {
    /// Creates a new, empty active segment at `base_offset`.
    pub async fn create(
        dir: &Path,
        base_offset: Offset,
        index_interval: u64,
        opts: WriterOptions,
        stats: std::sync::Arc<IoStats>,
    ) -> io::Result<Segment> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = Rc::new(open_rw(&path, opts.durable_writes).await?);
        file.truncate(0).await.map_err(io::Error::from)?;
        small_file::sync_dir(dir).await?;
        let writer = DmaWriter::open(file.clone(), 0, opts, stats).await?;
        Ok(Segment {
            base_offset,
            file,
            writer: Some(Rc::new(writer)),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            opened_at: Instant::now(),
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            indexer: IndexBuilder::new(index_interval),
        })
    }

    /// Opens the newest segment after a restart: scans it, cuts off a torn or corrupt
    /// tail, rebuilds its indexes and resumes appending at the end of its valid data.
    /// Also returns the headers of its idempotent batches, to rebuild producer state, and
    /// where each epoch of its batches begins.
    pub async fn recover_active(
        dir: &Path,
        base_offset: Offset,
        index_interval: u64,
        opts: WriterOptions,
        stats: std::sync::Arc<IoStats>,
    ) -> io::Result<(Segment, Vec<BatchHeader>, Vec<(i32, Offset)>)> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = Rc::new(open_rw(&path, opts.durable_writes).await?);
        let file_len = file.file_size().await.map_err(io::Error::from)?;
        let scan = scan_segment(&file, file_len, base_offset, index_interval).await?;
        if scan.valid_len < file_len {
            // Trailing zeros are preallocated space, not damage: say so only when the
            // scan stopped on something else.
            let reason = scan.stopped_by.as_deref().unwrap_or("trailing bytes");
            if reason != "invalid batch length" || !is_zero_tail(&file, scan.valid_len).await {
                warn!(
                    file = %path.display(),
                    position = scan.valid_len,
                    dropped_bytes = file_len - scan.valid_len,
                    next_offset = scan.next_offset,
                    reason,
                    "truncating torn or corrupt tail of segment"
                );
            }
            file.truncate(scan.valid_len)
                .await
                .map_err(io::Error::from)?;
            file.fdatasync().await.map_err(io::Error::from)?;
        }
        let writer = DmaWriter::open(file.clone(), scan.valid_len, opts, stats).await?;
        let segment = Segment {
            base_offset,
            file,
            writer: Some(Rc::new(writer)),
            size: scan.valid_len,
            next_offset: scan.next_offset,
            max_timestamp: scan.max_timestamp,
            opened_at: Instant::now(),
            offset_index: scan.offset_index,
            time_index: scan.time_index,
            indexer: IndexBuilder::resume(index_interval, scan.max_timestamp),
        };
        Ok((segment, scan.producer_batches, scan.epochs))
    }

    /// Opens the newest segment after a clean shutdown, trusting what the shutdown
    /// recorded: its length, next offset and max timestamp, and its index files. `None`
    /// when anything disagrees (then the caller scans it as after a crash).
    pub async fn open_clean(
        dir: &Path,
        base_offset: Offset,
        state: CleanState,
        index_interval: u64,
        opts: WriterOptions,
        stats: std::sync::Arc<IoStats>,
    ) -> io::Result<Option<Segment>> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = Rc::new(open_rw(&path, opts.durable_writes).await?);
        let size = file.file_size().await.map_err(io::Error::from)?;
        if size != state.size {
            return Ok(None);
        }
        let offsets = small_file::read_all(&segment_path(dir, base_offset, INDEX_SUFFIX))
            .await?
            .and_then(|b| OffsetIndex::from_bytes(&b, size.max(1)));
        let times = small_file::read_all(&segment_path(dir, base_offset, TIME_INDEX_SUFFIX))
            .await?
            .and_then(|b| TimeIndex::from_bytes(&b));
        let (Some(offset_index), Some(time_index)) = (offsets, times) else {
            return Ok(None);
        };
        let writer = DmaWriter::open(file.clone(), size, opts, stats).await?;
        Ok(Some(Segment {
            base_offset,
            file,
            writer: Some(Rc::new(writer)),
            size,
            next_offset: state.next_offset,
            max_timestamp: state.max_timestamp,
            opened_at: Instant::now(),
            offset_index,
            time_index,
            // The index resumes with a fresh byte count: at worst one entry comes late.
            indexer: IndexBuilder::resume(index_interval, state.max_timestamp),
        }))
    }

    /// Opens a sealed segment whose successor starts at `next_base`. Its index files are
    /// loaded; when either is missing or damaged both are rebuilt from a scan.
    pub async fn open_sealed(
        dir: &Path,
        base_offset: Offset,
        next_base: Offset,
        index_interval: u64,
    ) -> io::Result<Segment> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = Rc::new(open_rw(&path, false).await?);
        let size = file.file_size().await.map_err(io::Error::from)?;
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let time_path = segment_path(dir, base_offset, TIME_INDEX_SUFFIX);
        let offsets = small_file::read_all(&index_path)
            .await?
            .and_then(|b| OffsetIndex::from_bytes(&b, size));
        let times = small_file::read_all(&time_path)
            .await?
            .and_then(|b| TimeIndex::from_bytes(&b));
        let mut seg = Segment {
            base_offset,
            file,
            writer: None,
            size,
            next_offset: next_base,
            max_timestamp: -1,
            opened_at: Instant::now(),
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            indexer: IndexBuilder::new(index_interval),
        };
        match (offsets, times) {
            (Some(o), Some(t)) => {
                seg.max_timestamp = t.last_timestamp().unwrap_or(-1);
                seg.offset_index = o;
                seg.time_index = t;
            }
            _ => {
                info!(file = %path.display(), "index missing or damaged, rebuilding");
                let scan = scan_segment(&seg.file, size, base_offset, index_interval).await?;
                if scan.valid_len < size {
                    warn!(
                        file = %path.display(),
                        position = scan.valid_len,
                        dropped_bytes = size - scan.valid_len,
                        reason = scan.stopped_by.as_deref().unwrap_or(""),
                        "truncating corrupt data in sealed segment"
                    );
                    seg.file
                        .truncate(scan.valid_len)
                        .await
                        .map_err(io::Error::from)?;
                    seg.file.fdatasync().await.map_err(io::Error::from)?;
                }
                seg.size = scan.valid_len;
                seg.max_timestamp = scan.max_timestamp;
                seg.offset_index = scan.offset_index;
                seg.time_index = scan.time_index;
                seg.time_index.push(
                    scan.max_timestamp,
                    rel_offset(base_offset, scan.next_offset),
                );
                write_indexes(dir, base_offset, &seg.offset_index, &seg.time_index).await?;
            }
        }
        Ok(seg)
    }

    /// Records a batch just buffered at `position` in the indexes and counters.
    pub fn on_append(&mut self, base: Offset, last: Offset, size: u64, max_timestamp: i64) {
        let position = self.size;
        self.indexer.on_batch(
            &mut self.offset_index,
            &mut self.time_index,
            rel_offset(self.base_offset, base),
            position as u32,
            size,
            max_timestamp,
        );
        self.size += size;
        self.next_offset = last + 1;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// Index bytes to persist when sealing, with the final time index entry added.
    pub fn sealed_indexes(&mut self) -> (OffsetIndex, TimeIndex) {
        self.time_index.push(
            self.max_timestamp,
            rel_offset(self.base_offset, self.next_offset),
        );
        (self.offset_index.clone(), self.time_index.clone())
    }

    /// Bytes of data readable from disk (for the active segment, what the writer has
    /// completed).
    pub fn readable_len(&self) -> u64 {
        match &self.writer {
            Some(w) => w.written_len().min(self.size),
            None => self.size,
        }
    }

    /// Paths of this segment's files.
    pub fn paths(dir: &Path, base_offset: Offset) -> [PathBuf; 5] {
        [
            segment_path(dir, base_offset, LOG_SUFFIX),
            segment_path(dir, base_offset, INDEX_SUFFIX),
            segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            segment_path(dir, base_offset, SNAPSHOT_SUFFIX),
            segment_path(dir, base_offset, RAFT_INDEX_SUFFIX),
        ]
    }
}

/// Offset relative to a segment base. Segments never span more than 2^32 offsets: the
/// partition rolls before that.
pub fn rel_offset(base: Offset, offset: Offset) -> u32 {
    u32::try_from(offset - base).unwrap_or(u32::MAX)
}

/// Writes a segment's index files durably.
pub async fn write_indexes(
    dir: &Path,
    base_offset: Offset,
    offsets: &OffsetIndex,
    times: &TimeIndex,
) -> io::Result<()> {
    let (offsets, times) = futures_lite::future::zip(
        small_file::write_durably(
            &segment_path(dir, base_offset, INDEX_SUFFIX),
            &offsets.to_bytes(),
        ),
        small_file::write_durably(
            &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            &times.to_bytes(),
        ),
    )
    .await;
    offsets?;
    times?;
    small_file::sync_dir(dir).await
}

async fn is_zero_tail(file: &DmaFile, from: u64) -> bool {
    match file.read_at(from, 64).await {
        Ok(b) => b.iter().all(|&x| x == 0),
        Err(_) => false,
    }
}
