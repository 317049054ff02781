//! Request-reply: a responder echoes each request to the topic it names; a requester sends
//! three requests and prints each reply.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example request_reply`
//! (topics and groups default to fresh names).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use vela_sdk::{
    ClientConfig, FilterExpression, Message, Producer, Requester, SimpleConsumer, send_reply,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let run = std::process::id();
    let (requests, replies) = (format!("requests-{run}"), format!("replies-{run}"));
    let config = ClientConfig::builder().endpoint(endpoint).build()?;

    // The responder: any consumer of the request topic.
    let responder = SimpleConsumer::builder(config.clone(), format!("responder-{run}"))
        .subscribe(&requests, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    let reply_producer = Producer::builder(config.clone()).build().await?;
    let serving = tokio::spawn(async move {
        while let Ok(got) = responder.receive(32, Duration::from_secs(30)).await {
            for request in got {
                let answer = format!("echo: {}", String::from_utf8_lossy(&request.body));
                if send_reply(&reply_producer, &request, answer).await.is_ok() {
                    let _ = responder.ack(&request).await;
                }
            }
        }
    });

    let requester = Requester::new(config, &replies, format!("requester-{run}")).await?;
    for question in ["one", "two", "three"] {
        let request = Message::builder(&requests).body(question).build()?;
        let reply = requester.request(request, Duration::from_secs(30)).await?;
        println!("REPLY {}", String::from_utf8_lossy(&reply.body));
    }
    requester.shutdown().await?;
    serving.abort();
    Ok(())
}
