//! Producer lanes: one connection to one leader broker, its share of the partitions,
//! many requests in flight, batches built once and reused. Like the Java client and
//! librdkafka, a lane sends one request per round carrying a batch for every partition
//! it writes, not one request per partition.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};

use crate::batch::{BatchTemplate, STAMP_LEN};
use crate::cluster::topic_name;
use crate::kafka::{decode_response, encode_request, error_name, read_frame, Conn};
use crate::run::{lock, ProduceOpts, Shared};
use crate::schedule::{messages_per_batch, Schedule};
use crate::stats::SharedRecorder;

/// Bodies up to this size are copied behind their header and sent in one write.
const COALESCE_BYTES: usize = 64 << 10;

/// What one producer lane does.
#[derive(Debug, Clone)]
pub struct ProducerLane {
    /// Global lane number (high bits of message ids).
    pub id: u64,
    /// Leader broker address.
    pub addr: String,
    /// Partitions it writes, round-robin.
    pub partitions: Vec<i32>,
    /// Messages per second for this lane; 0 = flat out.
    pub rate: f64,
    /// Message budget, if any.
    pub messages: Option<u64>,
}

/// A produce request encoded once; only the correlation id (bytes 8..12) changes per
/// send, and, for e2e, the stamps inside each batch.
struct Prebuilt {
    /// The whole frame, size prefix included.
    frame: Bytes,
    /// Where each partition's batch starts in `frame`, in request order.
    batches: Vec<usize>,
    /// Length of each batch.
    batch_len: usize,
}

/// A request carrying `records` for each of `partitions`.
fn produce_request(
    topic: &TopicName,
    partitions: &[i32],
    opts: &ProduceOpts,
    records: Bytes,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(opts.acks)
        .with_timeout_ms(opts.request_timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(
                partitions
                    .iter()
                    .map(|&p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )])
}

/// Encodes `req` (whose partitions all carry `batch`) and finds each copy of the batch
/// in the frame: they follow one another, a few bytes of framing apart.
fn prebuild(req: &ProduceRequest, version: i16, client_id: &str, batch: &[u8]) -> Result<Prebuilt> {
    let frame = encode_request(req, version, 0, client_id)?.freeze();
    let copies = req.topic_data.iter().map(|t| t.partition_data.len()).sum();
    let probe = &batch[..batch.len().min(64)];
    let mut batches = Vec::with_capacity(copies);
    let mut from = 12;
    for _ in 0..copies {
        let at = (from..frame.len().saturating_sub(batch.len()) + 1)
            .take(4096)
            .find(|&i| frame[i..].starts_with(probe) && frame[i..i + batch.len()] == *batch)
            .context("produce frame does not hold its batches")?;
        batches.push(at);
        from = at + batch.len();
    }
    Ok(Prebuilt {
        frame,
        batches,
        batch_len: batch.len(),
    })
}

/// A request on the wire, waiting for its response.
struct InFlight {
    correlation: i32,
    sent_at: Instant,
    /// Index of the first message in the lane's schedule (rate mode).
    first_index: Option<u64>,
    count: u64,
    bytes: u64,
    id_sum: u64,
}

struct LaneCtx {
    shared: Arc<Shared>,
    rec: SharedRecorder,
    schedule: Option<Schedule>,
    version: i16,
    inflight: RefCell<VecDeque<InFlight>>,
    permits: Semaphore,
}

impl LaneCtx {
    /// Records the acknowledgement of `f` at `now`.
    fn acked(&self, f: &InFlight, now: Instant) {
        let mut rec = lock(&self.rec);
        rec.produced += f.count;
        rec.produced_bytes += f.bytes;
        match (self.schedule, f.first_index) {
            (Some(s), Some(first)) => {
                for j in first..first + f.count {
                    let due = s.message_due(j);
                    rec.record_latency(now.saturating_duration_since(due).as_micros() as u64, 1);
                }
            }
            _ => rec.record_latency(
                now.saturating_duration_since(f.sent_at).as_micros() as u64,
                f.count,
            ),
        }
        if rec.last_produce.is_none_or(|t| t < now) {
            rec.last_produce = Some(now);
        }
        drop(rec);
        self.shared.acked.fetch_add(f.count, Ordering::AcqRel);
        self.shared.acked_ids.fetch_add(f.id_sum, Ordering::AcqRel);
    }

