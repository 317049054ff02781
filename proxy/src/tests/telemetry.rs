//! Client sessions: Settings over the Telemetry stream, Heartbeat and NotifyClientTermination,
//! and `serve` stopping on its token while a Telemetry stream is open.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vela_proto::pb::rocketmq::{ClientType, settings::PubSub, telemetry_command::Command};

use super::*;

fn producer_settings() -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(ClientType::Producer as i32),
            request_timeout: Some(prost_types::Duration {
                seconds: 3,
                nanos: 0,
            }),
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: "orders".into(),
                }],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn telemetry_answers_each_settings_and_stays_open() {
    let h = Harness::start(ProxyConfig {
        auto_create_groups: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let (tx, rx) = mpsc::channel(4);
    // The call completes once headers arrive, before any client message is sent (Rust's start).
    let mut replies = tokio::time::timeout(
        Duration::from_secs(5),
        client.telemetry(req(ReceiverStream::new(rx))),
    )
    .await
    .expect("headers come at once")
    .expect("telemetry call")
    .into_inner();

    tx.send(producer_settings()).await.expect("send settings");
    let reply = replies.message().await.expect("reply").expect("not ended");
    assert_eq!(code(&reply.status), Code::Ok as i32);
    let Some(Command::Settings(settings)) = reply.command else {
        panic!("settings reply")
    };
    let Some(PubSub::Publishing(p)) = settings.pub_sub else {
        panic!("publishing")
    };
    assert_eq!(p.max_body_size, 64);
    assert!(settings.backoff_policy.is_some());

    // Odd commands are ignored, repeated settings answered again.
    tx.send(pb::TelemetryCommand::default())
        .await
        .expect("send");
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: "n".into(),
            thread_stack_trace: None,
        })),
    })
    .await
    .expect("send");
    let consumer = pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(ClientType::SimpleConsumer as i32),
            pub_sub: Some(PubSub::Subscription(pb::Subscription {
                group: resource("fresh-group"),
                ..Default::default()
            })),
            ..Default::default()
        })),
    };
    tx.send(consumer).await.expect("send");
    let reply = replies.message().await.expect("reply").expect("not ended");
    let Some(Command::Settings(settings)) = reply.command else {
        panic!("settings reply")
    };
    let Some(PubSub::Subscription(s)) = settings.pub_sub else {
        panic!("subscription")
    };
    assert_eq!(s.receive_batch_size, Some(32));
    assert_eq!(s.fifo, Some(false));
    assert!(
        h.controller
            .get_group(&GroupName::new("fresh-group").expect("valid"))
            .await
            .expect("get")
            .is_some()
    );

    // Open until the client leaves.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.message())
            .await
            .is_err(),
        "stream stays open"
    );
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("ends after the client");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn heartbeat_and_termination_are_ok() {
    let h = Harness::start(ProxyConfig {
        auto_create_groups: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let hb = client
        .heartbeat(req(pb::HeartbeatRequest {
            group: resource("g1"),
            client_type: ClientType::SimpleConsumer as i32,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&hb.status), Code::Ok as i32);
    assert!(
        h.controller
            .get_group(&GroupName::new("g1").expect("valid"))
            .await
            .expect("get")
            .is_some()
    );
    let bye = client
        .notify_client_termination(rust_req(pb::NotifyClientTerminationRequest {
            group: resource("g1"),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bye.status), Code::Ok as i32);
}

#[tokio::test]
async fn serve_stops_on_its_token_with_telemetry_open() {
    let h = Harness::start(test_config()).await;
    let mut client = h.client().await;
    let (tx, _replies) = producer_stream(&mut client, "orders").await;

    h.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), h.server)
        .await
        .expect("server stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    drop(tx);
}

/// A producer stream that published `topic` and got its Settings back.
async fn producer_stream(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
) -> (
    mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut replies = client
        .telemetry(req(ReceiverStream::new(rx)))
        .await
        .expect("call")
        .into_inner();
    let mut settings = producer_settings();
    if let Some(Command::Settings(s)) = settings.command.as_mut()
        && let Some(PubSub::Publishing(p)) = s.pub_sub.as_mut()
    {
        p.topics[0].name = topic.into();
    }
    tx.send(settings).await.expect("send settings");
    let reply = replies.message().await.expect("reply").expect("not ended");
    assert!(matches!(reply.command, Some(Command::Settings(_))));
    (tx, replies)
}

#[tokio::test]
async fn a_producer_of_the_topic_is_asked_to_resolve_a_half_message() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Transaction, 1).await;
    h.topic("other", TopicType::Transaction, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    let (_orders_tx, mut orders) = producer_stream(&mut client, "orders").await;
    let (_other_tx, mut other) = producer_stream(&mut client, "other").await;

    let mut half = message("orders", "T1", b"pay");
    if let Some(p) = half.system_properties.as_mut() {
        p.message_type = MessageType::Transaction as i32;
        p.orphaned_transaction_recovery_duration = Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        });
    }
    let sent = send_one(&mut client, half).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let transaction_id = sent.entries[0].transaction_id.clone();

    let command = tokio::time::timeout(Duration::from_secs(10), orders.message())
        .await
        .expect("a check within the poll interval")
        .expect("stream")
        .expect("not ended");
    let Some(Command::RecoverOrphanedTransactionCommand(check)) = command.command else {
        panic!("a check-back command: {command:?}")
    };
    assert_eq!(check.transaction_id, transaction_id);
    let m = check.message.expect("the half message");
    assert_eq!(m.body, Bytes::from_static(b"pay"));
    let p = m.system_properties.expect("system properties");
    assert_eq!(p.message_id, "T1");
    assert_eq!(
        p.orphaned_transaction_recovery_duration.map(|d| d.seconds),
        Some(5)
    );
    assert!(p.body_digest.is_some());
    let asked = h
        .store
        .last_check_request
        .lock()
        .clone()
        .expect("the store was asked");
    let mut topics: Vec<&str> = asked.topics.iter().map(TopicName::as_str).collect();
    topics.sort_unstable();
    assert_eq!(topics, vec!["orders", "other"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), other.message())
            .await
            .is_err(),
        "a producer of another topic is not asked"
    );

    // The checker's answer commits it, and it is delivered.
    let answer = client
        .end_transaction(req(pb::EndTransactionRequest {
            topic: resource("orders"),
            message_id: "T1".into(),
            transaction_id,
            resolution: pb::TransactionResolution::Commit as i32,
            source: pb::TransactionSource::SourceServerCheck as i32,
            trace_context: String::new(),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&answer.status), Code::Ok as i32);
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Content::Message(m) if m.body == Bytes::from_static(b"pay"))),
        "the committed message is delivered: {items:?}"
    );
}

