//! A transactional producer: one transaction committed by the producer, one left open and
//! committed when the server checks it back with the producer's checker (about 6 s later with
//! the default `store.transaction_check_after`).
//!
//! `RMQ_ENDPOINT=127.0.0.1:8081 cargo run -p vela-sdk --example transaction`
//! (the topic defaults to a fresh name, auto-created as `mixed`; set RMQ_TOPIC to pick one of
//! type `transaction`).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use tokio::sync::mpsc;
use vela_sdk::{ClientConfig, Message, Producer, TransactionResolution};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("RMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let topic = std::env::var("RMQ_TOPIC")
        .unwrap_or_else(|_| format!("transaction-{}", std::process::id()));
    let config = ClientConfig::builder().endpoint(endpoint).build()?;

    let (asked, mut checks) = mpsc::unbounded_channel();
    let producer = Producer::builder(config)
        .topics([&topic])
        // Asked about transactions left open: look up what the local transaction did.
        .transaction_checker(move |message| {
            let asked = asked.clone();
            async move {
                let _ = asked.send(message.message_id.clone());
                TransactionResolution::Commit
            }
        })
        .build()
        .await?;

    let mut transaction = producer.begin_transaction()?;
    let receipt = transaction
        .send(Message::builder(&topic).body("paid").build()?)
        .await?;
    // ... the local transaction runs here ...
    transaction.commit().await?;
    println!("COMMITTED {}", receipt.message_id);

    let mut open = producer.begin_transaction()?;
    let receipt = open
        .send(Message::builder(&topic).body("maybe paid").build()?)
        .await?;
    drop(open); // as if the producer crashed before ending it
    println!(
        "LEFT OPEN {}; waiting for the server's check-back",
        receipt.message_id
    );
    match tokio::time::timeout(Duration::from_secs(60), checks.recv()).await {
        Ok(Some(id)) => println!("CHECKED {id}: committed"),
        _ => println!("no check-back within 60 s"),
    }
    producer.shutdown().await?;
    Ok(())
}
