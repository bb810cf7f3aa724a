//! Producer lanes: one connection to one leader broker, its share of the partitions,
//! many requests in flight, batches built once and reused.

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
use kafka_protocol::protocol::HeaderVersion;

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

/// A produce request encoded once; only the correlation id changes per send.
struct Prebuilt {
    /// Everything before the records (correlation id at bytes 8..12).
    head: Bytes,
    /// The records and the trailing tagged fields.
    body: Bytes,
}

fn produce_request(
    topic: &TopicName,
    partition: i32,
    opts: &ProduceOpts,
    records: Bytes,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(opts.acks)
        .with_timeout_ms(opts.request_timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn prebuild(
    req: &ProduceRequest,
    version: i16,
    client_id: &str,
    batch_len: usize,
) -> Result<Prebuilt> {
    let frame = encode_request(req, version, 0, client_id)?.freeze();
    // Flexible versions end with three empty tagged-field sections (partition, topic,
    // request) after the records.
    let trailer = if ProduceRequest::header_version(version) >= 2 {
        3
    } else {
        0
    };
    let start = frame
        .len()
        .checked_sub(trailer + batch_len)
        .context("produce frame shorter than its batch")?;
    Ok(Prebuilt {
        head: frame.slice(..start),
        body: frame.slice(start..),
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
    let n = messages_per_batch(
        opts.message_size,
        opts.batch_bytes,
        lane.rate,
        opts.linger_ms,
    );
    let template = BatchTemplate::new(n, opts.message_size, opts.codec, lane.id);
    let t0 = shared.clock.now_millis();
    // Built once, reused for every send; stamped (e2e) sends copy the frame's batch and
    // patch it in place when it is uncompressed.
    let prebuilt: Vec<Prebuilt> = if stamp && opts.codec != crate::batch::Codec::None {
        Vec::new()
    } else {
        let batch = template.build(t0)?;
        lane.partitions
            .iter()
            .map(|&p| {
                let req = produce_request(&topic, p, opts, batch.clone());
                prebuild(&req, version, client_id, batch.len())
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
        let partition_idx = (k as usize) % lane.partitions.len();
        let partition = lane.partitions[partition_idx];
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
        let (head, body): (BytesMut, Bytes) = if count < n as u64 || prebuilt.is_empty() {
            let t = if count < n as u64 {
                remainder.get_or_insert_with(|| {
                    BatchTemplate::new(count as usize, opts.message_size, opts.codec, lane.id)
                })
            } else {
                &template
            };
            let batch = if stamp {
                t.build_stamped(t0, &times(), first_id)?
            } else {
                t.build(t0)?
            };
            let req = produce_request(&topic, partition, opts, batch);
            let frame = encode_request(&req, version, correlation, client_id)?;
            (frame, Bytes::new())
        } else {
            let p = &prebuilt[partition_idx];
            let mut head = BytesMut::from(&p.head[..]);
            head[8..12].copy_from_slice(&correlation.to_be_bytes());
            let body = if stamp {
                let mut b = BytesMut::from(&p.body[..]);
                if !template.stamp_in_place(&mut b, &times(), first_id) {
                    bail!("could not stamp the batch");
                }
                b.freeze()
            } else {
                p.body.clone()
            };
            (head, body)
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
        }
    }

    #[test]
    fn prebuilt_requests_split_exactly_at_the_records() {
        let batch = BatchTemplate::new(3, 100, Codec::None, 1).build(0).unwrap();
        for version in [3i16, 7, 9] {
            let req = produce_request(&topic_name("t"), 2, &opts(), batch.clone());
            let p = prebuild(&req, version, "c", batch.len()).unwrap();
            assert_eq!(&p.body[..batch.len()], &batch[..]);
            let whole = encode_request(&req, version, 0, "c").unwrap();
            let mut joined = p.head.to_vec();
            joined.extend_from_slice(&p.body);
            assert_eq!(joined, whole.to_vec(), "v{version}");
        }
    }

    #[test]
    fn id_sums_match_one_by_one_addition() {
        assert_eq!(id_sum(10, 3), 33);
        assert_eq!(id_sum(u64::MAX, 2), u64::MAX); // MAX + 0, wrapped
    }
}
