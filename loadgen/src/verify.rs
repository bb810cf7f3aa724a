//! The verification workload (`caudal-loadgen verify`), in the spirit of Jepsen's Kafka
//! workload: producers send unique values to a few partitions with acks=all, one send
//! in flight each, recording every outcome; consumers read every partition in assign
//! mode from the start, recording every poll; group consumers share the partitions in
//! one consumer group, committing as they read and recording every acknowledged commit
//! and every committed offset they start from; after the run, and after faults have been
//! healed, one last reader reads every partition to its end and the group's committed
//! offsets. The history then goes to the checker. Every wait has a bound, so a cluster that never recovers fails the run
//! with a message instead of hanging it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use caudal_protocol::compression::Compression;
use caudal_protocol::record_batch::{build_batch, set_producer};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, InitProducerIdRequest, ProduceRequest};

use crate::batch::walk_records;
use crate::cluster::{self, topic_name, Topology};
use crate::group::{self, Subscriber};
use crate::history::{value_of, Commit, CommitRead, History, Outcome, Poll, Send, Value};
use crate::kafka::{error_name, Conn};

/// What a verification run does.
#[derive(Debug, Clone)]
pub struct VerifyOpts {
    /// Brokers to ask for metadata, tried in turn (any of them may be down).
    pub bootstrap: Vec<String>,
    /// Topic (created with the broker's default replication factor if missing).
    pub topic: String,
    /// Partitions of the topic, if it has to be created.
    pub partitions: i32,
    /// Replicas of each partition, if the topic has to be created.
    pub replication_factor: i16,
    /// The topic's `min.insync.replicas`, if it has to be created.
    pub min_insync_replicas: i16,
    /// Producers, each with one send in flight.
    pub producers: u32,
    /// Consumers in assign mode, each reading every partition.
    pub consumers: u32,
    /// Consumers in one group, sharing the partitions and committing offsets.
    pub group_consumers: u32,
    /// The group's id.
    pub group: String,
    /// How long producers and consumers run.
    pub duration: Duration,
    /// How long the last read may take to reach every partition's end after the run
    /// (the faults must be healed by then).
    pub settle: Duration,
    /// Idempotent producers (retrying a send with its sequence until it is known).
    pub idempotent: bool,
    /// Produce request timeout sent to the broker; the client waits 2 s more.
    pub request_timeout: Duration,
    /// Client id.
    pub client_id: String,
}

/// What the run saw besides its history.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunFacts {
    /// Each partition's end offset read by the last reader.
    pub final_offsets: BTreeMap<i32, i64>,
    /// Consumer sessions restarted because their position was out of range.
    pub out_of_range_resets: u64,
    /// Records whose value was not one of this workload's.
    pub foreign_records: u64,
    /// InitProducerId attempts that failed.
    pub producer_id_failures: u64,
    /// The last InitProducerId error.
    pub producer_id_error: Option<String>,
    /// Wall-clock time of the run's start (ms since the Unix epoch): the zero of every
    /// `at_ms` in the history, for lining faults up with it.
    pub started_unix_ms: u64,
}

struct Ctx {
    opts: VerifyOpts,
    started: Instant,
    end: Instant,
    history: RefCell<History>,
    topology: RefCell<Topology>,
    facts: RefCell<RunFacts>,
}

impl Ctx {
    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn leader(&self, partition: i32) -> Option<String> {
        self.topology
            .borrow()
            .leader_addr(partition)
            .ok()
            .map(str::to_string)
    }

    /// Asks the brokers in turn for the topic's leaders (each for at most 3 s).
    async fn refresh(&self) {
        for addr in &self.opts.bootstrap {
            let asked = within(Duration::from_secs(3), async {
                let mut conn = Conn::connect(addr, &self.opts.client_id).await?;
                cluster::read_topology(&mut conn, &self.opts.topic).await
            })
            .await;
            if let Ok(topo) = asked {
                if !topo.leaders.is_empty() {
                    *self.topology.borrow_mut() = topo;
                    return;
                }
            }
        }
    }
}

