//! The wake guard: one thread per process that ends, within a bounded time, any sleep an
//! executor entered with tasks ready to run.
//!
//! glommio 0.9.0's run loop (`LocalExecutor::run`) parks when `run_task_queues` returns
//! `false`, and it returns `false` both when no task queue is runnable and when the
//! preemption flag is already up at its first check — a latency-ring completion (the
//! preempt timer it has just armed, if the thread lost its CPU for longer than the
//! timer) that woke no task. `spin_poll_io` then finds no woken task, no due timer and no
//! foreign wake, and the executor sleeps in `io_uring_enter` with its queues full, until
//! an unrelated completion arrives: possibly never. No user code runs between that check
//! and the sleep, so nothing inside the executor can prevent it; but anything that makes a
//! completion or interrupts the wait ends it, and the next round runs the ready tasks.
//!
//! So every [`period`] this thread, for each executor built by [`super::Builder`]:
//! - wakes the executor's *guard task* through its waker, from this (foreign) thread:
//!   glommio queues the wake and writes the executor's eventfd, whose read is always
//!   armed while it sleeps, so the sleep ends and the wake counts as an event (the loop
//!   does not go straight back to sleep). At most one such wake is outstanding per
//!   executor (`pending`), so a stopped or starved thread does not pile them up.
//! - sends the executor's thread [`nudge_signal`] instead when there is no waker to use:
//!   before the guard task has run once (the executor can hang in its very first rounds,
//!   before any waker of it exists), and when the last wake is over a period old, not
//!   followed by a run of the guard task, and the thread is asleep (the round after the
//!   wake tripped again before reaching the guard task). glommio takes the `EINTR` from
//!   `io_uring_enter` as the end of the sleep, and signals pile nothing up.
//!
//! Neither depends on which tasks are ready or on the executor doing anything, so no
//! sleep with ready tasks outlasts one period plus this thread's own scheduling delay.
//! The cost is that an idle executor wakes once a period (docs/benchmarks.md measures it).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::thread::Thread;
use std::time::Duration;

/// The default bound on a sleep with ready tasks.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(10);

/// The real-time signal that interrupts an executor's sleep when no waker can (before its
/// guard task first runs, or after a wake it did not act on).
pub fn nudge_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// What the wake guard knows of one executor.
#[derive(Debug)]
pub struct Guarded {
    /// The executor's thread name, for reports.
    pub name: String,
    /// The executor thread's kernel id, once it has started (0 before).
    tid: AtomicI32,
    /// The guard task's waker, once it has run.
    waker: Mutex<Option<Waker>>,
    /// A wake of ours the guard task has not seen yet.
    pending: AtomicBool,
    /// When that wake was sent, in µs since the guard's epoch.
    pending_since_us: AtomicU64,
    /// False once the executor's root future has finished.
    running: AtomicBool,
    /// Wakes sent (through the waker or as signals).
    nudges: AtomicU64,
    /// Times the guard task ran.
    guard_polls: AtomicU64,
}

impl Guarded {
    pub(super) fn new(name: String) -> Guarded {
        Guarded {
            name,
            tid: AtomicI32::new(0),
            waker: Mutex::new(None),
            pending: AtomicBool::new(false),
            pending_since_us: AtomicU64::new(0),
            running: AtomicBool::new(true),
            nudges: AtomicU64::new(0),
            guard_polls: AtomicU64::new(0),
        }
    }

    /// Wakes sent to this executor so far.
    pub fn nudges(&self) -> u64 {
        self.nudges.load(Ordering::Relaxed)
    }

    /// Times this executor's guard task ran.
    pub fn guard_polls(&self) -> u64 {
        self.guard_polls.load(Ordering::Relaxed)
    }

    /// Whether the executor's root future is still running.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Called on the executor's thread before its run loop starts.
    pub(super) fn started_on_this_thread(&self) {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Release);
    }

    /// Called on the executor's thread when its root future is done: no more wakes, and
    /// glommio's waker is dropped on its own thread while the executor still exists.
    pub(super) fn finished(&self) {
        self.running.store(false, Ordering::Release);
        if let Ok(mut w) = self.waker.lock() {
            w.take();
        }
    }

    /// The guard task's poll: keeps its waker where this thread can reach it.
    pub(super) fn poll_guard(&self, waker: &Waker) {
        self.guard_polls.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slot) = self.waker.lock() {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        self.pending.store(false, Ordering::Release);
    }

    /// One nudge from the guard thread, `now_us` since the guard's epoch.
    fn nudge(&self, now_us: u64, period: Duration) {
        if !self.running() {
            return;
        }
        if !self.pending.load(Ordering::Acquire) {
            let Ok(slot) = self.waker.lock() else {
                return;
            };
            if let Some(w) = slot.as_ref() {
                self.pending_since_us.store(now_us, Ordering::Relaxed);
                self.pending.store(true, Ordering::Release);
                self.nudges.fetch_add(1, Ordering::Relaxed);
                w.wake_by_ref();
                return;
            }
            drop(slot);
            // No waker yet: the executor has not run its guard task once.
            self.signal();
            return;
        }
        // Our last wake has not been followed by a run of the guard task. Either the
        // executor is busy (it reaps foreign wakes between task runs) or it woke, tripped
        // again before running the guard task and is asleep: then wake it by signal, which
        // piles nothing up however often it is sent.
        let since = self.pending_since_us.load(Ordering::Relaxed);
        if now_us.saturating_sub(since) >= period.as_micros() as u64 && self.asleep() {
            self.signal();
        }
    }

    fn signal(&self) {
        let tid = self.tid.load(Ordering::Acquire);
        if tid == 0 {
            return;
        }
        self.nudges.fetch_add(1, Ordering::Relaxed);
        // SAFETY: tgkill only sends a signal, whose handler does nothing; if the thread has
        // exited the call fails harmlessly.
        unsafe {
            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, nudge_signal());
        }
    }

    /// Whether the executor's thread is in an interruptible sleep (or cannot be read,
    /// which counts as asleep: a signal too many is harmless).
    fn asleep(&self) -> bool {
        let tid = self.tid.load(Ordering::Acquire);
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
        match stat {
            Ok(s) => s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state == "S"),
            Err(_) => true,
        }
    }
}

