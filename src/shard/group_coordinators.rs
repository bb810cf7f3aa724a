//! The group coordinators of a shard of a cluster: one per partition of the replicated
//! offsets topic (`group::OFFSETS_TOPIC`) whose raft group this shard's replica leads.
//! A coordinator is loaded (its partition's committed offsets replayed) when the replica
//! takes leadership and has everything committed, and resigns when leadership moves, so a
//! group's coordinator is wherever its offsets partition is led, as in Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use tracing::{info, warn};

use crate::error::ErrorCode;
use crate::group::coordinator::Coordinator;
use crate::group::{offsets_partition, OFFSETS_TOPIC};
use crate::metadata::PartitionId;
use crate::replica::Partition;

use super::cluster_state::Slot;
use super::state::Shard;

/// How long after its shard's raft loop last ticked a coordinator still answers: the
/// election timeout's upper end (20 ticks of 100 ms), after which a leader cut off has
/// stepped down.
const COORDINATOR_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Least time between two passes over the offsets partitions' leadership.
const RECONCILE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// True when this replica of an offsets partition may coordinate its groups: it leads
/// and everything in its log is committed (so the replay sees every acknowledged commit).
fn may_coordinate(p: &Partition) -> bool {
    if !p.is_replicated() {
        return true;
    }
    p.view()
        .is_some_and(|v| v.is_leader && v.high_watermark == v.log_end)
}

impl Shard {
    /// The coordinator of `group` in a cluster, or the error to answer with.
    pub fn cluster_coordinator_for(&self, group: &str) -> Result<Rc<Coordinator>, ErrorCode> {
        // A coordinator answers from memory (joins, syncs, committed offsets): only while
        // this shard's raft loop keeps up, so that a leader deposed while its loop was
        // held up does not answer as one (the soak saw a loop held 55 s whose
        // coordinator served committed offsets a minute old).
        if let Some(raft) = self.raft.as_ref() {
            if !raft.driver.ticked_within(COORDINATOR_FRESH) {
                return Err(ErrorCode::NotCoordinator);
            }
        }
        let meta = self.meta();
        let Some(t) = meta.topics.get(OFFSETS_TOPIC) else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        self.group_coordinators
            .get(offsets_partition(group, t.partitions.len()))
    }
}

/// Every shard of a node of a cluster: loads a coordinator for each offsets partition its
/// replica comes to lead, and resigns it when leadership moves. Runs until the shard
/// stops.
pub async fn follow_offsets_leadership(shard: Rc<Shard>) {
    let Some(raft) = shard.raft.as_ref() else {
        return;
    };
    loop {
        let generation = raft.driver.generation();
        if shard.meta().topics.contains_key(OFFSETS_TOPIC) {
            reconcile(&shard);
        }
        raft.driver.changed_since(generation).await;
        // Raft rounds change views all the time under load; leadership changes are rare
        // and a coordinator may take a moment to follow one.
        crate::task::sleep(RECONCILE_PAUSE).await;
    }
}

/// One pass of [`follow_offsets_leadership`].
fn reconcile(shard: &Rc<Shard>) {
    let local: BTreeMap<PartitionId, Rc<Partition>> = shard
        .local_partitions()
        .into_iter()
        .filter(|(t, _, _)| t == OFFSETS_TOPIC)
        .map(|(_, p, log)| (p, log))
        .collect();
    let coordinators = &shard.group_coordinators;
    let gone: Vec<PartitionId> = coordinators
        .slots
        .borrow()
        .keys()
        .copied()
        .filter(|p| !local.get(p).is_some_and(|log| leads(log)))
        .collect();
    for p in gone {
        if let Some(Slot::Ready(c)) = coordinators.slots.borrow_mut().remove(&p) {
            c.resign();
            info!(
                partition = p,
                "no longer coordinating the groups of this offsets partition"
            );
        }
    }
    for (p, log) in local {
        if coordinators.slots.borrow().contains_key(&p) || !may_coordinate(&log) {
            continue;
        }
        coordinators.slots.borrow_mut().insert(p, Slot::Loading);
        let shard2 = shard.clone();
        shard.tasks.spawn(format!("groups: load offsets partition {p}"), async move {
            let loaded = Coordinator::over(
                log.clone(),
                shard2.config.group.clone(),
                shard2.stats.registry.committed.clone(),
            )
            .await;
            let slots = &shard2.group_coordinators.slots;
            let still_wanted = matches!(slots.borrow().get(&p), Some(Slot::Loading)) && leads(&log);
            match loaded {
                Ok(c) if still_wanted => {
                    info!(partition = p, groups = c.offsets.groups().len(), "coordinating the groups of this offsets partition");
                    slots.borrow_mut().insert(p, Slot::Ready(c));
                }
                Ok(c) => {
                    c.resign();
                    slots.borrow_mut().remove(&p);
                }
                Err(e) => {
                    warn!(partition = p, error = %e, "could not load an offsets partition; trying again at the next change");
                    slots.borrow_mut().remove(&p);
                }
            }
        });
    }
}

/// True while this replica leads its partition (or is its only replica).
fn leads(p: &Partition) -> bool {
    !p.is_replicated() || p.view().is_some_and(|v| v.is_leader)
}
