//! Broadcast groups' instances on a store node (ADR 0029): each instance reads every message
//! from its own position, the consumer gauges show the group (the slowest instance), and an
//! instance that stops receiving is forgotten after `broadcast_instance_expiry`.

use super::*;

fn as_instance(name: &str) -> PopRequest {
    PopRequest {
        group: group().broadcast_instance(name).expect("an instance"),
        ..pop(32, Duration::ZERO)
    }
}

#[tokio::test]
async fn instances_read_alone_show_as_their_group_and_idle_ones_are_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let store = Arc::new(
        Store::open(
            StoreConfig {
                broadcast_instance_expiry: Duration::from_secs(4),
                ..config(dir.path())
            },
            shared,
        )
        .await
        .expect("opens"),
    );
    store
        .append(append(vec![message("m1"), message("m2")]))
        .await
        .expect("appends");
    let a = store.pop(as_instance("a")).await.expect("pops");
    let b = store.pop(as_instance("b")).await.expect("pops");
    assert_eq!(bodies(&a), vec!["m1", "m2"]);
    assert_eq!(
        bodies(&b),
        vec!["m1", "m2"],
        "every instance gets every message"
    );
    store.ack(&a[0].ticket).await.expect("acks");

    // The gauges show the group: the slowest instance's lag, every instance's in-flight.
    let lines = metric_lines(
        &store,
        &[
            "rocketmq_consumer_lag_messages",
            "rocketmq_consumer_inflight_messages",
        ],
    );
    assert!(
        lines.iter().all(|l| !l.contains("%BCAST%")),
        "no instance names in labels: {lines:?}"
    );
    let value = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name) && l.contains(r#"consumer_group="billing""#))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        value("rocketmq_consumer_lag_messages").as_deref(),
        Some("2")
    );
    assert_eq!(
        value("rocketmq_consumer_inflight_messages").as_deref(),
        Some("3")
    );

    // An hour passes; only b receives again. a is forgotten, b stays.
    clock.advance(Duration::from_secs(3600));
    store.pop(as_instance("b")).await.expect("pops");
    let instances = || read_state(&store, 0, |s| s.broadcast_instances());
    let waited = tokio::time::Instant::now();
    while instances().len() > 1 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the idle instance is still there: {:?}",
            instances()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        instances(),
        vec![group().broadcast_instance("b").expect("an instance")]
    );
    // Coming back, a is a new instance: it starts over (here at the queue's beginning, as
    // this request names no start).
    let again = store.pop(as_instance("a")).await.expect("pops");
    assert_eq!(bodies(&again), vec!["m1", "m2"]);
    Arc::into_inner(store)
        .expect("one owner")
        .shutdown()
        .await
        .expect("shuts down");
}
