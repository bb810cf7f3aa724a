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

/// Leadership of every group hosted on this node, by raft group id.
#[derive(Debug, Default)]
pub struct LeaderTable {
    groups: Mutex<HashMap<u64, Leadership>>,
}

impl LeaderTable {
    /// Records the views a shard's raft loop reports changed (`None`: closed).
    pub fn update(&self, changed: &[(u64, Option<GroupView>)]) {
        let mut groups = match self.groups.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
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
        let mut groups = match self.groups.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = groups.entry(group).or_insert(Leadership {
            leader: None,
            term: 0,
            in_sync: Vec::new(),
        });
        entry.leader = leader;
    }

    /// The leadership of `group`, when a shard of this node hosts it.
    pub fn get(&self, group: u64) -> Option<Leadership> {
        let groups = match self.groups.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        groups.get(&group).cloned()
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
