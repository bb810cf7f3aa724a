//! Kafka error codes, and the one place module errors are mapped to them.

use crate::log::LogError;
use crate::protocol::record_batch::BatchError;

/// Kafka protocol error codes used by this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// The requested offset is not within the range of offsets the server holds.
    OffsetOutOfRange = 1,
    /// A message failed its CRC or is otherwise corrupt.
    CorruptMessage = 2,
    /// The topic or partition does not exist on this broker.
    UnknownTopicOrPartition = 3,
    /// The request was for a partition this broker (shard) does not lead.
    NotLeaderOrFollower = 6,
    /// A batch is larger than the topic allows.
    MessageTooLarge = 10,
    /// Too many requests.
    InvalidRequiredAcks = 21,
    /// The topic name is not valid.
    InvalidTopicException = 17,
    /// The request is of an API version the broker does not support.
    UnsupportedVersion = 35,
    /// The topic already exists.
    TopicAlreadyExists = 36,
    /// Bad partition count.
    InvalidPartitions = 37,
    /// Bad replication factor.
    InvalidReplicationFactor = 38,
    /// Bad replica assignment.
    InvalidReplicaAssignment = 39,
    /// A config value or key is invalid.
    InvalidConfig = 40,
    /// The request is malformed.
    InvalidRequest = 42,
    /// The disk failed.
    KafkaStorageError = 56,
    /// A record is invalid.
    InvalidRecord = 87,
    /// Something unexpected went wrong on the broker.
    UnknownServerError = -1,
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> i16 {
        self as i16
    }
}

/// Maps a refused batch to the error code Kafka returns for it.
pub fn batch_error_code(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::Truncated { .. }
        | BatchError::BadLength(_)
        | BatchError::BadMagic(_)
        | BatchError::CrcMismatch { .. } => ErrorCode::CorruptMessage,
        BatchError::InvalidHeader(_) => ErrorCode::InvalidRecord,
        BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
    }
}

/// Maps a log error to the error code Kafka returns for it.
pub fn log_error_code(e: &LogError) -> ErrorCode {
    match e {
        LogError::Io(_) => ErrorCode::KafkaStorageError,
        LogError::InvalidBatch(b) => batch_error_code(b),
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Corrupt { .. } => ErrorCode::KafkaStorageError,
    }
}
