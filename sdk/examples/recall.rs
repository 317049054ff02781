//! Sends a delay message due in a minute, then recalls it before its time: no consumer ever
//! gets it. A second recall of the same handle fails with NOT_FOUND.
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example recall`
//! (the topic defaults to a fresh name; set RMQ_TOPIC to pick one).
#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime};

use vela_sdk::{ClientConfig, Message, Producer, StatusCode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let topic =
        std::env::var("RMQ_TOPIC").unwrap_or_else(|_| format!("recall-{}", std::process::id()));
    let config = ClientConfig::builder().endpoint(endpoint).build()?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;

    let due = SystemTime::now() + Duration::from_secs(60);
    let receipt = producer
        .send(
            Message::builder(&topic)
                .body("a reminder nobody needs any more")
                .delivery_timestamp(due)
                .build()?,
        )
        .await?;
    let handle = receipt
        .recall_handle
        .ok_or("the server answered no recall handle for a delay message")?;
    println!("SENT {} due in 60 s", receipt.message_id);

    let recalled = producer.recall(&topic, &handle).await?;
    println!("RECALLED {recalled}");
    match producer.recall(&topic, &handle).await {
        Err(e) if e.code() == Some(StatusCode::NotFound) => {
            println!("a second recall finds nothing: {e}");
        }
        other => return Err(format!("a second recall answered {other:?}").into()),
    }
    producer.shutdown().await?;
    Ok(())
}
