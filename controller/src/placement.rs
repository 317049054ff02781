//! Queue placement: which store shard holds each queue of a new topic. A pure function of the
//! shard set and the queues already placed, so every controller replica computes the same answer.

use std::collections::BTreeMap;

use vela_proto::ShardId;

/// Places `queue_count` new queues onto `shards`, one at a time: each goes to the shard that
/// currently holds the fewest queues (ties go to the lowest shard id). `existing` lists the shard
/// of every queue already placed; entries for shards outside `shards` are ignored, because no new
/// queue can land there anyway.
///
/// Returns an empty placement when `shards` is empty; the caller treats that as "no shards".
pub fn place_queues(
    shards: &[ShardId],
    existing: impl IntoIterator<Item = ShardId>,
    queue_count: u32,
) -> Vec<ShardId> {
    if shards.is_empty() {
        return Vec::new();
    }
    let mut load: BTreeMap<ShardId, u64> = shards.iter().map(|&s| (s, 0)).collect();
    for shard in existing {
        if let Some(count) = load.get_mut(&shard) {
            *count += 1;
        }
    }
    let mut placement = Vec::with_capacity(queue_count as usize);
    for _ in 0..queue_count {
        // BTreeMap iterates in id order and min_by_key keeps the first minimum: lowest id wins.
        let Some((&shard, count)) = load.iter_mut().min_by_key(|(_, count)| **count) else {
            break;
        };
        *count += 1;
        placement.push(shard);
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_on(placement: &[ShardId], shard: ShardId) -> usize {
        placement.iter().filter(|&&s| s == shard).count()
    }

    #[test]
    fn one_shard_takes_everything() {
        assert_eq!(place_queues(&[0], [], 8), vec![0; 8]);
        assert_eq!(place_queues(&[0], [0, 0, 0], 2), vec![0, 0]);
    }

    #[test]
    fn no_shards_places_nothing() {
        assert!(place_queues(&[], [], 4).is_empty());
    }

    #[test]
    fn spreads_round_robin_from_an_empty_cluster() {
        assert_eq!(place_queues(&[0, 1, 2], [], 7), vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn fills_the_least_loaded_shards_first() {
        // Shard 0 holds 3, shard 1 holds 1, shard 2 holds none.
        let existing = [0, 0, 0, 1];
        assert_eq!(place_queues(&[0, 1, 2], existing, 4), vec![2, 1, 2, 1]);
    }

    #[test]
    fn unsorted_shard_set_still_prefers_lowest_id_on_ties() {
        assert_eq!(place_queues(&[7, 3, 5], [], 4), vec![3, 5, 7, 3]);
    }

    #[test]
    fn queues_on_removed_shards_are_ignored() {
        // Shard 9 is no longer in the set: its queues do not count and nothing new goes there.
        assert_eq!(place_queues(&[0, 1], [9, 9, 9, 0], 3), vec![1, 0, 1]);
    }

    #[test]
    fn balance_across_three_shards_over_many_topics() {
        let shards = [0, 1, 2];
        let mut placed: Vec<ShardId> = Vec::new();
        for queue_count in [1u32, 4, 8, 3, 5, 2, 16, 7] {
            let new = place_queues(&shards, placed.iter().copied(), queue_count);
            assert_eq!(new.len(), queue_count as usize);
            placed.extend(new);
            let counts: Vec<usize> = shards.iter().map(|&s| count_on(&placed, s)).collect();
            let (min, max) = (counts.iter().min(), counts.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "unbalanced: {counts:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever is already placed, a new topic only ever lands on the least loaded shards:
        /// the spread (max - min load over the shard set) never grows beyond max(before, 1).
        #[test]
        fn never_worsens_the_spread(
            shard_set in proptest::collection::btree_set(0u32..16, 1..6),
            existing in proptest::collection::vec(0u32..16, 0..64),
            queue_count in 0u32..64,
        ) {
            let shards: Vec<ShardId> = shard_set.into_iter().collect();
            let spread = |placed: &[ShardId]| {
                let loads: Vec<usize> = shards.iter().map(|&s| count_on(placed, s)).collect();
                loads.iter().max().copied().unwrap_or(0) - loads.iter().min().copied().unwrap_or(0)
            };
            let before = spread(&existing);
            let new = place_queues(&shards, existing.iter().copied(), queue_count);
            proptest::prop_assert_eq!(new.len(), queue_count as usize);
            proptest::prop_assert!(new.iter().all(|s| shards.contains(s)));
            let mut all = existing.clone();
            all.extend(&new);
            proptest::prop_assert!(spread(&all) <= before.max(1));
        }
    }
}
