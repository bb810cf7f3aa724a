//! One run: set up the topic on a helper executor, start one pinned glommio executor per
//! `--cores` CPU with its share of producer lanes and consumers, print progress each
//! second, then merge the recorders into the result.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use caudal_runtime::executor::Builder;
use serde_json::{json, Value};

use crate::cluster::{self, Topology, EARLIEST, LATEST};
use crate::consume::{run_consumer, ConsumerSpec};
use crate::fetch::FetchCtx;
use crate::produce::{self, ProducerLane};
use crate::run::{lock, CommonOpts, ConsumeOpts, ProduceOpts, Shared, StartFrom, INTERRUPTED};
use crate::stats::{self, merge_all, Mode, Recorder, SharedRecorder};

/// Memory each executor registers with io_uring. The load generator does no file I/O,
/// so it needs little; small keeps it under a default `ulimit -l`.
const IO_MEMORY: usize = 512 << 10;

/// What to run.
#[derive(Debug, Clone)]
pub enum Job {
    /// Producers only.
    Produce(CommonOpts, ProduceOpts),
    /// Consumers only.
    Consume(CommonOpts, ConsumeOpts),
    /// Producers and `groups` independent consumer groups.
    E2e(CommonOpts, ProduceOpts, ConsumeOpts, usize),
}

