//! The registry of client streams and answers matched by nonce.

use super::*;

fn settings_of_consumer(group: &str, topic: &str) -> pb::Settings {
    pb::Settings {
        client_type: Some(pb::ClientType::PushConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: Some(pb::Resource {
                name: group.into(),
                ..Default::default()
            }),
            subscriptions: vec![pb::SubscriptionEntry {
                topic: Some(pb::Resource {
                    name: topic.into(),
                    ..Default::default()
                }),
                expression: None,
            }],
            ..Default::default()
        })),
        user_agent: Some(pb::Ua {
            language: pb::Language::Java as i32,
            version: "5.0.7".into(),
            platform: String::new(),
            hostname: "host-a".into(),
        }),
        ..Default::default()
    }
}

fn settings_of_producer(topic: &str) -> pb::Settings {
    pb::Settings {
        client_type: Some(pb::ClientType::Producer as i32),
        pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
            topics: vec![pb::Resource {
                name: topic.into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

type Inbox = mpsc::Receiver<Result<pb::TelemetryCommand, Status>>;

fn stream(id: &str, settings: &pb::Settings, now_ms: i64) -> (ClientStream, Inbox) {
    let (tx, rx) = mpsc::channel(4);
    (
        ClientStream::from_settings(id, settings, "", None, tx, now_ms),
        rx,
    )
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("topic")
}

#[test]
fn settings_say_who_a_client_is_and_later_settings_keep_its_connection_time() {
    let clients = Clients::default();
    let (consumer, _inbox) = stream("c1", &settings_of_consumer("g1", "t1"), 5);
    assert_eq!(consumer.role, Role::Consumer);
    assert_eq!(consumer.group.as_deref(), Some("g1"));
    assert_eq!(consumer.topics, vec![topic("t1")]);
    assert_eq!(consumer.client_type, Some(pb::ClientType::PushConsumer));
    let first = clients.stream_id();
    clients.register(first, consumer.clone());
    let mut resent = consumer;
    resent.connected_ms = 9;
    clients.register(first, resent);
    let (producer, _producer_inbox) = stream("p1", &settings_of_producer("t2"), 7);
    clients.register(clients.stream_id(), producer);

    let listed: Vec<(String, i64)> = clients
        .list()
        .into_iter()
        .map(|c| (c.client_id, c.connected_ms))
        .collect();
    assert_eq!(listed, vec![("c1".into(), 5), ("p1".into(), 7)]);
    assert_eq!(clients.published_topics(), vec![topic("t2")]);
    assert!(
        clients.pick_producer(&topic("t1")).is_none(),
        "a consumer of t1 is no producer of it"
    );
    assert_eq!(
        clients.pick_producer(&topic("t2")).map(|(id, _)| id),
        Some("p1".to_owned())
    );
    clients.remove(first);
    assert!(!clients.holds("c1"));
    assert!(clients.holds("p1"));
}

#[tokio::test]
async fn an_answer_reaches_the_caller_that_sent_its_nonce() {
    let clients = std::sync::Arc::new(Clients::default());
    let (consumer, mut inbox) = stream("c1", &settings_of_consumer("g1", "t1"), 1);
    clients.register(clients.stream_id(), consumer);

    let asking = tokio::spawn({
        let clients = clients.clone();
        async move {
            clients
                .ask(
                    "c1",
                    |nonce| {
                        Command::PrintThreadStackTraceCommand(pb::PrintThreadStackTraceCommand {
                            nonce,
                        })
                    },
                    Duration::from_secs(30),
                )
                .await
        }
    });
    let sent = inbox.recv().await.expect("command").expect("not an error");
    let Some(Command::PrintThreadStackTraceCommand(asked)) = sent.command else {
        panic!("unexpected command {sent:?}");
    };
    let stranger = pb::TelemetryCommand {
        status: None,
        command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: "someone else's".into(),
            thread_stack_trace: Some("no".into()),
        })),
    };
    assert!(
        !clients.answered(&stranger),
        "an unknown nonce answers nobody"
    );
    let answer = pb::TelemetryCommand {
        status: None,
        command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: asked.nonce.clone(),
            thread_stack_trace: Some("main: parked".into()),
        })),
    };
    assert!(clients.answered(&answer));
    let got = asking.await.expect("task").expect("answered");
    assert_eq!(got, answer);
    assert!(
        !clients.answered(&answer),
        "a nonce is answered once; a repeat is ignored"
    );
}

#[tokio::test]
async fn a_client_that_does_not_answer_times_out_and_its_nonce_is_forgotten() {
    let clients = Clients::default();
    let (consumer, mut inbox) = stream("c1", &settings_of_consumer("g1", "t1"), 1);
    clients.register(clients.stream_id(), consumer);
    let asked = clients
        .ask(
            "c1",
            |nonce| {
                Command::VerifyMessageCommand(pb::VerifyMessageCommand {
                    nonce,
                    message: None,
                })
            },
            Duration::from_millis(100),
        )
        .await;
    assert_eq!(
        asked,
        Err(AskError::NoAnswer("c1".into(), Duration::from_millis(100)))
    );
    assert!(clients.pending.lock().is_empty());
    let sent = inbox.recv().await.expect("command").expect("not an error");
    let Some(Command::VerifyMessageCommand(command)) = sent.command else {
        panic!("unexpected command {sent:?}");
    };
    // Node echoes the command itself with NOT_IMPLEMENTED; too late, it answers nobody.
    let late = pb::TelemetryCommand {
        status: None,
        command: Some(Command::VerifyMessageCommand(command)),
    };
    assert!(!clients.answered(&late));

    let nobody = clients
        .ask(
            "c2",
            |nonce| {
                Command::PrintThreadStackTraceCommand(pb::PrintThreadStackTraceCommand { nonce })
            },
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(nobody, Err(AskError::NotHere("c2".into())));
}

#[tokio::test]
async fn a_client_whose_stream_closed_is_not_held() {
    let clients = Clients::default();
    let (consumer, inbox) = stream("c1", &settings_of_consumer("g1", "t1"), 1);
    clients.register(clients.stream_id(), consumer);
    drop(inbox);
    assert!(!clients.holds("c1"), "a closed stream holds nobody");
    assert!(clients.list().is_empty());
}

#[tokio::test]
async fn the_node_client_echoing_a_verification_answers_it() {
    let clients = std::sync::Arc::new(Clients::default());
    let (consumer, mut inbox) = stream("n1", &settings_of_consumer("g1", "t1"), 1);
    clients.register(clients.stream_id(), consumer);
    let asking = tokio::spawn({
        let clients = clients.clone();
        async move {
            clients
                .ask(
                    "n1",
                    |nonce| {
                        Command::VerifyMessageCommand(pb::VerifyMessageCommand {
                            nonce,
                            message: None,
                        })
                    },
                    Duration::from_secs(30),
                )
                .await
        }
    });
    let sent = inbox.recv().await.expect("command").expect("not an error");
    let echo = pb::TelemetryCommand {
        status: Some(pb::Status {
            code: pb::Code::NotImplemented as i32,
            message: String::new(),
        }),
        command: sent.command,
    };
    assert!(clients.answered(&echo));
    let got = asking.await.expect("task").expect("answered");
    assert_eq!(
        got.status.map(|s| s.code),
        Some(pb::Code::NotImplemented as i32)
    );
}
