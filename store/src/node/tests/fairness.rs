//! Which consumer work caps appends (`shard/fairness.rs`): a group that keeps up with its
//! producers does, a group replaying history does not, from the receive that tells them apart.

use super::*;

/// Whether `group`'s consumer work on shard 0 would cap appends now.
fn caps_appends(store: &Store, group: &GroupName) -> bool {
    let shard = store.shard(0).expect("shard 0");
    shard.shard.fairness.consume_for(group, 1).is_some()
}

#[tokio::test]
async fn a_group_receiving_old_messages_caps_no_appends_until_it_reaches_recent_ones() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    store
        .append(append(vec![message("old-1"), message("old-2")]))
        .await
        .expect("appends");
    assert!(
        caps_appends(&store, &group()),
        "a group is live until a receive says otherwise"
    );

    clock.advance(crate::shard::fairness::CATCHING_UP_AFTER + Duration::from_secs(1));
    let got = store.pop(pop(1, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["old-1"]);
    assert!(!caps_appends(&store, &group()), "replaying history");
    store
        .ack(&got[0].ticket)
        .await
        .expect("an ack of a replaying group still works");
    let other = GroupName::new("other").expect("name");
    assert!(caps_appends(&store, &other), "only the replaying group");

    // Sent just now: the next receive reaches it (with the old one left before it).
    store
        .append(append(vec![message("new")]))
        .await
        .expect("appends");
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["old-2", "new"]);
    assert!(
        caps_appends(&store, &group()),
        "caught up (judged by the newest it delivered): live again"
    );
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_live_group_whose_full_receives_deliver_messages_stored_a_while_ago_is_behind() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    let fairness = &store.shard(0).expect("shard 0").shard.fairness;
    let later = crate::shard::fairness::BEHIND_AFTER * 5;
    store
        .append(append(vec![message("a"), message("b")]))
        .await
        .expect("appends");
    let got = store.pop(pop(1, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["a"]);
    assert!(!fairness.behind(), "delivered as soon as it was stored");

    clock.advance(later);
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["b"]);
    assert!(
        !fairness.behind(),
        "fewer than asked for: nothing more to catch up on"
    );

    store
        .append(append(vec![message("c"), message("d")]))
        .await
        .expect("appends");
    clock.advance(later);
    let got = store.pop(pop(1, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["c"]);
    assert!(fairness.behind(), "a full receive, 100 ms after the store");
    assert!(caps_appends(&store, &group()), "behind is not catching up");

    store
        .append(append(vec![message("e")]))
        .await
        .expect("appends");
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["d", "e"]);
    assert!(!fairness.behind(), "caught up");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_full_receive_of_redeliveries_only_says_nothing_about_pace() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    let fairness = &store.shard(0).expect("shard 0").shard.fairness;
    store
        .append(append(vec![message("a")]))
        .await
        .expect("appends");
    let briefly = PopRequest {
        invisible: Duration::from_millis(10),
        ..pop(1, Duration::ZERO)
    };
    let got = store.pop(briefly.clone()).await.expect("pops");
    assert_eq!(bodies(&got), vec!["a"]);
    // Visible again 10 ms later, delivered again (attempt 2) 100 ms after its store: full, but
    // only a redelivery.
    clock.advance(crate::shard::fairness::BEHIND_AFTER * 5);
    let got = store.pop(briefly).await.expect("pops");
    assert_eq!(bodies(&got), vec!["a"]);
    assert!(!fairness.behind(), "a redelivery keeps its store time");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn on_a_node_with_room_consumer_work_caps_no_appends() {
    use futures::FutureExt;
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    let shard = store.shard(0).expect("shard 0");
    let fairness = &shard.shard.fairness;
    // Opening kept the runtime busy; the signal follows within a few ticks.
    for _ in 0..100 {
        if !fairness.saturated() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _consuming = fairness.consume_for(&group(), 32).expect("a live group");
    let admitted: Vec<_> = (0..100)
        .map(|_| {
            fairness
                .produce()
                .now_or_never()
                .expect("the store's saturation signal says there is room")
        })
        .collect();
    drop(admitted);
    store.shutdown().await.expect("shuts down");
}
