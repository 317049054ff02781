//! Retention per topic from the CLI against a live node: a topic created with a retention of
//! its own expires its messages past it while a topic on the store's time beside it keeps
//! them; `topic update` changes it (asking first); bad values are one readable line; all of
//! it survives a restart.

use std::time::Duration;

use crate::harness::{Node, unique};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `(min_offset, max_offset)` of queue 0 of `topic`.
async fn offsets(node: &Node, topic: &str) -> (u64, u64) {
    let queues = json(
        &node
            .admin(&["queues", topic, "--output", "json"])
            .await
            .unwrap(),
    );
    let q = &queues[0];
    (
        q["min_offset"].as_u64().unwrap(),
        q["max_offset"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_keeps_its_messages_for_its_own_retention() {
    let mut node = Node::start_with(|c| {
        c.store.retention_check_interval = Duration::from_secs(1);
    })
    .await;
    let (clicks, audit) = (unique("clicks"), unique("audit"));
    let out = node
        .admin(&[
            "topic",
            "create",
            &clicks,
            "--queues",
            "1",
            "--retention",
            "2h",
        ])
        .await
        .unwrap();
    assert!(out.contains(&format!("created topic {clicks}")), "{out}");
    let described = node.admin(&["topic", "describe", &clicks]).await.unwrap();
    assert!(described.contains("retention: 2h"), "{described}");
    node.admin(&["topic", "create", &audit, "--queues", "1"])
        .await
        .unwrap();
    let described = node.admin(&["topic", "describe", &audit]).await.unwrap();
    assert!(
        described.contains("retention: store default"),
        "{described}"
    );
    node.admin(&["send", &clicks, "a", "b", "c"]).await.unwrap();
    node.admin(&["send", &audit, "x", "y"]).await.unwrap();
    assert_eq!(offsets(&node, &clicks).await, (0, 3));

    // Three hours on: past the 2 h of clicks, well inside the store's 72 h.
    node.clock.advance(Duration::from_secs(3 * 3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while offsets(&node, &clicks).await != (3, 3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clicks never expired: {:?}",
            offsets(&node, &clicks).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(offsets(&node, &audit).await, (0, 2), "audit keeps its own");
    let got = json(
        &node
            .admin(&["--output", "json", "receive", "g", &clicks, "--wait", "1s"])
            .await
            .unwrap(),
    );
    assert_eq!(got.as_array().map(Vec::len), Some(0), "{got}");

    let refused = node
        .admin(&["topic", "update", &audit, "--retention", "30d"])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not confirmed"), "{refused}");
    let out = node
        .admin(&["topic", "update", &audit, "--retention", "30d", "--yes"])
        .await
        .unwrap();
    assert!(out.contains("retention 30days"), "{out}");
    let bad = node
        .admin(&["topic", "update", &audit, "--retention", "0s", "--yes"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("between 1s and 3660d"), "{bad}");
    let bad = node
        .admin(&["topic", "update", &audit, "--retention", "soon", "--yes"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("soon"), "{bad}");
    let missing = node
        .admin(&[
            "topic",
            "update",
            "no-such-topic",
            "--retention",
            "1h",
            "-y",
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("not found"), "{missing}");

    node.restart().await;
    let described = json(
        &node
            .admin(&["--output", "json", "topic", "describe", &audit])
            .await
            .unwrap(),
    );
    assert_eq!(
        described["topic"]["retention_ms"].as_u64(),
        Some(30 * 86_400_000),
        "{described}"
    );
    assert_eq!(offsets(&node, &clicks).await, (3, 3));
    assert_eq!(offsets(&node, &audit).await, (0, 2));
    let out = node
        .admin(&["topic", "update", &audit, "--retention", "default", "--yes"])
        .await
        .unwrap();
    assert!(out.contains("retention store default"), "{out}");
    node.stop().await;
}
