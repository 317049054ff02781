//! GetOffset, QueryOffset and UpdateOffset: a group's position on a queue (read and moved), and
//! a queue's beginning, end and the offset at a time, with their codes for what does not exist.

use super::*;

fn queue(topic: &str, id: i32) -> Option<pb::MessageQueue> {
    Some(pb::MessageQueue {
        topic: resource(topic),
        id,
        ..Default::default()
    })
}

async fn get_offset(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    id: i32,
) -> pb::GetOffsetResponse {
    client
        .get_offset(req(pb::GetOffsetRequest {
            group: resource(group),
            message_queue: queue("orders", id),
        }))
        .await
        .expect("call")
        .into_inner()
}

async fn query_offset(
    client: &mut MessagingServiceClient<Channel>,
    policy: pb::QueryOffsetPolicy,
    timestamp_ms: Option<i64>,
) -> pb::QueryOffsetResponse {
    client
        .query_offset(req(pb::QueryOffsetRequest {
            message_queue: queue("orders", 0),
            query_offset_policy: policy as i32,
            timestamp: timestamp_ms.map(crate::convert::ms_to_timestamp),
        }))
        .await
        .expect("call")
        .into_inner()
}

#[tokio::test]
async fn offsets_of_groups_and_queues() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;

    // Nothing stored yet: the queue begins and ends at 0; no group has a position.
    let end = query_offset(&mut client, pb::QueryOffsetPolicy::End, None).await;
    assert_eq!((code(&end.status), end.offset), (Code::Ok as i32, 0));
    let none = get_offset(&mut client, "billing", 0).await;
    assert_eq!(code(&none.status), Code::OffsetNotFound as i32);

    for id in ["A", "B", "C"] {
        send_one(&mut client, message("orders", id, b"x")).await;
    }
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    let handles = message_handles(&items);
    assert_eq!(handles.len(), 3);
    let ack = ack_one(&mut client, "A", &handles[0]).await;
    assert_eq!(code(&ack.status), Code::Ok as i32);

    // The group stands after what it acknowledged; the lag is end - offset.
    let at = get_offset(&mut client, "billing", 0).await;
    assert_eq!((code(&at.status), at.offset), (Code::Ok as i32, 1));
    let begin = query_offset(&mut client, pb::QueryOffsetPolicy::Beginning, None).await;
    assert_eq!(begin.offset, 0);
    let end = query_offset(&mut client, pb::QueryOffsetPolicy::End, None).await;
    assert_eq!(end.offset, 3);
    // The fake stores everything at 1_800_000_000_000.
    let early = query_offset(&mut client, pb::QueryOffsetPolicy::Timestamp, Some(0)).await;
    assert_eq!(early.offset, 0);
    let late = query_offset(
        &mut client,
        pb::QueryOffsetPolicy::Timestamp,
        Some(1_800_000_000_001),
    )
    .await;
    assert_eq!(late.offset, 3);

    // What does not exist.
    let no_time = query_offset(&mut client, pb::QueryOffsetPolicy::Timestamp, None).await;
    assert_eq!(code(&no_time.status), Code::BadRequest as i32);
    let bad_queue = get_offset(&mut client, "billing", 7).await;
    assert_eq!(code(&bad_queue.status), Code::BadRequest as i32);
    let other = get_offset(&mut client, "nobody", 0).await;
    assert_eq!(code(&other.status), Code::OffsetNotFound as i32);
    let unknown_topic = client
        .get_offset(req(pb::GetOffsetRequest {
            group: resource("billing"),
            message_queue: queue("ghost", 0),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&unknown_topic.status), Code::TopicNotFound as i32);
    assert!(
        h.controller
            .get_group(&GroupName::new("nobody").expect("valid"))
            .await
            .expect("get")
            .is_none(),
        "asking about a group does not create it"
    );
}

async fn update_offset(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    id: i32,
    offset: i64,
) -> i32 {
    let reply = client
        .update_offset(req(pb::UpdateOffsetRequest {
            group: resource(group),
            message_queue: queue("orders", id),
            offset,
        }))
        .await
        .expect("call")
        .into_inner();
    code(&reply.status)
}

#[tokio::test]
async fn update_offset_resets_the_group_on_that_queue() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    // A queue that never held a message has no offset to move to.
    assert_eq!(
        update_offset(&mut client, "billing", 0, 0).await,
        Code::OffsetNotFound as i32
    );
    send_one(&mut client, message("orders", "A", b"x")).await;
    assert_eq!(
        update_offset(&mut client, "billing", 0, 1).await,
        Code::Ok as i32
    );
    let resets = h.store.resets.lock().clone();
    assert_eq!(resets.len(), 1);
    assert_eq!(
        (
            resets[0].0.as_str(),
            resets[0].1.as_str(),
            resets[0].2,
            resets[0].3
        ),
        ("billing", "orders", 0, vela_proto::OffsetTarget::Offset(1))
    );
    // Refused at the boundary: a negative offset, a queue the topic does not have.
    assert_eq!(
        update_offset(&mut client, "billing", 0, -1).await,
        Code::BadRequest as i32
    );
    assert_eq!(
        update_offset(&mut client, "billing", 5, 0).await,
        Code::BadRequest as i32
    );
    assert_eq!(h.store.resets.lock().len(), 1);
}
