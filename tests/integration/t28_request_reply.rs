//! Request-reply in the SDK (`vela_sdk::Requester`): a request carries a correlation id and
//! the topic to answer on; a responder (an ordinary consumer) answers with `send_reply`; each
//! of several concurrent requests gets its own reply; no reply in time is a clean error.

use std::time::Duration;

use vela_sdk::{CORRELATION_ID_PROPERTY, Error, Message, Requester, reply_to, send_reply};

use crate::harness::{Node, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_its_own_reply_or_a_clean_timeout() {
    let node = Node::start().await;
    let (requests, replies) = (unique("requests"), unique("replies"));
    // The responder: echoes each request's body to the topic it names.
    let responder = node.consumer(&unique("responder"), &requests, "*").await;
    let responder_producer = node.producer(&replies).await;
    let serving = tokio::spawn(async move {
        loop {
            let got = match responder.receive(32, Duration::from_secs(30)).await {
                Ok(got) => got,
                Err(_) => return,
            };
            for request in got {
                let body = format!("echo: {}", String::from_utf8_lossy(&request.body));
                send_reply(&responder_producer, &request, body)
                    .await
                    .unwrap();
                responder.ack(&request).await.unwrap();
            }
        }
    });

    let requester = Requester::new(node.client_config(), &replies, unique("requester"))
        .await
        .unwrap();
    let ask = |body: String| Message::builder(&requests).body(body).build().unwrap();
    let reply = requester
        .request(ask("ping".into()), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"echo: ping");
    assert!(reply.properties.contains_key(CORRELATION_ID_PROPERTY));

    // Concurrent requests each get their own reply.
    let asked = (0..5).map(|i| requester.request(ask(format!("q{i}")), Duration::from_secs(20)));
    let answers = futures::future::join_all(asked).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&answer.unwrap().body),
            format!("echo: q{i}")
        );
    }

    // Nobody answers on this topic: a clean error when the time is up.
    let unanswered = Message::builder(unique("nobody-listens"))
        .body("hello?")
        .build()
        .unwrap();
    let err = requester
        .request(unanswered, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoReply { .. }), "{err}");
    assert!(!err.is_retryable());

    // A message that is no request cannot be answered.
    let plain = vela_sdk::MessageView::detached(&requests, "01AB");
    assert!(matches!(
        reply_to(&plain, "x"),
        Err(Error::InvalidArgument(_))
    ));

    requester.shutdown().await.unwrap();
    assert!(matches!(
        requester
            .request(ask("late".into()), Duration::from_secs(1))
            .await,
        Err(Error::Shutdown)
    ));
    serving.abort();
    node.stop().await;
}
