//! The Kafka wire format: frames, record batches and the API table. No I/O.

pub mod api;
pub mod compression;
pub mod fetch_encoder;
pub mod frame;
pub mod legacy;
pub mod record_batch;
