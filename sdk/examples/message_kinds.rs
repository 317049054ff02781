//! FIFO, delay and priority messages: three in one message group come back in order, a delay
//! message comes when it is due, and (with RMQ_PRIORITY_TOPIC naming a topic created with
//! `vela admin topic create T --type priority --queues 4`) the higher priority first.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example message_kinds`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime};

use vela_sdk::{ClientConfig, FilterExpression, Message, MessageView, Producer, SimpleConsumer};

/// Receives (and acks) `want` messages of `topic` with a fresh group, in arrival order.
async fn receive_all(
    config: &ClientConfig,
    topic: &str,
    want: usize,
    patience: Duration,
) -> Result<Vec<MessageView>, Box<dyn std::error::Error>> {
    let group = format!("{topic}-reader");
    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + patience;
    while got.len() < want && Instant::now() < deadline {
        for message in consumer.receive(16, Duration::from_secs(30)).await? {
            consumer.ack(&message).await?;
            got.push(message);
        }
    }
    consumer.shutdown().await?;
    Ok(got)
}

fn body(m: &MessageView) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let run = std::process::id();
    let config = ClientConfig::builder().endpoint(endpoint).build()?;
    let (fifo, delay) = (format!("kinds-{run}-fifo"), format!("kinds-{run}-delay"));
    let priority = std::env::var("RMQ_PRIORITY_TOPIC").ok();
    let mut topics = vec![fifo.clone(), delay.clone()];
    topics.extend(priority.clone());
    let producer = Producer::builder(config.clone())
        .topics(topics)
        .build()
        .await?;

    // FIFO: one message group's messages stay in send order.
    for step in ["created", "paid", "shipped"] {
        let message = Message::builder(&fifo)
            .message_group("order-42")
            .body(step)
            .build()?;
        producer.send(message).await?;
    }
    let got = receive_all(&config, &fifo, 3, Duration::from_secs(20)).await?;
    println!(
        "FIFO order-42: {:?}",
        got.iter().map(body).collect::<Vec<_>>()
    );

    // Delay: invisible until its delivery time.
    let sent = Instant::now();
    let message = Message::builder(&delay)
        .delivery_timestamp(SystemTime::now() + Duration::from_secs(3))
        .body("reminder")
        .build()?;
    producer.send(message).await?;
    let got = receive_all(&config, &delay, 1, Duration::from_secs(30)).await?;
    println!(
        "delay: {:?} after {:.1} s",
        got.iter().map(body).collect::<Vec<_>>(),
        sent.elapsed().as_secs_f64()
    );

    // Priority: sent low first, received high first.
    if let Some(topic) = priority {
        for (text, level) in [("low", 0), ("low", 0), ("urgent", 3)] {
            let message = Message::builder(&topic)
                .priority(level)
                .body(text)
                .build()?;
            producer.send(message).await?;
        }
        let got = receive_all(&config, &topic, 3, Duration::from_secs(20)).await?;
        println!("priority: {:?}", got.iter().map(body).collect::<Vec<_>>());
    } else {
        println!("priority: set RMQ_PRIORITY_TOPIC to a topic of type priority to see it");
    }
    producer.shutdown().await?;
    Ok(())
}
