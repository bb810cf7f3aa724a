//! The Kafka wire format: frames, record batches and request/response codecs. No I/O.

pub mod record_batch;
