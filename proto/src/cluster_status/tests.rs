use super::*;

fn leader(term: u64, voters: &[u64], last: u64, matched: &[(u64, Option<u64>)]) -> MemberStatus {
    MemberStatus {
        role: MemberRole::Leader,
        term,
        leader: None,
        voters: voters.to_vec(),
        last_log_index: Some(last),
        applied_index: Some(last),
        matched: matched.iter().copied().collect(),
        learners: Vec::new(),
        membership_settled: true,
    }
}

fn follower(term: u64, leader: u64, voters: &[u64]) -> MemberStatus {
    MemberStatus {
        role: MemberRole::Follower,
        term,
        leader: Some(leader),
        voters: voters.to_vec(),
        last_log_index: Some(0),
        applied_index: Some(0),
        matched: BTreeMap::new(),
        learners: Vec::new(),
        membership_settled: true,
    }
}

fn node(node: u64, shards: Vec<(ShardId, MemberStatus)>) -> StoreNodeReport {
    NodeReport {
        node,
        addr: format!("127.0.0.1:{}", 9000 + node),
        report: Ok(shards
            .into_iter()
            .map(|(shard, status)| ShardMember {
                shard,
                status,
                retention: None,
            })
            .collect()),
    }
}

fn down(node: u64) -> StoreNodeReport {
    NodeReport {
        node,
        addr: String::new(),
        report: Err("connection refused".into()),
    }
}

fn expected(shards: &[ShardId], nodes: &[u64]) -> BTreeMap<ShardId, Vec<u64>> {
    shards.iter().map(|&s| (s, nodes.to_vec())).collect()
}

#[test]
fn healthy_shard_with_lag_from_the_leader() {
    let v = [1, 2, 3];
    let reports = vec![
        node(
            1,
            vec![(
                0,
                leader(4, &v, 100, &[(1, Some(100)), (2, Some(100)), (3, Some(40))]),
            )],
        ),
        node(2, vec![(0, follower(4, 1, &v))]),
        node(3, vec![(0, follower(4, 1, &v))]),
    ];
    let views = shard_views(&expected(&[0], &v), &reports);
    assert_eq!(views.len(), 1);
    let view = &views[0];
    assert_eq!(view.leader, Some(1));
    assert_eq!(view.term, 4);
    assert_eq!(view.health, ShardHealth::Ok);
    assert_eq!(view.last_log_index, Some(100));
    let lags: Vec<_> = view.replicas.iter().map(|r| (r.node, r.lag)).collect();
    assert_eq!(lags, vec![(1, Some(0)), (2, Some(0)), (3, Some(60))]);
    assert_eq!(view.caught_up_followers(0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(view.caught_up_followers(60).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn unreachable_or_lagging_voter_degrades_the_shard() {
    let v = [1, 2, 3];
    let lagging = vec![
        node(
            1,
            vec![(
                0,
                leader(
                    2,
                    &v,
                    5000,
                    &[(1, Some(5000)), (2, Some(5000)), (3, Some(10))],
                ),
            )],
        ),
        node(2, vec![(0, follower(2, 1, &v))]),
        node(3, vec![(0, follower(2, 1, &v))]),
    ];
    assert_eq!(
        shard_views(&expected(&[0], &v), &lagging)[0].health,
        ShardHealth::Degraded
    );
    let unreachable = vec![
        node(
            1,
            vec![(
                0,
                leader(2, &v, 5, &[(1, Some(5)), (2, Some(5)), (3, Some(5))]),
            )],
        ),
        node(2, vec![(0, follower(2, 1, &v))]),
        down(3),
    ];
    let view = &shard_views(&expected(&[0], &v), &unreachable)[0];
    assert_eq!(view.health, ShardHealth::Degraded);
    assert_eq!(view.replicas[2].role, None);
    assert_eq!(
        view.replicas[2].lag,
        Some(0),
        "the leader still knows what it matched"
    );
}

#[test]
fn no_leader_is_unavailable_and_lists_expected_replicas() {
    let v = [1, 2, 3];
    let mut candidate = follower(7, 0, &v);
    candidate.role = MemberRole::Candidate;
    candidate.leader = None;
    let reports = vec![node(1, vec![(0, candidate)]), down(2), down(3)];
    let views = shard_views(&expected(&[0, 1], &v), &reports);
    assert_eq!(views.len(), 2, "shards nobody reported are still shown");
    for view in &views {
        assert_eq!(view.leader, None);
        assert_eq!(view.health, ShardHealth::Unavailable);
        assert_eq!(view.replicas.iter().map(|r| r.node).collect::<Vec<_>>(), v);
        assert!(view.replicas.iter().all(|r| r.lag.is_none()));
    }
    assert_eq!(views[0].term, 7);
    assert_eq!(views[1].term, 0);
}

#[test]
fn the_newest_term_wins_over_a_deposed_leader() {
    let v = [1, 2, 3];
    let reports = vec![
        node(1, vec![(0, leader(3, &v, 10, &[(1, Some(10))]))]),
        node(
            2,
            vec![(0, leader(4, &v, 12, &[(2, Some(12)), (3, Some(12))]))],
        ),
        node(3, vec![(0, follower(4, 2, &v))]),
    ];
    let view = &shard_views(&expected(&[0], &v), &reports)[0];
    assert_eq!(view.leader, Some(2));
    assert_eq!(view.term, 4);
    assert_eq!(view.replicas[0].role, Some(MemberRole::Leader));
    assert_eq!(
        view.replicas[0].lag, None,
        "the new leader has not matched node 1 yet"
    );
    assert_eq!(view.health, ShardHealth::Degraded);
}

#[test]
fn leader_counts_include_nodes_leading_nothing() {
    let v = [1, 2, 3];
    let reports = vec![
        node(
            1,
            vec![
                (
                    0,
                    leader(1, &v, 1, &[(1, Some(1)), (2, Some(1)), (3, Some(1))]),
                ),
                (
                    1,
                    leader(1, &v, 1, &[(1, Some(1)), (2, Some(1)), (3, Some(1))]),
                ),
            ],
        ),
        node(2, vec![(0, follower(1, 1, &v)), (1, follower(1, 1, &v))]),
        down(3),
    ];
    let views = shard_views(&expected(&[0, 1], &v), &reports);
    let counts = leader_counts(&reports, &views);
    assert_eq!(counts, BTreeMap::from([(1, 2), (2, 0)]));
}

#[test]
fn member_status_round_trips_the_wire() {
    let status = leader(9, &[1, 2], 77, &[(1, Some(77)), (2, None)]);
    let back = member_from_wire(member_to_wire(&status)).expect("valid");
    assert_eq!(back, status);
    let mut wire = member_to_wire(&status);
    wire.role = 99;
    assert!(member_from_wire(wire).is_err());
}
