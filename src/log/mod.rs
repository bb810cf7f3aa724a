//! A partition's storage: segments, indexes, recovery, truncation, retention, the tail
//! cache and the epoch table. Pure storage: the replication rules live in `replica`.

pub mod append;
pub mod clean_marker;
pub mod config;
pub mod epochs;
pub mod error;
pub mod format;
pub mod journal;
pub mod journal_replay;
pub mod offset_index;
pub mod open;
pub mod raft_hook;
pub mod raft_index;
pub mod raft_records;
pub mod read;
pub mod recovery;
pub mod replay;
pub mod segment;
pub mod storage;
pub mod tail_cache;
pub mod time_index;
pub mod truncate;

/// A position in a partition's sequence of records, as Kafka numbers them.
pub type Offset = i64;

pub use config::{FlushPolicy, LogConfig};
pub use error::{LogError, LogResult};
pub use journal::{Journal, JournalOptions};
pub use read::ReadResult;
pub use storage::{AppendSlot, Log, LogEnv, Pending, Recovered};
