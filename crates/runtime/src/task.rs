//! Tasks of one executor: spawning, timers and locks (glommio's, named here so that the
//! broker does not import glommio above its I/O layer), owners that name long-lived
//! tasks and stop them, and the stop signal a process sends its executors.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub use glommio::channels::{local_channel, shared_channel};
pub use glommio::sync::{Permit, Semaphore};
pub use glommio::task::JoinHandle;
pub use glommio::timer::sleep;
pub use glommio::{yield_if_needed, Task};

/// Spawns a task on this executor; it runs until it finishes, or is cancelled when the
/// returned `Task` is dropped (call `.detach()` to keep it running unowned — prefer a
/// [`TaskSet`] for anything that outlives a request).
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Runs `f` on the executor's blocking thread pool (file system calls that io_uring does
/// not cover: directory listings, renames, recursive deletes), so the shard keeps serving.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Runs `futures` side by side on the calling task and returns their outputs in order
/// (for borrowed futures that cannot be spawned: one round's writes of many raft groups,
/// which then share durable writes).
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in running.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

struct Owned {
    name: String,
    done: Rc<Cell<bool>>,
    handle: JoinHandle<()>,
}

/// Owns named long-lived tasks of one executor (a shard's retention loop, a partition's
/// flusher, a coordinator's timers). [`TaskSet::stop_all`] — or dropping the set —
/// cancels every task still running, so nothing outlives what it serves: a shard at
/// shutdown, and next a partition whose leadership moved away.
pub struct TaskSet {
    owner: String,
    tasks: RefCell<Vec<Owned>>,
}

impl TaskSet {
    /// An empty set; `owner` names it in diagnostics.
    pub fn new(owner: impl Into<String>) -> TaskSet {
        TaskSet {
            owner: owner.into(),
            tasks: RefCell::new(Vec::new()),
        }
    }

    /// Who owns the set.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Starts `future` as a task named `name`, owned by this set.
    pub fn spawn(&self, name: impl Into<String>, future: impl Future<Output = ()> + 'static) {
        let done = Rc::new(Cell::new(false));
        let finished = done.clone();
        let handle = glommio::spawn_local(async move {
            future.await;
            finished.set(true);
        })
        .detach();
        let mut tasks = self.tasks.borrow_mut();
        // Finished tasks leave no trace: a set of short tasks (connections) stays small.
        tasks.retain(|t| !t.done.get());
        tasks.push(Owned {
            name: name.into(),
            done,
            handle,
        });
    }

    /// Names of the tasks still running.
    pub fn running(&self) -> Vec<String> {
        self.tasks
            .borrow()
            .iter()
            .filter(|t| !t.done.get())
            .map(|t| t.name.clone())
            .collect()
    }

    /// Cancels every task still running: none is polled again.
    pub fn stop_all(&self) {
        for t in self.tasks.borrow_mut().drain(..) {
            if !t.done.get() {
                t.handle.cancel();
            }
        }
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A stop request sent to executors from any thread (a signal handler's thread, a test):
/// set once, it wakes every executor waiting in [`StopSignal::stopped`] at once, with no
/// polling.
#[derive(Default)]
pub struct StopSignal {
    stopped: AtomicBool,
    /// One waiter per executor, by id; each removes its own on its own thread (glommio's
    /// wakers must be dropped where they were made).
    waiters: Mutex<Vec<(u64, Waker)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl StopSignal {
    /// A signal not yet sent.
    pub fn new() -> Arc<StopSignal> {
        Arc::new(StopSignal::default())
    }

    /// Sends the stop: every waiter wakes.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Ok(waiters) = self.waiters.lock() {
            for (_, w) in waiters.iter() {
                w.wake_by_ref();
            }
        }
    }

    /// True once the stop was sent.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once the stop is sent.
    pub fn stopped(self: &Arc<Self>) -> Stopped {
        Stopped {
            signal: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The future of [`StopSignal::stopped`].
pub struct Stopped {
    signal: Arc<StopSignal>,
    id: u64,
}

impl Future for Stopped {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_stopped() {
            return Poll::Ready(());
        }
        if let Ok(mut waiters) = self.signal.waiters.lock() {
            match waiters.iter_mut().find(|(id, _)| *id == self.id) {
                Some((_, w)) if w.will_wake(cx.waker()) => {}
                Some((_, w)) => *w = cx.waker().clone(),
                None => waiters.push((self.id, cx.waker().clone())),
            }
        }
        // A stop between the first check and the registration must not be missed.
        if self.signal.is_stopped() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.signal.waiters.lock() {
            waiters.retain(|(id, _)| *id != self.id);
        }
    }
}
