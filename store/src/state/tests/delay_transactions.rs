//! Messages that wait before they are indexed: delay messages released in due order, and
//! transactional half messages that commit into the queue or roll back.

use super::*;
use crate::command::TransactionEnd;

#[test]
fn delay_messages_are_released_in_due_order() {
    let mut h = Harness::new();
    let now = h.now_ms;
    let delayed = |due: i64| MessageRecord {
        delivery_timestamp_ms: Some(due),
        kind: MessageKind::Delay,
        ..message(None, None)
    };
    let outcomes = h.append(vec![
        delayed(now + 300),
        delayed(now + 100),
        message(None, None),
        delayed(now - 5),
    ]);
    assert_eq!(
        outcomes.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![None, None, Some(0), Some(1)]
    );
    assert!(h.fx.timers_changed);
    assert_eq!(h.state.next_due_ms(), Some(now + 100));
    assert!(h.state.due_timers(now + 99, 10).is_empty());
    h.advance(400);
    let due = h.state.due_timers(h.now_ms, 10);
    assert_eq!(due.iter().map(|k| k.slot).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(h.state.lowest_parked_log_index(), Some(1));
    let response = h.apply(StoreCommand::Release {
        due: due.clone(),
        now_ms: h.now_ms,
    });
    assert_eq!(response, CommandResponse::Released { indexed: 2 });
    assert_eq!(
        h.apply(StoreCommand::Release {
            due,
            now_ms: h.now_ms
        }),
        CommandResponse::Released { indexed: 0 },
        "releasing twice is harmless"
    );
    let got = h.pop();
    assert_eq!(
        got.iter()
            .map(|m| (m.offset, m.record.slot))
            .collect::<Vec<_>>(),
        vec![(0, 2), (1, 3), (2, 1), (3, 0)]
    );
    assert_eq!(
        got[2].store_ts_ms, h.now_ms,
        "store time of a delay message is its release"
    );
    assert_eq!(h.state.next_due_ms(), None);
    assert_eq!(h.state.lowest_parked_log_index(), None);
}

#[test]
fn transactions_commit_into_the_queue_or_roll_back() {
    let mut h = Harness::new();
    let half = || MessageRecord {
        kind: MessageKind::Transaction,
        ..message(None, None)
    };
    let outcomes = h.append(vec![half(), half()]);
    assert_eq!(
        outcomes[0],
        AppendOutcome {
            offset: None,
            transaction_id: Some("0-1-0".into()),
            recall_handle: None,
        }
    );
    assert!(h.pop().is_empty(), "half messages are invisible");
    let end = |h: &mut Harness, id: &str, resolution, topic_name: &str| {
        h.apply(StoreCommand::EndTransaction {
            topic: topic(topic_name),
            transaction_id: id.into(),
            resolution,
            now_ms: h.now_ms,
        })
    };
    let not_found = |id: &str| {
        CommandResponse::TransactionEnded(Err(ApplyError::TransactionNotFound(id.into())))
    };
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "other"),
        not_found("0-1-0"),
        "wrong topic"
    );
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "orders"),
        CommandResponse::TransactionEnded(Ok(()))
    );
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "orders"),
        not_found("0-1-0"),
        "already ended"
    );
    assert_eq!(
        end(&mut h, "0-1-1", TransactionEnd::Rollback, "orders"),
        CommandResponse::TransactionEnded(Ok(()))
    );
    assert_eq!(
        end(&mut h, "7-1-1", TransactionEnd::Commit, "orders"),
        not_found("7-1-1"),
        "other shard"
    );
    assert_eq!(
        end(&mut h, "garbage", TransactionEnd::Commit, "orders"),
        not_found("garbage")
    );
    let got = h.pop();
    assert_eq!(
        got.iter().map(|m| m.record.slot).collect::<Vec<_>>(),
        vec![0],
        "only the committed one"
    );
}

