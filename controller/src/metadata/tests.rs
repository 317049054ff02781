use vela_proto::{TopicSpec, TopicType};

use super::*;

fn topic_name(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

fn group_name(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group name")
}

fn create_topic(name: &str, queue_count: u32, now_ms: i64) -> ControllerCommand {
    ControllerCommand::CreateTopic {
        spec: TopicSpec {
            name: topic_name(name),
            topic_type: TopicType::Fifo,
            queue_count,
            auto_created: false,
        },
        now_ms,
    }
}

fn create_group(name: &str, now_ms: i64) -> ControllerCommand {
    ControllerCommand::CreateGroup {
        spec: LoggedGroup {
            name: group_name(name),
            fifo: true,
            max_attempts: 5,
            auto_created: true,
        },
        now_ms,
    }
}

fn with_shards(shards: &[ShardId]) -> Metadata {
    let mut md = Metadata::default();
    let applied = md.apply(ControllerCommand::SetShards {
        shards: shards.to_vec(),
    });
    assert_eq!(applied, Ok(Applied::Shards(shards.to_vec())));
    md
}

#[test]
fn create_topic_places_queues_and_records_time() {
    let mut md = with_shards(&[0]);
    let Ok(Applied::Topic(config)) = md.apply(create_topic("orders", 4, 1_000)) else {
        panic!("create should succeed");
    };
    assert_eq!(config.queue_shards, vec![0, 0, 0, 0]);
    assert_eq!(config.created_at_ms, 1_000);
    assert_eq!(config.topic_type, TopicType::Fifo);
    assert_eq!(md.topic(&topic_name("orders")), Some(&config));
    assert_eq!(md.topics().count(), 1);
}

#[test]
fn set_topic_retention_golden_bytes() {
    // Variant 31: the topic name, then the retention (an option of a varint of ms).
    super::assert_golden([
        (
            ControllerCommand::SetTopicRetention {
                name: topic_name("t"),
                retention_ms: Some(300),
            },
            "1f 0174 01 ac02",
        ),
        (
            ControllerCommand::SetTopicRetention {
                name: topic_name("t"),
                retention_ms: None,
            },
            "1f 0174 00",
        ),
    ]);
}

#[test]
fn topic_drop_golden_bytes() {
    // Variant 32: the topic name, then the proposer's clock (a zigzag varint of ms);
    // variant 33: the name, then the drop id (a varint); variant 34: the name, the
    // retention (an option of a varint of ms), then the clock.
    super::assert_golden([
        (
            ControllerCommand::DeleteTopicDropping {
                name: topic_name("t"),
                now_ms: 300,
            },
            "20 0174 d804",
        ),
        (
            ControllerCommand::FinishTopicDrop {
                name: topic_name("t"),
                id: 300,
            },
            "21 0174 ac02",
        ),
        (
            ControllerCommand::SetTopicRetentionRevised {
                name: topic_name("t"),
                retention_ms: Some(300),
                now_ms: 300,
            },
            "22 0174 01 ac02 d804",
        ),
    ]);
}

#[test]
fn group_drop_golden_bytes() {
    // Variant 35: the group name, then the proposer's clock (a zigzag varint of ms); variant
    // 36: the name, then the drop id (a varint).
    super::assert_golden([
        (
            ControllerCommand::DeleteGroupDropping {
                name: group_name("g"),
                now_ms: 300,
            },
            "23 0167 d804",
        ),
        (
            ControllerCommand::FinishGroupDrop {
                name: group_name("g"),
                id: 300,
            },
            "24 0167 ac02",
        ),
    ]);
}

#[test]
fn a_group_drop_covers_the_shards_of_topics_and_holds_the_name() {
    let mut md = with_shards(&[0, 1, 2, 3, 4, 5]);
    let delete = |name: &str| ControllerCommand::DeleteGroupDropping {
        name: group_name(name),
        now_ms: 0,
    };
    md.apply(create_topic("orders", 1, 1)).expect("created");
    md.apply(create_topic("audit", 1, 1)).expect("created");
    let Ok(Applied::Topic(orders)) = md.apply(create_topic("clicks", 1, 1)) else {
        panic!("created");
    };
    // A deleted topic whose drop is not done still counts: its queues hold the group's state.
    let Ok(Applied::TopicDropping(_)) = md.apply(drop_topic("clicks", 0)) else {
        panic!("deleted");
    };
    md.apply(create_group("billing", 1)).expect("created");
    md.apply(create_group("audit", 1)).expect("created");
    let Ok(Applied::GroupDropping(drop)) = md.apply(delete("billing")) else {
        panic!("deleted");
    };
    let mut expected: Vec<ShardId> = md
        .topics()
        .flat_map(|t| t.queue_shards.clone())
        .chain(orders.queue_shards)
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(drop.shards, expected);
    assert!(
        expected.len() < md.shards().len(),
        "a shard without topics is left out: {expected:?}"
    );
    assert_eq!(drop.drop, vela_proto::GroupDropId { id: 2, floor: 1 });
    assert_eq!(
        md.apply(create_group("billing", 2)),
        Err(Rejected::GroupDropping(group_name("billing")))
    );
    // The floor stays below the oldest pending group drop.
    let Ok(Applied::GroupDropping(second)) = md.apply(delete("audit")) else {
        panic!("deleted");
    };
    assert_eq!(second.drop, vela_proto::GroupDropId { id: 3, floor: 1 });
    // A topic's revision comes after them.
    md.apply(create_topic("orders-2", 1, 1)).expect("created");
    assert!(matches!(
        md.apply(drop_topic("orders-2", 0)),
        Ok(Applied::TopicDropping(d)) if d.id == 4
    ));
    // While a dead-letter topic exists, a group may hold state on any shard.
    md.apply(create_topic("%DLQ%audit", 1, 1)).expect("created");
    md.apply(create_group("reader", 1)).expect("created");
    let Ok(Applied::GroupDropping(reader)) = md.apply(delete("reader")) else {
        panic!("deleted");
    };
    assert_eq!(reader.shards, md.shards());
    // The snapshot keeps it.
    let json = serde_json::to_vec(&md).expect("encode");
    let back: Metadata = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back.pending_group_drops(), md.pending_group_drops());
    assert_eq!(
        md.apply(ControllerCommand::FinishGroupDrop {
            name: group_name("billing"),
            id: 2,
        }),
        Ok(Applied::GroupDropFinished(true))
    );
    let pending = md.pending_group_drops();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (pending[0].1.drop, pending[1].1.drop),
        (
            vela_proto::GroupDropId { id: 3, floor: 2 },
            vela_proto::GroupDropId { id: 5, floor: 2 }
        )
    );
    assert!(matches!(
        md.apply(create_group("billing", 3)),
        Ok(Applied::Group(_))
    ));
}

