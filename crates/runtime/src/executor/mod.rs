//! The runtime under everything: glommio executors that never stay asleep with tasks
//! ready to run.
//!
//! Every executor in Caudal (shards, the load generator, tests, benchmarks) is started
//! with [`Builder`], never with glommio's `LocalExecutorBuilder::spawn`: `Builder` puts it
//! under the [`wake_guard`], which bounds glommio 0.9's park-with-ready-tasks defect (see
//! that module and docs/architecture.md, "A shard never sleeps with work ready").
//! [`deadline`] bounds work that must not hang, such as a test.

pub mod deadline;
pub mod wake_guard;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

pub use wake_guard::Guarded;

/// Builds one executor: a thread running a glommio `LocalExecutor`, under the wake guard.
pub struct Builder {
    name: String,
    cpu: Option<usize>,
    io_memory: Option<usize>,
    preempt_timer: Option<Duration>,
    guard_task: bool,
}

impl Builder {
    /// An unpinned executor whose thread is called `name`.
    pub fn new(name: &str) -> Builder {
        Builder {
            name: name.to_string(),
            cpu: None,
            io_memory: None,
            preempt_timer: None,
            guard_task: true,
        }
    }

    /// Pins the executor's thread to `cpu`.
    pub fn pin(mut self, cpu: usize) -> Builder {
        self.cpu = Some(cpu);
        self
    }

    /// Memory for the io_uring buffers (glommio's `io_memory`).
    pub fn io_memory(mut self, bytes: usize) -> Builder {
        self.io_memory = Some(bytes);
        self
    }

    /// How long tasks run before the executor polls its rings again (glommio's
    /// `preempt_timer`; its default is 100 ms).
    pub fn preempt_timer(mut self, d: Duration) -> Builder {
        self.preempt_timer = Some(d);
        self
    }

    /// Without a guard task the wake guard can only signal the thread: for testing that
    /// path, which otherwise serves only the rounds before the guard task first runs.
    #[doc(hidden)]
    pub fn without_guard_task(mut self) -> Builder {
        self.guard_task = false;
        self
    }

    /// Starts the thread and runs `make()`'s future on it to completion.
    ///
    /// The thread is ours, not glommio's, so that the wake guard knows it before the run
    /// loop's first round (which can hang too).
    pub fn spawn<G, F, T>(self, make: G) -> std::io::Result<Executor<T>>
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let placement = match self.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let mut b = LocalExecutorBuilder::new(placement).name(&self.name);
        if let Some(m) = self.io_memory {
            b = b.io_memory(m);
        }
        if let Some(p) = self.preempt_timer {
            b = b.preempt_timer(p);
        }
        let guarded = Arc::new(Guarded::new(self.name.clone()));
        wake_guard::register(&guarded)?;
        let on_thread = guarded.clone();
        let name = self.name.clone();
        let guard_task_on = self.guard_task;
        let thread = std::thread::Builder::new().name(self.name.clone()).spawn(
            move || -> std::io::Result<T> {
                on_thread.started_on_this_thread();
                let ex = b.make().map_err(|e| {
                    on_thread.finished();
                    std::io::Error::other(format!("starting executor {name}: {e}"))
                })?;
                let guard = on_thread.clone();
                Ok(ex.run(async move {
                    if guard_task_on {
                        glommio::spawn_local(guard_task(guard.clone())).detach();
                    }
                    let out = make().await;
                    guard.finished();
                    out
                }))
            },
        )?;
        Ok(Executor { thread, guarded })
    }
}

/// A running executor.
pub struct Executor<T: Send + 'static> {
    thread: std::thread::JoinHandle<std::io::Result<T>>,
    guarded: Arc<Guarded>,
}

impl<T: Send + 'static> Executor<T> {
    /// Waits for the executor's root future to finish; `Err` if it could not start or
    /// panicked.
    pub fn join(self) -> std::io::Result<T> {
        let name = self.guarded.name.clone();
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => {
                self.guarded.finished();
                Err(std::io::Error::other(format!("executor {name} panicked")))
            }
        }
    }

    /// Whether the executor's thread has exited.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// What the wake guard knows of this executor.
    pub fn guarded(&self) -> Arc<Guarded> {
        self.guarded.clone()
    }
}

/// The task the wake guard wakes: it only keeps its waker where the guard can reach it.
async fn guard_task(g: Arc<Guarded>) {
    std::future::poll_fn(|cx| {
        if !g.running() {
            return Poll::Ready(());
        }
        g.poll_guard(cx.waker());
        Poll::Pending
    })
    .await
}