    fn failed(&self, msg: String) {
        lock(&self.rec).errors += 1;
        self.shared.report_error(msg);
    }
}

/// Sum of ids `first..first+count`, wrapping.
fn id_sum(first: u64, count: u64) -> u64 {
    let mut s = 0u64;
    for i in 0..count {
        s = s.wrapping_add(first.wrapping_add(i));
    }
    s
}

async fn read_acks(mut reader: ReadHalf<TcpStream>, ctx: Rc<LaneCtx>) {
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(f) => f,
            Err(e) => {
                if !ctx.inflight.borrow().is_empty() {
                    ctx.failed(format!("produce connection: {e:#}"));
                }
                ctx.permits.close();
                return;
            }
        };
        let now = Instant::now();
        let Some(f) = ctx.inflight.borrow_mut().pop_front() else {
            ctx.failed("produce response with no request in flight".into());
            ctx.permits.close();
            return;
        };
        match decode_response::<ProduceRequest>(frame, ctx.version, f.correlation) {
            Ok(resp) => {
                let err = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.error_code != 0);
                match err {
                    None => ctx.acked(&f, now),
                    Some(p) => ctx.failed(format!(
                        "produce to partition {}: {} {}",
                        p.index,
                        error_name(p.error_code),
                        p.error_message.as_ref().map(|m| m.as_str()).unwrap_or("")
                    )),
                }
            }
            Err(e) => ctx.failed(format!("produce response: {e:#}")),
        }
        ctx.permits.signal(1);
    }
}

async fn write_request(
    w: &mut WriteHalf<TcpStream>,
    mut head: BytesMut,
    body: &[u8],
) -> Result<()> {
    if body.len() <= COALESCE_BYTES {
        head.extend_from_slice(body);
        w.write_all(&head).await?;
    } else {
        w.write_all(&head).await?;
        w.write_all(body).await?;
    }
    Ok(())
}

/// Runs one producer lane until its budget or the deadline; `stamp` writes send times
/// and ids into the values (e2e).
pub async fn run_lane(
    lane: ProducerLane,
    topic: String,
    opts: Rc<ProduceOpts>,
    client_id: String,
    stamp: bool,
    shared: Arc<Shared>,
    rec: SharedRecorder,
) {
    let result = lane_inner(&lane, &topic, &opts, &client_id, stamp, &shared, &rec).await;
    if let Err(e) = result {
        lock(&rec).errors += 1;
        shared.report_error(format!("producer lane {} ({}): {e:#}", lane.id, lane.addr));
    }
    shared.producer_finished();
}