fn drop_topic(name: &str, now_ms: i64) -> ControllerCommand {
    ControllerCommand::DeleteTopicDropping {
        name: topic_name(name),
        now_ms,
    }
}

#[test]
fn topic_revisions_ascend_across_drops_and_retentions() {
    let mut md = with_shards(&[0]);
    md.apply(create_topic("orders", 1, 1)).expect("created");
    md.apply(create_topic("audit", 1, 1)).expect("created");
    let set = |name: &str, ms, now_ms| ControllerCommand::SetTopicRetentionRevised {
        name: topic_name(name),
        retention_ms: ms,
        now_ms,
    };
    let revision = |md: &mut Metadata, command| match md.apply(command) {
        Ok(Applied::Topic(t)) => t.retention_revision,
        Ok(Applied::TopicDropping(d)) => d.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(revision(&mut md, set("orders", Some(60_000), 0)), 1);
    assert_eq!(revision(&mut md, set("audit", None, 0)), 2);
    assert_eq!(revision(&mut md, drop_topic("orders", 0)), 3);
    assert_eq!(
        md.apply(set("orders", Some(1_000), 0)),
        Err(Rejected::TopicNotFound(topic_name("orders")))
    );
    // Never below the proposer's clock, in thousandths of a ms; then on from there, even
    // when a leader's clock is behind.
    assert_eq!(revision(&mut md, set("audit", Some(5_000), 7)), 7_000);
    assert_eq!(revision(&mut md, set("audit", Some(5_000), 2)), 7_001);
    // A retention written without a revision (an older controller's entry) is unfenced.
    let unrevised = ControllerCommand::SetTopicRetention {
        name: topic_name("audit"),
        retention_ms: Some(6_000),
    };
    assert_eq!(revision(&mut md, unrevised), 0);
    let json = serde_json::to_vec(&md).expect("encode");
    let back: Metadata = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back, md, "the snapshot holds the revisions");
    // A counter lost with a snapshot of an older build starts again above the clock.
    let mut old = serde_json::to_value(&md).expect("encode");
    old.as_object_mut()
        .expect("an object")
        .remove("last_topic_revision");
    let mut rolled_back: Metadata = serde_json::from_value(old).expect("decode");
    assert_eq!(revision(&mut rolled_back, set("audit", None, 9)), 9_000);
}

