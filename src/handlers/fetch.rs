//! Fetch: read each partition from its offset; long-poll until `min_bytes` arrive or
//! `max_wait_ms` passes.

use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;

use crate::dispatch::context::RequestContext;
use crate::dispatch::respond::FetchReply;
use crate::error::{log_error_code, ErrorCode};
use crate::log::LogError;
use crate::protocol::fetch_encoder::{EndpointOut, PartitionOut, TopicOut};
use crate::protocol::record_batch::parse_header;
use crate::shard::state::ShardStats;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Handles Fetch: the topics to answer with, encoded by `protocol::fetch_encoder` so
/// that the batches are sent from where they already are.
pub async fn handle(ctx: &RequestContext<'_>, request: FetchRequest) -> FetchReply {
    ShardStats::add(&ctx.stats().fetch_requests, 1);
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        request.max_bytes as usize
    };
    let read_committed = request.isolation_level == 1;
    loop {
        let generation = ctx.data_arrived().generation();
        let (topics, total, errors) = read_all(ctx, &request, max_bytes, read_committed).await;
        let now = Instant::now();
        if total >= min_bytes.max(1) || errors || now >= deadline || ctx.is_stopping() {
            ShardStats::add(&ctx.stats().fetch_bytes, total as u64);
            let endpoints = leader_endpoints(ctx, &topics);
            return FetchReply { topics, endpoints };
        }
        futures_lite::future::or(
            ctx.data_arrived().changed_since(generation),
            crate::task::sleep(deadline - now),
        )
        .await;
    }
}

async fn read_all(
    ctx: &RequestContext<'_>,
    request: &FetchRequest,
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<TopicOut>, usize, bool) {
    // Start every partition's read before awaiting any: reads that go to disk then run
    // side by side instead of one after another.
    let mut reads = Vec::new();
    let meta = ctx.metadata();
    for topic in &request.topics {
        // v13+ names topics by id.
        let (name, id) = if topic.topic.0.is_empty() && !topic.topic_id.is_nil() {
            match meta.topic_by_id(&topic.topic_id) {
                Some(t) => (t.name.clone(), topic.topic_id),
                None => (String::new(), topic.topic_id),
            }
        } else {
            let name = topic.topic.0.to_string();
            // The answer carries the id only from v13, where the request names it.
            (name, uuid::Uuid::nil())
        };
        for p in &topic.partitions {
            let found = if name.is_empty() && !id.is_nil() {
                Err(ErrorCode::UnknownTopicId)
            } else {
                ctx.partition(&name, p.partition)
            };
            let found = found.and_then(|partition| {
                super::check_current_leader_epoch(
                    p.current_leader_epoch,
                    partition.replica.leader_epoch(),
                )
                .map(|()| partition)
            });
            let read = match found {
                Ok(partition) => {
                    let limit = (p.partition_max_bytes.max(0) as usize)
                        .min(max_bytes)
                        .max(1);
                    let offset = p.fetch_offset;
                    let replica = partition.replica.clone();
                    let task = crate::task::spawn(async move { replica.read(offset, limit).await });
                    Ok((partition, task))
                }
                Err(code) => Err(code),
            };
            reads.push((name.clone(), id, p.partition, read));
        }
    }
    let mut total = 0usize;
    let mut errors = false;
    let mut topics: Vec<TopicOut> = Vec::with_capacity(request.topics.len());
    for (name, id, index, read) in reads {
        let mut out = PartitionOut {
            index,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: read_committed.then(Vec::new),
            ..Default::default()
        };
        match read {
            Err(code) => {
                errors = true;
                ctx.stats().error(code);
                out.error_code = code.code();
                if code == ErrorCode::NotLeaderOrFollower {
                    out.current_leader = ctx
                        .partition_leader(&name, index)
                        .and_then(|l| l.leader.map(|id| (id, l.epoch)));
                }
            }
            Ok((partition, task)) => {
                let log = &partition.replica;
                out.high_watermark = log.high_watermark();
                out.last_stable_offset = out.high_watermark;
                out.log_start_offset = log.log_start_offset();
                match task.await {
                    // Past `max_bytes` (a soft limit, as in Kafka: the first partition with
                    // data always gets its batches) the rest waits for the next fetch.
                    Ok(r) if total > 0 && total + r.byte_len() > max_bytes => {}
                    Ok(r) => {
                        let bytes = r.byte_len();
                        let records: u64 = r
                            .batches
                            .iter()
                            .map(|b| parse_header(b).map_or(0, |h| h.records_count.max(0) as u64))
                            .sum();
                        total += bytes;
                        let m = &partition.metrics;
                        ShardStats::add(&m.bytes_out, bytes as u64);
                        ShardStats::add(&m.messages_out, records);
                        out.high_watermark = r.high_watermark;
                        out.last_stable_offset = r.high_watermark;
                        out.log_start_offset = r.log_start_offset;
                        out.records = r.batches;
                    }
                    Err(e) => {
                        errors = true;
                        let code = match &e {
                            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                            other => log_error_code(other),
                        };
                        ctx.stats().error(code);
                        out.error_code = code.code();
                    }
                }
            }
        }
        match topics.last_mut() {
            Some(t) if t.name == name && t.topic_id == *id.as_bytes() => t.partitions.push(out),
            _ => topics.push(TopicOut {
                name,
                topic_id: *id.as_bytes(),
                partitions: vec![out],
            }),
        }
    }
    (topics, total, errors)
}

/// The endpoints of the leaders the partitions' hints name (KIP-951).
fn leader_endpoints(ctx: &RequestContext<'_>, topics: &[TopicOut]) -> Vec<EndpointOut> {
    let mut out: Vec<EndpointOut> = Vec::new();
    for (leader, _) in topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.current_leader)
    {
        if out.iter().any(|e| e.node_id == leader) {
            continue;
        }
        if let Some((host, port)) = ctx.endpoint(leader) {
            out.push(EndpointOut {
                node_id: leader,
                host,
                port,
            });
        }
    }
    out
}