/// Runs `f` for at most `bound`.
async fn within<T>(bound: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    futures_lite::future::or(f, async {
        glommio::timer::sleep(bound).await;
        Err(anyhow!("no answer within {bound:?}"))
    })
    .await
}

/// Runs the workload and returns its history.
pub fn run(opts: VerifyOpts) -> Result<(History, RunFacts)> {
    crate::runner::block_on(move || async move {
        if opts.bootstrap.is_empty() {
            bail!("no bootstrap broker given");
        }
        let topology = cluster::load_topology(
            &opts.bootstrap[0],
            &opts.client_id,
            &opts.topic,
            opts.partitions,
            true,
            &[(
                "min.insync.replicas".to_string(),
                opts.min_insync_replicas.to_string(),
            )],
            opts.replication_factor,
        )
        .await?;
        let started = Instant::now();
        let facts = RunFacts {
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ..RunFacts::default()
        };
        let ctx = Rc::new(Ctx {
            end: started + opts.duration,
            started,
            opts,
            history: RefCell::new(History::default()),
            topology: RefCell::new(topology),
            facts: RefCell::new(facts),
        });
        let mut tasks = Vec::new();
        for id in 0..ctx.opts.producers {
            tasks.push(glommio::spawn_local(produce(ctx.clone(), id)));
        }
        for id in 0..ctx.opts.consumers {
            tasks.push(glommio::spawn_local(consume(ctx.clone(), id)));
        }
        // Ids after the assign-mode consumers and the last reader.
        for n in 0..ctx.opts.group_consumers {
            let id = ctx.opts.consumers + 1 + n;
            tasks.push(glommio::spawn_local(consume_in_group(ctx.clone(), id)));
        }
        for t in tasks {
            t.await;
        }
        final_read(&ctx).await?;
        let history = ctx.history.take();
        let facts = ctx.facts.take();
        Ok((history, facts))
    })
}

/// Kafka error codes that refuse a produce before anything is appended, in Kafka and in
/// Caudal: such a send definitely failed. Every other error leaves it unknown (a
/// leader that loses its term after appending answers NOT_LEADER_OR_FOLLOWER, and the
/// record may still commit).
fn refused_before_append(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE,
    // NOT_ENOUGH_REPLICAS, INVALID_RECORD.
    matches!(code, 3 | 2 | 10 | 19 | 87)
}

/// One value as a record batch (8 bytes, big-endian), stamped for an idempotent
/// producer when it has an id.
fn batch_of(value: Value, producer: Option<(i64, i16, i32)>) -> Bytes {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut b = build_batch(0, now_ms, &[&value.to_be_bytes()], Compression::None);
    if let Some((id, epoch, seq)) = producer {
        set_producer(&mut b, id, epoch, seq);
    }
    Bytes::from(b)
}