#[test]
fn a_dead_letter_topic_drop_covers_every_shard() {
    let mut md = with_shards(&[0, 1, 2]);
    md.apply(create_topic("orders", 1, 1)).expect("created");
    md.apply(create_topic("%DLQ%billing", 1, 1))
        .expect("created");
    let Ok(Applied::TopicDropping(drop)) = md.apply(drop_topic("%DLQ%billing", 0)) else {
        panic!("deleted");
    };
    assert_eq!(
        drop.shards,
        [0, 1, 2],
        "dead letters sit beside the originals, deleted topics' included"
    );
    let Ok(Applied::TopicDropping(orders)) = md.apply(drop_topic("orders", 0)) else {
        panic!("deleted");
    };
    assert_eq!(orders.id, drop.id + 1);
    assert_eq!(orders.shards.len(), 1, "each shard once");
    // A shard neither configured nor placed any more holds nothing to drop, and a second
    // delete answers the drop as it stands.
    md.apply(ControllerCommand::SetShards { shards: vec![7] })
        .expect("set");
    assert!(md.pending_drops().iter().all(|(_, d)| d.shards.is_empty()));
    let Ok(Applied::TopicDropping(again)) = md.apply(drop_topic("orders", 0)) else {
        panic!("answered");
    };
    assert_eq!((again.id, again.shards.len()), (orders.id, 0));
}

#[test]
fn a_topic_keeps_the_retention_set_until_it_is_cleared_and_the_snapshot_holds_it() {
    let mut md = with_shards(&[0]);
    let set = |ms| ControllerCommand::SetTopicRetention {
        name: topic_name("orders"),
        retention_ms: ms,
    };
    assert_eq!(
        md.apply(set(Some(1_000))),
        Err(Rejected::TopicNotFound(topic_name("orders")))
    );
    assert!(md.apply(create_topic("orders", 2, 1_000)).is_ok());
    assert_eq!(
        md.topic(&topic_name("orders")).and_then(|t| t.retention_ms),
        None
    );
    let Ok(Applied::Topic(config)) = md.apply(set(Some(86_400_000))) else {
        panic!("set should succeed");
    };
    assert_eq!(config.retention_ms, Some(86_400_000));
    let json = serde_json::to_vec(&md).expect("encodes");
    let back: Metadata = serde_json::from_slice(&json).expect("decodes");
    assert_eq!(back, md, "the snapshot keeps the retention");
    assert!(md.apply(set(None)).is_ok());
    assert_eq!(
        md.topic(&topic_name("orders")).and_then(|t| t.retention_ms),
        None
    );
}

#[test]
fn duplicate_topic_is_rejected_and_keeps_the_original() {
    let mut md = with_shards(&[0]);
    assert!(md.apply(create_topic("orders", 4, 1_000)).is_ok());
    assert_eq!(
        md.apply(create_topic("orders", 8, 2_000)),
        Err(Rejected::TopicExists(topic_name("orders")))
    );
    let kept = md.topic(&topic_name("orders")).expect("still there");
    assert_eq!((kept.queue_count, kept.created_at_ms), (4, 1_000));
}

