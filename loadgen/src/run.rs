//! Options and state shared by every executor of one run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::batch::Codec;
use crate::schedule::Clock;

/// Set by SIGINT/SIGTERM: every lane winds down and the results are still written.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Errors printed before the rest are only counted.
const MAX_PRINTED_ERRORS: u64 = 10;

/// Options every subcommand has.
#[derive(Debug, Clone)]
pub struct CommonOpts {
    /// `host:port` of any broker.
    pub bootstrap: String,
    /// Topic to use.
    pub topic: String,
    /// Partitions, when the topic is created.
    pub partitions: i32,
    /// Run for this long (producers, or consumers in `consume`), after the warm-up.
    pub duration: Option<Duration>,
    /// Load before measuring; not counted in the results.
    pub warmup: Duration,
    /// Stop after this many messages.
    pub messages: Option<u64>,
    /// Where to write the JSON result (and the `.hgrm` beside it).
    pub json: Option<PathBuf>,
    /// CPUs to run executors on, one executor each.
    pub cores: Vec<usize>,
    /// Client id in request headers.
    pub client_id: String,
    /// How long the run may go without any progress before it is abandoned.
    pub stall_limit: Duration,
    /// Topic configs (`retention.bytes`, ...) for a topic the run creates.
    pub topic_configs: Vec<(String, String)>,
}

/// Producer options.
#[derive(Debug, Clone)]
pub struct ProduceOpts {
    /// Value size in bytes.
    pub message_size: usize,
    /// Upper bound on a batch's record bytes.
    pub batch_bytes: usize,
    /// With `rate`, how long a batch may wait to fill.
    pub linger_ms: f64,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// Compression of produced batches.
    pub codec: Codec,
    /// Producer count (each has one connection per leader broker).
    pub producers: usize,
    /// Messages per second over all producers; 0 = as fast as possible.
    pub rate: f64,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Produce request timeout sent to the broker.
    pub request_timeout_ms: i32,
    /// Largest produce request: a request carries the batches of as many of the lane's
    /// partitions as fit (at least one), as the Java client's `max.request.size`.
    pub max_request_bytes: usize,
}

/// Where a consumer without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
}

/// Consumer options.
#[derive(Debug, Clone)]
pub struct ConsumeOpts {
    /// Consumer group (classic protocol); `None` = manual assignment.
    pub group: Option<String>,
    /// Start without a committed offset (and always, without a group).
    pub from: StartFrom,
    /// Consumers (group members, or manual readers splitting the partitions).
    pub consumers: usize,
    /// Fetch `max_bytes`.
    pub fetch_max_bytes: i32,
    /// Fetch `partition_max_bytes`.
    pub partition_max_bytes: i32,
    /// Fetch `max_wait_ms`.
    pub fetch_max_wait_ms: i32,
}

/// Consumption of one consumer group (or one independent reader in fan-out).
#[derive(Debug, Default)]
pub struct GroupProgress {
    /// Messages consumed.
    pub consumed: AtomicU64,
    /// Wrapping sum of the message ids consumed.
    pub ids: AtomicU64,
}

/// State shared by all executors.
#[derive(Debug)]
pub struct Shared {
    /// The clock stamped into values.
    pub clock: Clock,
    /// When load started: once every consumer is ready (see `go`).
    start: Mutex<Instant>,
    /// How long producers (or, in `consume`, consumers) run.
    duration: Option<Duration>,
    /// Set once every consumer has its partitions: producers wait for it, so that
    /// end-to-end latency does not include a group's join time.
    pub go: AtomicBool,
    /// Consumers that have not yet joined and found their offsets.
    pub consumers_pending: AtomicUsize,
    /// True in `e2e`: consumers drain what producers acknowledged.
    pub e2e: bool,
    /// Producer lanes still running.
    pub producers_running: AtomicUsize,
    /// Messages acknowledged.
    pub acked: AtomicU64,
    /// Wrapping sum of acknowledged message ids.
    pub acked_ids: AtomicU64,
    /// One entry per consumer group.
    pub groups: Vec<GroupProgress>,
    /// `consume --messages`: stop once this many are consumed.
    pub consume_target: Option<u64>,
    /// When the last producer lane finished.
    pub producers_done_at: Mutex<Option<Instant>>,
    /// When consumers reached their target.
    pub consumers_done_at: Mutex<Option<Instant>>,
    /// How long e2e consumers wait for stragglers after producers finish.
    pub drain: Duration,
    /// The first error seen, for the summary.
    pub first_error: Mutex<Option<String>>,
    /// Errors reported so far (only the first few are printed).
    pub errors_reported: AtomicU64,
}

