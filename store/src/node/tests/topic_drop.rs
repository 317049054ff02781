//! Topic and group commands fenced by the controller's revisions, on real files: a drop
//! applies once per id, the revisions a shard applied survive a snapshot and a restart, a copy
//! of a drop delivered after the name was created again leaves the new topic's messages (or
//! the new group's positions) alone, and a retention delivered after a newer one (or after the
//! drop) changes nothing.

use super::*;

#[tokio::test]
async fn a_late_copy_of_a_drop_leaves_the_topic_created_again_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("opens");
    let orders = TopicName::new("orders").expect("valid");
    store.append(on(&orders, "old")).await.expect("appends");
    store.drop_topic(&orders, 7, &[]).await.expect("drops");
    assert!(
        store
            .pop(pop_from(&orders, "g"))
            .await
            .expect("pops")
            .is_empty()
    );
    // What the shard applied is in its snapshot (format 8), and the log after it replays.
    store.snapshot().await.expect("snapshots");
    store.shutdown().await.expect("shuts down");
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("reopens");
    assert_eq!(
        read_state(&store, 0, |s| s.topic_revisions().clone()),
        [(orders.clone(), 7)].into()
    );

    // Created again; then the same drop arrives again (a retry, a copy delayed in the network).
    store.append(on(&orders, "new")).await.expect("appends");
    store.drop_topic(&orders, 7, &[]).await.expect("answered");
    store.drop_topic(&orders, 6, &[]).await.expect("answered");
    let got = store.pop(pop_from(&orders, "g")).await.expect("pops");
    assert_eq!(bodies(&got), ["new"], "the new topic keeps its message");

    // The next deletion of the name has a higher id; a drop without an id is not fenced.
    store.drop_topic(&orders, 8, &[]).await.expect("drops");
    assert!(
        store
            .pop(pop_from(&orders, "h"))
            .await
            .expect("pops")
            .is_empty()
    );
    store.append(on(&orders, "again")).await.expect("appends");
    store.drop_topic(&orders, 0, &[]).await.expect("drops");
    assert!(
        store
            .pop(pop_from(&orders, "i"))
            .await
            .expect("pops")
            .is_empty()
    );
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_retention_delivered_after_a_newer_one_or_after_the_drop_changes_nothing() {
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    let orders = TopicName::new("orders").expect("valid");
    let retention = |store: &Store| read_state(store, 0, |s| s.topic_retention().clone());
    store.append(on(&orders, "a")).await.expect("appends");
    store
        .set_topic_retention(&orders, Some(7_200_000), 5, &[])
        .await
        .expect("sets");
    // An update older than the one applied arrives late: answered, and nothing changes.
    store
        .set_topic_retention(&orders, Some(60_000), 4, &[])
        .await
        .expect("answered");
    assert_eq!(retention(&store), [(orders.clone(), 7_200_000)].into());

    // Deleted (a newer revision), then the same update delivered once more.
    store.drop_topic(&orders, 6, &[]).await.expect("drops");
    store
        .set_topic_retention(&orders, Some(7_200_000), 5, &[])
        .await
        .expect("answered");
    assert!(
        retention(&store).is_empty(),
        "a deleted topic's late retention does not come back"
    );

    // Created again: its own updates have newer revisions.
    store.append(on(&orders, "b")).await.expect("appends");
    store
        .set_topic_retention(&orders, Some(60_000), 7, &[])
        .await
        .expect("sets");
    assert_eq!(retention(&store), [(orders.clone(), 60_000)].into());
    assert_eq!(read_state(&store, 0, |s| s.topic_revisions()[&orders]), 7);
    // A controller without revisions (0) is not fenced.
    store
        .set_topic_retention(&orders, None, 0, &[])
        .await
        .expect("clears");
    assert!(retention(&store).is_empty());
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_late_copy_of_a_group_drop_leaves_the_group_created_again_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("opens");
    let orders = TopicName::new("orders").expect("valid");
    let billing = GroupName::new("billing").expect("valid");
    store.append(on(&orders, "a")).await.expect("appends");
    let got = store.pop(pop_from(&orders, "billing")).await.expect("pops");
    assert_eq!(bodies(&got), ["a"]);
    store.drop_group(&billing, at(7), &[]).await.expect("drops");
    // What the shard applied is in its snapshot (format 9), and the log after it replays.
    store.snapshot().await.expect("snapshots");
    store.shutdown().await.expect("shuts down");
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("reopens");
    assert_eq!(
        read_state(&store, 0, |s| s.group_fence().ids().clone()),
        [(billing.clone(), 7)].into()
    );

    // Created again, it starts over and takes the message; then the same drop arrives again
    // (a retry, a copy delayed in the network): the message stays in flight, not delivered
    // a second time.
    let got = store.pop(pop_from(&orders, "billing")).await.expect("pops");
    assert_eq!(
        bodies(&got),
        ["a"],
        "the dropped group's delivery is forgotten"
    );
    store
        .drop_group(&billing, at(7), &[])
        .await
        .expect("answered");
    store
        .drop_group(&billing, at(6), &[])
        .await
        .expect("answered");
    assert!(
        store
            .pop(pop_from(&orders, "billing"))
            .await
            .expect("pops")
            .is_empty(),
        "the new group keeps its position"
    );

    // The next deletion of the name has a higher id; a drop without an id is not fenced.
    store.drop_group(&billing, at(8), &[]).await.expect("drops");
    let got = store.pop(pop_from(&orders, "billing")).await.expect("pops");
    assert_eq!(bodies(&got), ["a"]);
    store.drop_group(&billing, at(0), &[]).await.expect("drops");
    let got = store.pop(pop_from(&orders, "billing")).await.expect("pops");
    assert_eq!(bodies(&got), ["a"]);
    store.shutdown().await.expect("shuts down");
}

/// Group drop `id` with no floor.
fn at(id: u64) -> vela_proto::GroupDropId {
    vela_proto::GroupDropId { id, floor: 0 }
}