#[test]
fn delete_topic_then_recreate() {
    let mut md = with_shards(&[0]);
    assert!(md.apply(create_topic("orders", 4, 1_000)).is_ok());
    assert_eq!(
        md.apply(ControllerCommand::DeleteTopic {
            name: topic_name("orders")
        }),
        Ok(Applied::Deleted)
    );
    assert!(md.topic(&topic_name("orders")).is_none());
    assert_eq!(
        md.apply(ControllerCommand::DeleteTopic {
            name: topic_name("orders")
        }),
        Err(Rejected::TopicNotFound(topic_name("orders")))
    );
    let Ok(Applied::Topic(again)) = md.apply(create_topic("orders", 2, 3_000)) else {
        panic!("re-create should succeed");
    };
    assert_eq!((again.queue_count, again.created_at_ms), (2, 3_000));
}

#[test]
fn groups_create_duplicate_delete() {
    let mut md = with_shards(&[0]);
    let Ok(Applied::Group(config)) = md.apply(create_group("billing", 7)) else {
        panic!("create should succeed");
    };
    assert_eq!(
        (config.fifo, config.max_attempts, config.created_at_ms),
        (true, 5, 7)
    );
    assert!(config.auto_created);
    assert_eq!(
        md.apply(create_group("billing", 8)),
        Err(Rejected::GroupExists(group_name("billing")))
    );
    assert_eq!(
        md.group(&group_name("billing")).map(|g| g.created_at_ms),
        Some(7)
    );
    assert_eq!(
        md.apply(ControllerCommand::DeleteGroup {
            name: group_name("billing")
        }),
        Ok(Applied::Deleted)
    );
    assert_eq!(
        md.apply(ControllerCommand::DeleteGroup {
            name: group_name("billing")
        }),
        Err(Rejected::GroupNotFound(group_name("billing")))
    );
    assert_eq!(md.groups().count(), 0);
}

#[test]
fn topics_and_groups_are_separate_namespaces() {
    let mut md = with_shards(&[0]);
    assert!(md.apply(create_topic("same", 1, 1)).is_ok());
    assert!(md.apply(create_group("same", 1)).is_ok());
    assert_eq!(
        md.apply(ControllerCommand::DeleteGroup {
            name: group_name("other")
        }),
        Err(Rejected::GroupNotFound(group_name("other")))
    );
}

#[test]
fn without_shards_topics_cannot_be_placed() {
    let mut md = Metadata::default();
    assert_eq!(
        md.apply(create_topic("orders", 1, 1)),
        Err(Rejected::NoShards(topic_name("orders")))
    );
    assert!(md.topic(&topic_name("orders")).is_none());
}

#[test]
fn placement_balances_across_three_shards_and_frees_on_delete() {
    let mut md = with_shards(&[0, 1, 2]);
    let placed = |md: &mut Metadata, cmd| match md.apply(cmd) {
        Ok(Applied::Topic(t)) => t.queue_shards,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(placed(&mut md, create_topic("a", 4, 1)), vec![0, 1, 2, 0]);
    assert_eq!(placed(&mut md, create_topic("b", 2, 1)), vec![1, 2]);
    assert_eq!(placed(&mut md, create_topic("c", 3, 1)), vec![0, 1, 2]);
    // Load is now 3/3/3; deleting `a` leaves 1/2/2, so shard 0 catches up first.
    assert!(
        md.apply(ControllerCommand::DeleteTopic {
            name: topic_name("a")
        })
        .is_ok()
    );
    assert_eq!(placed(&mut md, create_topic("d", 3, 1)), vec![0, 0, 1]);
}

#[test]
fn new_shard_set_applies_to_new_topics_only() {
    let mut md = with_shards(&[0]);
    assert!(md.apply(create_topic("old", 2, 1)).is_ok());
    assert!(
        md.apply(ControllerCommand::SetShards { shards: vec![0, 1] })
            .is_ok()
    );
    let Ok(Applied::Topic(new)) = md.apply(create_topic("new", 3, 2)) else {
        panic!("create should succeed");
    };
    assert_eq!(new.queue_shards, vec![1, 1, 0]);
    assert_eq!(
        md.topic(&topic_name("old")).map(|t| t.queue_shards.clone()),
        Some(vec![0, 0])
    );
}

#[test]
fn replay_is_deterministic() {
    let commands = [
        ControllerCommand::SetShards {
            shards: vec![0, 1, 2],
        },
        create_topic("a", 5, 10),
        create_group("g", 11),
        create_topic("b", 3, 12),
        ControllerCommand::DeleteTopic {
            name: topic_name("a"),
        },
        create_topic("c", 4, 13),
    ];
    let run = || {
        let mut md = Metadata::default();
        let responses: Vec<_> = commands.iter().cloned().map(|c| md.apply(c)).collect();
        (md, responses)
    };
    assert_eq!(run(), run());
}

#[test]
fn snapshot_encoding_round_trips() {
    let mut md = with_shards(&[0, 1]);
    assert!(md.apply(create_topic("orders", 3, 5)).is_ok());
    assert!(md.apply(create_group("billing", 6)).is_ok());
    let json = serde_json::to_vec(&md).expect("encode");
    let back: Metadata = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back, md);
}

