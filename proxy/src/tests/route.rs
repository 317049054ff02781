//! QueryRoute for known, unknown and badly named topics, auto-created topics (mixed, at the
//! listen address), and QueryAssignment for push consumers.

use super::*;

#[tokio::test]
async fn route_for_known_and_unknown_topics() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    let mut client = h.client().await;
    let endpoints = crate::route::endpoints_of("10.1.2.3", 8081);

    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("orders"),
            endpoints: Some(endpoints.clone()),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 4);
    assert_eq!(route.message_queues[0].id, 0);
    let broker = route.message_queues[0].broker.as_ref().expect("broker");
    assert_eq!(
        broker.endpoints.as_ref(),
        Some(&endpoints),
        "the client's access point is echoed"
    );
    assert_eq!(
        route.message_queues[0].accept_message_types,
        vec![MessageType::Normal as i32]
    );

    let missing = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("nope"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&missing.status), Code::TopicNotFound as i32);

    let bad = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("bad name"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bad.status), Code::IllegalTopic as i32);
}

#[tokio::test]
async fn auto_created_topics_are_mixed() {
    let h = Harness::start(ProxyConfig {
        auto_create_topics: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("fresh"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 8);
    assert_eq!(
        route.message_queues[0].accept_message_types,
        vec![1, 2, 3, 4]
    );
    let endpoints = route.message_queues[0]
        .broker
        .as_ref()
        .and_then(|b| b.endpoints.as_ref())
        .expect("endpoints");
    assert_eq!(
        endpoints.addresses[0].port,
        i32::from(h.addr.port()),
        "falls back to the listen address"
    );
    let created = h
        .controller
        .get_topic(&TopicName::new("fresh").expect("valid"))
        .await
        .expect("get");
    assert!(created.is_some_and(|t| t.auto_created && t.topic_type == TopicType::Mixed));
}

#[tokio::test]
async fn push_consumer_assignments() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    h.group("billing").await;
    let mut client = h.client().await;
    let assignment = client
        .query_assignment(req(pb::QueryAssignmentRequest {
            topic: resource("orders"),
            group: resource("billing"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&assignment.status), Code::Ok as i32);
    assert_eq!(
        assignment.assignments.len(),
        1,
        "one poller covers every queue"
    );
    let queue = assignment.assignments[0]
        .message_queue
        .as_ref()
        .expect("queue");
    assert_eq!(queue.id, 0);
    assert!(
        queue
            .broker
            .as_ref()
            .and_then(|b| b.endpoints.as_ref())
            .is_some()
    );
}
