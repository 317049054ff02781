//! Consumes a topic with a `PushConsumer`: the listener is called for each message, success
//! acknowledges it, failure retries it after the group's back-off. Sends a few messages first,
//! one of which fails its first delivery, and stops once each was processed.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example push_consumer`
//! (topic and group default to fresh names; set RMQ_TOPIC / RMQ_GROUP to pick them).
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vela_sdk::{ClientConfig, ConsumeResult, FilterExpression, Message, Producer, PushConsumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let run = std::process::id();
    let topic = std::env::var("RMQ_TOPIC").unwrap_or_else(|_| format!("push-example-{run}"));
    let group = std::env::var("RMQ_GROUP").unwrap_or_else(|_| format!("push-example-{run}-g"));
    let config = ClientConfig::builder().endpoint(endpoint).build()?;

    let done: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen = done.clone();
    let consumer = PushConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .consumption_concurrency(4)
        .listener(move |message| {
            let seen = seen.clone();
            async move {
                let body = String::from_utf8_lossy(&message.body).into_owned();
                // "two" fails its first delivery: it comes back after the group's back-off.
                if body == "two" && message.delivery_attempt == 1 {
                    println!("FAILED {} (attempt 1)", message.message_id);
                    return ConsumeResult::Failure;
                }
                println!(
                    "CONSUMED {} {body} (attempt {})",
                    message.message_id, message.delivery_attempt
                );
                seen.lock().map(|mut s| s.insert(body)).ok();
                ConsumeResult::Success
            }
        })
        .build()
        .await?;

    let producer = Producer::builder(config).topics([&topic]).build().await?;
    for body in ["one", "two", "three"] {
        let receipt = producer
            .send(Message::builder(&topic).body(body).build()?)
            .await?;
        println!("SENT {} {body}", receipt.message_id);
    }
    for _ in 0..300 {
        if done.lock().map(|s| s.len()).unwrap_or(0) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Waits for listener calls in progress, then leaves.
    consumer.shutdown().await?;
    producer.shutdown().await?;
    let consumed = done.lock().map(|s| s.len()).unwrap_or(0);
    if consumed != 3 {
        return Err(format!("consumed {consumed} of 3 messages").into());
    }
    println!("OK");
    Ok(())
}
