//! Produce: validate and append each partition's batches on the ctx that owns it.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::dispatch::respond::Reply;
use crate::error::{replica_error_code, ErrorCode};
use crate::metadata::topic_config;
use crate::replica::AppendResult;
use crate::shard::state::ShardStats;

/// A topic's partitions, each with its record batches (`None`: the request had none).
type Partitions = Vec<(i32, Option<BytesMut>)>;

/// A Produce request's partitions with their record batches taken out, ready to append.
struct Plan {
    acks: i16,
    topics: Vec<(TopicName, Partitions)>,
}

/// Handles Produce from a decoded request without its frame (the API table's entry;
/// `dispatch` gives Produce its frame, see `handle_frame`): each partition's batches
/// are copied out to be stamped with offsets.
pub async fn handle(ctx: &RequestContext<'_>, request: ProduceRequest) -> Reply<ProduceResponse> {
    handle_frame(ctx, request, Bytes::new()).await
}

/// Handles Produce decoded from `whole`, the request's frame: once the request is taken
/// apart, `whole` is the frame's only owner, and a single partition's batches are split
/// out of it in place — stamped there, cached from there, and copied only into the
/// segment's DMA chunk. Requests for several partitions (and frames something else
/// still holds) have each partition's batches copied out.
pub async fn handle_frame(
    ctx: &RequestContext<'_>,
    mut request: ProduceRequest,
    whole: Bytes,
) -> Reply<ProduceResponse> {
    let acks = request.acks;
    let topic_data = std::mem::take(&mut request.topic_data);
    // The rest (a transactional id, tagged fields) may also be slices of the frame.
    drop(request);
    let base = whole.as_ptr() as usize;
    // Where each partition's batches sit in the frame, by position; names are copied so
    // the response holds no slice of it.
    let mut ranges: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut topics = Vec::with_capacity(topic_data.len());
    for (ti, t) in topic_data.into_iter().enumerate() {
        let name = TopicName(StrBytes::from_string(t.name.0.to_string()));
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let records = match p.records {
                None => None,
                Some(r) => {
                    let at = (r.as_ptr() as usize)
                        .checked_sub(base)
                        .filter(|at| at + r.len() <= whole.len() && !r.is_empty());
                    match at {
                        Some(at) => {
                            ranges.push((at, r.len(), ti, pi));
                            Some(BytesMut::new())
                        }
                        None => Some(BytesMut::from(&r[..])),
                    }
                }
            };
            parts.push((p.index, records));
        }
        topics.push((name, parts));
    }
    // Only a request for one partition is taken over: the tail cache keeps a batch until
    // it is on disk, and a slice keeps its whole frame alive, so one slow partition of a
    // many-partition request would pin every other partition's bytes with it.
    let taken = match (ranges.as_slice(), whole.try_into_mut()) {
        (&[(at, len, ti, pi)], Ok(mut rest)) => {
            rest.advance(at);
            topics[ti].1[pi].1 = Some(rest.split_to(len));
            None
        }
        (_, Ok(all)) => Some(all.freeze()),
        (_, Err(shared)) => Some(shared),
    };
    if let Some(frame) = taken {
        if !ranges.is_empty() {
            ShardStats::add(&ctx.stats().produce_copied, 1);
        }
        for &(at, len, ti, pi) in &ranges {
            topics[ti].1[pi].1 = Some(BytesMut::from(&frame[at..at + len]));
        }
    }
    let plan = Plan { acks, topics };
    run(ctx, plan).await
}

/// Appends every partition's batches. Silent for acks=0, which Kafka never answers.
async fn run(ctx: &RequestContext<'_>, plan: Plan) -> Reply<ProduceResponse> {
    ShardStats::add(&ctx.stats().produce_requests, 1);
    let acks = plan.acks;
    let acks_valid = (-1..=1).contains(&acks);
    // Start every partition's append before awaiting any, so they share fsyncs.
    let mut pending = Vec::new();
    for (topic_name, partitions) in plan.topics {
        let name = topic_name.0.to_string();
        let min_insync = if acks == -1 {
            min_insync_replicas(ctx, &name)
        } else {
            1
        };
        let mut parts = Vec::new();
        for (index, records) in partitions {
            let outcome = if !acks_valid {
                Err(ErrorCode::InvalidRequiredAcks)
            } else if name == crate::group::OFFSETS_TOPIC {
                // Kafka's rule: only the coordinators write the offsets topic.
                Err(ErrorCode::InvalidTopicException)
            } else {
                match (ctx.partition(&name, index), records) {
                    (Err(code), _) => Err(code),
                    (Ok(_), None) => Err(ErrorCode::CorruptMessage),
                    (Ok(p), Some(_)) if p.replica.in_sync_replicas() < min_insync => {
                        Err(ErrorCode::NotEnoughReplicas)
                    }
                    (Ok(partition), Some(records)) => {
                        let bytes = records.len() as u64;
                        let stats = ctx.stats().clone();
                        Ok(crate::task::spawn(async move {
                            let metrics = &partition.metrics;
                            let r = partition.replica.append_with_acks(records, acks).await;
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
        pending.push((topic_name, parts));
    }
    let mut responses = Vec::with_capacity(pending.len());
    let mut hints = LeaderHints::default();
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
                Err(code) => {
                    let resp = resp
                        .with_error_code(code.code())
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    if code == ErrorCode::NotLeaderOrFollower && ctx.version() >= 10 {
                        resp.with_current_leader(hints.leader_of(ctx, &name.0, index))
                    } else {
                        resp
                    }
                }
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
    Reply::Send(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(hints.endpoints),
    )
}

/// How many replicas `topic` wants in sync for acks=all (`min.insync.replicas`). A
/// partition of a single replica has that one, always in sync; a replicated one counts
/// the voters its leader has seen caught up.
fn min_insync_replicas(ctx: &RequestContext<'_>, topic: &str) -> usize {
    ctx.metadata()
        .topics
        .get(topic)
        .map_or(1, |t| topic_config::min_insync_replicas(&t.configs))
}

/// KIP-951: with NOT_LEADER_OR_FOLLOWER, Produce v10+ names the partition's leader and
/// how to reach it, so the client moves there without asking for metadata first.
#[derive(Default)]
struct LeaderHints {
    endpoints: Vec<NodeEndpoint>,
}

impl LeaderHints {
    /// The leader of `topic`/`index` as this node knows it (its endpoint joins the
    /// response's list), or "unknown" (-1).
    fn leader_of(&mut self, ctx: &RequestContext<'_>, topic: &str, index: i32) -> LeaderIdAndEpoch {
        let unknown = LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1);
        let Some(l) = ctx.partition_leader(topic, index) else {
            return unknown;
        };
        let Some(id) = l.leader else {
            return unknown;
        };
        let Some((host, port)) = ctx.endpoint(id) else {
            return unknown;
        };
        if !self.endpoints.iter().any(|e| e.node_id.0 == id) {
            self.endpoints.push(
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
            );
        }
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(id))
            .with_leader_epoch(l.epoch)
    }
}
