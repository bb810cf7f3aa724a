//! The partition log: segments, indexes, recovery, retention and the tail cache.

pub mod config;
pub mod error;
pub mod format;
pub mod offset_index;
pub mod partition;
pub mod recovery;
pub mod segment;
pub mod tail_cache;
pub mod time_index;

/// A position in a partition's sequence of records, as Kafka numbers them.
pub type Offset = i64;

pub use config::{FlushPolicy, LogConfig};
pub use error::{LogError, LogResult};
pub use partition::{AppendResult, LogEnv, PartitionLog, ReadResult};
