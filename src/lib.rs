//! Caudal: a Kafka-wire-compatible message broker, thread-per-core on io_uring.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod handlers;
pub mod io;
pub mod log;
pub mod metadata;
pub mod net;
pub mod protocol;
pub mod shard;
