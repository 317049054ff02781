//! `vela_sdk::PushConsumer` against a real node:
//! - success acknowledges (never redelivered), failure retries after the group's back-off,
//!   and a normal group's message that keeps failing ends in the dead-letter queue;
//! - on a FIFO group a failed message is retried in place, so each message group is consumed
//!   in send order, and one that uses up its attempts is forwarded to the dead-letter queue;
//! - a listener slower than the invisibility keeps its message (the consumer renews it);
//! - shutdown lets a listener call in progress finish and acknowledge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vela_sdk::{ConsumeResult, FilterExpression, Message, MessageView, PushConsumer};

use crate::harness::{Node, drain, unique};

/// What a listener saw: (body, delivery attempt) in call order.
type Seen = Arc<Mutex<Vec<(String, u32)>>>;

fn body(m: &MessageView) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Polls `done` every 100 ms for up to `patience`.
async fn until(what: &str, patience: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A push consumer of `group` on `topic` whose listener records every call and answers
/// `answer(body, attempt)`.
async fn push_consumer(
    node: &Node,
    group: &str,
    topic: &str,
    seen: &Seen,
    answer: impl Fn(&str, u32) -> ConsumeResult + Send + Sync + 'static,
) -> PushConsumer {
    let seen = seen.clone();
    let answer = Arc::new(answer);
    PushConsumer::builder(node.client_config(), group)
        .subscribe(topic, FilterExpression::all())
        .listener(move |m: MessageView| {
            let (seen, answer) = (seen.clone(), answer.clone());
            async move {
                let b = body(&m);
                seen.lock().unwrap().push((b.clone(), m.delivery_attempt));
                answer(&b, m.delivery_attempt)
            }
        })
        .build()
        .await
        .unwrap()
}

/// The dead letters of `group`, by body.
async fn dead_letters(node: &Node, group: &str, want: usize) -> Vec<String> {
    let dlq = node
        .consumer(
            &format!("{group}-dlq-reader"),
            &format!("%DLQ%{group}"),
            "*",
        )
        .await;
    let mut bodies: Vec<String> = drain(&dlq, want, true, 10)
        .await
        .values()
        .map(body)
        .collect();
    dlq.shutdown().await.unwrap();
    bodies.sort();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_acks_failure_retries_and_a_poison_message_is_dead_lettered() {
    let node = Node::start().await;
    let topic = unique("push");
    let group = unique("push-g");
    node.admin(&["group", "create", &group, "--max-attempts", "2"])
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    // Odd messages fail their first delivery; "poison" fails every time.
    let consumer = push_consumer(&node, &group, &topic, &seen, |b, attempt| {
        let odd = b
            .strip_prefix("m")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n % 2 == 1);
        if b == "poison" || (odd && attempt == 1) {
            ConsumeResult::Failure
        } else {
            ConsumeResult::Success
        }
    })
    .await;
    let producer = node.producer(&topic).await;
    for i in 0..10 {
        let m = Message::builder(&topic)
            .body(format!("m{i}"))
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
    }
    let poison = Message::builder(&topic).body("poison").build().unwrap();
    producer.send(poison).await.unwrap();

    // 10 first deliveries, 5 retries and 2 deliveries of the poison message.
    until("every delivery", Duration::from_secs(30), || {
        seen.lock().unwrap().len() >= 17
    })
    .await;
    assert_eq!(dead_letters(&node, &group, 1).await, ["poison"]);
    // Nothing more: what succeeded was acknowledged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = seen.lock().unwrap().clone();
    let mut per_body: HashMap<String, Vec<u32>> = HashMap::new();
    for (b, attempt) in &calls {
        per_body.entry(b.clone()).or_default().push(*attempt);
    }
    for i in 0..10 {
        let want: &[u32] = if i % 2 == 1 { &[1, 2] } else { &[1] };
        assert_eq!(per_body[&format!("m{i}")], want, "{calls:?}");
    }
    assert_eq!(per_body["poison"], [1, 2], "{calls:?}");
    consumer.shutdown().await.unwrap();
}

/// A group's own back-off (`--retry-delays`) reaches push consumers through Settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_retry_back_off_paces_the_retries() {
    let node = Node::start().await;
    let topic = unique("push-backoff");
    let group = unique("push-backoff-g");
    node.admin(&[
        "group",
        "create",
        &group,
        "--max-attempts",
        "2",
        "--retry-delays",
        "3s",
    ])
    .await
    .unwrap();
    let described = node.admin(&["group", "describe", &group]).await.unwrap();
    assert!(
        described.contains("retry:         delays 3s"),
        "{described}"
    );
    let refused = node
        .admin(&["group", "create", "other", "--retry-exponential", "1s,2h,0"])
        .await
        .expect_err("a multiplier of 0");
    assert!(refused.to_string().contains("multiplier 0"), "{refused}");

    let calls: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let seen = calls.clone();
    let consumer = PushConsumer::builder(node.client_config(), &group)
        .subscribe(&topic, FilterExpression::all())
        .listener(move |_m: MessageView| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(tokio::time::Instant::now());
                ConsumeResult::Failure
            }
        })
        .build()
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let m = Message::builder(&topic).body("slow-retry").build().unwrap();
    producer.send(m).await.unwrap();
    until("two deliveries", Duration::from_secs(30), || {
        calls.lock().unwrap().len() >= 2
    })
    .await;
    let at = calls.lock().unwrap().clone();
    // The standard table would retry after 1 s.
    assert!(
        at[1] - at[0] >= Duration::from_millis(2800),
        "retried {:?} later, not after the group's 3 s",
        at[1] - at[0]
    );
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_group_retries_in_place_keeps_order_and_dead_letters_what_runs_out() {
    let node = Node::start().await;
    let topic = unique("push-fifo");
    let group = unique("push-fifo-g");
    node.admin(&["topic", "create", &topic, "--type", "fifo", "--queues", "2"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group, "--fifo", "--max-attempts", "3"])
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    // a:1 fails once; b:1 fails every time (3 attempts, then the dead-letter queue).
    let consumer = push_consumer(&node, &group, &topic, &seen, |b, attempt| match b {
        "a:1" if attempt == 1 => ConsumeResult::Failure,
        "b:1" => ConsumeResult::Failure,
        _ => ConsumeResult::Success,
    })
    .await;
    let producer = node.producer(&topic).await;
    for seq in 0..4 {
        for g in ["a", "b"] {
            let m = Message::builder(&topic)
                .body(format!("{g}:{seq}"))
                .message_group(g)
                .build()
                .unwrap();
            producer.send(m).await.unwrap();
        }
    }
    // 8 messages, a:1 twice, b:1 three times. The back-off table starts at 1 s, then 5 s.
    until("every delivery", Duration::from_secs(40), || {
        seen.lock().unwrap().len() >= 11
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = seen.lock().unwrap().clone();
    for g in ["a", "b"] {
        let lane: Vec<(String, u32)> = calls
            .iter()
            .filter(|(b, _)| b.starts_with(g))
            .cloned()
            .collect();
        let retried = if g == "a" { vec![1, 2] } else { vec![1, 2, 3] };
        let mut want = vec![(format!("{g}:0"), 1)];
        want.extend(retried.into_iter().map(|n| (format!("{g}:1"), n)));
        want.extend([(format!("{g}:2"), 1), (format!("{g}:3"), 1)]);
        assert_eq!(
            lane, want,
            "message group {g} in order, retried in place: {calls:?}"
        );
    }
    assert_eq!(dead_letters(&node, &group, 1).await, ["b:1"]);
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_listener_keeps_its_message_and_shutdown_waits_for_it() {
    let node = Node::start().await;
    let topic = unique("push-slow");
    let group = unique("push-slow-g");
    let calls = Arc::new(Mutex::new(0u32));
    let finished = Arc::new(Mutex::new(false));
    let (c, f) = (calls.clone(), finished.clone());
    let consumer = PushConsumer::builder(node.client_config(), &group)
        .subscribe(&topic, FilterExpression::all())
        .invisible_duration(Duration::from_secs(10))
        .listener(move |m: MessageView| {
            let (c, f) = (c.clone(), f.clone());
            async move {
                *c.lock().unwrap() += 1;
                // "slow" runs longer than the invisibility: only renewals keep it.
                let secs = if body(&m) == "slow" { 16 } else { 3 };
                tokio::time::sleep(Duration::from_secs(secs)).await;
                *f.lock().unwrap() = true;
                ConsumeResult::Success
            }
        })
        .build()
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let m = Message::builder(&topic).body("slow").build().unwrap();
    producer.send(m).await.unwrap();
    until("the listener starts", Duration::from_secs(10), || {
        *calls.lock().unwrap() == 1
    })
    .await;
    // Another consumer of the group polls while the listener runs: nothing for it.
    let rival = node.consumer(&group, &topic, "*").await;
    let mut stolen = 0;
    while !*finished.lock().unwrap() {
        stolen += rival
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(
        stolen, 0,
        "the message was redelivered while its listener ran"
    );
    // Second message: shutdown while its listener runs waits for it and its ack.
    *finished.lock().unwrap() = false;
    let m = Message::builder(&topic).body("last").build().unwrap();
    producer.send(m).await.unwrap();
    until("the second call", Duration::from_secs(10), || {
        *calls.lock().unwrap() == 2
    })
    .await;
    consumer.shutdown().await.unwrap();
    assert!(
        *finished.lock().unwrap(),
        "shutdown returned before the listener finished"
    );
    assert_eq!(*calls.lock().unwrap(), 2, "one call per message");
    // Both were acknowledged: the group has nothing left.
    assert!(drain(&rival, 1, true, 2).await.is_empty());
    rival.shutdown().await.unwrap();
}

/// A receive as the official push consumers send it: `auto_renew`, no invisibility, and an
/// `attempt_id`. Returns the delivered messages.
async fn push_receive(
    raw: &mut vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient<
        tonic::transport::Channel,
    >,
    group: &str,
    topic: &str,
    attempt_id: &str,
) -> Vec<vela_proto::pb::rocketmq::Message> {
    use vela_proto::pb::rocketmq as pb;

    use crate::harness::{raw_req, resource};

    let request = pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: None,
        auto_renew: true,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        attempt_id: Some(attempt_id.to_owned()),
    };
    let mut stream = raw
        .receive_message(raw_req(request))
        .await
        .unwrap()
        .into_inner();
    let mut delivered = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            delivered.push(m);
        }
    }
    delivered
}

/// Acknowledges `m` through `raw` with the handle it was delivered with.
async fn raw_ack(
    raw: &mut vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient<
        tonic::transport::Channel,
    >,
    group: &str,
    topic: &str,
    m: &vela_proto::pb::rocketmq::Message,
) -> i32 {
    use vela_proto::pb::rocketmq as pb;

    use crate::harness::{raw_req, resource};

    let props = m.system_properties.as_ref().unwrap();
    let ack = pb::AckMessageRequest {
        group: resource(group),
        topic: resource(topic),
        entries: vec![pb::AckMessageEntry {
            message_id: props.message_id.clone(),
            receipt_handle: props.receipt_handle.clone().unwrap(),
            lite_topic: None,
        }],
    };
    let reply = raw.ack_message(raw_req(ack)).await.unwrap().into_inner();
    reply.status.unwrap().code
}

/// What the official push consumers do: receive with `auto_renew` and no invisibility. The
/// proxy renews what the client holds, keeping its receipt handle valid, so a message held
/// past the 60 s the server chose is neither redelivered nor refused when finally acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_renews_what_an_auto_renew_receive_holds_and_the_handle_stays_valid() {
    use vela_proto::pb::rocketmq as pb;

    let node = Node::start().await;
    let topic = unique("auto-renew");
    let group = unique("auto-renew-g");
    let producer = node.producer(&topic).await;
    let rival = node.consumer(&group, &topic, "*").await;
    assert!(
        drain(&rival, 1, false, 1).await.is_empty(),
        "primes the group"
    );
    let m = Message::builder(&topic).body("held").build().unwrap();
    producer.send(m).await.unwrap();

    let mut raw = crate::harness::raw_client(&node).await;
    let delivered = push_receive(&mut raw, &group, &topic, "r1").await;
    assert_eq!(delivered.len(), 1);

    // 45 s into its 60 s: due for renewal, which runs every 5 s.
    node.clock.advance(Duration::from_secs(45));
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Past the 60 s the server chose: still invisible to the rest of the group.
    node.clock.advance(Duration::from_secs(30));
    assert!(
        drain(&rival, 1, false, 2).await.is_empty(),
        "redelivered while its auto_renew client held it"
    );
    // The handle from the receive is still the one to ack with.
    assert_eq!(
        raw_ack(&mut raw, &group, &topic, &delivered[0]).await,
        pb::Code::Ok as i32,
        "the original handle acks"
    );
    node.clock.advance(Duration::from_secs(120));
    assert!(
        drain(&rival, 1, true, 2).await.is_empty(),
        "acknowledged for good"
    );
    rival.shutdown().await.unwrap();
}

