//! Produce: validate and append each partition's batches on the ctx that owns it.

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::dispatch::context::RequestContext;
use crate::dispatch::respond::Reply;
use crate::error::{replica_error_code, ErrorCode};
use crate::replica::AppendResult;
use crate::shard::state::ShardStats;

/// Handles Produce. Silent for acks=0, which Kafka never answers.
pub async fn handle(ctx: &RequestContext<'_>, request: ProduceRequest) -> Reply<ProduceResponse> {
    ShardStats::add(&ctx.stats().produce_requests, 1);
    let acks = request.acks;
    let acks_valid = (-1..=1).contains(&acks);
    // Start every partition's append before awaiting any, so they share fsyncs.
    let mut pending = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let index = p.index;
            let outcome = if !acks_valid {
                Err(ErrorCode::InvalidRequiredAcks)
            } else {
                match (ctx.partition(&name, index), p.records) {
                    (Err(code), _) => Err(code),
                    (Ok(_), None) => Err(ErrorCode::CorruptMessage),
                    (Ok(partition), Some(records)) => {
                        let bytes = records.len() as u64;
                        let stats = ctx.stats().clone();
                        Ok(crate::task::spawn(async move {
                            let metrics = &partition.metrics;
                            let r = partition.replica.append(BytesMut::from(&records[..])).await;
                            if let Ok(a) = &r {
                                if !a.duplicate {
                                    ShardStats::add(&stats.produce_bytes, bytes);
                                    ShardStats::add(&metrics.bytes_in, bytes);
                                    ShardStats::add(
                                        &metrics.messages_in,
                                        (a.last_offset - a.base_offset + 1) as u64,
                                    );
                                }
                                partition.publish();
                            }
                            r.map_err(|e| replica_error_code(&e))
                        }))
                    }
                }
            };
            parts.push((index, outcome));
        }
        pending.push((topic.name, parts));
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
                ctx.stats().error(*code);
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
    if acks == 0 {
        return Reply::Silent;
    }
    Reply::Send(ProduceResponse::default().with_responses(responses))
}
