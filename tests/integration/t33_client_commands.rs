//! Server-to-client commands through whichever proxy holds the client's Telemetry stream, in a
//! local cluster of two proxies: `vela admin` against one proxy lists the clients of both,
//! runs a stored message through the listener of a push consumer connected to the other
//! (`message verify`: consumed, not consumed), and a thread dump the Rust client cannot give
//! is refused with a readable reason. Unknown clients get one line naming the proxies asked.

use std::sync::{Arc, Mutex};

use vela_sdk::{
    ClientConfig, ConsumeResult, FilterExpression, Message, MessageView, Producer, PushConsumer,
};

use crate::harness::{admin, unique};
use crate::local_cluster::LocalCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reaches_a_consumer_through_the_proxy_that_holds_its_stream() {
    let cluster = LocalCluster::start(&["--shards", "1"], &[]).await;
    let (p0, p1) = (cluster.proxies[0].clone(), cluster.proxies[1].clone());
    let topic = unique("verify");
    let group = unique("verify-g");

    let producer = Producer::builder(ClientConfig::builder().endpoint(&p0).build().unwrap())
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for body in ["fine", "poison"] {
        let sent = producer
            .send(Message::builder(&topic).body(body).build().unwrap())
            .await
            .unwrap();
        ids.push(sent.message_id);
    }
    // Every call of the listener, by body; "poison" is never consumed.
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let consumer = PushConsumer::builder(
        ClientConfig::builder().endpoint(&p1).build().unwrap(),
        &group,
    )
    .subscribe(&topic, FilterExpression::all())
    .listener({
        let calls = calls.clone();
        move |m: MessageView| {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            calls.lock().unwrap().push(body.clone());
            async move {
                if body == "poison" {
                    ConsumeResult::Failure
                } else {
                    ConsumeResult::Success
                }
            }
        }
    })
    .build()
    .await
    .unwrap();
    let client_id = consumer.client_id().to_owned();
    let fine_calls = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|b| *b == "fine")
            .count()
    };
    for _ in 0..300 {
        if fine_calls() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        fine_calls(),
        1,
        "delivered once: {:?}",
        calls.lock().unwrap()
    );

    // Listed through proxy 0, though it is connected to proxy 1 (once both proxies have
    // told the controller they are up: they do every 5 s).
    let mut listed = serde_json::Value::Null;
    for _ in 0..30 {
        listed = serde_json::from_str(
            &admin(
                &p0,
                &["client", "list", "--group", &group, "--output", "json"],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        if listed["proxies_asked"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let clients = listed["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{listed}");
    let me = &clients[0];
    assert_eq!(me["client_id"], client_id.as_str(), "{listed}");
    assert_eq!(me["client_type"], "push_consumer");
    assert_eq!(me["group"], group.as_str());
    assert_eq!(me["topics"][0], topic.as_str());
    assert_eq!(me["language"], "RUST");
    assert_eq!(me["proxy"], p1.as_str(), "{listed}");
    assert_eq!(
        listed["proxies_asked"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    let everyone = admin(&p0, &["client", "list"]).await.unwrap();
    assert!(everyone.contains(&client_id), "{everyone}");
    assert!(everyone.contains("producer"), "{everyone}");

    // Verified through proxy 0: the listener runs again, and nothing is acknowledged twice.
    let verified = admin(
        &p0,
        &[
            "message",
            "verify",
            &ids[0],
            "--topic",
            &topic,
            "--client-id",
            &client_id,
        ],
    )
    .await
    .unwrap();
    assert!(verified.contains("consumed message"), "{verified}");
    assert!(verified.contains(p1.as_str()), "{verified}");
    assert_eq!(fine_calls(), 2, "{:?}", calls.lock().unwrap());

    let refused = admin(
        &p0,
        &[
            "message",
            "verify",
            &ids[1],
            "--topic",
            &topic,
            "--client-id",
            &client_id,
        ],
    )
    .await
    .expect_err("the listener fails it");
    let refused = format!("{refused:#}");
    assert!(refused.contains("did not consume"), "{refused}");
    assert!(refused.contains("60000"), "{refused}");

    let stack = admin(&p1, &["client", "stack", &client_id])
        .await
        .expect_err("a Rust client has no thread dump");
    let stack = format!("{stack:#}");
    assert!(stack.contains("does not support"), "{stack}");

    let unknown = admin(
        &p0,
        &[
            "message",
            "verify",
            &ids[0],
            "--topic",
            &topic,
            "--client-id",
            "nobody@1",
        ],
    )
    .await
    .expect_err("no such client");
    let unknown = format!("{unknown:#}");
    assert!(
        unknown.contains("nobody@1") && unknown.contains(&p0) && unknown.contains(&p1),
        "{unknown}"
    );
    let missing = admin(
        &p1,
        &[
            "message",
            "verify",
            "00000000000000000000000000",
            "--topic",
            &topic,
            "--client-id",
            &client_id,
        ],
    )
    .await
    .expect_err("no such message");
    assert!(format!("{missing:#}").contains("no message"), "{missing:#}");

    consumer.shutdown().await.unwrap();
    producer.shutdown().await.unwrap();
    cluster.stop_all().await;
}