struct Registry {
    executors: Mutex<Vec<Weak<Guarded>>>,
    thread: Thread,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();
/// The period in microseconds; 0 turns the guard off.
static PERIOD_US: AtomicU64 = AtomicU64::new(DEFAULT_PERIOD.as_micros() as u64);

/// Sets how often every executor is woken; `Duration::ZERO` turns the guard off (which
/// brings back glommio 0.9's park hang: only for measuring what the guard costs).
pub fn set_period(period: Duration) {
    PERIOD_US.store(period.as_micros() as u64, Ordering::Relaxed);
    if let Some(r) = REGISTRY.get() {
        r.thread.unpark();
    }
}

/// The current period (`Duration::ZERO` when off).
pub fn period() -> Duration {
    Duration::from_micros(PERIOD_US.load(Ordering::Relaxed))
}

/// Every executor under guard now.
pub fn snapshot() -> Vec<Arc<Guarded>> {
    match REGISTRY.get().map(|r| r.executors.lock()) {
        Some(Ok(list)) => list.iter().filter_map(Weak::upgrade).collect(),
        _ => Vec::new(),
    }
}

/// Puts an executor under guard until its `Guarded` is dropped or stops running.
pub(super) fn register(exec: &Arc<Guarded>) -> std::io::Result<()> {
    let r = registry()?;
    if let Ok(mut list) = r.executors.lock() {
        list.retain(|e| e.upgrade().is_some_and(|e| e.running()));
        list.push(Arc::downgrade(exec));
    }
    r.thread.unpark();
    Ok(())
}

fn registry() -> std::io::Result<&'static Registry> {
    if let Some(r) = REGISTRY.get() {
        return Ok(r);
    }
    install_nudge_handler()?;
    let thread = std::thread::Builder::new()
        .name("caudal-wake-guard".into())
        .spawn(run)?
        .thread()
        .clone();
    // A racing caller may have won; its thread then serves, and ours parks for good.
    Ok(REGISTRY.get_or_init(|| Registry {
        executors: Mutex::new(Vec::new()),
        thread,
    }))
}

extern "C" fn on_nudge(_: libc::c_int) {}

/// A handler that does nothing: the signal exists to make `io_uring_enter` return.
/// SA_RESTART keeps other interrupted system calls transparent; io_uring's wait returns
/// `EINTR` regardless (tested by `executor_hung_before_its_first_task_is_woken_by_signal`).
fn install_nudge_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a handler that touches nothing is valid.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_nudge as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(nudge_signal(), &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn run() {
    allow_every_cpu_of_the_process();
    let r = loop {
        if let Some(r) = REGISTRY.get() {
            break r;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    };
    if r.thread.id() != std::thread::current().id() {
        return; // Lost the race in `registry`: the winner's thread serves.
    }
    let epoch = std::time::Instant::now();
    loop {
        let period = period();
        let executors: Vec<Arc<Guarded>> = match r.executors.lock() {
            Ok(list) => list.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        let any = executors.iter().any(|e| e.running());
        if period.is_zero() || !any {
            drop(executors);
            // `register` and `set_period` unpark us.
            std::thread::park_timeout(Duration::from_secs(1));
            continue;
        }
        let now_us = epoch.elapsed().as_micros() as u64;
        for e in &executors {
            e.nudge(now_us, period);
        }
        drop(executors);
        std::thread::sleep(period);
    }
}

/// The thread inherits the CPU mask of whoever started it, often a pinned executor: it
/// should run wherever the process may (the main thread's mask), not on top of one shard.
fn allow_every_cpu_of_the_process() {
    // SAFETY: cpu_set_t is plain data; the calls read and set affinity masks only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(libc::getpid(), size, &mut set) == 0 {
            libc::sched_setaffinity(0, size, &set);
        }
    }
}
