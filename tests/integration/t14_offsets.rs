//! GetOffset and QueryOffset on a real store: a group's offset follows its acks, so end minus
//! offset is its backlog per queue (what a lag-based autoscaler reads); a queue is found by
//! time. UpdateOffset and `vela admin group reset` move a group: it reads again or skips.

use std::time::Duration;

use tonic::transport::Channel;
use vela_proto::clock::{Clock, SystemClock};
use vela_proto::pb::rocketmq as pb;
use vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient;
use vela_sdk::Message;

use crate::harness::{Node, raw_client, raw_req, resource, unique};

struct Queue {
    client: MessagingServiceClient<Channel>,
    queue: Option<pb::MessageQueue>,
}

impl Queue {
    /// The group's offset, or the status code that refused it.
    async fn group_offset(&mut self, group: &str) -> Result<i64, i32> {
        let reply = self
            .client
            .get_offset(raw_req(pb::GetOffsetRequest {
                group: resource(group),
                message_queue: self.queue.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        match reply.status.map_or(0, |s| s.code) {
            code if code == pb::Code::Ok as i32 => Ok(reply.offset),
            code => Err(code),
        }
    }

    /// Moves the group (UpdateOffset); the status code of the reply.
    async fn update(&mut self, group: &str, offset: i64) -> i32 {
        let reply = self
            .client
            .update_offset(raw_req(pb::UpdateOffsetRequest {
                group: resource(group),
                message_queue: self.queue.clone(),
                offset,
            }))
            .await
            .unwrap()
            .into_inner();
        reply.status.map_or(0, |s| s.code)
    }

    /// PullMessage: (status code, (offset, body) of each message, next offset).
    async fn pull(
        &mut self,
        group: &str,
        offset: i64,
        batch: i32,
        tags: &str,
        wait: Duration,
    ) -> (i32, Vec<(i64, String)>, Option<i64>) {
        use pb::pull_message_response::Content;
        let mut stream = self
            .client
            .pull_message(raw_req(pb::PullMessageRequest {
                group: resource(group),
                message_queue: self.queue.clone(),
                offset,
                batch_size: batch,
                filter_expression: Some(pb::FilterExpression {
                    r#type: pb::FilterType::Tag as i32,
                    expression: tags.into(),
                }),
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: i64::try_from(wait.as_secs()).unwrap(),
                    nanos: 0,
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        let (mut code, mut messages, mut next) = (0, Vec::new(), None);
        while let Some(item) = stream.message().await.unwrap() {
            match item.content {
                Some(Content::Status(s)) => code = s.code,
                Some(Content::Message(m)) => {
                    let props = m.system_properties.unwrap();
                    assert!(props.receipt_handle.is_none(), "nothing to acknowledge");
                    messages.push((
                        props.queue_offset.unwrap(),
                        String::from_utf8_lossy(&m.body).into_owned(),
                    ));
                }
                Some(Content::NextOffset(n)) => next = Some(n),
                None => {}
            }
        }
        (code, messages, next)
    }

    async fn query(&mut self, policy: pb::QueryOffsetPolicy, at_ms: Option<i64>) -> i64 {
        let reply = self
            .client
            .query_offset(raw_req(pb::QueryOffsetRequest {
                message_queue: self.queue.clone(),
                query_offset_policy: policy as i32,
                timestamp: at_ms.map(|ms| prost_types::Timestamp {
                    seconds: ms.div_euclid(1000),
                    nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap(),
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status.map(|s| s.code), Some(pb::Code::Ok as i32));
        reply.offset
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_follow_acks_and_time() {
    let node = Node::start().await;
    let topic = unique("offsets");
    let group = unique("offsets-g");
    node.admin(&["topic", "create", &topic, "--queues", "1"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let consumer = node.consumer(&group, &topic, "*").await;
    let message = |body: &str| {
        Message::builder(&topic)
            .body(body.to_owned())
            .build()
            .unwrap()
    };
    let before = SystemClock.now_ms();
    producer.send(message("a")).await.unwrap();
    producer.send(message("b")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = SystemClock.now_ms();
    producer.send(message("c")).await.unwrap();

    let mut queue = Queue {
        client: raw_client(&node).await,
        queue: Some(pb::MessageQueue {
            topic: resource(&topic),
            id: 0,
            ..Default::default()
        }),
    };
    assert_eq!(
        queue.group_offset(&group).await,
        Err(pb::Code::OffsetNotFound as i32),
        "a group that never received has no offset"
    );

    let got = consumer.receive(2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 2);
    consumer.ack(&got[0]).await.unwrap();
    assert_eq!(
        queue.group_offset(&group).await,
        Ok(1),
        "after the acknowledged message, before the one in flight"
    );
    assert_eq!(queue.query(pb::QueryOffsetPolicy::End, None).await, 3);
    assert_eq!(queue.query(pb::QueryOffsetPolicy::Beginning, None).await, 0);
    let by_time = pb::QueryOffsetPolicy::Timestamp;
    assert_eq!(queue.query(by_time, Some(before - 1)).await, 0);
    assert_eq!(queue.query(by_time, Some(middle)).await, 2);
    assert_eq!(queue.query(by_time, Some(middle + 60_000)).await, 3);

    consumer.ack(&got[1]).await.unwrap();
    let rest = consumer.receive(2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(rest.len(), 1);
    consumer.ack(&rest[0]).await.unwrap();
    assert_eq!(queue.group_offset(&group).await, Ok(3), "no backlog left");

    // UpdateOffset moves the group back: it reads "b" and "c" again.
    assert_eq!(queue.update(&group, 1).await, pb::Code::Ok as i32);
    assert_eq!(queue.group_offset(&group).await, Ok(1));
    let again = consumer.receive(8, Duration::from_secs(30)).await.unwrap();
    let bodies: Vec<&[u8]> = again.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [b"b".as_slice(), b"c".as_slice()]);
    assert_eq!(queue.update(&group, -1).await, pb::Code::BadRequest as i32);

    // `vela admin group reset`: by time, then to the end.
    let out = node
        .admin(&[
            "--yes", "group", "reset", &group, "--topic", &topic, "--to", "earliest",
        ])
        .await
        .unwrap();
    assert!(out.contains("reset group"), "{out}");
    assert_eq!(queue.group_offset(&group).await, Ok(0));
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(middle).unwrap()),
    )
    .to_string();
    node.admin(&[
        "--yes", "group", "reset", &group, "--topic", &topic, "--to", &at,
    ])
    .await
    .unwrap();
    assert_eq!(queue.group_offset(&group).await, Ok(2));
    let out = node
        .admin(&[
            "--yes", "group", "reset", &group, "--topic", &topic, "--to", "latest",
        ])
        .await
        .unwrap();
    assert!(
        out.lines().any(|l| l.split_whitespace().eq(["0", "3"])),
        "{out}"
    );
    assert!(
        consumer
            .receive(8, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let bad = node
        .admin(&[
            "group",
            "reset",
            "--yes",
            &group,
            "--topic",
            &topic,
            "--to",
            "yesterday",
        ])
        .await
        .expect_err("not a target");
    assert!(format!("{bad:#}").contains("RFC 3339"), "{bad:#}");
    let missing = node
        .admin(&[
            "group",
            "reset",
            "--yes",
            "no-such-group",
            "--topic",
            &topic,
            "--to",
            "earliest",
        ])
        .await
        .expect_err("no such group");
    assert!(format!("{missing:#}").contains("not found"), "{missing:#}");

    // A group created with --from latest skips what the (young) queue already holds.
    let latest = unique("offsets-latest");
    node.admin(&["group", "create", &latest, "--from", "latest"])
        .await
        .unwrap();
    let described = node.admin(&["group", "describe", &latest]).await.unwrap();
    assert!(described.contains("starts:        latest"), "{described}");
    let fresh = node.consumer(&latest, &topic, "*").await;
    producer.send(message("d")).await.unwrap();
    let got = crate::harness::drain(&fresh, 2, true, 1).await;
    let bodies: Vec<String> = got
        .into_values()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies, ["d"]);
    let bad = node
        .admin(&["group", "create", &unique("g"), "--from", "12"])
        .await
        .expect_err("an offset is no start");
    assert!(format!("{bad:#}").contains("RFC 3339 time"), "{bad:#}");
    node.stop().await;
}

/// PullMessage: a client reads a queue from offsets it keeps, with a tag filter and long
/// polling; the group's own state is untouched, so a receive of the group still gets every
/// message. Past the end is ILLEGAL_OFFSET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_reads_from_an_offset_and_changes_nothing() {
    let node = Node::start().await;
    let topic = unique("pull");
    let group = unique("pull-g");
    node.admin(&["topic", "create", &topic, "--queues", "1"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    for (i, tag) in ["A", "B", "A", "B", "A"].iter().enumerate() {
        producer
            .send(
                Message::builder(&topic)
                    .body(format!("m{i}"))
                    .tag(*tag)
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let mut queue = Queue {
        client: raw_client(&node).await,
        queue: Some(pb::MessageQueue {
            topic: resource(&topic),
            id: 0,
            ..Default::default()
        }),
    };
    let now = Duration::ZERO;
    let ok = pb::Code::Ok as i32;
    let (code, got, next) = queue.pull(&group, 0, 3, "*", now).await;
    assert_eq!(code, ok);
    assert_eq!(got, [(0, "m0".into()), (1, "m1".into()), (2, "m2".into())]);
    assert_eq!(next, Some(3));
    let (_, got, next) = queue.pull(&group, 3, 32, "*", now).await;
    assert_eq!(got, [(3, "m3".into()), (4, "m4".into())]);
    assert_eq!(next, Some(5));
    let (_, got, next) = queue.pull(&group, 0, 32, "A", now).await;
    assert_eq!(got, [(0, "m0".into()), (2, "m2".into()), (4, "m4".into())]);
    assert_eq!(next, Some(5), "past what did not match too");

    // At the end: nothing now; a long poll returns once a message arrives.
    let (code, got, next) = queue.pull(&group, 5, 32, "*", now).await;
    assert_eq!(
        (code, got.len(), next),
        (pb::Code::MessageNotFound as i32, 0, Some(5))
    );
    let mut waiting = Queue {
        client: raw_client(&node).await,
        queue: queue.queue.clone(),
    };
    let group_for_wait = group.clone();
    let started = std::time::Instant::now();
    let poll = tokio::spawn(async move {
        waiting
            .pull(&group_for_wait, 5, 32, "*", Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer
        .send(
            Message::builder(&topic)
                .body("late")
                .tag("A")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let (code, got, next) = poll.await.unwrap();
    assert_eq!((code, got, next), (ok, vec![(5, "late".into())], Some(6)));
    println!("long-polled pull answered after {:?}", started.elapsed());

    let (code, _, _) = queue.pull(&group, 99, 32, "*", now).await;
    assert_eq!(code, pb::Code::IllegalOffset as i32);
    let (code, _, _) = queue.pull(&group, 0, 0, "*", now).await;
    assert_eq!(code, pb::Code::BadRequest as i32);

    // Pulls moved nothing: the group has no position, and a receive gets all six.
    assert_eq!(
        queue.group_offset(&group).await,
        Err(pb::Code::OffsetNotFound as i32)
    );
    let consumer = node.consumer(&group, &topic, "*").await;
    let mut bodies = Vec::new();
    while bodies.len() < 6 {
        let got = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
        assert!(!got.is_empty(), "received only {bodies:?}");
        for m in got {
            bodies.push(String::from_utf8_lossy(&m.body).into_owned());
            consumer.ack(&m).await.unwrap();
        }
    }
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4", "late"]);
    node.stop().await;
}
