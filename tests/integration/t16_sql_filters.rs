//! SQL92 subscriptions through `vela-sdk` against a standalone node, checked by an oracle of
//! what each sent message's properties say: a consumer receives exactly the matching messages,
//! a second group with another condition receives its own, and a malformed expression is
//! refused (by the SDK when the consumer is built, by the server with 40010 on the wire).

use std::collections::BTreeSet;
use std::time::Duration;

use vela_proto::pb::rocketmq as pb;
use vela_sdk::{FilterExpression, Message, SimpleConsumer};

use crate::harness::{Node, drain, raw_client, raw_req, resource, unique};

async fn sql_consumer(node: &Node, group: &str, topic: &str, sql: &str) -> SimpleConsumer {
    SimpleConsumer::builder(node.client_config(), group)
        .subscribe(topic, FilterExpression::sql(sql))
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_subscriptions_receive_exactly_what_matches() {
    let node = Node::start().await;
    let topic = unique("sql");
    let producer = node.producer(&topic).await;
    let big_eu = "amount >= 100 AND region IN ('eu', 'apac')";
    let tagged_or_flagged = "TAGS = 'vip' OR (flag IS NOT NULL AND amount BETWEEN 0 AND 40)";
    let big = sql_consumer(&node, &unique("sql-big"), &topic, big_eu).await;
    let vip = sql_consumer(&node, &unique("sql-vip"), &topic, tagged_or_flagged).await;
    assert!(drain(&big, 1, true, 1).await.is_empty(), "primes the group");
    assert!(drain(&vip, 1, true, 1).await.is_empty(), "primes the group");

    let regions = ["eu", "us", "apac"];
    let mut want_big = BTreeSet::new();
    let mut want_vip = BTreeSet::new();
    for i in 0..60u32 {
        let body = format!("m{i:02}");
        let amount = i * 5;
        let region = regions[i as usize % 3];
        let mut message = Message::builder(&topic)
            .body(body.clone())
            .tag(if i % 7 == 0 { "vip" } else { "plain" })
            .property("region", region);
        // Every tenth message has no amount (NULL: no match); every fourth one is flagged.
        if i % 10 != 3 {
            message = message.property("amount", amount.to_string());
        }
        if i % 4 == 0 {
            message = message.property("flag", "1");
        }
        producer.send(message.build().unwrap()).await.unwrap();
        let has_amount = i % 10 != 3;
        if has_amount && amount >= 100 && region != "us" {
            want_big.insert(body.clone());
        }
        if i % 7 == 0 || (i % 4 == 0 && has_amount && amount <= 40) {
            want_vip.insert(body);
        }
    }
    let got_big: BTreeSet<String> = drain(&big, want_big.len() + 1, true, 2)
        .await
        .into_values()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(got_big, want_big);
    let got_vip: BTreeSet<String> = drain(&vip, want_vip.len() + 1, true, 2)
        .await
        .into_values()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(got_vip, want_vip);

    // A malformed expression: the SDK refuses it before anything is sent ...
    let refused = SimpleConsumer::builder(node.client_config(), unique("sql-bad"))
        .subscribe(&topic, FilterExpression::sql("amount >"))
        .build()
        .await;
    assert!(refused.is_err(), "the SDK validates SQL92 expressions");
    // ... and the server answers ILLEGAL_FILTER_EXPRESSION to a client that does not.
    let mut raw = raw_client(&node).await;
    let request = pb::ReceiveMessageRequest {
        group: resource(&unique("sql-raw")),
        message_queue: Some(pb::MessageQueue {
            topic: resource(&topic),
            id: 0,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Sql as i32,
            expression: "region = 'eu' AND".into(),
        }),
        batch_size: 1,
        invisible_duration: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut stream = raw
        .receive_message(raw_req(request))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap().content.unwrap();
    match first {
        pb::receive_message_response::Content::Status(s) => {
            assert_eq!(s.code, pb::Code::IllegalFilterExpression as i32, "{s:?}");
            assert!(s.message.contains("SQL92"), "{}", s.message);
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_sends_properties_and_receives_through_an_sql92_filter() {
    let node = Node::start().await;
    let (topic, group) = (unique("sql-cli"), unique("sql-cli-g"));
    node.admin(&["topic", "create", &topic, "--queues", "1"])
        .await
        .unwrap();
    // Prime the group so it starts before the sends.
    let primed = node
        .admin(&[
            "receive",
            &group,
            &topic,
            "--sql",
            "region = 'eu'",
            "--wait",
            "1s",
        ])
        .await
        .unwrap();
    assert!(primed.contains("no messages"), "{primed}");
    node.admin(&["send", &topic, "to-eu", "--property", "region=eu"])
        .await
        .unwrap();
    node.admin(&["send", &topic, "to-us", "--property", "region=us"])
        .await
        .unwrap();
    let got = node
        .admin(&[
            "receive",
            &group,
            &topic,
            "--sql",
            "region = 'eu'",
            "--wait",
            "2s",
            "--output",
            "json",
        ])
        .await
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "to-eu");
    assert_eq!(got[0]["topic"], topic.as_str());
    assert_eq!(got[0]["properties"]["region"], "eu");
    assert_eq!(got[0]["queue_id"], 0);
    assert!(got[0]["offset"].is_i64() && got[0]["message_id"].is_string());
    let bad = node
        .admin(&["receive", &group, &topic, "--sql", "region ="])
        .await
        .expect_err("a malformed expression");
    assert!(format!("{bad:#}").contains("SQL92"), "{bad:#}");
    let bad = node
        .admin(&["send", &topic, "x", "--property", "novalue"])
        .await
        .expect_err("a property without =");
    assert!(format!("{bad:#}").contains("KEY=VALUE"), "{bad:#}");
}