#[test]
fn committed_transaction_with_a_future_delivery_time_waits_for_it() {
    let mut h = Harness::new();
    let due = h.now_ms + 1_000;
    h.append(vec![MessageRecord {
        kind: MessageKind::Transaction,
        delivery_timestamp_ms: Some(due),
        ..message(None, None)
    }]);
    h.apply(StoreCommand::EndTransaction {
        topic: topic("orders"),
        transaction_id: "0-1-0".into(),
        resolution: TransactionEnd::Commit,
        now_ms: h.now_ms,
    });
    assert_eq!(h.state.next_due_ms(), Some(due));
}

#[test]
fn a_recalled_delay_message_is_never_indexed() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 11 });
    let due_ms = h.now_ms + 500;
    let delayed = || MessageRecord {
        delivery_timestamp_ms: Some(due_ms),
        kind: MessageKind::Delay,
        ..message(None, None)
    };
    let outcomes = h.append(vec![delayed(), delayed(), message(None, None)]);
    let handles: Vec<_> = outcomes.iter().map(|o| o.recall_handle.clone()).collect();
    assert_eq!(
        handles,
        vec![
            Some(format!("0-{due_ms}-2-0")),
            Some(format!("0-{due_ms}-2-1")),
            None
        ],
        "only parked delay messages can be recalled"
    );
    let (shard, first) =
        parse_recall_handle(handles[0].as_deref().expect("handle")).expect("parses");
    assert_eq!(shard, 0);
    assert_eq!(parse_recall_handle("0-1-2"), None);
    assert_eq!(parse_recall_handle("0-1-2-3-4"), None);
    assert_eq!(parse_recall_handle("x-1-2-3"), None);

    let recall = |h: &mut Harness, topic_name: &str, timer| {
        h.apply(StoreCommand::Recall {
            topic: topic(topic_name),
            timer,
        })
    };
    let not_found = |timer| {
        CommandResponse::Recalled(Err(ApplyError::MessageNotFound(recall_handle(0, timer))))
    };
    assert_eq!(
        recall(&mut h, "other", first),
        not_found(first),
        "wrong topic"
    );
    assert_eq!(
        recall(&mut h, "orders", first),
        CommandResponse::Recalled(Ok(()))
    );
    assert!(h.fx.timers_changed, "the release task re-arms");
    assert_eq!(
        recall(&mut h, "orders", first),
        not_found(first),
        "recalled already"
    );

    // The other one is released when due; a recall after that finds nothing.
    h.advance(600);
    let due = h.state.due_timers(h.now_ms, 10);
    assert_eq!(due.len(), 1, "the recalled one is not due any more");
    let second = due[0];
    assert_eq!(
        h.apply(StoreCommand::Release {
            due,
            now_ms: h.now_ms
        }),
        CommandResponse::Released { indexed: 1 }
    );
    assert_eq!(
        recall(&mut h, "orders", second),
        not_found(second),
        "delivered"
    );
    let got = h.pop();
    assert_eq!(
        got.iter().map(|m| m.record.slot).collect::<Vec<_>>(),
        vec![2, 1],
        "the recalled message is never delivered"
    );
    assert_eq!(h.state.lowest_parked_log_index(), None);
}

#[test]
fn a_recall_before_apply_version_11_changes_nothing() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 10 });
    let due_ms = h.now_ms + 500;
    let outcomes = h.append(vec![MessageRecord {
        delivery_timestamp_ms: Some(due_ms),
        kind: MessageKind::Delay,
        ..message(None, None)
    }]);
    let (_, timer) =
        parse_recall_handle(outcomes[0].recall_handle.as_deref().expect("handle")).expect("parses");
    assert!(matches!(
        h.apply(StoreCommand::Recall {
            topic: topic("orders"),
            timer,
        }),
        CommandResponse::Recalled(Err(_))
    ));
    assert_eq!(h.state.next_due_ms(), Some(due_ms), "still parked");
}
