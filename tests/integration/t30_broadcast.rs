//! Broadcast groups (ADR 0029): every consumer instance of the group gets every message, each
//! from its own position kept by the server; an instance that comes back under its name goes
//! on where it stopped; dead letters of any instance land in the group's `%DLQ%<group>`;
//! `group describe` shows the instances; deleting the group forgets them. Bad names are
//! refused with a readable error.

use std::collections::BTreeSet;
use std::time::Duration;

use vela_sdk::{FilterExpression, Message, SimpleConsumer};

use crate::harness::{Node, drain, unique};

async fn instance(node: &Node, group: &str, topic: &str, name: Option<&str>) -> SimpleConsumer {
    let builder = SimpleConsumer::builder(node.client_config(), group)
        .subscribe(topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(2));
    let builder = match name {
        Some(name) => builder.instance_name(name),
        None => builder,
    };
    builder.build().await.unwrap()
}

fn bodies<'a>(got: impl IntoIterator<Item = &'a vela_sdk::MessageView>) -> BTreeSet<String> {
    got.into_iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_gets_every_message_from_its_own_place() {
    let node = Node::start().await;
    let topic = unique("bc");
    let group = unique("bc-g");
    node.admin(&["topic", "create", &topic]).await.unwrap();
    let created = node
        .admin(&[
            "group",
            "create",
            &group,
            "--broadcast",
            "--max-attempts",
            "2",
        ])
        .await
        .unwrap();
    assert!(created.contains("broadcast"), "{created}");
    let producer = node.producer(&topic).await;
    let send = |body: &'static str| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let m = Message::builder(&topic)
                .body(body)
                .tag("T")
                .build()
                .unwrap();
            producer.send(m).await.unwrap();
        }
    };
    for body in ["m1", "m2", "m3"] {
        send(body).await;
    }

    // Three instances (one unnamed): each gets all three (a young topic: from its beginning).
    let alpha = instance(&node, &group, &topic, Some("alpha")).await;
    let beta = instance(&node, &group, &topic, Some("beta")).await;
    let anonymous = instance(&node, &group, &topic, None).await;
    let all = set(&["m1", "m2", "m3"]);
    assert_eq!(bodies(drain(&alpha, 3, true, 2).await.values()), all);
    let beta_got = drain(&beta, 3, false, 2).await;
    assert_eq!(bodies(beta_got.values()), all);
    assert_eq!(bodies(drain(&anonymous, 3, true, 2).await.values()), all);
    // beta acknowledges m1 only.
    let m1 = beta_got.values().find(|m| &m.body[..] == b"m1").unwrap();
    beta.ack(m1).await.unwrap();

    // describe shows the group's instances, each with its own position.
    let described = node
        .admin(&["group", "describe", &group, "--output", "json"])
        .await
        .unwrap();
    let described: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["group"]["broadcast"], true);
    let rows = described["queues"].as_array().unwrap();
    let instances: BTreeSet<&str> = rows.iter().filter_map(|r| r["instance"].as_str()).collect();
    assert_eq!(instances.len(), 3, "{described}");
    assert!(instances.contains("alpha") && instances.contains("beta"));
    let inflight = |name: &str| -> u64 {
        rows.iter()
            .filter(|r| r["instance"] == name)
            .map(|r| r["inflight"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((inflight("alpha"), inflight("beta")), (0, 2));
    let table = node.admin(&["group", "describe", &group]).await.unwrap();
    assert!(table.contains("delivery:      broadcast"), "{table}");
    assert!(
        table.contains("INSTANCE") && table.contains("alpha"),
        "{table}"
    );

    // alpha comes back under its name: it goes on after what it acknowledged.
    alpha.shutdown().await.unwrap();
    send("m4").await;
    let alpha = instance(&node, &group, &topic, Some("alpha")).await;
    assert_eq!(
        bodies(drain(&alpha, 1, true, 2).await.values()),
        set(&["m4"])
    );
    assert!(drain(&alpha, 1, true, 1).await.is_empty());

    // beta's unacknowledged messages come back to beta alone, then (2 attempts) go to the
    // group's dead-letter topic.
    node.clock.advance(Duration::from_secs(61));
    assert_eq!(
        bodies(drain(&beta, 3, false, 2).await.values()),
        set(&["m2", "m3", "m4"])
    );
    assert!(drain(&alpha, 1, true, 1).await.is_empty(), "alpha is done");
    node.clock.advance(Duration::from_secs(61));
    let last = drain(&beta, 3, false, 1).await;
    assert_eq!(
        bodies(last.values()),
        set(&["m4"]),
        "m4 had one attempt left"
    );
    let listed = node.admin(&["dlq", "list"]).await.unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().eq([group.as_str(), "2"])),
        "{listed}"
    );

    // Deleting the group forgets its instances: created again, alpha starts over.
    node.admin(&["group", "delete", &group, "--yes"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group, "--broadcast"])
        .await
        .unwrap();
    assert_eq!(
        bodies(drain(&alpha, 4, true, 2).await.values()),
        set(&["m1", "m2", "m3", "m4"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_broadcast_names_are_refused() {
    let node = Node::start().await;
    let long = "g".repeat(65);
    let err = node
        .admin(&["group", "create", &long, "--broadcast"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than 64"), "{err}");
    let err = node
        .admin(&["group", "create", "a%BCAST%b"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("%BCAST%"), "{err}");
    // A receive naming an instance directly is refused.
    let topic = unique("bc-bad");
    node.admin(&["topic", "create", &topic]).await.unwrap();
    let consumer = node.consumer("a%BCAST%b", &topic, "*").await;
    let err = consumer
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("%BCAST%"), "{err}");
    // An instance name the SDK cannot send as it is.
    let err = SimpleConsumer::builder(node.client_config(), "g")
        .subscribe(&topic, FilterExpression::tag("*"))
        .instance_name("host@1")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("instance name"), "{err}");
}
