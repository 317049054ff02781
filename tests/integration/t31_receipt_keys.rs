//! Receipt keys the controller manages (ADR 0030), in a local cluster whose proxies have no
//! key file: a handle one proxy signed is acknowledged through the other, before and after a
//! rotation (the other proxy learns the new key when it meets it), and retiring keys is
//! guarded (not the signing key; not within 12 h of its replacement without --force).

use std::time::Duration;

use vela_sdk::{ClientConfig, FilterExpression, Message, MessageView, Producer, SimpleConsumer};

use crate::harness::{admin, unique};
use crate::local_cluster::LocalCluster;

async fn consumer(endpoint: &str, group: &str, topic: &str) -> SimpleConsumer {
    SimpleConsumer::builder(
        ClientConfig::builder().endpoint(endpoint).build().unwrap(),
        group,
    )
    .subscribe(topic, FilterExpression::tag("*"))
    .await_duration(Duration::from_secs(1))
    .build()
    .await
    .unwrap()
}

async fn receive_one(consumer: &SimpleConsumer) -> MessageView {
    for _ in 0..30 {
        if let Some(m) = consumer
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            return m;
        }
    }
    panic!("no message arrived");
}

/// The `receipt-key list --output json` entries as (id, signing).
async fn keys(proxy: &str) -> Vec<(u64, bool)> {
    let out = admin(proxy, &["receipt-key", "list", "--output", "json"])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_u64().unwrap(), k["signing"].as_bool().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_signed_by_managed_keys_ack_through_any_proxy_across_a_rotation() {
    let cluster = LocalCluster::start(&["--shards", "1"], &[]).await;
    let (p0, p1) = (cluster.proxies[0].clone(), cluster.proxies[1].clone());
    let topic = unique("rk");
    let group = unique("rk-g");
    let producer = Producer::builder(ClientConfig::builder().endpoint(&p0).build().unwrap())
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
    for body in ["before", "after"] {
        producer
            .send(Message::builder(&topic).body(body).build().unwrap())
            .await
            .unwrap();
    }
    let via0 = consumer(&p0, &group, &topic).await;
    let via1 = consumer(&p1, &group, &topic).await;

    let first = receive_one(&via0).await;
    via1.ack(&first)
        .await
        .expect("proxy 1 verifies proxy 0's handle");
    let before = keys(&p0).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].1 && before[0].0 >= 1 << 20, "{before:?}");

    let rotated = admin(&p0, &["receipt-key", "rotate"]).await.unwrap();
    assert!(rotated.contains("rotated"), "{rotated}");
    let after = keys(&p1).await;
    assert_eq!(after.len(), 2, "{after:?}");
    let (old, new) = (after[0].0, after[1].0);
    assert!(after[1].1 && !after[0].1, "the new key signs: {after:?}");

    // Proxy 0 signs with the new key; proxy 1 has not seen it yet and fetches it.
    let second = receive_one(&via0).await;
    via1.ack(&second).await.expect("proxy 1 learns the new key");

    // Retiring: never the signing key; the old one only after 12 h, or with --force.
    let err = admin(&p1, &["receipt-key", "retire", &new.to_string(), "--yes"])
        .await
        .expect_err("the signing key");
    assert!(err.to_string().contains("rotate first"), "{err}");
    let err = admin(&p1, &["receipt-key", "retire", &old.to_string(), "--yes"])
        .await
        .expect_err("too soon");
    assert!(err.to_string().contains("--force"), "{err}");
    let out = admin(
        &p1,
        &[
            "receipt-key",
            "retire",
            &old.to_string(),
            "--force",
            "--yes",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains(&format!("receipt key {old} retired")), "{out}");
    assert_eq!(keys(&p0).await, vec![(new, true)]);
    cluster.stop_all().await;
}
