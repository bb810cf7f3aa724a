//! Where new partitions go: the shard with the fewest partitions, lowest id on ties.

use crate::metadata::ShardId;

/// Picks shards for `count` new partitions given each shard's current partition count,
/// updating the counts as it goes so a topic's partitions spread across shards.
pub fn place(counts: &mut [usize], count: usize) -> Vec<ShardId> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((shard, _)) = counts.iter().enumerate().min_by_key(|&(i, &c)| (c, i)) else {
            return out;
        };
        counts[shard] += 1;
        out.push(shard);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_partitions_over_the_least_loaded_shards() {
        let mut counts = vec![0, 0];
        assert_eq!(place(&mut counts, 4), vec![0, 1, 0, 1]);
        let mut counts = vec![3, 1, 1];
        assert_eq!(place(&mut counts, 3), vec![1, 2, 1]);
    }
}
