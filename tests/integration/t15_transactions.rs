//! Transactions through `vela-sdk` against a standalone node, checked by an oracle of what was
//! committed: a committed transaction is delivered exactly once, a rolled-back one never; one
//! left open is checked back with the producer's checker, whose answer commits or rolls it
//! back; one nobody answers is rolled back by the store after its last check (never
//! delivered, and checked no more than the policy allows).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use vela_sdk::{Message, Producer, TransactionResolution};

use crate::harness::{Node, drain, unique};

/// How often the checker was asked about each body.
type Asked = Arc<Mutex<HashMap<String, u32>>>;

async fn producer(node: &Node, topic: &str, asked: Asked, answer: bool) -> Producer {
    Producer::builder(node.client_config())
        .topics([topic])
        .transaction_checker(move |message| {
            let asked = asked.clone();
            async move {
                let body = String::from_utf8_lossy(&message.body).into_owned();
                *asked.lock().unwrap().entry(body.clone()).or_default() += 1;
                match (answer, body.starts_with("commit")) {
                    (false, _) => TransactionResolution::Unknown,
                    (true, true) => TransactionResolution::Commit,
                    (true, false) => TransactionResolution::Rollback,
                }
            }
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_end_by_the_producer_its_checker_or_the_store() {
    let node = Node::start_with(|c| {
        // Long enough for the client to end its transactions first, even on a loaded machine.
        c.store.transaction_check_after = Duration::from_secs(3);
        c.store.transaction_check_interval = Duration::from_secs(2);
        c.store.transaction_check_max = 2;
    })
    .await;
    let (topic, orphans) = (unique("tx"), unique("tx-orphans"));
    let asked: Asked = Arc::default();
    let answering = producer(&node, &topic, asked.clone(), true).await;
    let silent = producer(&node, &orphans, asked.clone(), false).await;
    let consumer = node.consumer(&unique("tx-g"), &topic, "*").await;
    let orphan_consumer = node.consumer(&unique("tx-og"), &orphans, "*").await;
    assert!(
        drain(&consumer, 1, true, 1).await.is_empty(),
        "primes the group"
    );
    assert!(drain(&orphan_consumer, 1, true, 1).await.is_empty());

    let half = |topic: &str, body: &str| {
        Message::builder(topic)
            .body(body.to_owned())
            .build()
            .unwrap()
    };
    let mut committed = answering.begin_transaction().unwrap();
    committed.send(half(&topic, "client-commit")).await.unwrap();
    let mut rolled_back = answering.begin_transaction().unwrap();
    rolled_back
        .send(half(&topic, "client-rollback"))
        .await
        .unwrap();
    committed.commit().await.unwrap();
    rolled_back.rollback().await.unwrap();

    // Left open: the checker is asked and answers.
    let mut open = answering.begin_transaction().unwrap();
    open.send(half(&topic, "commit-on-check")).await.unwrap();
    drop(open);
    let mut open = answering.begin_transaction().unwrap();
    open.send(half(&topic, "rollback-on-check")).await.unwrap();
    drop(open);
    // Nobody answers: the store rolls it back after two checks.
    let mut orphan = silent.begin_transaction().unwrap();
    let orphan_receipt = orphan.send(half(&orphans, "orphan")).await.unwrap();
    let orphan_sent = tokio::time::Instant::now();
    assert!(orphan_receipt.transaction_id.is_some());
    drop(orphan);

    let got = drain(&consumer, 2, true, 8).await;
    let mut bodies: Vec<String> = got
        .values()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec!["client-commit", "commit-on-check"]);

    // Past the orphan's last check (3 s + 2 × 2 s) and then some: never delivered.
    tokio::time::sleep_until(orphan_sent + Duration::from_secs(9)).await;
    assert!(
        drain(&consumer, 1, true, 2).await.is_empty(),
        "delivered once"
    );
    assert!(
        drain(&orphan_consumer, 1, true, 2).await.is_empty(),
        "the orphan was delivered"
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.get("commit-on-check"), Some(&1));
    assert_eq!(asked.get("rollback-on-check"), Some(&1));
    assert!(!asked.contains_key("client-commit") && !asked.contains_key("client-rollback"));
    let orphan_checks = asked.get("orphan").copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&orphan_checks),
        "the orphan was checked {orphan_checks} times (policy: at most 2)"
    );

    // The transaction API refuses what it cannot do.
    let plain = node.producer(&topic).await;
    assert!(
        plain.begin_transaction().is_err(),
        "no checker, no transactions"
    );
    let mut twice = answering.begin_transaction().unwrap();
    twice.send(half(&topic, "commit-a")).await.unwrap();
    assert!(
        twice.send(half(&topic, "commit-b")).await.is_err(),
        "one message a transaction"
    );
    twice.commit().await.unwrap();
    let fifo = Message::builder(&topic)
        .body("x")
        .message_group("g")
        .build()
        .unwrap();
    assert!(
        answering
            .begin_transaction()
            .unwrap()
            .send(fifo)
            .await
            .is_err()
    );
    node.stop().await;
}