impl Job {
    fn common(&self) -> &CommonOpts {
        match self {
            Job::Produce(c, _) | Job::Consume(c, _) | Job::E2e(c, _, _, _) => c,
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Job::Produce(..) => Mode::Produce,
            Job::Consume(..) => Mode::Consume,
            Job::E2e(..) => Mode::E2e,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Work {
    producers: Vec<ProducerLane>,
    consumers: Vec<ConsumerSpec>,
}

/// The CPUs this process may run on.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Runs `f` to completion on a short-lived, unpinned executor.
pub fn block_on<T, F, Fut>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>> + 'static,
{
    let handle = Builder::new("loadgen-setup")
        .io_memory(IO_MEMORY)
        .spawn(f)
        .map_err(|e| anyhow!("starting an executor: {e}"))?;
    handle
        .join()
        .map_err(|e| anyhow!("setup executor failed: {e}"))?
}

fn split_budget(total: Option<u64>, parts: usize, i: usize) -> Option<u64> {
    total.map(|n| {
        let parts = parts.max(1) as u64;
        n / parts + u64::from((i as u64) < n % parts)
    })
}

fn plan(job: &Job, topo: &Topology, start: &HashMap<i32, i64>, cores: usize) -> Result<Vec<Work>> {
    let mut work = vec![Work::default(); cores.max(1)];
    let all = topo.partitions();
    let by_leader = topo.by_leader(&all)?;
    let mut slot = 0usize;
    if let Job::Produce(c, p) | Job::E2e(c, p, _, _) = job {
        let lanes_total = p.producers * by_leader.len();
        let mut lane_id = 0u64;
        for producer in 0..p.producers {
            for (addr, parts) in &by_leader {
                let share = parts.len() as f64 / all.len().max(1) as f64 / p.producers as f64;
                work[producer % cores].producers.push(ProducerLane {
                    id: lane_id,
                    addr: addr.clone(),
                    partitions: parts.clone(),
                    rate: p.rate * share,
                    messages: split_budget(c.messages, lanes_total, lane_id as usize),
                });
                lane_id += 1;
            }
        }
        slot = p.producers;
    }
    let (opts, groups) = match job {
        Job::Consume(_, o) => (Some(o), 1),
        Job::E2e(_, _, o, g) => (Some(o), *g),
        Job::Produce(..) => (None, 0),
    };
    if let Some(o) = opts {
        for g in 0..groups {
            for member in 0..o.consumers.max(1) {
                let spec = match &o.group {
                    Some(name) => ConsumerSpec::Group {
                        group_idx: g,
                        group_id: if groups > 1 {
                            format!("{name}-{g}")
                        } else {
                            name.clone()
                        },
                        start: start.clone(),
                    },
                    None => ConsumerSpec::Manual {
                        group_idx: g,
                        partitions: all
                            .iter()
                            .filter(|&&p| (p as usize) % o.consumers.max(1) == member)
                            .map(|&p| (p, start.get(&p).copied().unwrap_or(0)))
                            .collect(),
                    },
                };
                work[slot % cores].consumers.push(spec);
                slot += 1;
            }
        }
    }
    Ok(work)
}

/// Runs `job` and returns its JSON result (also written to `--json`, with the `.hgrm`
/// files, when asked).
pub fn execute(job: Job) -> Result<Value> {
    install_signal_handlers();
    let common = job.common().clone();
    let mode = job.mode();
    let cores = if common.cores.is_empty() {
        affinity_cpus()
    } else {
        common.cores.clone()
    };
    // Topic, leaders and start offsets, before any load.
    let setup_job = job.clone();
    let (topo, start) = block_on(move || async move {
        let c = setup_job.common();
        let create = !matches!(setup_job, Job::Consume(..));
        let topo = cluster::load_topology(
            &c.bootstrap,
            &c.client_id,
            &c.topic,
            c.partitions,
            create,
            &c.topic_configs,
            -1,
        )
        .await?;
        let at = match &setup_job {
            Job::Consume(_, o) if o.from == StartFrom::Earliest => EARLIEST,
            _ => LATEST,
        };
        let start = if matches!(setup_job, Job::Produce(..)) {
            HashMap::new()
        } else {
            cluster::list_offsets(&topo, &c.client_id, &c.topic, &topo.partitions(), at).await?
        };
        Ok((topo, start))
    })?;
    let work = plan(&job, &topo, &start, cores.len())?;
    let (groups, target) = match &job {
        Job::Consume(..) => (1, common.messages),
        Job::E2e(_, _, _, g) => (*g, None),
        Job::Produce(..) => (0, None),
    };
    let duration = match (common.duration, common.messages) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    }
    .map(|d| d + common.warmup);
    let shared = Arc::new(Shared::new(duration, mode == Mode::E2e, groups, target));
    let lanes: usize = work.iter().map(|w| w.producers.len()).sum();
    let consumers_total: usize = work.iter().map(|w| w.consumers.len()).sum();
    shared
        .consumers_pending
        .store(consumers_total, Ordering::Release);
    shared.producers_running.store(lanes, Ordering::Release);
    if lanes == 0 {
        *lock(&shared.producers_done_at) = Some(Instant::now());
    }
    let recorders: Vec<SharedRecorder> = work
        .iter()
        .map(|_| Arc::new(Mutex::new(Recorder::default())))
        .collect();
    let finished = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (i, (w, &cpu)) in work.into_iter().zip(cores.iter()).enumerate() {
        let (shared, rec, finished, job, topo) = (
            shared.clone(),
            recorders[i].clone(),
            finished.clone(),
            job.clone(),
            topo.clone(),
        );
        let handle = Builder::new(&format!("loadgen-{i}"))
            .pin(cpu)
            .io_memory(IO_MEMORY)
            // Reap completed I/O at least every 10 ms while busy (glommio's default is
            // 100 ms). Much shorter timers make glommio 0.9's park-with-ready-tasks
            // defect frequent; the wake guard bounds each one to its period, but each
            // still shows in the latencies (docs/architecture.md).
            .preempt_timer(std::time::Duration::from_millis(10))
            .spawn(move || async move {
                run_executor(w, job, topo, shared, rec).await;
                finished.fetch_add(1, Ordering::AcqRel);
            })
            .map_err(|e| anyhow!("starting an executor on CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    // Start the clock once every consumer has its partitions (bounded).
    let specs: usize = consumers_total;
    let wait_until = Instant::now() + Duration::from_secs(90);
    let mut said = false;
    while shared.consumers_pending.load(Ordering::Acquire) > 0
        && Instant::now() < wait_until
        && finished.load(Ordering::Acquire) < handles.len()
        && !INTERRUPTED.load(Ordering::Relaxed)
    {
        if !said && shared.start().elapsed() > Duration::from_secs(1) {
            eprintln!("waiting for {specs} consumer(s) to join and find their offsets");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.set_go();
    // Progress, once a second, on stderr. At the end of the warm-up, a snapshot of the
    // counts and histograms is taken; the results are what was measured after it.
    let mut before = Recorder::default();
    let mut last = Instant::now();
    // Progress as (messages acknowledged, consumed or failed, when that last changed).
    let mut progress = (0u64, Instant::now());
    let mut warm: Option<(Instant, Recorder)> = common
        .warmup
        .is_zero()
        .then(|| (shared.start(), Recorder::default()));
    while finished.load(Ordering::Acquire) < handles.len() {
        std::thread::sleep(Duration::from_millis(50));
        if warm.is_none() && shared.start().elapsed() >= common.warmup {
            warm = Some((Instant::now(), merge_all(&recorders)));
            eprintln!("warm-up over: measuring from here");
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let now = merge_all(&recorders);
            let interval = last.elapsed().as_secs_f64();
            last = Instant::now();
            eprintln!(
                "{}",
                stats::progress_line(
                    shared.start().elapsed().as_secs_f64(),
                    mode,
                    &now,
                    &before,
                    interval
                )
            );
            let done = now.produced + now.consumed + now.errors;
            if done != progress.0 {
                progress = (done, Instant::now());
            } else if progress.1.elapsed() >= common.stall_limit {
                // Executors may be waiting on sockets that will never answer: leave them
                // (the process ends with this error) rather than joining them.
                INTERRUPTED.store(true, Ordering::Relaxed);
                bail!(
                    "nothing acknowledged or consumed for {} s: the broker stopped answering",
                    common.stall_limit.as_secs()
                );
            }
            before = now;
        }
    }
    for h in handles {
        h.join().map_err(|e| anyhow!("executor failed: {e}"))?;
    }
    let end = Instant::now();
    let mut total = merge_all(&recorders);
    // A run that ended inside its warm-up is reported whole.
    let (measured_from, baseline) = warm.unwrap_or_else(|| (shared.start(), Recorder::default()));
    total.subtract(&baseline);
    let seconds = match mode {
        Mode::Produce | Mode::E2e => total.last_produce.unwrap_or(end),
        Mode::Consume => lock(&shared.consumers_done_at).unwrap_or(end),
    }
    .saturating_duration_since(measured_from)
    .as_secs_f64();
    let mut extra = json!({
        "topic": common.topic,
        "partitions": topo.leaders.len(),
        "brokers": topo.brokers.len(),
        "cores": cores,
        "bootstrap": common.bootstrap,
        "wall_seconds": end.saturating_duration_since(shared.start()).as_secs_f64(),
        "warmup_seconds": measured_from.saturating_duration_since(shared.start()).as_secs_f64(),
    });
    if let Job::Produce(_, p) | Job::E2e(_, p, _, _) = &job {
        extra["producer"] = json!({
            "message_size": p.message_size,
            "batch_bytes": p.batch_bytes,
            "linger_ms": p.linger_ms,
            "acks": p.acks,
            "compression": p.codec.name(),
            "producers": p.producers,
            "rate": p.rate,
            "max_in_flight": p.max_in_flight,
            "max_request_bytes": p.max_request_bytes,
        });
    }
    if let Job::Consume(_, o) | Job::E2e(_, _, o, _) = &job {
        extra["consumer"] = json!({
            "group": o.group,
            "from": if o.from == StartFrom::Earliest { "earliest" } else { "latest" },
            "consumers": o.consumers,
            "groups": groups,
            "fetch_max_bytes": o.fetch_max_bytes,
            "partition_max_bytes": o.partition_max_bytes,
        });
    }
    if mode == Mode::E2e {
        let acked = shared.acked.load(Ordering::Acquire);
        let ids = shared.acked_ids.load(Ordering::Acquire);
        let per_group: Vec<Value> = shared
            .groups
            .iter()
            .map(|g| {
                let c = g.consumed.load(Ordering::Acquire);
                json!({"consumed": c, "ids_match": g.ids.load(Ordering::Acquire) == ids})
            })
            .collect();
        let verified = shared.groups.iter().all(|g| {
            g.consumed.load(Ordering::Acquire) == acked && g.ids.load(Ordering::Acquire) == ids
        });
        extra["verified"] = json!(verified);
        extra["acked_messages"] = json!(acked);
        extra["groups"] = json!(per_group);
    }
    if let Some(e) = lock(&shared.first_error).clone() {
        extra["first_error"] = json!(e);
    }
    let result = stats::result_json(mode, &total, seconds, extra);
    eprint!("{}", stats::summary_text(&result));
    if let Some(path) = &common.json {
        write_results(path, &result, &total)?;
    }
    Ok(result)
}

async fn run_executor(w: Work, job: Job, topo: Topology, shared: Arc<Shared>, rec: SharedRecorder) {
    let c = job.common().clone();
    let mut tasks = Vec::new();
    if let Job::Produce(_, p) | Job::E2e(_, p, _, _) = &job {
        let opts = Rc::new(p.clone());
        let stamp = matches!(job, Job::E2e(..));
        for lane in w.producers {
            tasks.push(glommio::spawn_local(produce::run_lane(
                lane,
                c.topic.clone(),
                opts.clone(),
                c.client_id.clone(),
                stamp,
                shared.clone(),
                rec.clone(),
            )));
        }
    }
    if let Job::Consume(_, o) | Job::E2e(_, _, o, _) = &job {
        let ctx = Rc::new(FetchCtx {
            bootstrap: c.bootstrap.clone(),
            topic: c.topic.clone(),
            opts: o.clone(),
            client_id: c.client_id.clone(),
            shared: shared.clone(),
            rec: rec.clone(),
            stamped: matches!(job, Job::E2e(..)),
            topology: topo,
        });
        for spec in w.consumers {
            tasks.push(glommio::spawn_local(run_consumer(spec, ctx.clone())));
        }
    }
    for t in tasks {
        t.await;
    }
}

/// `X.json` plus `X.hgrm` (latency) and, for e2e, `X.e2e.hgrm`.
pub fn write_results(path: &Path, result: &Value, total: &Recorder) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(result)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(path.with_extension("hgrm"), stats::hgrm(&total.latency))?;
    if result["mode"] == "e2e" {
        std::fs::write(path.with_extension("e2e.hgrm"), stats::hgrm(&total.e2e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_budgets_split_exactly() {
        let parts: Vec<u64> = (0..3)
            .map(|i| split_budget(Some(10), 3, i).unwrap())
            .collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!(split_budget(None, 3, 0), None);
    }
}
