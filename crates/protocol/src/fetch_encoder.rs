//! Fetch responses written without copying the records.
//!
//! The codec crate encodes a response into one contiguous buffer, which means copying
//! every record batch a consumer reads (twice, counting the concatenation), and for large
//! responses a fresh multi-megabyte allocation that the kernel must fault in page by page.
//! Here the response is a list of segments: small buffers for the fields, and the batches
//! themselves as the `Bytes` slices the tail cache or a disk read already holds, sent with
//! one write each. Batches below `INLINE_BELOW` are copied into the field buffer instead,
//! where a copy is cheaper than another write.
//!
//! Layout (Fetch v4–v16; v12+ is flexible: compact lengths and tagged fields):
//! `{ header: correlation_id i32 [+ tags], throttle_time_ms i32, error_code i16 (v7+),
//!    session_id i32 (v7+), [ topic string (v4–12) | topic_id uuid (v13+), [ partition
//!    i32, error_code i16, high_watermark i64, last_stable_offset i64, log_start_offset
//!    i64 (v5+), aborted_transactions nullable [producer_id i64, first_offset i64],
//!    preferred_read_replica i32 (v11+), records nullable bytes [+ tags: 1 current
//!    leader { leader_id i32, leader_epoch i32 }] ] [+ tags] ] [+ tags: 0 node endpoints
//!    (v16+) [ node_id i32, host string, port i32, rack nullable string ] ] }`.

use bytes::{BufMut, Bytes, BytesMut};

/// Batches smaller than this are copied inline rather than sent as their own segment.
const INLINE_BELOW: usize = 16 << 10;

/// One partition of a fetch response.
#[derive(Debug, Clone, Default)]
pub struct PartitionOut {
    /// Partition number.
    pub index: i32,
    /// Kafka error code.
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// `Some(empty)` for read_committed consumers, `None` otherwise.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// Whole batches, in order.
    pub records: Vec<Bytes>,
    /// The partition's leader and its epoch, when this broker is not it (KIP-951; sent
    /// from v12, the first flexible version).
    pub current_leader: Option<(i32, i32)>,
}

/// One topic of a fetch response.
#[derive(Debug, Clone, Default)]
pub struct TopicOut {
    /// Topic name (v4–12).
    pub name: String,
    /// Topic id (v13+).
    pub topic_id: [u8; 16],
    /// Partitions, in request order.
    pub partitions: Vec<PartitionOut>,
}

/// A broker a response's leader hints name, and how to reach it (v16+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOut {
    /// Broker id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
}

/// A response under construction: field bytes accumulate in `scratch` until a large
/// batch forces a new segment.
struct Segments {
    out: Vec<Bytes>,
    scratch: BytesMut,
}

impl Segments {
    fn flush(&mut self) {
        if !self.scratch.is_empty() {
            self.out.push(self.scratch.split().freeze());
        }
    }

