//! GetOffset and QueryOffset on a real store: a group's offset follows its acks, so end minus
//! offset is its backlog per queue (what a lag-based autoscaler reads); a queue is found by
//! time.

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
    node.stop().await;
}
