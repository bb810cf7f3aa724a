//! Where new partitions go: one replica each, on the shard of this node with the fewest
//! replicas, lowest id on ties.

use crate::metadata::{NodeId, PartitionAssignment, ShardAddr};

/// Assigns `count` new partitions to shards of `node` given each shard's current replica
/// count, updating the counts as it goes so a topic's partitions spread across shards.
/// Each partition gets a single replica, which leads at epoch 0.
pub fn place(counts: &mut [usize], count: usize, node: NodeId) -> Vec<PartitionAssignment> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((shard, _)) = counts.iter().enumerate().min_by_key(|&(i, &c)| (c, i)) else {
            return out;
        };
        counts[shard] += 1;
        out.push(PartitionAssignment::single(ShardAddr { node, shard }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(a: &[PartitionAssignment]) -> Vec<usize> {
        a.iter().map(|p| p.leader.shard).collect()
    }

    #[test]
    fn spreads_partitions_over_the_least_loaded_shards() {
        let mut counts = vec![0, 0];
        assert_eq!(shards(&place(&mut counts, 4, 0)), vec![0, 1, 0, 1]);
        let mut counts = vec![3, 1, 1];
        assert_eq!(shards(&place(&mut counts, 3, 0)), vec![1, 2, 1]);
    }

    #[test]
    fn each_partition_gets_one_replica_on_this_node_which_leads_at_epoch_0() {
        let mut counts = vec![0, 0];
        for a in place(&mut counts, 3, 7) {
            assert_eq!(a.replicas, vec![a.leader]);
            assert_eq!(a.leader.node, 7);
            assert_eq!(a.leader_epoch, 0);
        }
    }
}