#[test]
fn commands_round_trip_through_postcard() {
    let cmd = create_topic("orders", 3, 5);
    let bytes = postcard::to_stdvec(&cmd).expect("encode");
    assert_eq!(
        postcard::from_bytes::<ControllerCommand>(&bytes).expect("decode"),
        cmd
    );
}

/// A command over a small name space, so creates and deletes collide often.
/// A proposer's clock: mostly the start of time (revisions count from 1), sometimes a
/// few ms later (revisions jump to it), never ahead of order.
fn clock() -> impl proptest::strategy::Strategy<Value = i64> {
    use proptest::prelude::*;
    prop_oneof![3 => Just(0i64), 1 => 1i64..3]
}

fn arb_command() -> impl proptest::strategy::Strategy<Value = ControllerCommand> {
    use proptest::prelude::*;
    let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")];
    prop_oneof![
        (name.clone(), 1u32..12, 0i64..1000).prop_map(|(n, q, t)| create_topic(n, q, t)),
        name.clone().prop_map(|n| ControllerCommand::DeleteTopic {
            name: topic_name(n)
        }),
        (name.clone(), clock()).prop_map(|(n, now_ms)| {
            ControllerCommand::DeleteTopicDropping {
                name: topic_name(n),
                now_ms,
            }
        }),
        (
            name.clone(),
            prop_oneof![1u64..8, 1_000u64..1_004, 2_000u64..2_004]
        )
            .prop_map(|(n, id)| ControllerCommand::FinishTopicDrop {
                name: topic_name(n),
                id,
            }),
        (name.clone(), proptest::option::of(1_000u64..9_000), clock()).prop_map(
            |(n, retention_ms, now_ms)| ControllerCommand::SetTopicRetentionRevised {
                name: topic_name(n),
                retention_ms,
                now_ms,
            }
        ),
        (name.clone(), 0i64..1000).prop_map(|(n, t)| create_group(n, t)),
        (name.clone(), 0i64..1000).prop_map(|(n, t)| {
            let ControllerCommand::CreateGroup { spec, now_ms } = create_group(n, t) else {
                unreachable!("create_group makes a CreateGroup")
            };
            ControllerCommand::CreateGroupStarting {
                spec,
                start: vela_proto::GroupStart::At(now_ms - 1),
                now_ms,
            }
        }),
        name.clone().prop_map(|n| ControllerCommand::DeleteGroup {
            name: group_name(n)
        }),
        (name.clone(), clock()).prop_map(|(n, now_ms)| {
            ControllerCommand::DeleteGroupDropping {
                name: group_name(n),
                now_ms,
            }
        }),
        (name, prop_oneof![1u64..8, 1_000u64..1_004, 2_000u64..2_004]).prop_map(|(n, id)| {
            ControllerCommand::FinishGroupDrop {
                name: group_name(n),
                id,
            }
        }),
        proptest::collection::btree_set(0u32..4, 1..4).prop_map(|s| {
            ControllerCommand::SetShards {
                shards: s.into_iter().collect(),
            }
        }),
    ]
}

