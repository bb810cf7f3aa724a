//! Caudal: a Kafka-wire-compatible message broker, thread-per-core on io_uring.
#![warn(missing_docs)]

pub mod clock;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod dispatch;
pub mod error;
pub mod group;
pub mod handlers;
pub mod io;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod replica;
pub mod shard;

/// The Kafka wire format (the `caudal-protocol` crate).
pub use caudal_protocol as protocol;
/// Executors, tasks, deadlines and the guarded allocator (the `caudal-runtime` crate).
pub use caudal_runtime::{alloc_guard, executor, notify, task};

/// Every binary linking Caudal gets the guarded allocator (see `alloc_guard`).
#[global_allocator]
static ALLOCATOR: alloc_guard::GuardedAlloc = alloc_guard::GuardedAlloc;
