//! `vela admin dlq`: dead letters counted, shown without being consumed, and redriven back to
//! the topic they came from (some by id, then the rest), where the group receives them again.

use std::time::Duration;

use vela_sdk::Message;

use crate::harness::{Node, drain, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven() {
    let node = Node::start().await;
    let topic = unique("dlq-cli");
    let group = unique("dlq-cli-g");
    node.admin(&["group", "create", &group, "--max-attempts", "1"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let consumer = node.consumer(&group, &topic, "*").await;
    assert!(
        drain(&consumer, 1, false, 1).await.is_empty(),
        "primes the group"
    );
    let mut ids = Vec::new();
    for body in ["poison-1", "poison-2"] {
        let message = Message::builder(&topic)
            .body(body)
            .tag("T")
            .property("origin", body)
            .build()
            .unwrap();
        ids.push(producer.send(message).await.unwrap().message_id);
    }
    // One delivery each, never acknowledged: with one attempt allowed they are dead letters.
    assert_eq!(drain(&consumer, 2, false, 2).await.len(), 2);
    // Past their invisibility (`drain` receives with 60 s).
    node.clock.advance(Duration::from_secs(61));
    assert!(drain(&consumer, 1, false, 1).await.is_empty());

    let listed = node.admin(&["dlq", "list"]).await.unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().eq([group.as_str(), "2"])),
        "{listed}"
    );
    // Shown twice: showing consumes nothing.
    for _ in 0..2 {
        let shown = node.admin(&["dlq", "show", &group]).await.unwrap();
        for id in &ids {
            assert!(shown.contains(id.as_str()), "{shown}");
        }
        assert!(shown.contains(&format!("from {topic}")), "{shown}");
    }

    let shown = node
        .admin(&["dlq", "show", &group, "--output", "json"])
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), 2);
    assert!(
        shown
            .iter()
            .all(|m| m["dead_letter_topic"] == topic.as_str())
    );

    // Redrive one by id: the group receives it again, with its tag and properties.
    let out = node
        .admin(&["dlq", "redrive", &group, "--ids", &ids[0]])
        .await
        .unwrap();
    assert!(out.contains("redrove 1"), "{out}");
    let back = drain(&consumer, 2, true, 2).await;
    let again: Vec<_> = back.values().collect();
    assert_eq!(again.len(), 1, "{back:?}");
    assert_eq!(&again[0].body[..], b"poison-1");
    assert_eq!(again[0].tag.as_deref(), Some("T"));
    assert_eq!(
        again[0].properties.get("origin").map(String::as_str),
        Some("poison-1")
    );

    // The rest, once the one left in flight by the first redrive is visible again.
    node.clock.advance(Duration::from_secs(31));
    let out = node.admin(&["dlq", "redrive", &group]).await.unwrap();
    assert!(out.contains("redrove 1"), "{out}");
    let back = drain(&consumer, 2, true, 2).await;
    let bodies: Vec<&[u8]> = back.values().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [b"poison-2".as_slice()]);
    let out = node.admin(&["dlq", "redrive", &group]).await.unwrap();
    assert!(
        out.contains("redrove 0"),
        "nothing is redriven twice: {out}"
    );
    node.stop().await;
}
