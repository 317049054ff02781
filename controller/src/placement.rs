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

/// Why shards of a replication factor cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error(
        "a replication factor of {factor} needs {factor} store nodes; the cluster has {stores}"
    )]
    TooFewStores { factor: usize, stores: usize },
    #[error("a replication factor must be at least 1")]
    Zero,
}

/// New shards with `factor` replicas each over `stores`: one shard per store, numbered from
/// `first_id`, shard `k` on the `factor` stores from the `k`-th around the ring (stores in id
/// order). Every store is first member of one shard (so leaders can spread one per node) and a
/// member of exactly `factor` shards; the members of a shard are distinct. A pure function: every
/// controller replica computes the same placement.
pub fn replica_sets(
    stores: &[u64],
    factor: usize,
    first_id: ShardId,
) -> Result<BTreeMap<ShardId, Vec<u64>>, ReplicaError> {
    let mut ring = stores.to_vec();
    ring.sort_unstable();
    ring.dedup();
    if factor == 0 {
        return Err(ReplicaError::Zero);
    }
    if factor > ring.len() {
        return Err(ReplicaError::TooFewStores {
            factor,
            stores: ring.len(),
        });
    }
    Ok((0..ring.len())
        .map(|k| {
            let id = first_id.saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
            let members = (0..factor).map(|i| ring[(k + i) % ring.len()]).collect();
            (id, members)
        })
        .collect())
}

/// Why a store node cannot be drained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    #[error(
        "shard {shard} has {factor} replicas and no other store node can take one (members \
         {members:?}; nodes that are not draining: {candidates:?})"
    )]
    NoCandidate {
        shard: ShardId,
        factor: usize,
        members: Vec<u64>,
        candidates: Vec<u64>,
    },
}

/// New members for every shard in `placed` (shard → members) that has `store` among them:
/// `store` is replaced, in place, by the node of `candidates` (never `store` itself) that is
/// not yet a member and holds the fewest replicas (counted over `placed`, moves included), the
/// lowest id on ties. All or nothing: an error when some shard has no such node, except a
/// shard of `may_stay` (an adopted configured shard, ADR 0032), which then keeps `store`. A
/// pure function: every controller replica computes the same moves.
pub fn drain_moves(
    placed: &BTreeMap<ShardId, Vec<u64>>,
    store: u64,
    candidates: &[u64],
    may_stay: &std::collections::BTreeSet<ShardId>,
) -> Result<BTreeMap<ShardId, Vec<u64>>, DrainError> {
    let mut pool: Vec<u64> = candidates.iter().copied().filter(|&c| c != store).collect();
    pool.sort_unstable();
    pool.dedup();
    let mut load: BTreeMap<u64, usize> = pool.iter().map(|&c| (c, 0)).collect();
    for members in placed.values() {
        for m in members {
            if let Some(count) = load.get_mut(m) {
                *count += 1;
            }
        }
    }
    let mut moves = BTreeMap::new();
    for (&shard, members) in placed {
        let Some(at) = members.iter().position(|&m| m == store) else {
            continue;
        };
        let Some((&to, _)) = load
            .iter()
            .filter(|(c, _)| !members.contains(c))
            .min_by_key(|(_, count)| **count)
        else {
            if may_stay.contains(&shard) {
                continue;
            }
            return Err(DrainError::NoCandidate {
                shard,
                factor: members.len(),
                members: members.clone(),
                candidates: pool.clone(),
            });
        };
        *load.entry(to).or_default() += 1;
        let mut after = members.clone();
        after[at] = to;
        moves.insert(shard, after);
    }
    Ok(moves)
}

/// Move the replica of placed shard `shard` on store node `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaMove {
    pub shard: ShardId,
    pub from: u64,
    pub to: u64,
}

