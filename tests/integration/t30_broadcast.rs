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
    // A route cannot read through a broadcast group (each restart would be a new instance).
    node.admin(&["group", "create", "bc-route", "--broadcast"])
        .await
        .unwrap();
    let err = node
        .admin(&[
            "route",
            "create",
            "r1",
            "--source-topic",
            &topic,
            "--group",
            "bc-route",
            "--target-endpoint",
            "127.0.0.1:9",
            "--target-topic",
            "copy",
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("broadcast group"), "{err}");
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

/// Receives until every body of `want` arrived (or 90 s passed), acknowledging each; receive
/// and ack errors during an election are retried. Returns the bodies received (duplicates
/// included) and those whose ack succeeded.
async fn gather(
    consumer: &SimpleConsumer,
    want: &BTreeSet<String>,
) -> (Vec<String>, BTreeSet<String>) {
    let (mut seen, mut acked) = (Vec::new(), BTreeSet::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !want.is_subset(&acked) && std::time::Instant::now() < deadline {
        let batch = match consumer.receive(16, Duration::from_secs(10)).await {
            Ok(batch) => batch,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for m in batch {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            seen.push(body.clone());
            if consumer.ack(&m).await.is_ok() {
                acked.insert(body);
            }
        }
    }
    (seen, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_instance_keeps_its_place_through_a_store_kill() {
    let cluster = crate::local_cluster::LocalCluster::start(&[], &[]).await;
    let (p0, p1) = (cluster.proxies[0].clone(), cluster.proxies[1].clone());
    let (topic, group) = (unique("bc-lc"), unique("bc-lc-g"));
    crate::harness::admin(&p0, &["topic", "create", &topic])
        .await
        .unwrap();
    crate::harness::admin(&p0, &["group", "create", &group, "--broadcast"])
        .await
        .unwrap();
    let client = |proxy: &str| {
        vela_sdk::ClientConfig::builder()
            .endpoint(proxy)
            .build()
            .unwrap()
    };
    let producer = vela_sdk::Producer::builder(client(&p0))
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
    // One instance through each proxy.
    let mut instances = Vec::new();
    for (proxy, name) in [(&p0, "alpha"), (&p1, "beta")] {
        let consumer = SimpleConsumer::builder(client(proxy), &group)
            .subscribe(&topic, FilterExpression::tag("*"))
            .instance_name(name)
            .await_duration(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        instances.push(consumer);
    }
    let send = |range: std::ops::Range<u32>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let mut sent = BTreeSet::new();
            for i in range {
                let body = format!("bc-{i:03}");
                for _ in 0..100 {
                    let m = Message::builder(&topic).body(body.clone()).build().unwrap();
                    if producer.send(m).await.is_ok() {
                        sent.insert(body.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            sent
        }
    };
    let first = send(0..20).await;
    assert_eq!(first.len(), 20);
    let mut done = Vec::new();
    for consumer in &instances {
        let (_, acked) = gather(consumer, &first).await;
        assert!(
            first.is_subset(&acked),
            "missing {:?}",
            first.difference(&acked)
        );
        done.push(acked);
    }

    // A store process dies; the shards it led elect new leaders.
    cluster.kill_store(0);
    let second = send(20..40).await;
    assert_eq!(second.len(), 20, "some sends never succeeded");
    for (consumer, acked_before) in instances.iter().zip(&done) {
        let (seen, acked) = gather(consumer, &second).await;
        assert!(
            second.is_subset(&acked),
            "missing {:?}",
            second.difference(&acked)
        );
        // An acknowledged message never comes back to the instance that acknowledged it.
        let again: Vec<&String> = seen.iter().filter(|b| acked_before.contains(*b)).collect();
        assert!(again.is_empty(), "redelivered after their ack: {again:?}");
    }
    let restarted = cluster.restart_store(0);
    crate::t06_crash::wait_ready(cluster.base + 111).await;
    cluster.stop(restarted).await;
}
