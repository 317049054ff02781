//! `AppendBatch` entries (concurrent appends coalesced into one entry): each sub-append applies
//! exactly like its own `Append`, delay and transaction messages park under their batch slots,
//! and a batch of one matches the plain append.

use std::collections::BTreeMap;

use super::*;
use crate::command::QueueAppend;

fn named(id: &str, f: impl FnOnce(&mut MessageRecord)) -> MessageRecord {
    let mut m = MessageRecord {
        message_id: id.into(),
        ..message(None, None)
    };
    f(&mut m);
    m
}

fn sub(queue_id: u32, messages: Vec<MessageRecord>) -> QueueAppend {
    QueueAppend {
        topic: topic("orders"),
        queue_id,
        messages,
    }
}

/// The message ids a POP delivered, by (queue, offset), read through the entry they name.
fn read_back(
    entries: &BTreeMap<u64, StoreCommand>,
    popped: &[PoppedMessage],
) -> BTreeMap<(u32, u64), String> {
    popped
        .iter()
        .map(|m| {
            let record = entries
                .get(&m.record.log_index)
                .and_then(|c| c.record(m.record.slot))
                .expect("a delivered record is readable through its entry");
            ((m.queue_id, m.offset), record.message_id.clone())
        })
        .collect()
}

#[test]
fn a_batch_applies_each_sub_append_like_its_own_append() {
    let mut h = Harness::new();
    let mut entries = BTreeMap::new();
    let single = StoreCommand::Append {
        topic: topic("orders"),
        queue_id: 0,
        now_ms: h.now_ms,
        messages: vec![named("first", |_| {})],
    };
    h.apply(single.clone());
    entries.insert(h.last_index, single);
    let batch = StoreCommand::AppendBatch {
        now_ms: h.now_ms,
        appends: vec![
            sub(0, vec![named("a", |_| {}), named("b", |_| {})]),
            sub(1, vec![named("c", |_| {})]),
            sub(0, vec![named("d", |_| {})]),
        ],
    };
    let response = h.apply(batch.clone());
    entries.insert(h.last_index, batch);
    let offsets = |outcomes: &[AppendOutcome]| outcomes.iter().map(|o| o.offset).collect();
    let CommandResponse::AppendedBatch(outcomes) = response else {
        panic!("unexpected response {response:?}");
    };
    assert_eq!(
        outcomes.iter().map(|o| offsets(o)).collect::<Vec<Vec<_>>>(),
        vec![vec![Some(1), Some(2)], vec![Some(0)], vec![Some(3)]],
        "offsets continue per queue, in sub-append order"
    );
    assert!(h.fx.woken_topics.contains(&topic("orders")));
    let got = h.pop();
    assert_eq!(
        read_back(&entries, &got),
        BTreeMap::from([
            ((0, 0), "first".to_owned()),
            ((0, 1), "a".to_owned()),
            ((0, 2), "b".to_owned()),
            ((0, 3), "d".to_owned()),
            ((1, 0), "c".to_owned()),
        ])
    );
    assert_eq!(
        got.iter()
            .filter(|m| m.record.log_index == 2)
            .map(|m| m.record.slot)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2, 3]),
        "slots run on across sub-appends"
    );
}

#[test]
fn delay_and_transaction_sub_appends_park_under_their_batch_slots() {
    let mut h = Harness::new();
    let due = h.now_ms + 1_000;
    let batch = StoreCommand::AppendBatch {
        now_ms: h.now_ms,
        appends: vec![
            sub(0, vec![named("plain", |_| {})]),
            sub(
                0,
                vec![named("late", |m| {
                    m.kind = MessageKind::Delay;
                    m.delivery_timestamp_ms = Some(due);
                })],
            ),
            sub(
                1,
                vec![named("half", |m| m.kind = MessageKind::Transaction)],
            ),
        ],
    };
    let response = h.apply(batch.clone());
    let entries = BTreeMap::from([(h.last_index, batch)]);
    assert_eq!(
        response,
        CommandResponse::AppendedBatch(vec![
            vec![AppendOutcome {
                offset: Some(0),
                transaction_id: None,
                recall_handle: None,
            }],
            vec![AppendOutcome {
                offset: None,
                transaction_id: None,
                recall_handle: Some(format!("0-{due}-1-1")),
            }],
            vec![AppendOutcome {
                offset: None,
                transaction_id: Some("0-1-2".into()),
                recall_handle: None,
            }],
        ])
    );
    assert!(h.fx.timers_changed);
    assert_eq!(
        h.state.due_timers(due, 10),
        vec![TimerKey {
            due_ms: due,
            log_index: 1,
            slot: 1
        }]
    );
    assert_eq!(
        h.apply(StoreCommand::EndTransaction {
            topic: topic("orders"),
            transaction_id: "0-1-2".into(),
            resolution: TransactionEnd::Commit,
            now_ms: h.now_ms,
        }),
        CommandResponse::TransactionEnded(Ok(()))
    );
    h.advance(1_000);
    let release = h.state.due_timers(h.now_ms, 10);
    assert_eq!(
        h.apply(StoreCommand::Release {
            due: release,
            now_ms: h.now_ms
        }),
        CommandResponse::Released { indexed: 1 }
    );
    let got = h.pop();
    assert_eq!(
        read_back(&entries, &got),
        BTreeMap::from([
            ((0, 0), "plain".to_owned()),
            ((0, 1), "late".to_owned()),
            ((1, 0), "half".to_owned()),
        ])
    );
}

#[test]
fn a_batch_of_one_append_matches_the_plain_append() {
    let messages = || {
        vec![
            named("x", |_| {}),
            named("y", |m| m.kind = MessageKind::Transaction),
        ]
    };
    let mut plain = Harness::new();
    let mut batched = Harness::new();
    let CommandResponse::Appended(expected) = plain.apply(StoreCommand::Append {
        topic: topic("orders"),
        queue_id: 3,
        now_ms: plain.now_ms,
        messages: messages(),
    }) else {
        panic!("append answers Appended");
    };
    let response = batched.apply(StoreCommand::AppendBatch {
        now_ms: batched.now_ms,
        appends: vec![sub(3, messages())],
    });
    assert_eq!(response, CommandResponse::AppendedBatch(vec![expected]));
    assert_eq!(plain.state, batched.state);
}
