use super::*;
use vela_proto::cluster_status::{MemberRole, ReplicaView};

/// A healthy shard led by `leader`, replicated on `replicas`, with `lag` per replica (0 when
/// not listed).
fn shard(id: ShardId, leader: u64, replicas: &[u64], lag: &[(u64, u64)]) -> ShardView {
    ShardView {
        shard: id,
        leader: Some(leader),
        term: 1,
        health: ShardHealth::Ok,
        last_log_index: Some(100),
        replicas: replicas
            .iter()
            .map(|&node| ReplicaView {
                node,
                role: Some(if node == leader {
                    MemberRole::Leader
                } else {
                    MemberRole::Follower
                }),
                lag: Some(lag.iter().find(|(n, _)| *n == node).map_or(0, |(_, l)| *l)),
            })
            .collect(),
    }
}

fn counts(
    views: &[ShardView],
    nodes: &BTreeSet<u64>,
    moves: &[LeaderMove],
) -> BTreeMap<u64, usize> {
    let mut leaders: BTreeMap<ShardId, u64> = views
        .iter()
        .filter_map(|v| v.leader.map(|l| (v.shard, l)))
        .collect();
    for m in moves {
        assert_eq!(
            leaders[&m.shard], m.from,
            "a move starts at the current leader: {m:?}"
        );
        leaders.insert(m.shard, m.to);
    }
    let mut count: BTreeMap<u64, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    for leader in leaders.values() {
        *count.entry(*leader).or_default() += 1;
    }
    count
}

fn spread(count: &BTreeMap<u64, usize>) -> usize {
    let max = count.values().max().copied().unwrap_or(0);
    let min = count.values().min().copied().unwrap_or(0);
    max - min
}

/// Every leader assignment of up to 5 shards over up to 4 nodes, every shard on every node, all
/// caught up: the moves end within one of even, never move a shard twice, and a cluster that is
/// already within one gets no moves.
#[test]
fn full_replication_always_ends_within_one() {
    for n in 1..=4u64 {
        let nodes: BTreeSet<u64> = (1..=n).collect();
        let all: Vec<u64> = nodes.iter().copied().collect();
        for s in 1..=5u32 {
            let total = n.pow(s);
            for code in 0..total {
                let mut c = code;
                let views: Vec<ShardView> = (0..s)
                    .map(|id| {
                        let leader = 1 + c % n;
                        c /= n;
                        shard(id, leader, &all, &[])
                    })
                    .collect();
                let before = counts(&views, &nodes, &[]);
                let moves = leader_moves(&views, &nodes, 0, &BTreeSet::new());
                let after = counts(&views, &nodes, &moves);
                assert!(
                    spread(&after) <= 1,
                    "n={n} s={s} code={code}: {after:?} after {moves:?}"
                );
                if spread(&before) <= 1 {
                    assert!(moves.is_empty(), "balanced already, yet {moves:?}");
                }
                let shards: BTreeSet<ShardId> = moves.iter().map(|m| m.shard).collect();
                assert_eq!(shards.len(), moves.len(), "a shard moved twice: {moves:?}");
                assert_eq!(
                    moves,
                    leader_moves(&views, &nodes, 0, &BTreeSet::new()),
                    "deterministic"
                );
            }
        }
    }
}

