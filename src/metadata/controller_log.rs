//! The controller log: the cluster metadata as a replicated log (Kafka's
//! `__cluster_metadata`, KRaft). It is an ordinary partition log kept by raft group
//! [`CONTROLLER_GROUP`] on shard 0 of the controller's voters; each proposal is one
//! uncompressed record batch whose record values are metadata records in the metadata
//! log's payload encoding (`store::MetaRecord`). A change of several records (the topics
//! of one CreateTopics) is one batch, so it commits whole or not at all.
//!
//! The offset after a record is the *revision* of the metadata once that record is
//! applied; every node applying the same log reaches the same state at the same revision.

use crate::codec::CodecError;
use crate::protocol::record_batch::{build_batch, uncompressed_records, Compression};

use super::store::MetaRecord;

/// The raft group of the controller log. Partition groups never take it: their id is a
/// topic id's first 8 bytes (with the v4 version nibble set, never all zero) xor a small
/// partition number.
pub const CONTROLLER_GROUP: u64 = 0;

/// Directory of the controller log within the data directory.
pub const LOG_DIR: &str = "__cluster_metadata-0";

/// Why a controller log batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControllerLogError {
    /// Not a readable record batch.
    #[error("controller log batch: {0}")]
    Batch(String),
    /// A record's value is not a metadata record.
    #[error("controller log record: {0}")]
    Record(#[from] CodecError),
}

/// One batch holding `records`, to propose to the controller group.
pub fn encode_batch(records: &[MetaRecord], timestamp_ms: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = records.iter().map(MetaRecord::encode).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    build_batch(0, timestamp_ms, &refs, Compression::None)
}

/// The records of one batch read back from the controller log, with the offset of each.
pub fn decode_batch(batch: &[u8]) -> Result<Vec<(u64, MetaRecord)>, ControllerLogError> {
    let header = crate::protocol::record_batch::parse_header(batch)
        .map_err(|e| ControllerLogError::Batch(e.to_string()))?;
    let records =
        uncompressed_records(batch).map_err(|e| ControllerLogError::Batch(e.to_string()))?;
    let base = u64::try_from(header.base_offset)
        .map_err(|_| ControllerLogError::Batch("negative base offset".into()))?;
    records
        .into_iter()
        .map(|r| {
            let delta = u64::try_from(r.offset_delta)
                .map_err(|_| ControllerLogError::Batch("negative offset delta".into()))?;
            let value = r
                .value
                .ok_or_else(|| ControllerLogError::Batch("a record without a value".into()))?;
            Ok((base + delta, MetaRecord::decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::BrokerEndpoint;

    #[test]
    fn a_batch_of_records_reads_back_with_their_offsets() {
        let records = vec![
            MetaRecord::PutBroker(
                2,
                BrokerEndpoint {
                    host: "10.0.0.2".into(),
                    port: 9092,
                    shards: 2,
                },
            ),
            MetaRecord::DeleteTopic("gone".into()),
        ];
        let mut batch = encode_batch(&records, 1_700_000_000_000);
        crate::protocol::record_batch::set_offset_and_epoch(&mut batch, 40, 3);
        let read = decode_batch(&batch).unwrap();
        assert_eq!(
            read,
            vec![(40, records[0].clone()), (41, records[1].clone())]
        );
    }

    #[test]
    fn a_record_that_is_not_metadata_is_refused() {
        let batch = build_batch(0, 0, &[b"\xffnot a record"], Compression::None);
        assert!(matches!(
            decode_batch(&batch),
            Err(ControllerLogError::Record(_))
        ));
    }
}
