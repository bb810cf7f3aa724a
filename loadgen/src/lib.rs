//! caudal-loadgen: a Kafka-protocol load generator. It produces and consumes with many
//! connections and requests in flight, at a fixed rate (open loop) or flat out, and
//! records produce and end-to-end latency in HdrHistogram. It speaks only the Kafka
//! protocol, so it drives Caudal, Apache Kafka, Redpanda or any other Kafka broker.
#![warn(missing_docs)]

pub mod batch;
pub mod checker;
pub mod cluster;
pub mod compare;
pub mod consume;
pub mod fetch;
pub mod group;
pub mod history;
pub mod kafka;
pub mod plot;
pub mod produce;
pub mod recovery;
pub mod report;
pub mod results;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod verify;
