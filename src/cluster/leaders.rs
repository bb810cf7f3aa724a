//! Who leads each replicated partition, as this node's shards last saw it: any shard
//! answers Metadata and leader hints for partitions another shard of the node hosts.
//! Each shard publishes its groups' changes after its raft rounds; readers take a copy.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::replica::raft_shard::NodeId;
use crate::replica::replication::GroupView;

/// A group's leadership as its hosting replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The leader, when one is known.
    pub leader: Option<NodeId>,
    /// The current term (the partition's leader epoch).
    pub term: u64,
    /// The in-sync voters (on the leader; its voters elsewhere).
    pub in_sync: Vec<NodeId>,
}

/// Leadership of every group hosted on this node, by raft group id; and, for groups it
/// does not host, what their leaders said of themselves.
#[derive(Debug, Default)]
pub struct LeaderTable {
    groups: Mutex<HashMap<u64, Leadership>>,
    /// Group -> (the node that said it leads it, at this term), from peers' `Alive`.
    told: Mutex<HashMap<u64, (NodeId, u64)>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl LeaderTable {
    /// Records the views a shard's raft loop reports changed (`None`: closed).
    pub fn update(&self, changed: &[(u64, Option<GroupView>)]) {
        let mut groups = locked(&self.groups);
        for (group, view) in changed {
            match view {
                Some(v) => {
                    groups.insert(
                        *group,
                        Leadership {
                            leader: v.leader,
                            term: v.term,
                            in_sync: v.in_sync.clone(),
                        },
                    );
                }
                None => {
                    groups.remove(group);
                }
            }
        }
    }

    /// Records `leader` as the leader of `group`, which no shard of this node hosts (the
    /// controller group, on a node outside its quorum: the node that sent its metadata).
    pub fn set_leader(&self, group: u64, leader: Option<NodeId>) {
        let mut groups = locked(&self.groups);
        let entry = groups.entry(group).or_insert(Leadership {
            leader: None,
            term: 0,
            in_sync: Vec::new(),
        });
        entry.leader = leader;
    }

    /// The leadership of `group`, when a shard of this node hosts it.
    pub fn get(&self, group: u64) -> Option<Leadership> {
        locked(&self.groups).get(&group).cloned()
    }

    /// `(group, term)` of every group hosted here that `me` leads, for `Alive`.
    pub fn led_by(&self, me: NodeId) -> Vec<(u64, u64)> {
        let mut led: Vec<(u64, u64)> = locked(&self.groups)
            .iter()
            .filter(|(_, l)| l.leader == Some(me))
            .map(|(&g, l)| (g, l.term))
            .collect();
        led.sort_unstable();
        led
    }

    /// Records that `node` leads exactly `leading` (`(group, term)`): a claim replaces
    /// one of a lower term, and the groups `node` claimed before and no longer does are
    /// forgotten.
    pub fn told(&self, node: NodeId, leading: &[(u64, u64)]) {
        let mut told = locked(&self.told);
        told.retain(|g, (n, _)| *n != node || leading.iter().any(|(l, _)| l == g));
        for &(group, term) in leading {
            let entry = told.entry(group).or_insert((node, term));
            if term >= entry.1 {
                *entry = (node, term);
            }
        }
    }

    /// The node that last said it leads `group`, and at which term.
    pub fn told_leader(&self, group: u64) -> Option<(NodeId, u64)> {
        locked(&self.told).get(&group).copied()
    }
}

/// A partition's leader and replicas as clients are told, in broker ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// The leader (`None` while the partition has none: an election is under way).
    pub leader: Option<i32>,
    /// The leader epoch.
    pub epoch: i32,
    /// Every replica.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader.
    pub in_sync: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaders_claim_of_a_higher_term_replaces_an_older_one_and_dropped_claims_are_forgotten() {
        let t = LeaderTable::default();
        t.told(2, &[(10, 4), (11, 1)]);
        assert_eq!(t.told_leader(10), Some((2, 4)));
        // Node 3 won group 10 at term 5; node 2, not yet told, still claims term 4.
        t.told(3, &[(10, 5)]);
        t.told(2, &[(10, 4), (11, 1)]);
        assert_eq!(t.told_leader(10), Some((3, 5)));
        // Node 2 no longer leads 11: its claim goes.
        t.told(2, &[]);
        assert_eq!(t.told_leader(11), None);
        assert_eq!(t.told_leader(10), Some((3, 5)));
    }

    #[test]
    fn a_node_reports_the_groups_it_leads_with_their_terms() {
        let t = LeaderTable::default();
        t.set_leader(4, Some(1));
        t.set_leader(2, Some(1));
        t.set_leader(3, Some(2));
        assert_eq!(t.led_by(1), vec![(2, 0), (4, 0)]);
    }
}
