//! Retention per topic in the state (apply version 15): what the leader's pass plans, what an
//! `Expire` does to a queue and the groups on it, and a floor planned for a queue that was
//! dropped and made again before the entry applied.

use super::*;
use crate::command::ExpiryFloor;

const DEFAULT_MS: u64 = 60_000;

fn current() -> Harness {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion {
        version: APPLY_VERSION,
    });
    h
}

fn min_offset(h: &Harness) -> Option<u64> {
    h.state
        .queue_index(&topic("orders"), 0)
        .map(|q| q.min_offset())
}

#[test]
fn a_topic_kept_shorter_is_planned_and_expired_and_its_groups_forget_what_went() {
    let mut h = current();
    assert_eq!(
        h.apply(StoreCommand::TopicRetention {
            topic: topic("orders"),
            retention_ms: Some(1_000),
        }),
        CommandResponse::RetentionSet(true)
    );
    h.append(vec![message(None, None); 3]);
    let (pop_id, in_flight) = popped_with_id(&mut h);
    assert_eq!(in_flight.len(), 3);
    h.advance(5_000);
    h.append(vec![message(None, None); 2]);
    assert_eq!(
        h.state.log_retention_ms(DEFAULT_MS),
        DEFAULT_MS,
        "the log is kept for the store's time"
    );
    let plan = h.state.expiry_floors(DEFAULT_MS, h.now_ms);
    let key = h.state.queue_index(&topic("orders"), 0).map(|q| q.key());
    assert_eq!(
        plan,
        vec![(
            topic("orders"),
            vec![ExpiryFloor {
                queue_id: 0,
                key: key.expect("the queue exists"),
                offset: 3,
            }]
        )]
    );
    let (name, floors) = plan[0].clone();
    assert_eq!(
        h.apply(StoreCommand::Expire {
            topic: name,
            floors,
        }),
        CommandResponse::Expired(1)
    );
    assert_eq!(min_offset(&h), Some(3));
    assert!(h.fx.woken_topics.contains(&topic("orders")));
    assert!(
        h.ack(delivery(&in_flight[0], pop_id)).is_err(),
        "an expired message in flight is forgotten"
    );
    assert_eq!(h.pop_offsets(), vec![3, 4]);
    assert!(
        h.state.expiry_floors(DEFAULT_MS, h.now_ms).is_empty(),
        "nothing more to expire"
    );
}

#[test]
fn a_topic_kept_longer_keeps_the_log_and_the_others_expire_at_the_store_time() {
    let mut h = current();
    h.apply(StoreCommand::TopicRetention {
        topic: topic("audit"),
        retention_ms: Some(10 * DEFAULT_MS),
    });
    h.append(vec![message(None, None); 2]);
    h.append_to("audit", 0, vec![message(None, None); 2]);
    assert_eq!(
        h.state.log_retention_ms(DEFAULT_MS),
        10 * DEFAULT_MS,
        "a longer-kept topic with queues here keeps the log"
    );
    h.advance(2 * DEFAULT_MS as i64);
    let plan = h.state.expiry_floors(DEFAULT_MS, h.now_ms);
    let names: Vec<_> = plan.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(names, vec![topic("orders")], "audit keeps its own");
    h.apply(StoreCommand::TopicRetention {
        topic: topic("audit"),
        retention_ms: None,
    });
    assert_eq!(h.state.log_retention_ms(DEFAULT_MS), DEFAULT_MS);
    assert!(h.state.topic_retention().is_empty());
}

#[test]
fn a_floor_planned_for_a_dropped_queue_leaves_the_queue_made_again_alone() {
    let mut h = current();
    h.apply(StoreCommand::TopicRetention {
        topic: topic("orders"),
        retention_ms: Some(1_000),
    });
    h.append(vec![message(None, None); 3]);
    h.advance(5_000);
    let plan = h.state.expiry_floors(DEFAULT_MS, h.now_ms);
    assert_eq!(plan.len(), 1);
    // The topic is deleted and made again, and sent to, before the planned entry applies.
    h.apply(StoreCommand::DropTopic {
        topic: topic("orders"),
    });
    h.append(vec![message(None, None); 4]);
    let (name, floors) = plan[0].clone();
    assert_eq!(
        h.apply(StoreCommand::Expire {
            topic: name,
            floors,
        }),
        CommandResponse::Expired(0)
    );
    assert_eq!(min_offset(&h), Some(0), "the new queue keeps its messages");
}

#[test]
fn below_apply_version_15_retention_commands_change_nothing() {
    let mut h = Harness::new();
    assert_eq!(
        h.apply(StoreCommand::TopicRetention {
            topic: topic("orders"),
            retention_ms: Some(1_000),
        }),
        CommandResponse::RetentionSet(false)
    );
    h.append(vec![message(None, None); 3]);
    let key = h
        .state
        .queue_index(&topic("orders"), 0)
        .map(|q| q.key())
        .expect("the queue exists");
    assert_eq!(
        h.apply(StoreCommand::Expire {
            topic: topic("orders"),
            floors: vec![ExpiryFloor {
                queue_id: 0,
                key,
                offset: 2,
            }],
        }),
        CommandResponse::Expired(0)
    );
    assert!(h.state.topic_retention().is_empty());
    assert_eq!(min_offset(&h), Some(0));
}
