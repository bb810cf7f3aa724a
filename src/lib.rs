//! Caudal: a Kafka-wire-compatible message broker, thread-per-core on io_uring.
#![warn(missing_docs)]

pub mod alloc_guard;
pub mod config;
pub mod config_file;
pub mod error;
pub mod executor;
pub mod group;
pub mod handlers;
pub mod io;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod producer_state;
pub mod protocol;
pub mod shard;

/// Every binary linking Caudal gets the guarded allocator (see `alloc_guard`).
#[global_allocator]
static ALLOCATOR: alloc_guard::GuardedAlloc = alloc_guard::GuardedAlloc;
