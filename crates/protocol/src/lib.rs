//! The Kafka wire format as Caudal speaks it: request frames, record batches v2 and their
//! compression codecs, the old request layouts the `kafka-protocol` crate does not decode,
//! and the fetch response encoder that sends stored batches without copying. No I/O and
//! nothing of the broker: the broker and the load generator both build on it.
#![warn(missing_docs)]

pub mod compression;
pub mod fetch_encoder;
pub mod frame;
pub mod legacy;
pub mod record_batch;
