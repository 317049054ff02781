//! KEDA's external-scaler interface on a running standalone: a gRPC client plays KEDA and
//! checks GetMetricSpec, GetMetrics, IsActive and StreamIsActive against a known backlog, the
//! same number `vela admin queues` shows.

use std::collections::HashMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use vela_proto::pb::externalscaler as pb;
use vela_proto::pb::externalscaler::external_scaler_client::ExternalScalerClient;
use vela_sdk::Message;

use crate::harness::{Node, unique};

fn scaled(topic: &str, group: &str, extra: &[(&str, &str)]) -> pb::ScaledObjectRef {
    let mut metadata: HashMap<String, String> = HashMap::from([
        ("topic".to_owned(), topic.to_owned()),
        ("consumerGroup".to_owned(), group.to_owned()),
    ]);
    for (k, v) in extra {
        metadata.insert((*k).to_owned(), (*v).to_owned());
    }
    pb::ScaledObjectRef {
        name: "consumer".into(),
        namespace: "default".into(),
        scaler_metadata: metadata,
    }
}

async fn scaler(addr: &str) -> ExternalScalerClient<tonic::transport::Channel> {
    ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the scaler")
}

async fn backlog(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    topic: &str,
    group: &str,
) -> i64 {
    let reply = client
        .get_metrics(pb::GetMetricsRequest {
            scaled_object_ref: Some(scaled(topic, group, &[])),
            metric_name: "s0-vela".into(),
        })
        .await
        .expect("GetMetrics")
        .into_inner();
    assert_eq!(reply.metric_values.len(), 1);
    let value = &reply.metric_values[0];
    assert_eq!(
        value.metric_name, "s0-vela",
        "KEDA's metric name comes back"
    );
    assert_eq!(value.metric_value_float, value.metric_value as f64);
    value.metric_value
}

/// The BACKLOG column of `vela admin queues TOPIC --group GROUP`, summed.
async fn admin_backlog(node: &Node, topic: &str, group: &str) -> i64 {
    let table = node
        .admin(&["queues", topic, "--group", group])
        .await
        .expect("admin queues");
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().last())
        .map(|v| v.parse::<i64>().expect("a backlog number"))
        .sum()
}

/// A standalone with a new topic of `queues` queues and a group, and a scaler client.
async fn with_topic_and_group(
    name: &str,
    queues: u32,
) -> (
    Node,
    String,
    String,
    ExternalScalerClient<tonic::transport::Channel>,
) {
    let node = Node::start().await;
    let topic = unique(name);
    let group = unique(&format!("{name}-g"));
    node.admin(&["topic", "create", &topic, "--queues", &queues.to_string()])
        .await
        .expect("topic");
    node.admin(&["group", "create", &group])
        .await
        .expect("group");
    let client = scaler(&node.endpoint()).await;
    (node, topic, group, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaler_reports_a_groups_backlog() {
    let (node, topic, group, mut client) = with_topic_and_group("scaled", 2).await;

    let spec = client
        .get_metric_spec(scaled(&topic, &group, &[("lagThreshold", "3")]))
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].target_size, 3);
    assert_eq!(spec.metric_specs[0].target_size_float, 3.0);
    assert!(
        spec.metric_specs[0]
            .metric_name
            .starts_with("vela-backlog-")
    );

    let consumer = node.consumer(&group, &topic, "*").await;
    let producer = node.producer(&topic).await;
    for i in 0..7 {
        let message = Message::builder(&topic)
            .body(format!("m{i}"))
            .build()
            .expect("message");
        producer.send(message).await.expect("send");
    }
    eprintln!("sent");
    assert_eq!(backlog(&mut client, &topic, &group).await, 7);
    eprintln!("backlog");
    assert_eq!(admin_backlog(&node, &topic, &group).await, 7);
    eprintln!("admin backlog");
    let active = |threshold: &str| scaled(&topic, &group, &[("activationLagThreshold", threshold)]);
    assert!(
        client
            .is_active(active("0"))
            .await
            .expect("IsActive")
            .into_inner()
            .result
    );
    assert!(
        !client
            .is_active(active("7"))
            .await
            .expect("IsActive")
            .into_inner()
            .result
    );
    let mut stream = client
        .stream_is_active(active("0"))
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a first answer")
        .expect("stream open")
        .expect("answer");
    assert!(first.result);
    eprintln!("stream");

    // In flight still counts; acknowledged messages do not.
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= 7 {
            break;
        }
        got.extend(
            consumer
                .receive(7, Duration::from_secs(30))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(got.len(), 7, "every message received");
    assert_eq!(
        backlog(&mut client, &topic, &group).await,
        7,
        "in flight counts"
    );
    eprintln!("in flight counted");
    for message in &got[..4] {
        consumer.ack(message).await.expect("ack");
    }
    eprintln!("acked 4");
    let expected = admin_backlog(&node, &topic, &group).await;
    assert!(expected < 7, "acks lower the backlog: {expected}");
    assert_eq!(backlog(&mut client, &topic, &group).await, expected);
    for message in &got[4..] {
        consumer.ack(message).await.expect("ack");
    }
    assert_eq!(backlog(&mut client, &topic, &group).await, 0);
    assert!(
        !client
            .is_active(active("0"))
            .await
            .expect("IsActive")
            .into_inner()
            .result
    );
    let idle = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream says when it changes")
        .expect("stream open")
        .expect("answer");
    assert!(!idle.result);

    // Bad triggers: a clear status, never a number.
    let missing = client
        .get_metrics(pb::GetMetricsRequest {
            scaled_object_ref: Some(scaled("no-such-topic", &group, &[])),
            metric_name: String::new(),
        })
        .await
        .expect_err("unknown topic");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut no_group = scaled(&topic, &group, &[]);
    no_group.scaler_metadata.remove("consumerGroup");
    let invalid = client.is_active(no_group).await.expect_err("no group");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("consumerGroup"), "{invalid}");
    node.stop().await;
}

