//! Sends a few messages and consumes them back.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example quickstart`
//! (topic and group default to fresh names; set RMQ_TOPIC / RMQ_GROUP to pick them).
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let run = std::process::id();
    let topic = std::env::var("RMQ_TOPIC").unwrap_or_else(|_| format!("quickstart-{run}"));
    let group = std::env::var("RMQ_GROUP").unwrap_or_else(|_| format!("quickstart-{run}-g"));
    let config = ClientConfig::builder().endpoint(endpoint).build()?;

    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    // One empty poll first, so the group exists before anything is sent.
    consumer.receive(1, Duration::from_secs(15)).await?;

    let producer = Producer::builder(config).topics([&topic]).build().await?;
    let mut sent = HashSet::new();
    let receipt = producer
        .send(Message::builder(&topic).body("one").tag("A").build()?)
        .await?;
    println!("SENT {} offset {}", receipt.message_id, receipt.offset);
    sent.insert(receipt.message_id);
    let pending = producer.send_async(Message::builder(&topic).body("two").keys(["k2"]).build()?);
    let batch = vec![
        Message::builder(&topic).body("three").build()?,
        Message::builder(&topic)
            .body("four")
            .property("p", "v")
            .build()?,
    ];
    for receipt in producer.send_batch(batch).await? {
        println!(
            "SENT {} offset {} (batch)",
            receipt.message_id, receipt.offset
        );
        sent.insert(receipt.message_id);
    }
    let receipt = pending.await?;
    println!(
        "SENT {} offset {} (async)",
        receipt.message_id, receipt.offset
    );
    sent.insert(receipt.message_id);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !sent.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("never received {sent:?}").into());
        }
        for mut message in consumer.receive(16, Duration::from_secs(15)).await? {
            consumer
                .change_invisible_duration(&mut message, Duration::from_secs(30))
                .await?;
            consumer.ack(&message).await?;
            println!(
                "ACKED {} {:?} attempt {}",
                message.message_id,
                String::from_utf8_lossy(&message.body),
                message.delivery_attempt
            );
            sent.remove(&message.message_id);
        }
    }
    consumer.shutdown().await?;
    producer.shutdown().await?;
    println!("DONE");
    Ok(())
}
