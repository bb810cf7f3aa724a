//! Where new partitions go. A partition's replicas sit on the same shard index of
//! different nodes (shard k of a node replicates only with shard k of the others, so
//! replication never crosses cores): the shard index is the one with the fewest
//! replicas, lowest on ties, and the nodes are `rf` consecutive ones in node order,
//! starting one further for each partition, so that preferred leaders (each
//! partition's first replica) spread over the nodes as partitions spread over shards.

use crate::metadata::{NodeId, PartitionAssignment, ShardAddr};

/// Assigns `count` new partitions of `rf` replicas each over `nodes` (distinct, in
/// order; `rf` of them at most), given each shard index's replica count (all nodes
/// together), updating the counts as it goes. `start` picks the first partition's
/// preferred leader (`nodes[start % nodes.len()]`). Each partition's first replica
/// leads, at epoch 0, until its raft group elects.
pub fn place(
    counts: &mut [usize],
    count: usize,
    nodes: &[NodeId],
    rf: usize,
    start: usize,
) -> Vec<PartitionAssignment> {
    let mut out = Vec::with_capacity(count);
    if nodes.is_empty() || rf == 0 || rf > nodes.len() {
        return out;
    }
    for i in 0..count {
        let Some((shard, _)) = counts.iter().enumerate().min_by_key(|&(k, &c)| (c, k)) else {
            return out;
        };
        counts[shard] += rf;
        let replicas: Vec<ShardAddr> = (0..rf)
            .map(|r| ShardAddr {
                node: nodes[(start + i + r) % nodes.len()],
                shard,
            })
            .collect();
        out.push(PartitionAssignment {
            leader: replicas[0],
            replicas,
            leader_epoch: 0,
        });
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
        assert_eq!(shards(&place(&mut counts, 4, &[0], 1, 0)), vec![0, 1, 0, 1]);
        let mut counts = vec![3, 1, 1];
        assert_eq!(shards(&place(&mut counts, 3, &[0], 1, 0)), vec![1, 2, 1]);
    }

    #[test]
    fn on_one_node_each_partition_gets_one_replica_which_leads_at_epoch_0() {
        let mut counts = vec![0, 0];
        for a in place(&mut counts, 3, &[7], 1, 0) {
            assert_eq!(a.replicas, vec![a.leader]);
            assert_eq!(a.leader.node, 7);
            assert_eq!(a.leader_epoch, 0);
        }
    }

    #[test]
    fn replicas_share_a_shard_index_on_distinct_nodes_and_leaders_rotate() {
        let mut counts = vec![0, 0];
        let placed = place(&mut counts, 6, &[1, 2, 3], 3, 0);
        for a in &placed {
            let mut nodes: Vec<NodeId> = a.replicas.iter().map(|r| r.node).collect();
            assert!(a.replicas.iter().all(|r| r.shard == a.leader.shard));
            nodes.sort_unstable();
            nodes.dedup();
            assert_eq!(nodes.len(), 3, "{a:?}");
        }
        let leaders: Vec<NodeId> = placed.iter().map(|a| a.leader.node).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(shards(&placed), vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(counts, vec![9, 9]);
        let two = place(&mut [0], 2, &[1, 2, 3], 2, 2);
        assert_eq!(
            two.iter()
                .map(|a| a.replicas.iter().map(|r| r.node).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            vec![vec![3, 1], vec![1, 2]]
        );
        assert!(
            place(&mut [0], 1, &[1, 2], 3, 0).is_empty(),
            "rf above the nodes"
        );
    }
}
