//! Where a group stands on a queue, set on purpose (apply version 8): a new group on a queue
//! with old history starts with what is stored since it was created, on a young queue or a
//! dead-letter topic at the first message; resets move it anywhere, forget what it had in
//! flight, and all of it survives a restart.

use vela_proto::domain::{GroupStart, OffsetTarget};

use super::*;

const MINUTE_MS: i64 = 60_000;

fn new_group(name: &str, created_ms: i64) -> PopRequest {
    PopRequest {
        group: GroupName::new(name).expect("valid"),
        group_created_ms: Some(created_ms),
        group_start: Default::default(),
        ..pop(32, Duration::ZERO)
    }
}

#[tokio::test]
async fn a_new_group_starts_with_what_is_stored_since_it_was_created_unless_the_queue_is_young() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    store
        .append(append(vec![message("old-1"), message("old-2")]))
        .await
        .expect("appends");
    // A queue whose first message was stored within the window is young: a group created
    // after it still reads it (produce, then subscribe).
    clock.advance(Duration::from_secs(60));
    let young = store
        .pop(new_group("young", clock.now_ms()))
        .await
        .expect("pops");
    assert_eq!(bodies(&young), vec!["old-1", "old-2"]);

    // An hour later the queue has history: a group created now reads only what comes next.
    clock.advance(Duration::from_secs(3600));
    let created = clock.now_ms();
    clock.advance(Duration::from_secs(1));
    store
        .append(append(vec![message("new-1")]))
        .await
        .expect("appends");
    let late = store.pop(new_group("late", created)).await.expect("pops");
    assert_eq!(bodies(&late), vec!["new-1"]);
    // Created before the old messages, it reads them all.
    let early = store
        .pop(new_group("early", created - 2 * 60 * MINUTE_MS))
        .await
        .expect("pops");
    assert_eq!(bodies(&early), vec!["old-1", "old-2", "new-1"]);
    // A request that does not say when the group was created: the first message, as before.
    let legacy = store
        .pop(PopRequest {
            group: GroupName::new("legacy").expect("valid"),
            ..pop(32, Duration::ZERO)
        })
        .await
        .expect("pops");
    assert_eq!(legacy.len(), 3);

    // The start is fixed once: it does not move with later receives or a restart.
    store.shutdown().await.expect("shuts down");
    let store = Store::open(config(dir.path()), shared)
        .await
        .expect("reopens");
    store
        .append(append(vec![message("new-2")]))
        .await
        .expect("appends");
    let late = store
        .pop(new_group("late", clock.now_ms()))
        .await
        .expect("pops");
    assert_eq!(bodies(&late), vec!["new-2"]);
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_dead_letter_topic_is_read_from_its_first_message() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    let dlq = group().dead_letter_topic();
    store
        .append(AppendRequest {
            topic: dlq.clone(),
            messages: vec![MessageRecord {
                topic: dlq.clone(),
                ..message("dead")
            }],
            ..append(vec![])
        })
        .await
        .expect("appends");
    clock.advance(Duration::from_secs(24 * 3600));
    let got = store
        .pop(PopRequest {
            topic: dlq,
            ..new_group("inspector", clock.now_ms())
        })
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["dead"]);
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn resets_move_a_group_anywhere_and_forget_what_it_had_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    store
        .append(append(vec![message("a"), message("b")]))
        .await
        .expect("appends");
    clock.advance(Duration::from_secs(600));
    let middle = clock.now_ms();
    store
        .append(append(vec![message("c"), message("d")]))
        .await
        .expect("appends");
    let (g, t) = (group(), topic());
    let reset = |to| {
        let store = &store;
        let (g, t) = (g.clone(), t.clone());
        async move { store.reset_offset(&g, &t, 0, 0, to).await }
    };

    let all = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&all), vec!["a", "b", "c", "d"]);
    store.ack(&all[0].ticket).await.expect("acks");

    // Back to the beginning: even the acknowledged message comes again, and the deliveries
    // in flight are forgotten (their handles are stale).
    assert_eq!(reset(OffsetTarget::Earliest).await.expect("resets"), 0);
    assert!(matches!(
        store.ack(&all[1].ticket).await,
        Err(StoreError::StaleReceipt(_))
    ));
    let again = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&again), vec!["a", "b", "c", "d"]);

    // To a time, an offset, and past the end.
    assert_eq!(
        reset(OffsetTarget::AtTime(middle)).await.expect("resets"),
        2
    );
    let since = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&since), vec!["c", "d"]);
    assert_eq!(reset(OffsetTarget::Offset(3)).await.expect("resets"), 3);
    assert_eq!(
        reset(OffsetTarget::Offset(99)).await.expect("resets"),
        4,
        "clamped to the end"
    );
    assert_eq!(reset(OffsetTarget::Latest).await.expect("resets"), 4);
    assert!(
        store
            .pop(pop(32, Duration::ZERO))
            .await
            .expect("pops")
            .is_empty()
    );
    assert!(matches!(
        store
            .reset_offset(
                &g,
                &TopicName::new("never").expect("valid"),
                0,
                0,
                OffsetTarget::Earliest
            )
            .await,
        Err(StoreError::QueueNotFound { .. })
    ));

    // A reset is in the log: it holds across a restart.
    assert_eq!(reset(OffsetTarget::Offset(1)).await.expect("resets"), 1);
    store.shutdown().await.expect("shuts down");
    let store = Store::open(config(dir.path()), shared)
        .await
        .expect("reopens");
    let after = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&after), vec!["b", "c", "d"]);
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_group_that_chose_its_start_starts_there() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    store
        .append(append(vec![message("a")]))
        .await
        .expect("appends");
    clock.advance(Duration::from_secs(3600));
    let middle = clock.now_ms();
    store
        .append(append(vec![message("b")]))
        .await
        .expect("appends");
    clock.advance(Duration::from_secs(1));
    let created = clock.now_ms();
    clock.advance(Duration::from_secs(1));
    store
        .append(append(vec![message("c")]))
        .await
        .expect("appends");
    let starting = |name: &str, start| PopRequest {
        group_start: start,
        ..new_group(name, created)
    };
    // Earliest on a queue with old history, latest on a young one (its last message is new,
    // but "latest" means since the group's creation), and a time.
    let got = store
        .pop(starting("from-earliest", GroupStart::Earliest))
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["a", "b", "c"]);
    let got = store
        .pop(starting("from-latest", GroupStart::Latest))
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["c"]);
    let got = store
        .pop(starting("from-middle", GroupStart::At(middle)))
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["b", "c"]);
    store.shutdown().await.expect("shuts down");
}
