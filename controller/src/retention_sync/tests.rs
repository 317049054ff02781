use std::collections::BTreeMap;

use vela_proto::cluster_status::{MemberStatus, NodeReport, ShardMember};
use vela_proto::domain::TopicType;

use super::*;

fn topic(name: &str, shards: &[ShardId], retention_ms: Option<u64>) -> TopicConfig {
    TopicConfig {
        name: TopicName::new(name).expect("valid"),
        topic_type: TopicType::Normal,
        queue_count: shards.len() as u32,
        queue_shards: shards.to_vec(),
        created_at_ms: 0,
        auto_created: false,
        retention_ms,
        // Fixes carry it (see `fix`).
        retention_revision: REVISION,
    }
}

/// The revision every topic's retention has here.
const REVISION: u64 = 3;

fn member(
    shard: ShardId,
    role: MemberRole,
    term: u64,
    have: Option<&[(&str, u64)]>,
) -> ShardMember {
    ShardMember {
        shard,
        status: MemberStatus {
            role,
            term,
            leader: None,
            voters: vec![1, 2, 3],
            last_log_index: None,
            applied_index: None,
            matched: BTreeMap::new(),
            learners: Vec::new(),
            membership_settled: true,
        },
        retention: have.map(|h| {
            h.iter()
                .map(|(t, ms)| (TopicName::new(t).expect("valid"), *ms))
                .collect()
        }),
    }
}

fn node(node: u64, members: Vec<ShardMember>) -> StoreNodeReport {
    NodeReport {
        node,
        addr: format!("s{node}"),
        report: Ok(members),
    }
}

fn fix(shard: ShardId, topic: &str, retention_ms: Option<u64>) -> RetentionFix {
    RetentionFix {
        shard,
        topic: TopicName::new(topic).expect("valid"),
        retention_ms,
        revision: REVISION,
    }
}

#[test]
fn a_shard_missing_or_differing_from_the_metadata_is_told_the_metadata() {
    let topics = [
        topic("kept", &[1, 2], Some(7_000)),
        topic("short", &[2], Some(1_000)),
        topic("plain", &[1], None),
    ];
    let reports = [
        node(
            1,
            vec![member(1, MemberRole::Leader, 1, Some(&[("kept", 7_000)]))],
        ),
        node(
            2,
            vec![member(2, MemberRole::Leader, 1, Some(&[("short", 9_000)]))],
        ),
    ];
    assert_eq!(
        plan(&reports, &topics),
        [fix(2, "kept", Some(7_000)), fix(2, "short", Some(1_000))]
    );
}

#[test]
fn a_shard_keeping_a_retention_the_metadata_cleared_goes_back_to_the_store_time() {
    let topics = [topic("plain", &[1], None), topic("elsewhere", &[2], None)];
    // "gone" is not in the metadata (deleted; its shards drop it), "elsewhere" has no queue on
    // shard 1: both left alone.
    let reports = [node(
        1,
        vec![member(
            1,
            MemberRole::Leader,
            1,
            Some(&[("plain", 5_000), ("gone", 5_000), ("elsewhere", 5_000)]),
        )],
    )];
    assert_eq!(plan(&reports, &topics), [fix(1, "plain", None)]);
}

#[test]
fn agreeing_shards_and_shards_without_a_leader_report_are_left_alone() {
    let topics = [topic("kept", &[1, 2, 3], Some(7_000))];
    let reports = [
        node(
            1,
            vec![member(1, MemberRole::Leader, 1, Some(&[("kept", 7_000)]))],
        ),
        // A follower's report (and an older build's, or one below apply version 15: no map)
        // says nothing.
        node(2, vec![member(2, MemberRole::Follower, 1, Some(&[]))]),
        node(3, vec![member(3, MemberRole::Leader, 1, None)]),
        NodeReport {
            node: 4,
            addr: "s4".into(),
            report: Err("down".into()),
        },
    ];
    assert_eq!(plan(&reports, &topics), []);
}

#[test]
fn the_newest_term_leader_speaks_for_its_shard() {
    let topics = [topic("kept", &[1], Some(7_000))];
    let stale = member(1, MemberRole::Leader, 3, Some(&[]));
    let current = member(1, MemberRole::Leader, 4, Some(&[("kept", 7_000)]));
    for reports in [
        [node(1, vec![stale.clone()]), node(2, vec![current.clone()])],
        [node(2, vec![current.clone()]), node(1, vec![stale.clone()])],
    ] {
        assert_eq!(plan(&reports, &topics), []);
    }
    let reports = [
        node(1, vec![current]),
        node(2, vec![member(1, MemberRole::Leader, 5, Some(&[]))]),
    ];
    assert_eq!(plan(&reports, &topics), [fix(1, "kept", Some(7_000))]);
}

#[test]
fn a_dead_letter_topic_is_on_every_shard_holding_queues() {
    let topics = [
        topic("a", &[1], None),
        topic("b", &[2, 3], None),
        topic("%DLQ%g", &[], Some(60_000)),
    ];
    let reports = [
        node(1, vec![member(1, MemberRole::Leader, 1, Some(&[]))]),
        node(
            2,
            vec![member(
                2,
                MemberRole::Leader,
                1,
                Some(&[("%DLQ%g", 60_000)]),
            )],
        ),
        node(3, vec![member(3, MemberRole::Leader, 1, Some(&[]))]),
    ];
    assert_eq!(
        plan(&reports, &topics),
        [
            fix(1, "%DLQ%g", Some(60_000)),
            fix(3, "%DLQ%g", Some(60_000))
        ]
    );
}
