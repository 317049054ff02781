//! Two consumer instances of a broadcast group each receive every message (ADR 0029). Create
//! the group first: `vela admin group create refresh --broadcast`.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example broadcast`
//! (RMQ_GROUP names the group, default `refresh`; the topic is a fresh name).
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let group = std::env::var("RMQ_GROUP").unwrap_or_else(|_| "refresh".into());
    let topic = format!("broadcast-{}", std::process::id());
    let config = ClientConfig::builder().endpoint(endpoint).build()?;
    let producer = Producer::builder(config.clone())
        .topics([&topic])
        .build()
        .await?;
    // Each instance has a name: restarted under it, it goes on where it stopped.
    let mut instances = Vec::new();
    for name in ["node-a", "node-b"] {
        let consumer = SimpleConsumer::builder(config.clone(), &group)
            .subscribe(&topic, FilterExpression::tag("*"))
            .instance_name(name)
            .await_duration(Duration::from_secs(2))
            .build()
            .await?;
        instances.push((name, consumer));
    }
    for i in 0..3 {
        let message = Message::builder(&topic)
            .body(format!("price list v{i}"))
            .build()?;
        producer.send(message).await?;
    }
    for (name, consumer) in &instances {
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 3 && Instant::now() < deadline {
            for message in consumer.receive(16, Duration::from_secs(30)).await? {
                consumer.ack(&message).await?;
                got.insert(String::from_utf8_lossy(&message.body).into_owned());
            }
        }
        println!("{name} received {got:?}");
        if got.len() < 3 {
            return Err(format!(
                "{name} got {} of 3: is {group} a broadcast group (`vela admin group create \
                 {group} --broadcast`)?",
                got.len()
            )
            .into());
        }
    }
    for (_, consumer) in &instances {
        consumer.shutdown().await?;
    }
    producer.shutdown().await?;
    Ok(())
}
