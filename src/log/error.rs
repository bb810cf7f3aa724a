//! Errors of the partition log.

use std::io;

use thiserror::Error;

use crate::protocol::record_batch::BatchError;

use super::Offset;

/// What can go wrong with a log operation. Corruption found on disk is kept apart from
/// I/O failures: the first is a bad batch to skip or truncate, the second a disk to fix.
#[derive(Debug, Error)]
pub enum LogError {
    /// The disk refused a read, write, sync or allocation (EIO, ENOSPC, ...).
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// A batch offered for append is malformed; nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The requested offset is below the log start or past the end.
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First offset still in the log.
        log_start: Offset,
        /// Offset the next visible record will get.
        log_end: Offset,
    },
    /// Batches offered for append do not start at the log end or have gaps.
    #[error("batches do not continue the log: expected offset {expected}, got {got}")]
    NotContiguous {
        /// Offset the next batch must start at.
        expected: Offset,
        /// Offset it starts at.
        got: Offset,
    },
    /// A truncation point inside a batch: the log is cut only between batches.
    #[error("offset {0} is not the start of a batch")]
    NotABatchBoundary(Offset),
    /// Bytes on disk failed their checksum or framing when read back.
    #[error("corrupt data in {file} at position {position}: {detail}")]
    Corrupt {
        /// Segment file.
        file: String,
        /// Byte position in the file.
        position: u64,
        /// What was wrong.
        detail: String,
    },
}

/// Result of a log operation.
pub type LogResult<T> = Result<T, LogError>;