impl Shared {
    /// A fresh state for a run starting now.
    pub fn new(
        duration: Option<Duration>,
        e2e: bool,
        groups: usize,
        consume_target: Option<u64>,
    ) -> Shared {
        Shared {
            clock: Clock::new(),
            start: Mutex::new(Instant::now()),
            duration,
            go: AtomicBool::new(false),
            consumers_pending: AtomicUsize::new(0),
            e2e,
            producers_running: AtomicUsize::new(0),
            acked: AtomicU64::new(0),
            acked_ids: AtomicU64::new(0),
            groups: (0..groups).map(|_| GroupProgress::default()).collect(),
            consume_target,
            producers_done_at: Mutex::new(None),
            consumers_done_at: Mutex::new(None),
            drain: Duration::from_secs(15),
            first_error: Mutex::new(None),
            errors_reported: AtomicU64::new(0),
        }
    }

    /// When load started (valid once `go` is set).
    pub fn start(&self) -> Instant {
        *lock(&self.start)
    }

    /// Starts the clock: every consumer is ready.
    pub fn set_go(&self) {
        *lock(&self.start) = Instant::now();
        self.go.store(true, Ordering::Release);
    }

    /// Waits (polling, at most `limit`) until the run starts.
    pub async fn wait_for_go(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.go.load(Ordering::Acquire) && Instant::now() < until {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A consumer has its partitions and offsets.
    pub fn consumer_ready(&self) {
        let _ = self
            .consumers_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Deadline passed or interrupted.
    pub fn time_is_up(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
            || (self.go.load(Ordering::Acquire)
                && self.duration.is_some_and(|d| self.start().elapsed() >= d))
    }

    /// A producer lane has finished.
    pub fn producer_finished(&self) {
        if self.producers_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.producers_done_at) = Some(Instant::now());
        }
    }

    /// Whether consumers of `group` should stop.
    pub fn consumer_should_stop(&self, group: usize) -> bool {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return true;
        }
        let consumed = self
            .groups
            .get(group)
            .map(|g| g.consumed.load(Ordering::Acquire))
            .unwrap_or(0);
        if self.e2e {
            if self.producers_running.load(Ordering::Acquire) > 0 {
                return false;
            }
            if consumed >= self.acked.load(Ordering::Acquire) {
                return true;
            }
            let done = *lock(&self.producers_done_at);
            return done.is_some_and(|t| t.elapsed() > self.drain);
        }
        if let Some(target) = self.consume_target {
            if consumed >= target {
                let mut at = lock(&self.consumers_done_at);
                at.get_or_insert_with(Instant::now);
                return true;
            }
        }
        self.time_is_up()
    }

    /// Remembers the first error and prints the first few (the count is in the summary).
    pub fn report_error(&self, msg: String) {
        match self.errors_reported.fetch_add(1, Ordering::Relaxed) {
            n if n < MAX_PRINTED_ERRORS => eprintln!("caudal-loadgen: {msg}"),
            MAX_PRINTED_ERRORS => eprintln!("caudal-loadgen: more errors; not printing them"),
            _ => {}
        }
        let mut e = lock(&self.first_error);
        if e.is_none() {
            *e = Some(msg);
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicked lane must not hide the results).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