/// Every leader assignment and every replica set of size 2 or 3 on 3 or 4 nodes (3 shards),
/// with some followers lagging: every move goes to a caught-up follower of that shard that is
/// up, and what is left is a local optimum: no unmoved shard has an allowed target leading two
/// fewer than its leader.
#[test]
fn restricted_replicas_only_move_to_caught_up_followers_and_stop_at_a_local_optimum() {
    let nodes_all: Vec<u64> = vec![1, 2, 3, 4];
    let mut replica_sets: Vec<Vec<u64>> = Vec::new();
    for mask in 0u32..16 {
        let set: Vec<u64> = nodes_all
            .iter()
            .copied()
            .filter(|n| mask & (1 << (n - 1)) != 0)
            .collect();
        if (2..=3).contains(&set.len()) {
            replica_sets.push(set);
        }
    }
    let up: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let max_lag = 10;
    let mut checked = 0;
    for a in &replica_sets {
        for b in &replica_sets {
            for c in &replica_sets {
                let sets = [a, b, c];
                // leader choices: any replica of each set; lag: node 4's replicas lag, node 3's
                // lag only on shard 1
                let choices: Vec<usize> = sets.iter().map(|s| s.len()).collect();
                let combos: usize = choices.iter().product();
                for code in 0..combos {
                    let mut k = code;
                    let views: Vec<ShardView> = sets
                        .iter()
                        .enumerate()
                        .map(|(id, set)| {
                            let leader = set[k % set.len()];
                            k /= set.len();
                            let mut lag = vec![(4, 0)];
                            if id == 1 {
                                lag.push((3, 50));
                            }
                            shard(id as ShardId, leader, set, &lag)
                        })
                        .collect();
                    let moves = leader_moves(&views, &up, max_lag, &BTreeSet::new());
                    for m in &moves {
                        let view = &views[m.shard as usize];
                        assert!(up.contains(&m.to), "moved to a node that is down: {m:?}");
                        assert!(
                            view.caught_up_followers(max_lag).any(|f| f == m.to),
                            "moved to a replica that is not a caught-up follower: {m:?}"
                        );
                    }
                    let after = counts(&views, &up, &moves);
                    let moved: BTreeSet<ShardId> = moves.iter().map(|m| m.shard).collect();
                    assert_eq!(moved.len(), moves.len());
                    for view in &views {
                        if moved.contains(&view.shard) {
                            continue;
                        }
                        let from = view.leader.expect("led");
                        for to in view.caught_up_followers(max_lag).filter(|t| up.contains(t)) {
                            assert!(
                                after[&to] + 1 >= after.get(&from).copied().unwrap_or(0),
                                "shard {} could still move {from}->{to}: {after:?}",
                                view.shard
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} cases");
}

#[test]
fn lagging_down_and_leaderless_are_left_alone() {
    let nodes: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    // Node 1 leads everything; node 3 lags on every shard, node 2 is caught up.
    let views: Vec<ShardView> = (0..3)
        .map(|id| shard(id, 1, &[1, 2, 3], &[(3, 5000)]))
        .collect();
    let moves = leader_moves(&views, &nodes, 1000, &BTreeSet::new());
    assert_eq!(
        moves,
        vec![LeaderMove {
            shard: 0,
            from: 1,
            to: 2
        }]
    );
    // Node 2 is down (not among the nodes that answered): nothing goes there.
    let up: BTreeSet<u64> = [1, 3].into_iter().collect();
    let caught_up: Vec<ShardView> = (0..3).map(|id| shard(id, 1, &[1, 2, 3], &[])).collect();
    let moves = leader_moves(&caught_up, &up, 0, &BTreeSet::new());
    assert!(moves.iter().all(|m| m.to == 3), "{moves:?}");
    assert_eq!(moves.len(), 1);
    // A shard without a leader is not counted and not moved.
    let mut leaderless = caught_up.clone();
    for v in &mut leaderless {
        v.health = ShardHealth::Unavailable;
    }
    assert!(leader_moves(&leaderless, &nodes, 0, &BTreeSet::new()).is_empty());
}

#[test]
fn nine_shards_on_three_nodes_end_three_each() {
    let nodes: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let views: Vec<ShardView> = (0..9).map(|id| shard(id, 1, &[1, 2, 3], &[])).collect();
    let moves = leader_moves(&views, &nodes, 0, &BTreeSet::new());
    assert_eq!(moves.len(), 6);
    let after = counts(&views, &nodes, &moves);
    assert_eq!(after, BTreeMap::from([(1, 3), (2, 3), (3, 3)]));
}

/// A draining node hands every leadership it can over, to the caught-up follower leading the
/// fewest, even when the counts are even, and is never given one; a shard whose only other
/// caught-up replica is missing keeps its leader.
#[test]
fn a_draining_node_leads_nothing() {
    let nodes: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let draining: BTreeSet<u64> = [2].into_iter().collect();
    let mut views: Vec<ShardView> = (0..6)
        .map(|id| shard(id, [1, 2, 3][id as usize % 3], &[1, 2, 3], &[]))
        .collect();
    // Shard 7: node 2 leads, both followers lag.
    views.push(shard(7, 2, &[1, 2, 3], &[(1, 5000), (3, 5000)]));
    let moves = leader_moves(&views, &nodes, 1000, &draining);
    assert!(moves.iter().all(|m| m.from == 2 && m.to != 2), "{moves:?}");
    let after = counts(&views, &nodes, &moves);
    assert_eq!(after, BTreeMap::from([(1, 3), (2, 1), (3, 3)]), "{moves:?}");
    assert_eq!(
        moves,
        leader_moves(&views, &nodes, 1000, &draining),
        "deterministic"
    );
    // Even counts otherwise: no move off a node that is not draining, none onto a draining one.
    let even: Vec<ShardView> = (0..3)
        .map(|id| shard(id, id as u64 + 1, &[1, 2, 3], &[]))
        .collect();
    let moves = leader_moves(&even, &nodes, 0, &[3].into_iter().collect());
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!((moves[0].shard, moves[0].from), (2, 3));
    assert_ne!(moves[0].to, 3);
}