proptest::proptest! {
    /// Against a model that only tracks which names exist: every outcome matches it, placed
    /// queues match the queue count, and the state survives the snapshot encoding.
    #[test]
    fn outcomes_match_a_name_model(commands in proptest::collection::vec(arb_command(), 0..60)) {
        use std::collections::BTreeSet;
        let mut md = with_shards(&[0, 1]);
        let (mut topics, mut groups) = (BTreeSet::new(), BTreeSet::new());
        // Deleted topics and groups still dropping, by their drop ids; the newest revision
        // (topics' and groups' drops count from one counter).
        let (mut dropping, mut group_drops, mut last_revision) = (BTreeMap::new(), BTreeMap::new(), 0u64);
        let mut next_revision = |now_ms: i64| {
            last_revision = (last_revision + 1).max(now_ms as u64 * 1_000);
            last_revision
        };
        for command in commands {
            let outcome = md.apply(command.clone());
            match command {
                ControllerCommand::CreateTopic { spec, .. } if dropping.contains_key(&spec.name) && !topics.contains(&spec.name) => {
                    proptest::prop_assert_eq!(outcome, Err(Rejected::TopicDropping(spec.name)));
                }
                ControllerCommand::CreateTopic { spec, now_ms } => {
                    if topics.insert(spec.name.clone()) {
                        let Ok(Applied::Topic(t)) = outcome else {
                            return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                        };
                        proptest::prop_assert_eq!(t.queue_shards.len(), spec.queue_count as usize);
                        proptest::prop_assert!(t.queue_shards.iter().all(|s| md.shards().contains(s)));
                        proptest::prop_assert_eq!(t.created_at_ms, now_ms);
                    } else {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::TopicExists(spec.name)));
                    }
                }
                ControllerCommand::DeleteTopic { name } => {
                    let expected = if topics.remove(&name) {
                        Ok(Applied::Deleted)
                    } else {
                        Err(Rejected::TopicNotFound(name))
                    };
                    proptest::prop_assert_eq!(outcome, expected);
                }
                ControllerCommand::DeleteTopicDropping { name, now_ms } => {
                    let id = if let Some(&id) = dropping.get(&name) {
                        id
                    } else if topics.remove(&name) {
                        let id = next_revision(now_ms);
                        dropping.insert(name.clone(), id);
                        id
                    } else {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::TopicNotFound(name)));
                        continue;
                    };
                    let Ok(Applied::TopicDropping(drop)) = outcome else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                    };
                    proptest::prop_assert_eq!(drop.id, id);
                    // Only shards that exist (here: configured) are named.
                    proptest::prop_assert!(drop.shards.iter().all(|s| md.shards().contains(s)));
                }
                ControllerCommand::FinishTopicDrop { name, id } => {
                    let finished = dropping.get(&name) == Some(&id);
                    if finished {
                        dropping.remove(&name);
                    }
                    proptest::prop_assert_eq!(outcome, Ok(Applied::TopicDropFinished(finished)));
                }
                ControllerCommand::SetTopicRetentionRevised { name, retention_ms, now_ms } => {
                    if topics.contains(&name) {
                        let Ok(Applied::Topic(t)) = outcome else {
                            return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                        };
                        proptest::prop_assert_eq!(t.retention_ms, retention_ms);
                        proptest::prop_assert_eq!(t.retention_revision, next_revision(now_ms));
                    } else {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::TopicNotFound(name)));
                    }
                }
                // Not generated here (see `replicated_tests`).
                ControllerCommand::UpdateGroup { .. } => {}
                ControllerCommand::CreateGroup { spec, .. }
                | ControllerCommand::CreateGroupStarting { spec, .. }
                | ControllerCommand::CreateGroupWithRetry { spec, .. }
                | ControllerCommand::CreateBroadcastGroup { spec, .. } if group_drops.contains_key(&spec.name) && !groups.contains(&spec.name) => {
                    proptest::prop_assert_eq!(outcome, Err(Rejected::GroupDropping(spec.name)));
                }
                ControllerCommand::CreateGroup { spec, .. }
                | ControllerCommand::CreateGroupStarting { spec, .. }
                | ControllerCommand::CreateGroupWithRetry { spec, .. }
                | ControllerCommand::CreateBroadcastGroup { spec, .. } => {
                    if groups.insert(spec.name.clone()) {
                        proptest::prop_assert!(matches!(outcome, Ok(Applied::Group(_))));
                    } else {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::GroupExists(spec.name)));
                    }
                }
                ControllerCommand::DeleteGroup { name } => {
                    let expected = if groups.remove(&name) {
                        Ok(Applied::Deleted)
                    } else {
                        Err(Rejected::GroupNotFound(name))
                    };
                    proptest::prop_assert_eq!(outcome, expected);
                }
                ControllerCommand::DeleteGroupDropping { name, now_ms } => {
                    let (id, fresh) = if let Some(&id) = group_drops.get(&name) {
                        (id, false)
                    } else if groups.remove(&name) {
                        let id = next_revision(now_ms);
                        group_drops.insert(name.clone(), id);
                        (id, true)
                    } else {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::GroupNotFound(name)));
                        continue;
                    };
                    let Ok(Applied::GroupDropping(drop)) = outcome else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                    };
                    proptest::prop_assert_eq!(drop.drop.id, id);
                    // Every group drop below the oldest pending one is finished.
                    proptest::prop_assert_eq!(drop.drop.floor, group_drops.values().min().copied().unwrap_or(id) - 1);
                    // Shards of topics (here: configured) that still exist.
                    proptest::prop_assert!(drop.shards.iter().all(|s| md.shards().contains(s)));
                    if fresh {
                        let mut of_topics: Vec<ShardId> = md.topics().flat_map(|t| t.queue_shards.clone()).collect();
                        of_topics.retain(|s| md.shards().contains(s));
                        proptest::prop_assert!(of_topics.iter().all(|s| drop.shards.contains(s)), "a new deletion names the topics' shards");
                    }
                }
                ControllerCommand::FinishGroupDrop { name, id } => {
                    let finished = group_drops.get(&name) == Some(&id);
                    if finished {
                        group_drops.remove(&name);
                    }
                    proptest::prop_assert_eq!(outcome, Ok(Applied::GroupDropFinished(finished)));
                }
                ControllerCommand::SetShards { shards } => {
                    proptest::prop_assert_eq!(outcome, Ok(Applied::Shards(shards)));
                }
                // Not generated here (see `replicated_tests`).
                ControllerCommand::CreateTopicReplicated { .. }
                | ControllerCommand::MarkShardCreated { .. }
                | ControllerCommand::DrainStore { .. } => {}
                // Not generated here (see `metadata::auth`).
                ControllerCommand::CreateUser { .. }
                | ControllerCommand::UpdateUser { .. }
                | ControllerCommand::DeleteUser { .. }
                | ControllerCommand::PutAcl { .. }
                | ControllerCommand::DeleteAcl { .. } => {}
                // Not generated here (see `metadata::routes`).
                ControllerCommand::CreateRoute { .. }
                | ControllerCommand::CreateHttpRoute { .. }
                | ControllerCommand::CreateHttpRouteWithHeaders { .. }
                | ControllerCommand::AddReceiptKey { .. }
                | ControllerCommand::RetireReceiptKey { .. }
                | ControllerCommand::SetTierCredentials { .. }
                | ControllerCommand::RegisterStore { .. }
                | ControllerCommand::MoveReplica { .. }
                | ControllerCommand::UnregisterStore { .. }
                | ControllerCommand::SetStoreScaleIn { .. }
                | ControllerCommand::UndrainStore { .. }
                | ControllerCommand::AdoptConfiguredShards { .. }
                | ControllerCommand::SetTopicRetention { .. }
                | ControllerCommand::DeleteRoute { .. }
                | ControllerCommand::SetRoutePaused { .. } => {}
            }
        }
        let names: BTreeSet<_> = md.topics().map(|t| t.name.clone()).collect();
        proptest::prop_assert_eq!(names, topics);
        let pending: BTreeMap<_, _> = md.pending_drops().into_iter().map(|(n, d)| (n, d.id)).collect();
        proptest::prop_assert_eq!(pending, dropping);
        let names: BTreeSet<_> = md.groups().map(|g| g.name.clone()).collect();
        proptest::prop_assert_eq!(names, groups);
        let pending: BTreeMap<_, _> = md.pending_group_drops().into_iter().map(|(n, d)| (n, d.drop.id)).collect();
        proptest::prop_assert_eq!(pending, group_drops);
        let json = serde_json::to_vec(&md).expect("encode");
        proptest::prop_assert_eq!(serde_json::from_slice::<Metadata>(&json).expect("decode"), md);
    }
}
