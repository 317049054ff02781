//! FIFO delivery:
//! - a message of a message group is not delivered while an earlier one of that group is in
//!   flight, while other groups on the same queue keep flowing;
//! - under concurrent producers and consumers, an oracle sees every group in send order and
//!   never two messages of one group in flight at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use vela_sdk::Message;

use crate::harness::{Node, unique};

fn fifo_message(topic: &str, group: &str, seq: u32) -> Message {
    Message::builder(topic)
        .body(format!("{group}:{seq}"))
        .message_group(group)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_in_flight_per_message_group_without_blocking_others() {
    let node = Node::start().await;
    let topic = unique("fifo1");
    let group = unique("fifog1");
    node.admin(&["topic", "create", &topic, "--type", "fifo", "--queues", "1"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group, "--fifo"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    for (g, seq) in [("g1", 0), ("g1", 1), ("g2", 0), ("g1", 2), ("g2", 1)] {
        producer.send(fifo_message(&topic, g, seq)).await.unwrap();
    }
    let consumer = node.consumer(&group, &topic, "*").await;
    let bodies = |ms: &[vela_sdk::MessageView]| {
        ms.iter()
            .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };

    let first = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(bodies(&first), vec!["g1:0", "g2:0"]);
    assert!(
        consumer
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    consumer.ack(&first[1]).await.unwrap(); // g2:0 done, g1:0 still in flight
    let second = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(bodies(&second), vec!["g2:1"]);

    consumer.ack(&first[0]).await.unwrap();
    let third = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(bodies(&third), vec!["g1:1"]);

    consumer.ack(&second[0]).await.unwrap();
    // A redelivery keeps the group's order: let g1:1 expire, it comes back before g1:2.
    node.clock.advance(Duration::from_secs(31));
    let again = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(bodies(&again), vec!["g1:1"]);
    assert_eq!(again[0].delivery_attempt, 2);
    consumer.ack(&again[0]).await.unwrap();
    let last = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(bodies(&last), vec!["g1:2"]);
    node.stop().await;
}

#[derive(Default)]
struct Oracle {
    in_flight: HashSet<String>,
    order: HashMap<String, Vec<u32>>,
    violations: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_holds_under_concurrency() {
    const GROUPS_PER_PRODUCER: u32 = 4;
    const PRODUCERS: u32 = 3;
    const PER_GROUP: u32 = 20;
    let node = Node::start().await;
    let topic = unique("fifo2");
    let group = unique("fifog2");
    node.admin(&["topic", "create", &topic, "--type", "fifo", "--queues", "4"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group, "--fifo"])
        .await
        .unwrap();

    let mut producers = JoinSet::new();
    for p in 0..PRODUCERS {
        let producer = node.producer(&topic).await;
        let topic = topic.clone();
        producers.spawn(async move {
            // Each message group is produced serially by one producer.
            for seq in 0..PER_GROUP {
                for g in 0..GROUPS_PER_PRODUCER {
                    producer
                        .send(fifo_message(&topic, &format!("p{p}g{g}"), seq))
                        .await
                        .unwrap();
                }
            }
            producer.shutdown().await.unwrap();
        });
    }

    let total = (PRODUCERS * GROUPS_PER_PRODUCER * PER_GROUP) as usize;
    let oracle = Arc::new(Mutex::new(Oracle::default()));
    let mut consumers = JoinSet::new();
    for _ in 0..3 {
        let consumer = node.consumer(&group, &topic, "*").await;
        let oracle = oracle.clone();
        consumers.spawn(async move {
            let mut idle = 0;
            while idle < 3 {
                if oracle
                    .lock()
                    .unwrap()
                    .order
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
                    >= total
                {
                    break;
                }
                let batch = consumer.receive(8, Duration::from_secs(60)).await.unwrap();
                if batch.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for m in &batch {
                    let body = String::from_utf8(m.body.to_vec()).unwrap();
                    let (g, seq) = body.split_once(':').unwrap();
                    let mut o = oracle.lock().unwrap();
                    if !o.in_flight.insert(g.to_owned()) {
                        o.violations
                            .push(format!("{g} delivered {seq} while another was in flight"));
                    }
                    o.order
                        .entry(g.to_owned())
                        .or_default()
                        .push(seq.parse().unwrap());
                }
                for m in &batch {
                    let body = String::from_utf8(m.body.to_vec()).unwrap();
                    let g = body.split_once(':').unwrap().0.to_owned();
                    // Mark it done before the ack reaches the server, so the next delivery of
                    // the group can never be seen before this one is released.
                    oracle.lock().unwrap().in_flight.remove(&g);
                    consumer.ack(m).await.unwrap();
                }
            }
            consumer.shutdown().await.unwrap();
        });
    }
    while let Some(r) = producers.join_next().await {
        r.unwrap();
    }
    while let Some(r) = consumers.join_next().await {
        r.unwrap();
    }
    let o = std::mem::take(&mut *oracle.lock().unwrap());
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    assert_eq!(o.order.len(), (PRODUCERS * GROUPS_PER_PRODUCER) as usize);
    for (g, seqs) in &o.order {
        assert_eq!(
            seqs,
            &(0..PER_GROUP).collect::<Vec<_>>(),
            "group {g} out of order"
        );
    }
    node.stop().await;
}
