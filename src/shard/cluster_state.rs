//! The parts of a shard's state that only a node of a cluster uses, kept apart from the
//! services that use them (`forwarded`, `cluster_producer_ids`, `group_coordinators`),
//! which build on `Shard`: numbered questions to the controller leader waiting for their
//! answers, the block of producer ids a shard hands out from, and the coordinators of
//! the offsets partitions the shard leads.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::group::coordinator::Coordinator;
use crate::metadata::PartitionId;
use crate::task::{local_channel, Semaphore};

/// How long shard 0 waits for the controller leader to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Questions waiting for their answers, by number.
pub struct Awaiting<T> {
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, local_channel::LocalSender<T>>>,
}

impl<T> Default for Awaiting<T> {
    fn default() -> Self {
        Awaiting {
            next: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
        }
    }
}

impl<T: 'static> Awaiting<T> {
    /// Numbers a question; `send` sends it with that number; waits for its answer.
    pub async fn ask(&self, send: impl FnOnce(u64)) -> Option<T> {
        let request = self.next.get();
        self.next.set(request + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(request, tx);
        send(request);
        let answer = futures_lite::future::or(async { rx.recv().await }, async {
            crate::task::sleep(ANSWER_TIMEOUT).await;
            None
        })
        .await;
        self.waiting.borrow_mut().remove(&request);
        answer
    }

    /// Hands the answer to question `request` to whoever waits for it.
    pub fn answered(&self, request: u64, answer: T) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&request) {
            let _ = tx.try_send(answer);
        }
    }
}

/// The block of ids a shard hands out from.
pub struct ClusterProducerIds {
    pub(crate) next: Cell<u64>,
    pub(crate) end: Cell<u64>,
    pub(crate) lock: Semaphore,
}

impl Default for ClusterProducerIds {
    fn default() -> Self {
        ClusterProducerIds {
            next: Cell::new(0),
            end: Cell::new(0),
            lock: Semaphore::new(1),
        }
    }
}

/// One offsets partition's coordinator on this shard.
pub(crate) enum Slot {
    /// Its offsets are being replayed (COORDINATOR_LOAD_IN_PROGRESS).
    Loading,
    /// Serving.
    Ready(Rc<Coordinator>),
}

/// The coordinators of the offsets partitions this shard leads.
#[derive(Default)]
pub struct GroupCoordinators {
    pub(crate) slots: RefCell<BTreeMap<PartitionId, Slot>>,
}

impl GroupCoordinators {
    /// The coordinator of offsets partition `p`, or the error a group request of it gets.
    pub fn get(&self, p: PartitionId) -> Result<Rc<Coordinator>, ErrorCode> {
        match self.slots.borrow().get(&p) {
            Some(Slot::Ready(c)) => Ok(c.clone()),
            Some(Slot::Loading) => Err(ErrorCode::CoordinatorLoadInProgress),
            None => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Every coordinator serving here.
    pub fn all(&self) -> Vec<Rc<Coordinator>> {
        self.slots
            .borrow()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(c) => Some(c.clone()),
                Slot::Loading => None,
            })
            .collect()
    }

    /// Resigns every coordinator (shutdown).
    pub fn resign_all(&self) {
        for c in self.all() {
            c.resign();
        }
        self.slots.borrow_mut().clear();
    }
}