    fn bytes(&mut self, b: &Bytes) {
        if b.len() < INLINE_BELOW {
            self.scratch.extend_from_slice(b);
        } else {
            self.flush();
            self.out.push(b.clone());
        }
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_string(buf: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(buf, s.len() as u64 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

/// Encodes a whole Fetch response frame (size prefix included) as segments;
/// `endpoints` are the brokers the partitions' leader hints name.
pub fn encode(
    version: i16,
    correlation_id: i32,
    topics: &[TopicOut],
    endpoints: &[EndpointOut],
) -> Vec<Bytes> {
    let flexible = version >= 12;
    let mut s = Segments {
        out: Vec::new(),
        scratch: BytesMut::with_capacity(256),
    };
    let b = &mut s.scratch;
    b.put_i32(0); // size, patched below
    b.put_i32(correlation_id);
    if flexible {
        put_uvarint(b, 0); // response header tags
    }
    b.put_i32(0); // throttle_time_ms
    if version >= 7 {
        b.put_i16(0); // error_code
        b.put_i32(0); // session_id: no fetch sessions
    }
    put_len(b, flexible, topics.len());
    for t in topics {
        if version >= 13 {
            s.scratch.put_slice(&t.topic_id);
        } else {
            put_string(&mut s.scratch, flexible, &t.name);
        }
        put_len(&mut s.scratch, flexible, t.partitions.len());
        for p in &t.partitions {
            let b = &mut s.scratch;
            b.put_i32(p.index);
            b.put_i16(p.error_code);
            b.put_i64(p.high_watermark);
            b.put_i64(p.last_stable_offset);
            if version >= 5 {
                b.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None if flexible => put_uvarint(b, 0),
                None => b.put_i32(-1),
                Some(list) => {
                    put_len(b, flexible, list.len());
                    for &(producer_id, first_offset) in list {
                        b.put_i64(producer_id);
                        b.put_i64(first_offset);
                        if flexible {
                            put_uvarint(b, 0);
                        }
                    }
                }
            }
            if version >= 11 {
                b.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.records.iter().map(Bytes::len).sum();
            put_len(b, flexible, len);
            for r in &p.records {
                s.bytes(r);
            }
            if flexible {
                let b = &mut s.scratch;
                match p.current_leader {
                    Some((leader_id, leader_epoch)) => {
                        put_uvarint(b, 1); // one tagged field:
                        put_uvarint(b, 1); // tag 1, current leader,
                        put_uvarint(b, 9); // of 9 bytes
                        b.put_i32(leader_id);
                        b.put_i32(leader_epoch);
                        put_uvarint(b, 0);
                    }
                    None => put_uvarint(b, 0),
                }
            }
        }
        if flexible {
            put_uvarint(&mut s.scratch, 0); // topic tags
        }
    }
    if flexible {
        let b = &mut s.scratch;
        if version >= 16 && !endpoints.is_empty() {
            let mut field = BytesMut::new();
            put_uvarint(&mut field, endpoints.len() as u64 + 1);
            for e in endpoints {
                field.put_i32(e.node_id);
                put_string(&mut field, true, &e.host);
                field.put_i32(e.port);
                put_uvarint(&mut field, 0); // rack: null
                put_uvarint(&mut field, 0);
            }
            put_uvarint(b, 1); // one tagged field: tag 0, node endpoints
            put_uvarint(b, 0);
            put_uvarint(b, field.len() as u64);
            b.put_slice(&field);
        } else {
            put_uvarint(b, 0); // response tags
        }
    }
    s.flush();
    let total: usize = s.out.iter().map(Bytes::len).sum();
    // The size field sits at the start of the first segment, which is never a batch.
    let mut first = BytesMut::from(&s.out[0][..]);
    first[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
    s.out[0] = first.freeze();
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

    /// The same response encoded by the codec crate, for comparison.
    fn reference(
        version: i16,
        corr: i32,
        topics: &[TopicOut],
        endpoints: &[EndpointOut],
    ) -> Vec<u8> {
        use kafka_protocol::messages::fetch_response::{LeaderIdAndEpoch, NodeEndpoint};
        use kafka_protocol::messages::BrokerId;
        let responses = topics
            .iter()
            .map(|t| {
                let topic = FetchableTopicResponse::default();
                let topic = if version >= 13 {
                    topic.with_topic_id(uuid::Uuid::from_bytes(t.topic_id))
                } else {
                    topic.with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                };
                topic
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut recs = BytesMut::new();
                                for r in &p.records {
                                    recs.extend_from_slice(r);
                                }
                                PartitionData::default()
                                    .with_partition_index(p.index)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.last_stable_offset)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(p.aborted_transactions.as_ref().map(|v| {
                                        v.iter()
                                            .map(|&(pid, first)| {
                                                kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                                                    .with_producer_id(kafka_protocol::messages::ProducerId(pid))
                                                    .with_first_offset(first)
                                            })
                                            .collect()
                                    }))
                                    .with_records(Some(recs.freeze()))
                                    .with_current_leader(match p.current_leader {
                                        Some((id, epoch)) if version >= 12 => {
                                            LeaderIdAndEpoch::default()
                                                .with_leader_id(BrokerId(id))
                                                .with_leader_epoch(epoch)
                                        }
                                        _ => LeaderIdAndEpoch::default(),
                                    })
                            })
                            .collect(),
                    )
            })
            .collect();
        let nodes = if version >= 16 {
            endpoints
                .iter()
                .map(|e| {
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(e.node_id))
                        .with_host(StrBytes::from_string(e.host.clone()))
                        .with_port(e.port)
                })
                .collect()
        } else {
            Vec::new()
        };
        let resp = FetchResponse::default()
            .with_responses(responses)
            .with_node_endpoints(nodes);
        let hv = FetchResponse::header_version(version);
        let header = ResponseHeader::default().with_correlation_id(corr);
        let size = header.compute_size(hv).unwrap() + resp.compute_size(version).unwrap();
        let mut buf = BytesMut::new();
        buf.put_i32(size as i32);
        header.encode(&mut buf, hv).unwrap();
        resp.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn matches_the_codec_crate_byte_for_byte_in_every_version() {
        let big = Bytes::from(vec![7u8; 40_000]);
        let small = Bytes::from_static(b"0123456789");
        let topics = vec![
            TopicOut {
                name: "alpha".into(),
                topic_id: [1; 16],
                partitions: vec![
                    PartitionOut {
                        index: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 2,
                        records: vec![small.clone(), big.clone(), small.clone()],
                        ..Default::default()
                    },
                    PartitionOut {
                        index: 3,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: Some(vec![]),
                        ..Default::default()
                    },
                ],
            },
            TopicOut {
                name: "b".into(),
                topic_id: [2; 16],
                partitions: vec![PartitionOut {
                    index: 1,
                    aborted_transactions: Some(vec![(5, 6)]),
                    records: vec![big],
                    ..Default::default()
                }],
            },
        ];
        for version in 4..=16 {
            let ours: Vec<u8> = encode(version, 77, &topics, &[]).concat();
            assert_eq!(
                ours,
                reference(version, 77, &topics, &[]),
                "version {version}"
            );
        }
    }

    #[test]
    fn topic_ids_and_leader_hints_match_the_codec_crate() {
        let topics = [TopicOut {
            name: "hinted".into(),
            topic_id: [9; 16],
            partitions: vec![
                PartitionOut {
                    index: 0,
                    error_code: 6,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    current_leader: Some((1025, 3)),
                    ..Default::default()
                },
                PartitionOut {
                    index: 1,
                    high_watermark: 4,
                    last_stable_offset: 4,
                    records: vec![Bytes::from_static(b"batch")],
                    ..Default::default()
                },
            ],
        }];
        let endpoints = [EndpointOut {
            node_id: 1025,
            host: "10.0.0.7".into(),
            port: 9093,
        }];
        // Leader hints exist from v12 (the first flexible version), endpoints from v16.
        for version in 12..=16 {
            let ours: Vec<u8> = encode(version, 5, &topics, &endpoints).concat();
            assert_eq!(
                ours,
                reference(version, 5, &topics, &endpoints),
                "version {version}"
            );
        }
    }
}