#[tokio::test]
async fn admin_lists_the_clients_here_and_a_stack_dump_reaches_the_client_and_back() {
    use vela_proto::pb::admin as api;
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    let mut client = h.client().await;
    let (tx, mut replies) = producer_stream(&mut client, "orders").await;
    let mut admin = h.admin().await;

    let listed = admin
        .list_clients(api::ListClientsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.clients.len(), 1, "{listed:?}");
    let me = &listed.clients[0];
    assert_eq!(me.client_id, "test@1@0@x");
    assert_eq!(me.client_type, "producer");
    assert_eq!(me.topics, vec!["orders".to_owned()]);
    assert_eq!(me.proxy, listed.proxy);
    let of_group = admin
        .list_clients(api::ListClientsRequest {
            group: "billing".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(of_group.clients.is_empty(), "a producer is in no group");

    let asking = tokio::spawn({
        let mut admin = admin.clone();
        async move {
            admin
                .client_stack(api::ClientStackRequest {
                    client_id: "test@1@0@x".into(),
                    timeout_ms: 10_000,
                })
                .await
        }
    });
    let command = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the command within the wait")
        .expect("stream")
        .expect("not ended");
    let Some(Command::PrintThreadStackTraceCommand(asked)) = command.command else {
        panic!("a stack dump command: {command:?}")
    };
    tx.send(pb::TelemetryCommand {
        status: Some(pb::Status {
            code: Code::Ok as i32,
            message: String::new(),
        }),
        command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: asked.nonce,
            thread_stack_trace: Some("main: parked".into()),
        })),
    })
    .await
    .expect("answer");
    let dumped = asking.await.expect("task").expect("answered").into_inner();
    assert_eq!(dumped.stack, "main: parked");
    assert_eq!(dumped.code, Code::Ok as i32);

    // A client connected elsewhere is not found here, before any lookup.
    for missing in [
        admin
            .client_stack(api::ClientStackRequest {
                client_id: "elsewhere@1".into(),
                timeout_ms: 0,
            })
            .await
            .expect_err("not here"),
        admin
            .verify_message(api::VerifyMessageRequest {
                client_id: "elsewhere@1".into(),
                topic: "orders".into(),
                message_id: "M1".into(),
                timeout_ms: 0,
            })
            .await
            .expect_err("not here"),
    ] {
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        assert!(missing.message().contains("elsewhere@1"), "{missing:?}");
    }
    let too_long = admin
        .client_stack(api::ClientStackRequest {
            client_id: "test@1@0@x".into(),
            timeout_ms: 61_000,
        })
        .await
        .expect_err("refused");
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    drop(tx);
}
