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
            "group", "reset", &group, "--topic", &topic, "--to", "earliest",
        ])
        .await
        .unwrap();
    assert!(out.contains("reset group"), "{out}");
    assert_eq!(queue.group_offset(&group).await, Ok(0));
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(middle).unwrap()),
    )
    .to_string();
    node.admin(&["group", "reset", &group, "--topic", &topic, "--to", &at])
        .await
        .unwrap();
    assert_eq!(queue.group_offset(&group).await, Ok(2));
    let out = node
        .admin(&[
            "group", "reset", &group, "--topic", &topic, "--to", "latest",
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
