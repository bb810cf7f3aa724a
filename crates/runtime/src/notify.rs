//! A single-shard broadcast event: waiters wake on the next `notify`.
//!
//! Each waiting future holds at most one registered waker, replaced when polled again and
//! removed when the future is dropped. (A future that re-registered on every poll would
//! pile up waker clones of a long-lived task, such as a connection reader that races a
//! read against shutdown, until the task's reference count overflows.)

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter registered before a `notify`. Not `Send`: one per shard.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
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
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves once `notify` has been called after `generation` was read.
    pub fn changed_since(&self, generation: u64) -> Changed<'_> {
        Changed {
            notify: self,
            generation,
            id: None,
        }
    }

    /// Waiters registered now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// Future returned by [`Notify::changed_since`].
pub struct Changed<'a> {
    notify: &'a Notify,
    generation: u64,
    id: Option<u64>,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = self.notify.next_id.get();
                self.notify.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        let mut waiters = self.notify.waiters.borrow_mut();
        match waiters.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                waiters.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.notify.waiters.borrow_mut().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn repeated_polls_keep_one_waker_and_drop_removes_it() {
        let n = Notify::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut f = Box::pin(n.changed_since(n.generation()));
        for _ in 0..100_000 {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(n.waiting(), 1);
        drop(f);
        assert_eq!(n.waiting(), 0);
        let mut g = Box::pin(n.changed_since(n.generation()));
        assert!(g.as_mut().poll(&mut cx).is_pending());
        n.notify();
        assert!(g.as_mut().poll(&mut cx).is_ready());
    }
}
