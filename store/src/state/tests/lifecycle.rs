//! State over a shard's life: truncation by retention drops old entries and the state pointing
//! at them, dropped topics and groups are forgotten, and snapshots round-trip exactly.

use super::*;

#[test]
fn truncation_drops_old_entries_and_the_state_pointing_at_them() {
    let mut h = Harness::new();
    h.append(vec![message(None, None), message(None, None)]); // log 1: offsets 0, 1
    h.append(vec![message(None, None)]); // log 2: offset 2
    let (id, got) = popped_with_id(&mut h); // all three in flight
    assert_eq!(got.len(), 3);
    h.append(vec![message(None, None)]); // log 4: offset 3
    h.apply(StoreCommand::Truncate { below_log_index: 2 });
    let index = h.state.queue(&topic("orders"), 0).expect("queue");
    assert_eq!((index.min_offset(), index.max_offset()), (2, 4));
    assert!(
        h.ack(delivery(&got[0], id)).is_err(),
        "in-flight records below are gone"
    );
    assert_eq!(h.ack(delivery(&got[2], id)), Ok(()));
    let stats = h
        .state
        .queue_stats(&topic("orders"), Some(&group("billing")));
    assert_eq!(stats[0].min_offset, 2);
    assert_eq!(stats[0].groups[0].consumer_offset, 3);
    // A group that never consumed starts at the new minimum.
    let fresh = h.pop_with(|p| p.group = group("late"));
    assert_eq!(
        fresh.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[test]
fn drop_topic_and_drop_group_forget_state() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    h.append_to("other", 0, vec![message(None, None)]);
    let (id, got) = popped_with_id(&mut h);
    h.apply(StoreCommand::DropGroup {
        group: group("billing"),
    });
    assert!(h.ack(delivery(&got[0], id)).is_err());
    assert_eq!(h.pop_offsets(), vec![0], "a recreated group starts over");
    h.apply(StoreCommand::DropTopic {
        topic: topic("orders"),
    });
    assert!(!h.state.has_topic(&topic("orders")));
    assert!(h.state.has_topic(&topic("other")));
    assert!(h.pop().is_empty());
    assert!(h.state.queue_stats(&topic("orders"), None).is_empty());
}

#[test]
fn a_topic_drop_applies_once_per_drop_id() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: DROP_FENCE_APPLY_VERSION,
    });
    let drop = |id| StoreCommand::DropTopicOnce {
        topic: topic("orders"),
        drop_id: id,
    };
    h.append(vec![message(None, None)]);
    h.apply(drop(4));
    assert!(!h.state.has_topic(&topic("orders")));
    // Created again, then a copy of the same drop (or an older one) arrives late.
    h.append(vec![message(None, None)]);
    h.apply(drop(4));
    h.apply(drop(3));
    assert!(
        h.state.has_topic(&topic("orders")),
        "a drop applied before leaves the topic created again alone"
    );
    assert_eq!(h.pop_offsets(), vec![0]);
    assert_eq!(h.state.topic_revisions()[&topic("orders")], 4);
    // The next deletion has a higher id.
    h.apply(drop(5));
    assert!(!h.state.has_topic(&topic("orders")));
    assert_eq!(h.state.restored(&h.state), h.state);
}

#[test]
fn a_group_drop_applies_once_per_drop_id() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: GROUP_DROP_FENCE_APPLY_VERSION,
    });
    let drop = |id, floor| StoreCommand::DropGroupOnce {
        group: group("billing"),
        drop_id: id,
        floor,
    };
    h.append(vec![message(None, None), message(None, None)]);
    assert_eq!(h.pop_offsets(), vec![0, 1]);
    // A topic of the same name dropped under a higher id: revisions are per kind of name.
    h.apply(StoreCommand::DropTopicOnce {
        topic: topic("billing"),
        drop_id: 9,
    });
    h.apply(drop(4, 0));
    // Created again, it starts over; then a copy of the same drop (or an older one) arrives
    // late.
    let (id, got) = popped_with_id(&mut h);
    assert_eq!(got.len(), 2, "the dropped group's deliveries are forgotten");
    h.apply(drop(4, 0));
    h.apply(drop(3, 0));
    assert_eq!(
        h.ack(delivery(&got[0], id)),
        Ok(()),
        "a drop applied before leaves the group created again alone"
    );
    assert_eq!(h.state.group_fence().ids()[&group("billing")], 4);
    // The next deletion has a higher id; the floor it carries forgets the finished one.
    h.apply(drop(5, 4));
    assert!(h.ack(delivery(&got[1], id)).is_err());
    assert_eq!(h.state.group_fence().ids()[&group("billing")], 5);
    h.apply(StoreCommand::DropGroupOnce {
        group: group("other"),
        drop_id: 7,
        floor: 6,
    });
    assert_eq!(
        h.state.group_fence().ids().keys().collect::<Vec<_>>(),
        [&group("other")],
        "only drops above the floor are kept"
    );
    // Created again, then a late copy of drop 5 (at or below the floor): fenced all the same.
    let (id, got) = popped_with_id(&mut h);
    assert_eq!(got.len(), 2);
    h.apply(drop(5, 0));
    assert_eq!(h.ack(delivery(&got[0], id)), Ok(()));
    assert_eq!(h.state.restored(&h.state), h.state);
}