/// A push consumer that never got a receive's answer asks again with the same `attempt_id`:
/// it gets those messages at once instead of after their invisibility.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_retried_with_its_attempt_id_gets_what_the_lost_answer_held() {
    use vela_proto::pb::rocketmq as pb;

    let node = Node::start().await;
    let topic = unique("attempt");
    let group = unique("attempt-g");
    let producer = node.producer(&topic).await;
    let mut raw = crate::harness::raw_client(&node).await;
    assert!(
        push_receive(&mut raw, &group, &topic, "prime")
            .await
            .is_empty()
    );
    let m = Message::builder(&topic).body("once").build().unwrap();
    let id = producer.send(m).await.unwrap().message_id;

    let lost = push_receive(&mut raw, &group, &topic, "a1").await;
    assert_eq!(lost.len(), 1, "the answer the client never saw");
    let again = push_receive(&mut raw, &group, &topic, "a1").await;
    assert_eq!(
        again.len(),
        1,
        "the same attempt gets the message again at once"
    );
    assert_eq!(again[0].system_properties.as_ref().unwrap().message_id, id);
    assert_eq!(
        raw_ack(&mut raw, &group, &topic, &again[0]).await,
        pb::Code::Ok as i32
    );
    // A new attempt finds nothing: the message was acknowledged.
    assert!(
        push_receive(&mut raw, &group, &topic, "a2")
            .await
            .is_empty()
    );
    node.clock.advance(Duration::from_secs(120));
    assert!(
        push_receive(&mut raw, &group, &topic, "a3")
            .await
            .is_empty()
    );
}