async fn lane_inner(
    lane: &ProducerLane,
    topic: &str,
    opts: &ProduceOpts,
    client_id: &str,
    stamp: bool,
    shared: &Arc<Shared>,
    rec: &SharedRecorder,
) -> Result<()> {
    if lane.partitions.is_empty() {
        return Ok(());
    }
    if stamp && opts.message_size < STAMP_LEN {
        bail!("e2e needs --message-size of at least {STAMP_LEN} bytes");
    }
    let conn = Conn::connect(&lane.addr, client_id).await?;
    let version = conn.version::<ProduceRequest>()?;
    let topic = topic_name(topic);
    // Each request carries one batch of `m` messages for every partition of the lane:
    // full batches flat out; with a rate, what the lane sends in one linger window,
    // spread over its partitions.
    let parts = lane.partitions.len();
    let full = messages_per_batch(opts.message_size, opts.batch_bytes, 0.0, 0.0);
    let window = (lane.rate > 0.0)
        .then(|| messages_per_batch(opts.message_size, usize::MAX, lane.rate, opts.linger_ms));
    let m = match window {
        Some(window) => (window / parts).clamp(1, full),
        None => full,
    };
    let template = BatchTemplate::new(m, opts.message_size, opts.codec, lane.id);
    let t0 = shared.clock.now_millis();
    // The partitions go in groups of equal size, as many per request as fit in
    // `max_request_bytes`; the k-th request carries group k % groups.
    let batch_len = template.build(t0)?.len();
    // With a rate, a request carries no more than one linger window's messages, as a
    // client's would: at a low rate each message goes alone rather than waiting for one
    // more per partition (which measured the loadgen's batching, not the broker).
    let by_window = window.map_or(parts, |w| (w / m).max(1));
    let fit = (opts.max_request_bytes / batch_len.max(1))
        .clamp(1, parts)
        .min(by_window);
    let group = (1..=fit)
        .rev()
        .find(|g| parts.is_multiple_of(*g))
        .unwrap_or(1);
    let groups: Vec<&[i32]> = lane.partitions.chunks(group).collect();
    let n = m * group;
    // Built once, reused for every send; stamped (e2e) sends copy the frame and patch
    // each batch in place when it is uncompressed.
    let prebuilt: Vec<Prebuilt> = if stamp && opts.codec != crate::batch::Codec::None {
        Vec::new()
    } else {
        let batch = template.build(t0)?;
        groups
            .iter()
            .map(|g| {
                prebuild(
                    &produce_request(&topic, g, opts, batch.clone()),
                    version,
                    client_id,
                    &batch,
                )
            })
            .collect::<Result<_>>()?
    };
    // Consumers first (e2e), then everyone starts on the same clock.
    shared.wait_for_go(Duration::from_secs(120)).await;
    let schedule = (lane.rate > 0.0).then(|| Schedule::new(shared.start(), lane.rate, n));
    let (reader, mut writer, _) = conn.split();
    let ctx = Rc::new(LaneCtx {
        shared: shared.clone(),
        rec: rec.clone(),
        schedule,
        version,
        inflight: RefCell::new(VecDeque::new()),
        permits: Semaphore::new(opts.max_in_flight as u64),
    });
    let acks = opts.acks != 0;
    let reader_task = acks.then(|| glommio::spawn_local(read_acks(reader, ctx.clone())));
    let mut correlation: i32 = 1;
    let mut sent: u64 = 0;
    let mut k: u64 = 0;
    let mut remainder: Option<BatchTemplate> = None;
    loop {
        let budget_left = lane.messages.map(|m| m.saturating_sub(sent));
        if budget_left == Some(0) || shared.time_is_up() {
            break;
        }
        if let Some(s) = &schedule {
            let due = s.batch_due(k);
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
                if shared.time_is_up() {
                    break;
                }
            }
        }
        if acks && ctx.permits.acquire(1).await.is_err() {
            break; // the connection failed; the reader said why
        }
        let count = budget_left.map_or(n as u64, |left| left.min(n as u64));
        // The last request of a message budget may not fill every partition's batch: it
        // goes to one partition alone.
        let partition = lane.partitions[(k as usize) % parts];
        let sent_at = Instant::now();
        let first_id = (lane.id << 40) | (k * n as u64);
        let times = || -> Vec<u64> {
            match &schedule {
                Some(s) => s
                    .batch_message_times(k)
                    .map(|t| shared.clock.micros(t))
                    .collect(),
                None => vec![shared.clock.micros(sent_at); count as usize],
            }
        };
        let members = groups[(k as usize) % groups.len()];
        let (head, body): (BytesMut, Bytes) = match prebuilt.get((k as usize) % groups.len()) {
            Some(p) if count == n as u64 => {
                if stamp {
                    let mut frame = BytesMut::from(&p.frame[..]);
                    frame[8..12].copy_from_slice(&correlation.to_be_bytes());
                    let times = times();
                    for (j, &at) in p.batches.iter().enumerate() {
                        let own = &times[j * m..(j + 1) * m];
                        let id = first_id + (j * m) as u64;
                        if !template.stamp_in_place(&mut frame[at..at + p.batch_len], own, id) {
                            bail!("could not stamp the batch");
                        }
                    }
                    (frame, Bytes::new())
                } else {
                    let mut head = BytesMut::from(&p.frame[..12]);
                    head[8..12].copy_from_slice(&correlation.to_be_bytes());
                    (head, p.frame.slice(12..))
                }
            }
            _ => {
                // Built for this send: the last request of a message budget (to one
                // partition), or compressed e2e batches (stamped before compression).
                let targets: Vec<(i32, usize)> = if count < n as u64 {
                    vec![(partition, count as usize)]
                } else {
                    members.iter().map(|&p| (p, m)).collect()
                };
                let times = if stamp { times() } else { Vec::new() };
                let mut data = Vec::with_capacity(targets.len());
                let mut at = 0usize;
                for (part, cnt) in targets {
                    let t = if cnt == m {
                        &template
                    } else {
                        remainder.get_or_insert_with(|| {
                            BatchTemplate::new(cnt, opts.message_size, opts.codec, lane.id)
                        })
                    };
                    let batch = if stamp {
                        t.build_stamped(t0, &times[at..at + cnt], first_id + at as u64)?
                    } else {
                        t.build(t0)?
                    };
                    data.push(
                        PartitionProduceData::default()
                            .with_index(part)
                            .with_records(Some(batch)),
                    );
                    at += cnt;
                }
                let req = ProduceRequest::default()
                    .with_acks(opts.acks)
                    .with_timeout_ms(opts.request_timeout_ms)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(data)]);
                let frame = encode_request(&req, version, correlation, client_id)?;
                (frame, Bytes::new())
            }
        };
        let payload = count * opts.message_size as u64;
        let ids = if stamp { id_sum(first_id, count) } else { 0 };
        if acks {
            ctx.inflight.borrow_mut().push_back(InFlight {
                correlation,
                sent_at,
                first_index: schedule.map(|s| k * s.batch()),
                count,
                bytes: payload,
                id_sum: ids,
            });
        }
        write_request(&mut writer, head, &body)
            .await
            .map_err(|e| anyhow!("sending produce request: {e:#}"))?;
        if !acks {
            // acks=0: no response; the message counts once written.
            ctx.acked(
                &InFlight {
                    correlation,
                    sent_at,
                    first_index: schedule.map(|s| k * s.batch()),
                    count,
                    bytes: payload,
                    id_sum: ids,
                },
                Instant::now(),
            );
        }
        correlation = correlation.wrapping_add(1).max(1);
        sent += count;
        k += 1;
    }
    if let Some(task) = reader_task {
        // Wait for every request in flight (bounded), then stop the reader.
        let all = opts.max_in_flight as u64;
        let wait =
            futures_lite::future::or(async { ctx.permits.acquire(all).await.is_ok() }, async {
                glommio::timer::sleep(Duration::from_millis(
                    opts.request_timeout_ms.max(1000) as u64 + 5000,
                ))
                .await;
                false
            })
            .await;
        let left = ctx.inflight.borrow().len();
        if !wait && left > 0 {
            ctx.failed(format!("{left} produce requests never answered"));
        }
        drop(task);
    }
    let _ = writer.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Codec;

    fn opts() -> ProduceOpts {
        ProduceOpts {
            message_size: 100,
            batch_bytes: 16 << 10,
            linger_ms: 0.0,
            acks: -1,
            codec: Codec::None,
            producers: 1,
            rate: 0.0,
            max_in_flight: 4,
            request_timeout_ms: 30_000,
            max_request_bytes: 1 << 20,
        }
    }

    #[test]
    fn one_request_carries_a_batch_for_every_partition_and_each_is_found() {
        let batch = BatchTemplate::new(3, 100, Codec::None, 1).build(0).unwrap();
        for version in [3i16, 7, 9] {
            let req = produce_request(&topic_name("t"), &[0, 1, 2, 3], &opts(), batch.clone());
            let p = prebuild(&req, version, "c", &batch).unwrap();
            assert_eq!(p.batches.len(), 4, "v{version}");
            for &at in &p.batches {
                assert_eq!(&p.frame[at..at + batch.len()], &batch[..], "v{version}");
            }
            assert_eq!(
                p.frame,
                encode_request(&req, version, 0, "c").unwrap().freeze()
            );
        }
    }

    #[test]
    fn id_sums_match_one_by_one_addition() {
        assert_eq!(id_sum(10, 3), 33);
        assert_eq!(id_sum(u64::MAX, 2), u64::MAX); // MAX + 0, wrapped
    }
}
