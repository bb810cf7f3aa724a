//! Produce: validate and append each partition's batches on the shard that owns it.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::error::{log_error_code, ErrorCode};
use crate::log::AppendResult;
use crate::shard::state::{publish, Shard, ShardStats};

/// One partition's part of a produce request, with its records as a mutable buffer.
struct PartitionData {
    index: i32,
    records: Option<BytesMut>,
}

/// Takes the record bytes out of a decoded request as mutable buffers, so the log can
/// stamp offsets into them without a copy. `body` is the request body the decoder read
/// from; the records are views of it. When nothing else still refers to the body, it is
/// split into disjoint mutable pieces at the records' boundaries; otherwise each
/// partition's records are copied.
fn take_records(mut request: ProduceRequest, body: Bytes) -> Vec<(TopicName, Vec<PartitionData>)> {
    let topic_data = std::mem::take(&mut request.topic_data);
    drop(request); // its other strings are views of the body too
    let base = body.as_ptr() as usize;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut topics = Vec::with_capacity(topic_data.len());
    for topic in topic_data {
        let name = TopicName(StrBytes::from_string(topic.name.0.to_string()));
        let parts = topic
            .partition_data
            .into_iter()
            .map(|p| {
                let slot = p.records.map(|r| {
                    let start = (r.as_ptr() as usize).wrapping_sub(base);
                    ranges.push((start, r.len()));
                    ranges.len() - 1
                });
                (p.index, slot)
            })
            .collect::<Vec<_>>();
        topics.push((name, parts));
    }
    // Every view of the body is gone now (names were copied), unless ranges are off.
    let inside = ranges
        .iter()
        .all(|&(start, len)| start.checked_add(len).is_some_and(|end| end <= body.len()));
    let mut pieces: Vec<Option<BytesMut>> = vec![None; ranges.len()];
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let disjoint = order
        .windows(2)
        .all(|w| ranges[w[0]].0 + ranges[w[0]].1 <= ranges[w[1]].0);
    let owned = if inside && disjoint {
        body.try_into_mut().map_err(|b| b)
    } else {
        Err(body)
    };
    match owned {
        Ok(mut all) => {
            let mut consumed = 0;
            for i in order {
                let (start, len) = ranges[i];
                let _ = all.split_to(start - consumed);
                pieces[i] = Some(all.split_to(len));
                consumed = start + len;
            }
        }
        Err(body) => {
            for (i, &(start, len)) in ranges.iter().enumerate() {
                pieces[i] = body
                    .get(start..start.saturating_add(len))
                    .map(BytesMut::from);
            }
        }
    }
    topics
        .into_iter()
        .map(|(name, parts)| {
            let parts = parts
                .into_iter()
                .map(|(index, slot)| PartitionData {
                    index,
                    records: slot.and_then(|i| pieces[i].take()),
                })
                .collect();
            (name, parts)
        })
        .collect()
}

/// Handles Produce. `None` for acks=0, which Kafka never answers.
pub async fn handle(
    shard: &Rc<Shard>,
    request: ProduceRequest,
    body: Bytes,
) -> Option<ProduceResponse> {
    ShardStats::add(&shard.stats.produce_requests, 1);
    let acks = request.acks;
    let acks_valid = (-1..=1).contains(&acks);
    // Start every partition's append before awaiting any, so they share fsyncs.
    let mut pending = Vec::new();
    for (topic_name, partitions) in take_records(request, body) {
        let name = topic_name.0.to_string();
        let mut parts = Vec::new();
        for p in partitions {
            let index = p.index;
            let outcome = if !acks_valid {
                Err(ErrorCode::InvalidRequiredAcks)
            } else {
                match (shard.local_partition(&name, index), p.records) {
                    (Err(code), _) => Err(code),
                    (Ok(_), None) => Err(ErrorCode::CorruptMessage),
                    (Ok(log), Some(records)) => {
                        let bytes = records.len() as u64;
                        let stats = shard.stats.clone();
                        let metrics = shard.stats.partition(&name, index);
                        Ok(glommio::spawn_local(async move {
                            let r = log.append(records).await;
                            if let Ok(a) = &r {
                                if !a.duplicate {
                                    ShardStats::add(&stats.produce_bytes, bytes);
                                    ShardStats::add(&metrics.bytes_in, bytes);
                                    ShardStats::add(
                                        &metrics.messages_in,
                                        (a.last_offset - a.base_offset + 1) as u64,
                                    );
                                }
                                publish(&metrics, &log);
                            }
                            r.map_err(|e| log_error_code(&e))
                        }))
                    }
                }
            };
            parts.push((index, outcome));
        }
        pending.push((topic_name, parts));
    }
    let mut responses = Vec::with_capacity(pending.len());
    for (name, parts) in pending {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for (index, outcome) in parts {
            let result: Result<AppendResult, ErrorCode> = match outcome {
                Ok(task) => task.await,
                Err(code) => Err(code),
            };
            let resp = PartitionProduceResponse::default().with_index(index);
            if let Err(code) = &result {
                shard.stats.error(*code);
            }
            partition_responses.push(match result {
                Ok(r) => resp
                    .with_base_offset(r.base_offset)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(r.log_start_offset),
                Err(code) => resp
                    .with_error_code(code.code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses),
        );
    }
    shard.data_arrived.notify();
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn request_body() -> Bytes {
        let data = |i: i32, v: &'static [u8]| {
            PartitionProduceData::default()
                .with_index(i)
                .with_records(Some(Bytes::from_static(v)))
        };
        let req = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(vec![data(0, b"zero"), data(1, b"one")]),
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("u")))
                    .with_partition_data(vec![data(7, b"seven")]),
            ]);
        let mut buf = BytesMut::new();
        req.encode(&mut buf, 9).unwrap();
        buf.freeze()
    }

    #[test]
    fn records_are_taken_back_without_a_copy_when_nothing_else_holds_the_body() {
        let body = request_body();
        let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
        let req = ProduceRequest::decode(&mut body.clone(), 9).unwrap();
        let topics = take_records(req, body);
        let got: Vec<(String, i32, Vec<u8>, bool)> = topics
            .iter()
            .flat_map(|(n, ps)| {
                ps.iter().map(move |p| {
                    let r = p.records.as_ref().unwrap();
                    let ptr = r.as_ptr() as usize;
                    (
                        n.0.to_string(),
                        p.index,
                        r.to_vec(),
                        ptr >= start && ptr < end,
                    )
                })
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t".into(), 0, b"zero".to_vec(), true),
                ("t".into(), 1, b"one".to_vec(), true),
                ("u".into(), 7, b"seven".to_vec(), true),
            ]
        );
    }

    #[test]
    fn records_are_copied_when_the_body_is_still_shared() {
        let body = request_body();
        let keep = body.clone();
        let req = ProduceRequest::decode(&mut body.clone(), 9).unwrap();
        let topics = take_records(req, body);
        let r = topics[0].1[0].records.as_ref().unwrap();
        assert_eq!(&r[..], b"zero");
        let inside = (r.as_ptr() as usize) >= keep.as_ptr() as usize
            && (r.as_ptr() as usize) < keep.as_ptr() as usize + keep.len();
        assert!(!inside, "a shared body must not be handed out as mutable");
    }
}
