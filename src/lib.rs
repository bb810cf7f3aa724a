//! Caudal: a Kafka-wire-compatible message broker, thread-per-core on io_uring.
#![warn(missing_docs)]

pub mod io;
pub mod log;
pub mod protocol;