#[test]
fn before_the_fence_a_group_drop_always_applies() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: GROUP_DROP_FENCE_APPLY_VERSION - 1,
    });
    h.append(vec![message(None, None)]);
    for _ in 0..2 {
        assert_eq!(h.pop_offsets(), vec![0]);
        h.apply(StoreCommand::DropGroupOnce {
            group: group("billing"),
            drop_id: 1,
            floor: 0,
        });
    }
    assert!(h.state.group_fence().is_empty());
}

#[test]
fn a_topic_retention_applies_only_above_the_topics_revision() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: RETENTION_FENCE_APPLY_VERSION,
    });
    let set = |ms, revision| StoreCommand::TopicRetentionAt {
        topic: topic("orders"),
        retention_ms: Some(ms),
        revision,
    };
    assert_eq!(h.apply(set(60_000, 3)), CommandResponse::RetentionSet(true));
    assert_eq!(h.apply(set(1_000, 3)), CommandResponse::Superseded);
    assert_eq!(h.apply(set(1_000, 2)), CommandResponse::Superseded);
    assert_eq!(h.state.topic_retention()[&topic("orders")], 60_000);
    // A drop is a revision too: a retention from before it does not come back.
    h.apply(StoreCommand::DropTopicOnce {
        topic: topic("orders"),
        drop_id: 4,
    });
    assert_eq!(h.apply(set(60_000, 3)), CommandResponse::Superseded);
    assert!(h.state.topic_retention().is_empty());
    assert_eq!(h.apply(set(5_000, 5)), CommandResponse::RetentionSet(true));
    assert_eq!(h.state.topic_retention()[&topic("orders")], 5_000);
}

#[test]
fn before_the_fence_a_topic_drop_always_applies() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: DROP_FENCE_APPLY_VERSION - 1,
    });
    for _ in 0..2 {
        h.append(vec![message(None, None)]);
        h.apply(StoreCommand::DropTopicOnce {
            topic: topic("orders"),
            drop_id: 1,
        });
        assert!(!h.state.has_topic(&topic("orders")));
    }
    assert!(h.state.topic_revisions().is_empty());
}

#[test]
fn snapshots_round_trip_exactly() {
    let mut h = Harness::new();
    h.append(vec![
        message(Some("A"), Some("g")),
        message(Some("A"), Some("g")),
        message(None, None),
    ]);
    h.append(vec![MessageRecord {
        kind: MessageKind::Transaction,
        ..message(None, None)
    }]);
    h.append(vec![MessageRecord {
        delivery_timestamp_ms: Some(h.now_ms + 10),
        ..message(None, None)
    }]);
    h.pop_with(|p| p.fifo = true);
    let back = h.state.restored(&h.state);
    assert_eq!(back, h.state);
}

#[test]
fn offsets_are_found_by_store_time() {
    let mut h = Harness::new();
    let start = h.now_ms;
    h.append(vec![message(None, None), message(None, None)]); // offsets 0, 1 at start
    h.now_ms += 1_000;
    h.append(vec![message(None, None)]); // offset 2 at start + 1 s
    h.now_ms += 1_000;
    h.append(vec![message(None, None)]); // offset 3 at start + 2 s
    let orders = topic("orders");
    let at = |ms: i64| h.state.offset_at(&orders, 0, ms);
    assert_eq!(at(0), Some(0), "before everything: the first");
    assert_eq!(at(start), Some(0));
    assert_eq!(at(start + 1), Some(2));
    assert_eq!(at(start + 1_000), Some(2));
    assert_eq!(at(start + 2_000), Some(3));
    assert_eq!(
        at(start + 2_001),
        Some(4),
        "after everything: where the next goes"
    );
    assert_eq!(h.state.offset_at(&orders, 5, start), None, "no such queue");

    // Retention raised the minimum: never below it.
    h.apply(StoreCommand::Truncate { below_log_index: 2 });
    assert_eq!(h.state.offset_at(&orders, 0, 0), Some(2));
}

#[test]
fn queue_stats_report_where_a_new_group_would_start() {
    use vela_proto::domain::GroupStart;
    let mut h = Harness::new();
    h.append(vec![message(None, None), message(None, None)]);
    h.append(vec![message(None, None)]);
    let rule = |start| crate::state::StartRule {
        start,
        group_created_ms: i64::MAX / 2,
        young_ms: 0,
        now_ms: i64::MAX / 2,
    };
    let late = group("late");
    let stats = |h: &Harness, g: &GroupName, start: Option<GroupStart>| {
        h.state
            .queue_stats_with(&topic("orders"), Some(g), start.map(rule))
    };
    // Without a rule a group that has not read the queue is not there.
    assert!(stats(&h, &late, None)[0].groups.is_empty());
    let earliest = &stats(&h, &late, Some(GroupStart::Earliest))[0].groups[0];
    assert_eq!(
        (
            earliest.consumer_offset,
            earliest.inflight,
            earliest.backlog
        ),
        (0, 0, 3)
    );
    // Created after every message: nothing waits for it.
    let latest = &stats(&h, &late, Some(GroupStart::Latest))[0].groups[0];
    assert_eq!((latest.consumer_offset, latest.backlog), (3, 0));
    // A group with a position is reported as it stands, whatever the rule.
    let (_, got) = popped_with_id(&mut h);
    assert_eq!(got.len(), 3);
    let billing = &stats(&h, &group("billing"), Some(GroupStart::Latest))[0].groups[0];
    assert_eq!(
        (billing.consumer_offset, billing.inflight, billing.backlog),
        (0, 3, 3)
    );
}
