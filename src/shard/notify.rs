//! A single-shard broadcast event: waiters wake on the next `notify`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter registered before a `notify`. Not `Send`: one per shard.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Current generation; pass it to `changed_since` after checking the condition, so
    /// a notify between the check and the wait is not missed.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Wakes all waiters.
    pub fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves once `notify` has been called after `generation` was read.
    pub fn changed_since(&self, generation: u64) -> Changed<'_> {
        Changed {
            notify: self,
            generation,
        }
    }
}

/// Future returned by [`Notify::changed_since`].
pub struct Changed<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.notify.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}
