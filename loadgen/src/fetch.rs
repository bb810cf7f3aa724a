//! Fetch lanes: one connection per leader broker, one fetch in flight each, reading the
//! partitions of a consumer from its positions until the run stops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;

use crate::batch::{read_stamp, walk_records};
use crate::cluster::{topic_name, Topology};
use crate::kafka::{error_name, Conn};
use crate::run::{lock, ConsumeOpts, Shared};
use crate::stats::SharedRecorder;

/// Current fetch positions of a consumer, shared with whatever commits them.
pub type Positions = Rc<RefCell<HashMap<i32, i64>>>;

/// Everything a fetch lane needs besides its partitions.
pub struct FetchCtx {
    /// Any broker, for FindCoordinator.
    pub bootstrap: String,
    /// Topic to read.
    pub topic: String,
    /// Consumer options.
    pub opts: ConsumeOpts,
    /// Client id.
    pub client_id: String,
    /// Run state.
    pub shared: Arc<Shared>,
    /// This executor's recorder.
    pub rec: SharedRecorder,
    /// Whether values carry send stamps (e2e).
    pub stamped: bool,
    /// Where the partitions live.
    pub topology: Topology,
}

/// Fetches every partition in `positions` (one lane per leader) until the run stops or
/// `interrupt` returns true.
pub async fn run_lanes(
    ctx: &Rc<FetchCtx>,
    group_idx: usize,
    positions: &Positions,
    interrupt: &dyn Fn() -> bool,
) -> Result<()> {
    let parts: Vec<i32> = positions.borrow().keys().copied().collect();
    let lanes = ctx.topology.by_leader(&parts)?;
    let futures: Vec<_> = lanes
        .into_iter()
        .map(|(addr, parts)| fetch_lane(ctx, addr, parts, group_idx, positions, interrupt))
        .collect();
    let mut first_err = None;
    for r in join_all(futures).await {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Polls all futures to completion on the current task, concurrently.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

async fn fetch_lane(
    ctx: &Rc<FetchCtx>,
    addr: String,
    parts: Vec<i32>,
    group_idx: usize,
    positions: &Positions,
    interrupt: &dyn Fn() -> bool,
) -> Result<()> {
    let mut conn = Conn::connect(&addr, &ctx.client_id).await?;
    let shared = &ctx.shared;
    let topic = topic_name(&ctx.topic);
    while !(shared.consumer_should_stop(group_idx) || interrupt()) {
        let partitions: Vec<FetchPartition> = {
            let pos = positions.borrow();
            parts
                .iter()
                .map(|&p| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(pos.get(&p).copied().unwrap_or(0))
                        .with_partition_max_bytes(ctx.opts.partition_max_bytes)
                })
                .collect()
        };
        let req = FetchRequest::default()
            .with_max_wait_ms(ctx.opts.fetch_max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(ctx.opts.fetch_max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(partitions)]);
        let sent = Instant::now();
        let resp = conn.call(&req).await?;
        let now = Instant::now();
        let now_us = shared.clock.micros(now);
        if resp.error_code != 0 {
            lock(&ctx.rec).errors += 1;
            shared.report_error(format!(
                "fetch from {addr}: {}",
                error_name(resp.error_code)
            ));
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (mut n, mut bytes, mut ids, mut failed) = (0u64, 0u64, 0u64, false);
        {
            let mut rec = lock(&ctx.rec);
            if !ctx.stamped {
                rec.record_latency(now.duration_since(sent).as_micros() as u64, 1);
            }
            let mut pos = positions.borrow_mut();
            for t in &resp.responses {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        rec.errors += 1;
                        failed = true;
                        shared.report_error(format!(
                            "fetch {}-{}: {}",
                            ctx.topic,
                            p.partition_index,
                            error_name(p.error_code)
                        ));
                        continue;
                    }
                    let Some(records) = &p.records else { continue };
                    let from = pos.get(&p.partition_index).copied().unwrap_or(0);
                    let stamped = ctx.stamped;
                    let seen = walk_records(records, from, |_, value| {
                        if stamped {
                            if let Some((t, id)) = read_stamp(value) {
                                rec.record_e2e(now_us.saturating_sub(t));
                                ids = ids.wrapping_add(id);
                            }
                        }
                    });
                    match seen {
                        Ok(seen) => {
                            n += seen.records;
                            bytes += seen.value_bytes;
                            pos.insert(p.partition_index, seen.next_offset);
                        }
                        Err(e) => {
                            rec.errors += 1;
                            failed = true;
                            shared.report_error(format!(
                                "fetch {}-{}: bad records: {e:#}",
                                ctx.topic, p.partition_index
                            ));
                        }
                    }
                }
            }
            rec.consumed += n;
            rec.consumed_bytes += bytes;
            if n > 0 {
                rec.last_consume = Some(now);
            }
        }
        if let Some(g) = shared.groups.get(group_idx) {
            g.consumed.fetch_add(n, Ordering::AcqRel);
            g.ids.fetch_add(ids, Ordering::AcqRel);
        }
        if failed {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
