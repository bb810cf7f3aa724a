//! Kafka error codes, and the one place module errors are mapped to them.

use crate::log::LogError;
use crate::protocol::record_batch::BatchError;
use crate::replica::producer_state::ProducerError;
use crate::replica::raft_producers::AdmitError;
use crate::replica::raft_shard::ProposeError;
use crate::replica::ReplicaError;

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
    /// The partition has no leader right now (an election is under way).
    LeaderNotAvailable = 5,
    /// The request was for a partition this broker (shard) does not lead.
    NotLeaderOrFollower = 6,
    /// The outcome is not known in time (a replicated append whose leader changed).
    RequestTimedOut = 7,
    /// A batch is larger than the topic allows.
    MessageTooLarge = 10,
    /// acks is not one of 0, 1, -1.
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
    /// This node does not decide topic changes; the controller named in Metadata does.
    NotController = 41,
    /// A config value or key is invalid.
    InvalidConfig = 40,
    /// The request is malformed.
    InvalidRequest = 42,
    /// The disk failed.
    KafkaStorageError = 56,
    /// A record is invalid.
    InvalidRecord = 87,
    /// The coordinator is loading its groups' offsets (it just took over).
    CoordinatorLoadInProgress = 14,
    /// The coordinator is not available (in a cluster: its offsets partition has no
    /// leader yet).
    CoordinatorNotAvailable = 15,
    /// This shard is not the coordinator of the group.
    NotCoordinator = 16,
    /// The generation in the request is not the group's.
    IllegalGeneration = 22,
    /// The member's protocols do not match the group's.
    InconsistentGroupProtocol = 23,
    /// The group id is empty or invalid.
    InvalidGroupId = 24,
    /// The member id is not in the group.
    UnknownMemberId = 25,
    /// The session timeout is outside the broker's bounds.
    InvalidSessionTimeout = 26,
    /// The group is rebalancing; rejoin.
    RebalanceInProgress = 27,
    /// A batch does not continue its producer's sequence.
    OutOfOrderSequenceNumber = 45,
    /// The producer's epoch is older than the current one.
    InvalidProducerEpoch = 47,
    /// The group still has members.
    NonEmptyGroup = 68,
    /// The group does not exist.
    GroupIdNotFound = 69,
    /// JoinGroup v4+: retry with the member id given in this response.
    MemberIdRequired = 79,
    /// A static member with this instance id was replaced by a newer one.
    FencedInstanceId = 82,
    /// The client's leader epoch is older than the partition's: it must refresh metadata.
    FencedLeaderEpoch = 74,
    /// The client's leader epoch is newer than this replica knows: it is behind.
    UnknownLeaderEpoch = 75,
    /// A request names a topic by an id no topic has (Fetch v13+).
    UnknownTopicId = 100,
    /// acks=all, but fewer replicas are in sync than the topic's `min.insync.replicas`.
    NotEnoughReplicas = 19,
    /// A preferred-leader election found the preferred replica unable to lead (down).
    PreferredLeaderNotAvailable = 80,
    /// A leader election was asked where the wanted leader already leads.
    ElectionNotNeeded = 84,
    /// A move was cancelled where none is under way.
    NoReassignmentInProgress = 85,
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
        // Never reaches a client: replicas append only whole batches at the log end.
        LogError::NotContiguous { .. } | LogError::NotABatchBoundary(_) => {
            ErrorCode::KafkaStorageError
        }
    }
}

/// Maps a replica error to the error code Kafka returns for it.
pub fn replica_error_code(e: &ReplicaError) -> ErrorCode {
    match e {
        ReplicaError::Log(e) => log_error_code(e),
        ReplicaError::Producer(ProducerError::InvalidEpoch { .. }) => {
            ErrorCode::InvalidProducerEpoch
        }
        ReplicaError::Producer(ProducerError::OutOfOrder { .. }) => {
            ErrorCode::OutOfOrderSequenceNumber
        }
        ReplicaError::Raft(e) => propose_error_code(e),
    }
}

/// What a client is told when its append did not go through raft. An outcome that is
/// unknown (the leader changed before the entry was decided) is a timeout, never a
/// success: the client retries, and an idempotent producer's retry is deduplicated.
pub fn propose_error_code(e: &ProposeError) -> ErrorCode {
    match e {
        ProposeError::NotLeader | ProposeError::Dropped => ErrorCode::NotLeaderOrFollower,
        ProposeError::Unknown => ErrorCode::RequestTimedOut,
        ProposeError::Storage(_) => ErrorCode::KafkaStorageError,
        ProposeError::Rejected(AdmitError::Producer(ProducerError::InvalidEpoch { .. })) => {
            ErrorCode::InvalidProducerEpoch
        }
        ProposeError::Rejected(AdmitError::Producer(ProducerError::OutOfOrder { .. })) => {
            ErrorCode::OutOfOrderSequenceNumber
        }
        ProposeError::Rejected(AdmitError::MixedRetry | AdmitError::Invalid(_)) => {
            ErrorCode::InvalidRecord
        }
    }
}
