//! Message lookup and track (`vela admin message show|find`, ADR 0028) on a standalone node:
//! a message found by its id and by its keys shows where it is and what happened to it (stored,
//! delivered to which group and attempt, acknowledged), in a table and as JSON, before and
//! after a restart.

use std::time::Duration;

use vela_sdk::Message;

use crate::harness::{Node, track_kinds, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_found_by_id_and_key_with_their_track() {
    let mut node = Node::start().await;
    let topic = unique("lookup");
    let group = unique("g");
    node.admin(&["topic", "create", &topic]).await.unwrap();
    node.admin(&["group", "create", &group]).await.unwrap();
    let producer = node.producer(&topic).await;
    let mut ids = Vec::new();
    for (body, key) in [
        ("first", "order-1"),
        ("second", "order-2"),
        ("third", "order-1"),
    ] {
        let m = Message::builder(&topic)
            .body(body)
            .tag("paid")
            .keys([key])
            .build()
            .unwrap();
        ids.push(producer.send(m).await.unwrap().message_id);
    }
    let consumer = node.consumer(&group, &topic, "*").await;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "received {}",
            got.len()
        );
        got.extend(consumer.receive(32, Duration::from_secs(30)).await.unwrap());
    }
    let first = got.iter().find(|m| m.message_id == ids[0]).unwrap();
    consumer.ack(first).await.unwrap();

    for round in ["before", "after"] {
        // The first message: stored, delivered to the group (attempt 1), acked.
        let shown = node.admin(&["message", "show", &ids[0]]).await.unwrap();
        assert!(
            shown.contains(&format!("message_id  {}", ids[0])),
            "{round}: {shown}"
        );
        assert!(shown.contains("body        first"), "{shown}");
        assert!(shown.contains("keys        order-1"), "{shown}");
        assert!(
            shown.contains(&format!("stored in {topic} queue")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("delivered to {group}, client ")),
            "{shown}"
        );
        assert!(shown.contains("(attempt 1, invisible until"), "{shown}");
        assert!(shown.contains(&format!("acked by {group}")), "{shown}");
        // The second: delivered, not acknowledged.
        let second = node
            .admin(&["message", "show", &ids[1], "--topic", &topic])
            .await
            .unwrap();
        assert!(
            second.contains(&format!("delivered to {group}")),
            "{second}"
        );
        assert!(!second.contains("acked by"), "{second}");

        // By key, as JSON: both messages with key order-1, oldest first.
        let json = node
            .admin(&[
                "message", "find", "--topic", &topic, "--key", "order-1", "--output", "json",
            ])
            .await
            .unwrap();
        let found: serde_json::Value = serde_json::from_str(&json).unwrap();
        let found = found.as_array().unwrap();
        assert_eq!(found.len(), 2, "{json}");
        assert_eq!(found[0]["message_id"], ids[0].as_str());
        assert_eq!(found[1]["message_id"], ids[2].as_str());
        assert_eq!(found[0]["body"], "first");
        assert_eq!(found[0]["tag"], "paid");
        assert_eq!(found[0]["keys"][0], "order-1");
        assert_eq!(found[0]["topic"], topic.as_str());
        assert!(
            found[0]["queue_id"].is_u64() && found[0]["offset"].is_u64(),
            "{json}"
        );
        assert_eq!(
            track_kinds(&found[0]),
            ["stored", "delivered", "acked"],
            "{json}"
        );
        assert_eq!(found[0]["track"][1]["group"], group.as_str());
        assert_eq!(found[0]["track"][1]["attempt"], 1);
        assert!(
            found[0]["track"][1]["client"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "the receiving client: {json}"
        );
        let limited = node
            .admin(&[
                "message", "find", "--topic", &topic, "--key", "order-1", "--limit", "1",
            ])
            .await
            .unwrap();
        assert_eq!(limited.matches("message_id").count(), 1, "{limited}");

        // Nothing there: a clear answer, not an empty success.
        let missing = node
            .admin(&["message", "show", "no-such-id"])
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
        let none = node
            .admin(&["message", "find", "--topic", &topic, "--key", "order-9"])
            .await
            .unwrap();
        assert_eq!(none, "no messages\n");
        // Bad input gets one readable line.
        let bad = node
            .admin(&[
                "message", "find", "--topic", &topic, "--key", "k", "--limit", "65",
            ])
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("outside 1..=64"), "{bad}");
        let unknown = node
            .admin(&["message", "find", "--topic", "no-such-topic", "--key", "k"])
            .await
            .unwrap_err();
        assert!(unknown.to_string().contains("not found"), "{unknown}");
        if round == "before" {
            node.restart().await;
        }
    }
    // A deleted topic's messages are gone for lookups too (its log stays until retention).
    node.admin(&["--yes", "topic", "delete", &topic])
        .await
        .unwrap();
    let gone = node.admin(&["message", "show", &ids[0]]).await.unwrap_err();
    assert!(gone.to_string().contains("not found"), "{gone}");
    node.stop().await;
}