/// A group with a tag filter: what the filter skips leaves its backlog once its receives
/// have searched past it (within seconds), so the scaler does not scale consumers for
/// messages none of them would get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_groups_backlog_leaves_out_what_its_filter_skips() {
    let (node, topic, group, mut client) = with_topic_and_group("filtered", 1).await;
    let consumer = node.consumer(&group, &topic, "A").await;
    let producer = node.producer(&topic).await;
    for (i, tag) in ["A"].iter().chain(&["B"; 20]).enumerate() {
        let message = Message::builder(&topic)
            .tag(*tag)
            .body(format!("m{i}"))
            .build()
            .expect("message");
        producer.send(message).await.expect("send");
    }
    assert_eq!(backlog(&mut client, &topic, &group).await, 21);
    let got = consumer
        .receive(4, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "only the A message matches");
    consumer.ack(&got[0]).await.expect("ack");

    // Receives that find nothing (each waits 2 s) move the group past the B messages.
    let mut left = i64::MAX;
    for _ in 0..30 {
        let none = consumer
            .receive(4, Duration::from_secs(30))
            .await
            .expect("receive");
        assert!(none.is_empty(), "nothing else matches: {none:?}");
        left = backlog(&mut client, &topic, &group).await;
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "the skipped messages still count as backlog");
    assert_eq!(admin_backlog(&node, &topic, &group).await, 0);

    // A later match is still delivered after the move.
    let message = Message::builder(&topic)
        .tag("A")
        .body("late")
        .build()
        .expect("message");
    producer.send(message).await.expect("send");
    let got = consumer
        .receive(4, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_ref(), b"late");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_scaler_needs_a_port_of_its_own() {
    let auth = |c: &mut vela::config::VelaConfig| {
        c.auth.enabled = true;
        c.auth.init_user = Some("root".into());
        c.auth.init_password = Some("root-secret".into());
        c.proxy.auth = c.auth.clone();
    };
    // KEDA cannot sign requests: the client port does not answer for the scaler.
    let node = Node::start_with(auth).await;
    let refused = scaler(&node.endpoint())
        .await
        .get_metric_spec(scaled("t", "g", &[]))
        .await
        .expect_err("not served with auth on the client port");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    node.stop().await;
    // With the admin service on its own port, the scaler is there beside it.
    let node = Node::start_with(|c| {
        auth(c);
        c.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let admin_addr = node
        .node
        .as_ref()
        .and_then(|n| n.admin_addr())
        .expect("admin port")
        .to_string();
    let spec = scaler(&admin_addr)
        .await
        .get_metric_spec(scaled("t", "g", &[]))
        .await
        .expect("served beside admin");
    assert_eq!(spec.into_inner().metric_specs[0].target_size, 10);
    node.stop().await;
}