async fn produce(ctx: Rc<Ctx>, id: u32) {
    let partitions = ctx.topology.borrow().partitions();
    let mut conns: HashMap<String, Conn> = HashMap::new();
    let mut producer: Option<(i64, i16)> = None;
    let mut sequences: HashMap<i32, i32> = HashMap::new();
    let mut seq = 0u32;
    while Instant::now() < ctx.end && !partitions.is_empty() {
        if ctx.opts.idempotent && producer.is_none() {
            producer = init_producer_id(&ctx).await;
            sequences.clear();
            if producer.is_none() {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let partition = partitions[(id as usize + seq as usize) % partitions.len()];
        let value = value_of(id, seq);
        seq += 1;
        let stamp = producer
            .map(|(pid, epoch)| (pid, epoch, sequences.get(&partition).copied().unwrap_or(0)));
        let batch = batch_of(value, stamp);
        let sent_ms = ctx.ms();
        let outcome = send(&ctx, &mut conns, partition, batch).await;
        match &outcome {
            Outcome::Ok { .. } => {
                *sequences.entry(partition).or_default() += 1;
            }
            // An idempotent producer whose send is unknown starts over with a new id,
            // as Kafka's producer bumps its epoch (KIP-360): its next sequence would
            // otherwise depend on the unknown outcome.
            Outcome::Unknown { .. } => producer = None,
            Outcome::Failed { .. } => {}
        }
        let failed = !matches!(outcome, Outcome::Ok { .. });
        ctx.history.borrow_mut().sends.push(Send {
            producer: id,
            partition,
            value,
            outcome,
            at_ms: ctx.ms(),
            sent_ms,
        });
        if failed {
            ctx.refresh().await;
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn init_producer_id(ctx: &Ctx) -> Option<(i64, i16)> {
    for addr in &ctx.opts.bootstrap {
        let got = within(Duration::from_secs(5), async {
            let mut conn = Conn::connect(addr, &ctx.opts.client_id).await?;
            // Not transactional: a null id (the crate's default is "", which Kafka
            // refuses as an empty transactional id).
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            let resp = conn.call(&req).await?;
            if resp.error_code != 0 {
                bail!("InitProducerId: {}", error_name(resp.error_code));
            }
            Ok((resp.producer_id.0, resp.producer_epoch))
        })
        .await;
        match got {
            Ok(p) => return Some(p),
            Err(e) => {
                let mut facts = ctx.facts.borrow_mut();
                facts.producer_id_failures += 1;
                facts.producer_id_error = Some(format!("{addr}: {e:#}"));
            }
        }
    }
    None
}

/// Sends one batch to its partition's leader. A plain producer tries once; an
/// idempotent one retries the same batch (same sequence) until it is acknowledged or
/// twice the request timeout has passed, as Kafka's producer retries within its
/// delivery timeout.
async fn send(
    ctx: &Ctx,
    conns: &mut HashMap<String, Conn>,
    partition: i32,
    batch: Bytes,
) -> Outcome {
    let retry_until = Instant::now() + ctx.opts.request_timeout * 2;
    // Whether an attempt so far may have appended the batch.
    let mut maybe_written = false;
    loop {
        let error = match attempt(ctx, conns, partition, &batch).await {
            Ok(offset) => return Outcome::Ok { offset },
            Err(Attempt::NotSent(e)) => e,
            Err(Attempt::Refused(code)) => {
                maybe_written |= !refused_before_append(code);
                error_name(code)
            }
            Err(Attempt::Lost(e)) => {
                maybe_written = true;
                e
            }
        };
        if !ctx.opts.idempotent || Instant::now() >= retry_until {
            return if maybe_written {
                Outcome::Unknown { error }
            } else {
                Outcome::Failed { error }
            };
        }
        ctx.refresh().await;
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Why one attempt did not return an offset.
enum Attempt {
    /// The request never left: no leader known, or no connection.
    NotSent(String),
    /// The broker answered with this error code.
    Refused(i16),
    /// The request left and no answer came (a lost connection or a timeout).
    Lost(String),
}

async fn attempt(
    ctx: &Ctx,
    conns: &mut HashMap<String, Conn>,
    partition: i32,
    batch: &Bytes,
) -> Result<i64, Attempt> {
    let Some(addr) = ctx.leader(partition) else {
        return Err(Attempt::NotSent(format!(
            "partition {partition} has no known leader"
        )));
    };
    if !conns.contains_key(&addr) {
        let conn = within(
            Duration::from_secs(3),
            Conn::connect(&addr, &ctx.opts.client_id),
        )
        .await
        .map_err(|e| Attempt::NotSent(format!("connecting to {addr}: {e:#}")))?;
        conns.insert(addr.clone(), conn);
    }
    let Some(conn) = conns.get_mut(&addr) else {
        return Err(Attempt::NotSent(format!("no connection to {addr}")));
    };
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(ctx.opts.request_timeout.as_millis() as i32)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(&ctx.opts.topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.clone()))])]);
    let answered = within(
        ctx.opts.request_timeout + Duration::from_secs(2),
        conn.call(&req),
    )
    .await;
    let resp = match answered {
        Ok(r) => r,
        Err(e) => {
            // The connection's state is unknown: never reuse it.
            conns.remove(&addr);
            return Err(Attempt::Lost(format!("produce to {addr}: {e:#}")));
        }
    };
    let part = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition);
    match part {
        Some(p) if p.error_code == 0 => Ok(p.base_offset),
        Some(p) => Err(Attempt::Refused(p.error_code)),
        None => Err(Attempt::Lost(format!(
            "produce response from {addr} without partition {partition}"
        ))),
    }
}

/// Reads the records of one fetched partition into `(offset, value)` pairs.
fn values_in(ctx: &Ctx, records: &[u8], from: i64) -> Result<(Vec<(i64, Value)>, i64)> {
    let mut read = Vec::new();
    let mut foreign = 0;
    let seen = walk_records(records, from, |offset, value| {
        match <[u8; 8]>::try_from(value) {
            Ok(v) => read.push((offset, u64::from_be_bytes(v))),
            Err(_) => foreign += 1,
        }
    })?;
    ctx.facts.borrow_mut().foreign_records += foreign;
    Ok((read, seen.next_offset))
}

/// One fetch of `partitions` (at their positions) from `addr`: per partition, its
/// error code and, when it read, its records and next position.
async fn fetch(
    ctx: &Ctx,
    conns: &mut HashMap<String, Conn>,
    addr: &str,
    positions: &[(i32, i64)],
) -> Result<Vec<(i32, i16, Option<(Vec<(i64, Value)>, i64)>)>> {
    if !conns.contains_key(addr) {
        let conn = within(
            Duration::from_secs(3),
            Conn::connect(addr, &ctx.opts.client_id),
        )
        .await?;
        conns.insert(addr.to_string(), conn);
    }
    let conn = conns
        .get_mut(addr)
        .ok_or_else(|| anyhow!("no connection to {addr}"))?;
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(4 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(&ctx.opts.topic))
            .with_partitions(
                positions
                    .iter()
                    .map(|&(p, at)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(at)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let resp = match within(Duration::from_secs(5), conn.call(&req)).await {
        Ok(r) => r,
        Err(e) => {
            conns.remove(addr);
            return Err(e);
        }
    };
    if resp.error_code != 0 {
        bail!("fetch from {addr}: {}", error_name(resp.error_code));
    }
    let mut out = Vec::new();
    for t in &resp.responses {
        for p in &t.partitions {
            let from = positions
                .iter()
                .find(|(q, _)| *q == p.partition_index)
                .map_or(0, |(_, at)| *at);
            let read = match (&p.records, p.error_code) {
                (Some(records), 0) => Some(values_in(ctx, records, from)?),
                (None, 0) => Some((Vec::new(), from)),
                _ => None,
            };
            out.push((p.partition_index, p.error_code, read));
        }
    }
    Ok(out)
}

/// OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;

async fn consume(ctx: Rc<Ctx>, id: u32) {
    let mut conns: HashMap<String, Conn> = HashMap::new();
    let mut positions: BTreeMap<i32, i64> = ctx
        .topology
        .borrow()
        .partitions()
        .into_iter()
        .map(|p| (p, 0))
        .collect();
    let mut session = 0u32;
    while Instant::now() < ctx.end {
        if fetch_round(&ctx, &mut conns, &mut positions, id, &mut session).await {
            ctx.refresh().await;
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One fetch of every partition in `positions` from its leader, recording what was
/// read as consumer `id`'s polls and moving the positions on; true when something went
/// wrong (no leader known, an error), so the caller refreshes and waits a little.
async fn fetch_round(
    ctx: &Ctx,
    conns: &mut HashMap<String, Conn>,
    positions: &mut BTreeMap<i32, i64>,
    id: u32,
    session: &mut u32,
) -> bool {
    let parts: Vec<i32> = positions.keys().copied().collect();
    let lanes = ctx.topology.borrow().by_leader(&parts).unwrap_or_default();
    let mut trouble = lanes.is_empty();
    for (addr, parts) in lanes {
        let asked: Vec<(i32, i64)> = parts.iter().map(|p| (*p, positions[p])).collect();
        let Ok(answers) = fetch(ctx, conns, &addr, &asked).await else {
            trouble = true;
            continue;
        };
        for (partition, code, read) in answers {
            let from = positions.get(&partition).copied().unwrap_or(0);
            match read {
                Some((read, next)) => {
                    positions.insert(partition, next);
                    if !read.is_empty() {
                        ctx.history.borrow_mut().polls.push(Poll {
                            consumer: id,
                            session: *session,
                            partition,
                            from,
                            read,
                            at_ms: ctx.ms(),
                        });
                    }
                }
                None if code == OFFSET_OUT_OF_RANGE => {
                    // A reader's position past the log's end (possible only if the log
                    // lost what it served): start over, in a new session.
                    ctx.facts.borrow_mut().out_of_range_resets += 1;
                    *session += 1;
                    positions.insert(partition, 0);
                }
                None => trouble = true,
            }
        }
    }
    trouble
}

/// How often a group consumer heartbeats and commits.
const GROUP_BEAT: Duration = Duration::from_millis(500);

/// A consumer in the run's group: joins, starts each partition it is given at the
/// group's committed offset (recorded, so the checker can tell whether an acknowledged
/// commit was lost), reads, and commits what it read every half second; it joins again, in
/// a new session, whenever the group rebalances or its coordinator fails.
async fn consume_in_group(ctx: Rc<Ctx>, id: u32) {
    let bootstrap = &ctx.opts.bootstrap;
    let mut conns: HashMap<String, Conn> = HashMap::new();
    let mut session = 0u32;
    let mut attempt = 0usize;
    while Instant::now() < ctx.end {
        // Any node may be down: ask each in turn.
        let who = Subscriber {
            bootstrap: bootstrap[attempt % bootstrap.len()].clone(),
            client_id: ctx.opts.client_id.clone(),
            topic: ctx.opts.topic.clone(),
            partitions: ctx.topology.borrow().partitions(),
        };
        attempt += 1;
        let Ok(mut m) = within(Duration::from_secs(15), group::join(&who, &ctx.opts.group)).await
        else {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let sent_ms = ctx.ms();
        let read = within(
            Duration::from_secs(5),
            group::committed(
                &mut m.coordinator,
                &ctx.opts.group,
                &ctx.opts.topic,
                &m.partitions,
            ),
        )
        .await;
        let Ok(committed) = read else {
            continue;
        };
        for &partition in &m.partitions {
            ctx.history.borrow_mut().commit_reads.push(CommitRead {
                consumer: id,
                partition,
                offset: committed.get(&partition).copied(),
                sent_ms,
            });
        }
        session += 1;
        let mut positions: BTreeMap<i32, i64> = m
            .partitions
            .iter()
            .map(|p| (*p, committed.get(p).copied().unwrap_or(0)))
            .collect();
        let mut last_beat = Instant::now();
        loop {
            let ending = Instant::now() >= ctx.end;
            if !ending {
                let trouble = if positions.is_empty() {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    false
                } else {
                    fetch_round(&ctx, &mut conns, &mut positions, id, &mut session).await
                };
                if trouble {
                    ctx.refresh().await;
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                if last_beat.elapsed() < GROUP_BEAT {
                    continue;
                }
            }
            last_beat = Instant::now();
            if !commit_positions(&ctx, &mut m, id, &positions).await {
                break;
            }
            if ending {
                let _ = within(
                    Duration::from_secs(5),
                    group::leave(&mut m, &ctx.opts.group),
                )
                .await;
                break;
            }
            let beat = within(
                Duration::from_secs(5),
                group::heartbeat(&mut m, &ctx.opts.group),
            )
            .await;
            if !matches!(beat, Ok(0)) {
                break; // a rebalance, or the coordinator is gone: join again
            }
        }
    }
}

/// Commits `positions` for `m`, recording them when the coordinator acknowledges; false
/// when it refused or did not answer (the member then joins again).
async fn commit_positions(
    ctx: &Ctx,
    m: &mut group::Membership,
    id: u32,
    positions: &BTreeMap<i32, i64>,
) -> bool {
    let offsets: Vec<(i32, i64)> = positions.iter().map(|(&p, &o)| (p, o)).collect();
    if offsets.is_empty() {
        return true;
    }
    let done = within(
        Duration::from_secs(5),
        group::commit(m, &ctx.opts.group, &ctx.opts.topic, &offsets),
    )
    .await;
    if done.is_err() {
        return false;
    }
    let at_ms = ctx.ms();
    let mut h = ctx.history.borrow_mut();
    for (partition, offset) in offsets {
        h.commits.push(Commit {
            consumer: id,
            partition,
            offset,
            at_ms,
        });
    }
    true
}

/// After the run: reads every partition from its start to its end (the high watermark
/// when the read began), retrying until `settle` has passed.
async fn final_read(ctx: &Ctx) -> Result<()> {
    let deadline = Instant::now() + ctx.opts.settle;
    let reader = ctx.opts.consumers;
    let mut conns: HashMap<String, Conn> = HashMap::new();
    let partitions = ctx.topology.borrow().partitions();
    for partition in partitions {
        let mut end: Option<i64> = None;
        let mut at = 0i64;
        let mut last_error = String::new();
        loop {
            if Instant::now() > deadline {
                bail!(
                    "the last read of partition {partition} did not reach its end within {:?} (at offset {at}, end {end:?}): {last_error}",
                    ctx.opts.settle
                );
            }
            let topo = ctx.topology.borrow().clone();
            if end.is_none() {
                match within(
                    Duration::from_secs(5),
                    cluster::list_offsets(
                        &topo,
                        &ctx.opts.client_id,
                        &ctx.opts.topic,
                        &[partition],
                        cluster::LATEST,
                    ),
                )
                .await
                {
                    Ok(offsets) => end = offsets.get(&partition).copied(),
                    Err(e) => {
                        last_error = format!("{e:#}");
                        ctx.refresh().await;
                        glommio::timer::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(stop) = end else { continue };
            if at >= stop {
                ctx.facts.borrow_mut().final_offsets.insert(partition, stop);
                break;
            }
            let Some(addr) = ctx.leader(partition) else {
                ctx.refresh().await;
                continue;
            };
            match fetch(ctx, &mut conns, &addr, &[(partition, at)]).await {
                Ok(answers) => {
                    for (_, code, read) in answers {
                        match read {
                            Some((read, next)) => {
                                if !read.is_empty() {
                                    ctx.history.borrow_mut().polls.push(Poll {
                                        consumer: reader,
                                        session: 0,
                                        partition,
                                        from: at,
                                        read,
                                        at_ms: ctx.ms(),
                                    });
                                }
                                at = next;
                            }
                            None => {
                                last_error = format!("fetch: {}", error_name(code));
                                ctx.refresh().await;
                                glommio::timer::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    last_error = format!("{e:#}");
                    ctx.refresh().await;
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    if ctx.opts.group_consumers > 0 {
        final_committed(ctx, deadline).await?;
    }
    Ok(())
}

/// After the last read: the group's committed offset of every partition, recorded as
/// read by the last reader; retried through the bootstrap brokers until `deadline`.
async fn final_committed(ctx: &Ctx, deadline: Instant) -> Result<()> {
    let partitions = ctx.topology.borrow().partitions();
    let mut last_error = String::new();
    for attempt in 0.. {
        if Instant::now() > deadline {
            bail!(
                "the group's committed offsets could not be read within {:?}: {last_error}",
                ctx.opts.settle
            );
        }
        let addr = &ctx.opts.bootstrap[attempt % ctx.opts.bootstrap.len()];
        let sent_ms = ctx.ms();
        let read = within(Duration::from_secs(10), async {
            let mut conn = Conn::connect(addr, &ctx.opts.client_id).await?;
            let mut coordinator =
                group::find_coordinator(&mut conn, &ctx.opts.group, &ctx.opts.client_id).await?;
            group::committed(
                &mut coordinator,
                &ctx.opts.group,
                &ctx.opts.topic,
                &partitions,
            )
            .await
        })
        .await;
        match read {
            Ok(committed) => {
                let mut h = ctx.history.borrow_mut();
                for &partition in &partitions {
                    h.commit_reads.push(CommitRead {
                        consumer: ctx.opts.consumers,
                        partition,
                        offset: committed.get(&partition).copied(),
                        sent_ms,
                    });
                }
                return Ok(());
            }
            Err(e) => {
                last_error = format!("{e:#}");
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}
