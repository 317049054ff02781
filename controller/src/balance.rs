//! Leader balancing: which shard leaderships to move so every store node that is up leads about
//! as many shards as the others (no node is a master). A pure function of the cluster view, so
//! it is tested exhaustively without a cluster; the balancer task acts on its answer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use vela_proto::ShardId;
use vela_proto::cluster_status::{ShardHealth, ShardView};

/// Which candidate move goes first: one off a draining node, then the biggest gap between the
/// leader's and the target's counts, then the lowest shard id, then the lowest target node id.
type Priority = (bool, usize, Reverse<(ShardId, u64)>);

/// Move the leadership of `shard` from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMove {
    pub shard: ShardId,
    pub from: u64,
    pub to: u64,
}

/// The moves that even out leadership across `nodes` (the store nodes that are up). A shard
/// only moves to a follower that answered and is at most `max_lag` entries behind its leader,
/// and each shard moves at most once per call (the next call sees the result). Moves are
/// chosen greedily, the biggest imbalance first, until no allowed move takes a leader from a
/// node leading at least two more shards than the target: with every shard replicated on
/// every node and all caught up, that leaves every node within one of every other.
///
/// A node of `draining` (`vela admin store drain`) leads nothing: every shard it leads moves to
/// the caught-up follower leading the fewest, whatever the counts (a configured shard that has
/// nowhere to move keeps its replica there, ADR 0032, but not the leadership), and no
/// leadership moves to it.
///
/// Deterministic: ties go to the lowest shard id, then the lowest target node id.
pub fn leader_moves(
    views: &[ShardView],
    nodes: &BTreeSet<u64>,
    max_lag: u64,
    draining: &BTreeSet<u64>,
) -> Vec<LeaderMove> {
    let mut count: BTreeMap<u64, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    let mut led: BTreeMap<ShardId, u64> = BTreeMap::new();
    for view in views {
        if view.health == ShardHealth::Unavailable {
            continue;
        }
        if let Some(leader) = view.leader {
            *count.entry(leader).or_default() += 1;
            led.insert(view.shard, leader);
        }
    }
    let mut moves = Vec::new();
    let mut moved: BTreeSet<ShardId> = BTreeSet::new();
    loop {
        let mut best: Option<(Priority, LeaderMove)> = None;
        for view in views {
            let Some(&from) = led.get(&view.shard) else {
                continue;
            };
            if moved.contains(&view.shard) {
                continue;
            }
            let from_count = count[&from];
            let leaving = draining.contains(&from);
            for to in view.caught_up_followers(max_lag) {
                let Some(&to_count) = count
                    .get(&to)
                    .filter(|_| nodes.contains(&to) && !draining.contains(&to))
                else {
                    continue;
                };
                if !leaving && to_count + 1 >= from_count {
                    continue;
                }
                let gap = if leaving {
                    usize::MAX - to_count
                } else {
                    from_count - to_count
                };
                let priority = (leaving, gap, Reverse((view.shard, to)));
                if best.as_ref().is_none_or(|(p, _)| priority > *p) {
                    let m = LeaderMove {
                        shard: view.shard,
                        from,
                        to,
                    };
                    best = Some((priority, m));
                }
            }
        }
        let Some((_, m)) = best else {
            return moves;
        };
        *count.entry(m.from).or_default() -= 1;
        *count.entry(m.to).or_default() += 1;
        led.insert(m.shard, m.to);
        moved.insert(m.shard);
        moves.push(m);
    }
}

#[cfg(test)]
#[path = "balance/tests.rs"]
mod tests;