/// The one replica move that best evens out how many placed replicas (`placed`: shard →
/// members) the store nodes of `candidates` hold (a node that just joined holds none), or
/// `None` when every candidate is within one of every other (or no move is allowed). The
/// replica leaves the candidate holding the most for the one holding the fewest that is not
/// yet a member of that shard; ties go to the lowest shard id, then the lowest node ids. A
/// replica on a node outside `candidates` (draining, down) is left to the drain. Pure and
/// deterministic.
pub fn replica_move(
    placed: &BTreeMap<ShardId, Vec<u64>>,
    candidates: &[u64],
) -> Option<ReplicaMove> {
    let mut load: BTreeMap<u64, usize> = candidates.iter().map(|&c| (c, 0)).collect();
    for members in placed.values() {
        for m in members {
            if let Some(count) = load.get_mut(m) {
                *count += 1;
            }
        }
    }
    let mut best: Option<(usize, ReplicaMove)> = None;
    for (&shard, members) in placed {
        for &from in members {
            let Some(&from_load) = load.get(&from) else {
                continue;
            };
            let target = load
                .iter()
                .filter(|(c, _)| !members.contains(c))
                .min_by_key(|(_, count)| **count);
            let Some((&to, &to_load)) = target else {
                continue;
            };
            if from_load < to_load + 2 {
                continue;
            }
            let gap = from_load - to_load;
            if best.is_none_or(|(g, _)| gap > g) {
                best = Some((gap, ReplicaMove { shard, from, to }));
            }
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    /// A store node that joins gets replicas until it holds about as many as the others; every
    /// move keeps each shard's members distinct and its size, and balancing stops.
    #[test]
    fn replica_moves_fill_a_joined_node_and_stop() {
        for n in 2..=6usize {
            let stores: Vec<u64> = (1..=n as u64).collect();
            for factor in 1..=n {
                let mut placed = replica_sets(&stores, factor, 0).expect("enough stores");
                assert_eq!(
                    replica_move(&placed, &stores),
                    None,
                    "n {n} factor {factor}"
                );
                let mut grown = stores.clone();
                grown.push(n as u64 + 1);
                let mut moves = 0;
                while let Some(m) = replica_move(&placed, &grown) {
                    let members = placed.get_mut(&m.shard).expect("placed shard");
                    let at = members.iter().position(|&x| x == m.from).expect("a member");
                    assert!(!members.contains(&m.to));
                    members[at] = m.to;
                    moves += 1;
                    assert!(
                        moves <= n * n,
                        "balancing never stops: n {n} factor {factor}"
                    );
                }
                let mut load: BTreeMap<u64, usize> = grown.iter().map(|&c| (c, 0)).collect();
                for members in placed.values() {
                    assert_eq!(members.len(), factor);
                    let distinct: std::collections::BTreeSet<_> = members.iter().collect();
                    assert_eq!(distinct.len(), factor);
                    for m in members {
                        *load.entry(*m).or_default() += 1;
                    }
                }
                let (min, max) = (load.values().min(), load.values().max());
                assert!(
                    max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                    "n {n} factor {factor}: {load:?}"
                );
                // With at least one replica per node to go round, the new node holds some.
                if n * factor > n {
                    assert!(load[&(n as u64 + 1)] > 0, "n {n} factor {factor}: {load:?}");
                }
            }
        }
        // A node outside the candidates (draining, down) neither gives nor takes.
        let placed: BTreeMap<ShardId, Vec<u64>> = [(7, vec![1, 2]), (8, vec![1, 2])].into();
        assert_eq!(replica_move(&placed, &[3]), None);
        assert_eq!(
            replica_move(&placed, &[2, 3]),
            Some(ReplicaMove {
                shard: 7,
                from: 2,
                to: 3
            })
        );
        assert_eq!(
            replica_move(&placed, &[1, 2, 3]),
            Some(ReplicaMove {
                shard: 7,
                from: 1,
                to: 3
            })
        );
    }

    /// Draining moves every replica of the store, to distinct non-members, spreading the load,
    /// and refuses (changing nothing) when a shard has nowhere to go.
    #[test]
    fn drain_moves_replace_the_store_everywhere_or_nowhere() {
        for n in 2..=7usize {
            let stores: Vec<u64> = (1..=n as u64).collect();
            for factor in 1..n {
                let placed = replica_sets(&stores, factor, 0).expect("enough stores");
                for &store in &stores {
                    let candidates: Vec<u64> = stores.clone();
                    let moves = drain_moves(&placed, store, &candidates, &Default::default())
                        .expect("room to move");
                    let holding = placed.values().filter(|m| m.contains(&store)).count();
                    assert_eq!(moves.len(), holding, "n {n} factor {factor} store {store}");
                    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
                    for (shard, members) in placed.iter() {
                        let after = moves.get(shard).unwrap_or(members);
                        assert!(!after.contains(&store));
                        assert_eq!(after.len(), factor);
                        let distinct: std::collections::BTreeSet<_> = after.iter().collect();
                        assert_eq!(distinct.len(), factor, "{after:?}");
                        for m in after {
                            *load.entry(*m).or_default() += 1;
                        }
                    }
                    let (min, max) = (
                        load.values().min().copied().unwrap_or(0),
                        load.values().max().copied().unwrap_or(0),
                    );
                    assert!(max - min <= 1, "spread {load:?} (n {n}, factor {factor})");
                }
            }
            // Every other store is already a member: nowhere to go.
            let full = replica_sets(&stores, n, 0).expect("enough stores");
            assert!(matches!(
                drain_moves(&full, 1, &stores, &Default::default()),
                Err(DrainError::NoCandidate { .. })
            ));
            // Unless the shard may stay (an adopted configured shard): then the others still move.
            if n >= 3 {
                let mut with_movable = full.clone();
                with_movable.insert(99, vec![1, 2]);
                let may_stay: std::collections::BTreeSet<ShardId> = full.keys().copied().collect();
                let moves =
                    drain_moves(&with_movable, 1, &stores, &may_stay).expect("the rest moves");
                assert_eq!(moves.keys().copied().collect::<Vec<_>>(), vec![99]);
            }
        }
        let placed = BTreeMap::from([(3, vec![1, 2])]);
        assert_eq!(
            drain_moves(&placed, 9, &[1, 2, 3], &Default::default()),
            Ok(BTreeMap::new()),
            "a store holding nothing moves nothing"
        );
    }

    use super::*;

    /// Every ring of up to 7 stores (ids with gaps and out of order) and every factor.
    #[test]
    fn replica_sets_are_distinct_balanced_and_lead_once_per_store() {
        for n in 1..=7usize {
            let stores: Vec<u64> = (0..n as u64).rev().map(|i| i * 3 + 1).collect();
            for factor in 1..=n {
                let sets = replica_sets(&stores, factor, 10).expect("enough stores");
                assert_eq!(sets.len(), n, "one shard per store");
                assert_eq!(
                    sets.keys().copied().collect::<Vec<_>>(),
                    (10..10 + n as u32).collect::<Vec<_>>()
                );
                for members in sets.values() {
                    assert_eq!(members.len(), factor);
                    let distinct: std::collections::BTreeSet<_> = members.iter().collect();
                    assert_eq!(distinct.len(), factor, "members distinct: {members:?}");
                    assert!(members.iter().all(|m| stores.contains(m)));
                }
                for store in &stores {
                    let member_of = sets.values().filter(|m| m.contains(store)).count();
                    let first_of = sets.values().filter(|m| m[0] == *store).count();
                    assert_eq!(
                        (member_of, first_of),
                        (factor, 1),
                        "store {store}, n {n}, factor {factor}"
                    );
                }
            }
            assert_eq!(
                replica_sets(&stores, n + 1, 0),
                Err(ReplicaError::TooFewStores {
                    factor: n + 1,
                    stores: n
                })
            );
        }
        assert_eq!(replica_sets(&[1, 2], 0, 0), Err(ReplicaError::Zero));
        assert_eq!(
            replica_sets(&[], 1, 0),
            Err(ReplicaError::TooFewStores {
                factor: 1,
                stores: 0
            })
        );
    }

    #[test]
    fn replica_sets_follow_the_ring() {
        let sets = replica_sets(&[3, 1, 2], 2, 4).expect("enough stores");
        assert_eq!(
            sets,
            BTreeMap::from([(4, vec![1, 2]), (5, vec![2, 3]), (6, vec![3, 1])])
        );
    }

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
