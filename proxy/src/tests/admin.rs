//! The admin service: topics and groups created, listed, described and deleted with gRPC status
//! codes, cluster info, and a deleted topic gone from the messaging side at once.

use vela_proto::pb::admin as api;

use super::*;

#[tokio::test]
async fn admin_manages_topics_and_groups() {
    let h = Harness::start(test_config()).await;
    let mut admin = h.admin().await;
    let created = admin
        .create_topic(api::CreateTopicRequest {
            replicas: None,
            name: "orders".into(),
            topic_type: api::TopicType::Fifo as i32,
            queue_count: 0,
            retention_ms: Some(86_400_000),
        })
        .await
        .expect("created")
        .into_inner();
    let topic = created.topic.expect("topic");
    assert_eq!(
        (topic.queue_count, topic.topic_type, topic.retention_ms),
        (8, api::TopicType::Fifo as i32, Some(86_400_000))
    );
    let orders = TopicName::new("orders").expect("valid");
    assert_eq!(
        h.store.retention_of(&orders),
        Some(86_400_000),
        "the stores keep the topic as long as it asks"
    );

    let dup = admin
        .create_topic(api::CreateTopicRequest {
            replicas: None,
            name: "orders".into(),
            topic_type: 0,
            queue_count: 1,
            retention_ms: None,
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let bad = admin
        .create_topic(api::CreateTopicRequest {
            replicas: None,
            name: "bad name".into(),
            topic_type: 0,
            queue_count: 1,
            retention_ms: None,
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let listed = admin
        .list_topics(api::ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.topics.len(), 1);
    let described = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.topic.map(|t| t.name), Some("orders".to_owned()));

    admin
        .create_group(api::CreateGroupRequest {
            name: "billing".into(),
            fifo: true,
            max_attempts: 0,
            start: 2,
            start_at_ms: 0,
            retry_backoff: vela_proto::retry::to_wire(
                &vela_proto::retry::RetryBackoff::parse_delays("1s,1m").expect("valid"),
            ),
            broadcast: false,
        })
        .await
        .expect("group");
    let group = admin
        .describe_group(api::DescribeGroupRequest {
            name: "billing".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    let group = group.group.expect("group");
    assert_eq!((group.fifo, group.max_attempts, group.start), (true, 17, 2));
    assert_eq!(
        vela_proto::retry::from_wire(group.retry_backoff.as_ref()).expect("valid"),
        vela_proto::retry::RetryBackoff::parse_delays("1s,1m").expect("valid"),
        "the back-off as created"
    );

    let info = admin
        .cluster_info(api::ClusterInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.mode, "standalone");
    assert_eq!(info.shard_count, 2);

    let status = admin
        .cluster_status(api::ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.mode, "standalone");
    assert_eq!(status.controllers.len(), 1);
    assert_eq!(status.controllers[0].role, "leader");
    assert_eq!(status.stores.len(), 1);
    assert_eq!(
        (status.stores[0].reachable, status.stores[0].leads),
        (true, 1)
    );
    assert_eq!(status.shards.len(), 1);
    let shard = &status.shards[0];
    assert_eq!((shard.leader, shard.health.as_str()), (Some(1), "ok"));
    assert_eq!(shard.replicas.len(), 1);
    assert_eq!(shard.replicas[0].lag, Some(0));

    admin
        .delete_topic(api::DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("deleted");
    let gone = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert!(gone.message().contains("orders"));
    // The messaging side sees the deletion at once (this proxy dropped its cache entry).
    let mut client = h.client().await;
    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("orders"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::TopicNotFound as i32);
}

#[tokio::test]
async fn tier_credentials_are_set_described_by_key_id_and_cleared() {
    let h = Harness::start(test_config()).await;
    let mut admin = h.admin().await;
    let none = admin
        .describe_tier_credentials(api::DescribeTierCredentialsRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(none.access_key_id, None);
    let set = admin
        .set_tier_credentials(api::SetTierCredentialsRequest {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "s3cr3t-value".into(),
        })
        .await
        .expect("set")
        .into_inner();
    assert_eq!(set.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
    let held = h.controller.tier_credentials().await.expect("held");
    assert_eq!(
        held.map(|c| c.credentials.expose_secret().to_owned()),
        Some("s3cr3t-value".to_owned())
    );
    let bad = admin
        .set_tier_credentials(api::SetTierCredentialsRequest {
            access_key_id: "with space".into(),
            secret_access_key: "x".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let cleared = admin
        .clear_tier_credentials(api::ClearTierCredentialsRequest {})
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.access_key_id, None);
    assert_eq!(h.controller.tier_credentials().await.expect("held"), None);
}

#[tokio::test]
async fn a_topic_retention_is_updated_in_the_metadata_and_the_stores_and_bad_ones_refused() {
    use api::update_topic_request::Retention;
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 2).await;
    let orders = TopicName::new("orders").expect("valid");
    let mut admin = h.admin().await;
    let update = |name: &str, retention| api::UpdateTopicRequest {
        name: name.into(),
        retention,
    };
    let updated = admin
        .update_topic(update(
            "orders",
            Some(Retention::RetentionMs(30 * 86_400_000)),
        ))
        .await
        .expect("updated")
        .into_inner()
        .topic
        .expect("topic");
    assert_eq!(updated.retention_ms, Some(30 * 86_400_000));
    assert_eq!(h.store.retention_of(&orders), Some(30 * 86_400_000));
    let described = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        described.topic.and_then(|t| t.retention_ms),
        Some(30 * 86_400_000)
    );

    for (retention, what) in [
        (Some(Retention::RetentionMs(0)), "zero"),
        (Some(Retention::RetentionMs(999)), "below a second"),
        (
            Some(Retention::StoreDefaultRetention(false)),
            "false default",
        ),
        (None, "nothing"),
    ] {
        let err = admin
            .update_topic(update("orders", retention))
            .await
            .expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err}");
    }
    assert_eq!(
        h.store.retention_of(&orders),
        Some(30 * 86_400_000),
        "a refused update changes nothing"
    );
    let missing = admin
        .update_topic(update("missing", Some(Retention::RetentionMs(60_000))))
        .await
        .expect_err("no such topic");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let back = admin
        .update_topic(update(
            "orders",
            Some(Retention::StoreDefaultRetention(true)),
        ))
        .await
        .expect("back to the default")
        .into_inner()
        .topic
        .expect("topic");
    assert_eq!(back.retention_ms, None);
    assert_eq!(h.store.retention_of(&orders), None);
}

#[tokio::test]
async fn a_group_whose_drop_failed_stays_reserved_until_a_second_delete_finishes_it() {
    let h = Harness::start(test_config()).await;
    let mut admin = h.admin().await;
    let create = || api::CreateGroupRequest {
        name: "billing".into(),
        fifo: false,
        max_attempts: 0,
        start: 0,
        start_at_ms: 0,
        retry_backoff: None,
        broadcast: false,
    };
    let delete = || api::DeleteGroupRequest {
        name: "billing".into(),
    };
    admin.create_group(create()).await.expect("created");

    h.store.refuse_drops(true);
    let half = admin.delete_group(delete()).await.expect_err("half done");
    assert_eq!(half.code(), tonic::Code::Unavailable);
    assert!(
        half.message()
            .contains("consumer group billing deleted, but its state was not dropped")
            && half.message().contains("delete again"),
        "{}",
        half.message()
    );
    let refused = admin.create_group(create()).await.expect_err("reserved");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("still being deleted"),
        "{}",
        refused.message()
    );

    // Deleting again finishes the same deletion (the same drop id), then the name is free.
    h.store.refuse_drops(false);
    admin.delete_group(delete()).await.expect("finished");
    let billing = GroupName::new("billing").expect("valid");
    assert_eq!(h.store.group_drops(), [(billing.clone(), 1)]);
    admin.create_group(create()).await.expect("created again");
    admin.delete_group(delete()).await.expect("deleted");
    assert_eq!(h.store.group_drops(), [(billing.clone(), 1), (billing, 2)]);
    let absent = admin.delete_group(delete()).await.expect_err("absent");
    assert_eq!(absent.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_topic_whose_drop_failed_stays_reserved_until_a_second_delete_finishes_it() {
    let h = Harness::start(test_config()).await;
    let mut admin = h.admin().await;
    let create = || api::CreateTopicRequest {
        replicas: None,
        name: "orders".into(),
        topic_type: 0,
        queue_count: 2,
        retention_ms: None,
    };
    let delete = || api::DeleteTopicRequest {
        name: "orders".into(),
    };
    admin.create_topic(create()).await.expect("created");

    h.store.refuse_drops(true);
    let half = admin.delete_topic(delete()).await.expect_err("half done");
    assert_eq!(half.code(), tonic::Code::Unavailable);
    assert!(
        half.message().contains("not dropped") && half.message().contains("delete again"),
        "{}",
        half.message()
    );
    let refused = admin.create_topic(create()).await.expect_err("reserved");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("still being deleted"),
        "{}",
        refused.message()
    );
    let gone = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect_err("deleted from the metadata");
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // Deleting again finishes the same deletion (the same drop id), then the name is free.
    h.store.refuse_drops(false);
    admin.delete_topic(delete()).await.expect("finished");
    let orders = TopicName::new("orders").expect("valid");
    assert_eq!(h.store.drops(), [(orders.clone(), 1)]);
    admin.create_topic(create()).await.expect("created again");
    admin.delete_topic(delete()).await.expect("deleted");
    assert_eq!(h.store.drops(), [(orders.clone(), 1), (orders, 2)]);
    let absent = admin.delete_topic(delete()).await.expect_err("absent");
    assert_eq!(absent.code(), tonic::Code::NotFound);
}
