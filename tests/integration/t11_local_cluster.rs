//! `vela local-cluster` as a newcomer uses it: the whole cluster as child processes, clients on
//! either proxy.
//! - sends go through proxy 1, receives and acks through proxy 2 (receipt handles work on any
//!   proxy);
//! - a store process is SIGKILLed while a producer runs: the producer carries on (retrying
//!   what failed during the election), nothing acknowledged is lost, and the store is started
//!   again from the `cmd` that `cluster.json` records;
//! - it catches up and the controller moves shard leaders until each store leads one
//!   (`vela admin cluster status --output json`);
//! - with every controller killed, sends and receives of the topic carry on;
//! - SIGTERM stops every process and local-cluster exits 0.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

use crate::harness::unique;
use crate::local_cluster::{LocalCluster, cluster_status, kill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_loses_nothing_when_a_store_process_is_killed() {
    // The children inherit it: the controller leader balances shard leaders every 2 s.
    let cluster =
        LocalCluster::start(&[], &[("VELA_CONTROLLER__LEADER_BALANCE_INTERVAL", "2s")]).await;
    let (file, proxies) = (&cluster.file, &cluster.proxies);
    assert_eq!(proxies.len(), 2);
    assert_eq!(file["stores"].as_array().unwrap().len(), 3);
    assert_eq!(file["controllers"].as_array().unwrap().len(), 3);
    for p in file["stores"].as_array().unwrap() {
        assert!(p["data_dir"].is_string() && p["pid"].as_u64().unwrap() > 0);
        assert!(
            !p["cmd"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--bootstrap"),
            "a recorded cmd must restart, never bootstrap"
        );
    }

    // The admin CLI through a proxy says it is a cluster.
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["admin", "--server", &proxies[1], "cluster"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("cluster"), "{info}");
    assert!(!info.contains("standalone"), "{info}");

    let topic = unique("lc");
    let producer_config = ClientConfig::builder()
        .endpoint(&proxies[0])
        .build()
        .unwrap();
    let producer = Producer::builder(producer_config)
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sending = {
        let (acked, topic) = (acked.clone(), topic.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let body = format!("lc-{i:04}");
                // A send that fails while a leader is being elected is retried (it may then be
                // stored twice: at-least-once).
                for _ in 0..50 {
                    let m = Message::builder(&topic).body(body.clone()).build().unwrap();
                    if producer.send(m).await.is_ok() {
                        acked.lock().unwrap().insert(body.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    while acked.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9 store 1.
    cluster.kill_store(0);
    sending.await.unwrap();
    let sent = acked.lock().unwrap().clone();
    assert_eq!(sent.len(), 200, "some sends never succeeded");

    // Start it again from the recorded command.
    let restarted = cluster.restart_store(0);
    crate::t06_crash::wait_ready(cluster.base + 111).await;

    // It catches up and the leaders are spread again: one shard led by each store, every
    // replica caught up (what `vela admin cluster status --output json` shows).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = cluster_status(&proxies[0]);
        let balanced = status["stores"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|n| n["leads"] == 1));
        let healthy = status["shards"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|sh| sh["health"] == "ok"));
        let proxies_seen = status["proxies"].as_array().is_some_and(|p| p.len() == 2);
        if balanced && healthy && proxies_seen {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "leaders not rebalanced within 60 s of the restart: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["mode"], "cluster");
    let controllers = status["controllers"].as_array().unwrap();
    assert_eq!(controllers.len(), 3);
    assert_eq!(
        controllers.iter().filter(|c| c["role"] == "leader").count(),
        1,
        "{status:#}"
    );
    for shard in status["shards"].as_array().unwrap() {
        assert_eq!(shard["replicas"].as_array().unwrap().len(), 3, "{shard}");
    }

    let consumer_config = ClientConfig::builder()
        .endpoint(&proxies[1])
        .build()
        .unwrap();
    let consumer = SimpleConsumer::builder(consumer_config, unique("lc-group"))
        .subscribe(&topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut empty = 0;
    while empty < 2 {
        let batch = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            consumer.ack(&m).await.unwrap();
            seen.insert(String::from_utf8_lossy(&m.body).into_owned());
        }
    }
    let lost: Vec<_> = sent.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged sends lost: {lost:?}");

    // Data traffic never depends on the controller: with every controller process killed,
    // sends and receives of a known topic carry on past the proxies' metadata cache lifetime.
    for c in file["controllers"].as_array().unwrap() {
        kill("-9", c["pid"].as_u64().unwrap());
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let producer = Producer::builder(
        ClientConfig::builder()
            .endpoint(&proxies[0])
            .build()
            .unwrap(),
    )
    .topics([topic.clone()])
    .build()
    .await
    .expect("a producer starts with no controller up");
    let mut headless = HashSet::new();
    for i in 0..20 {
        let body = format!("headless-{i:02}");
        let m = Message::builder(&topic).body(body.clone()).build().unwrap();
        producer
            .send(m)
            .await
            .expect("a send with no controller up");
        headless.insert(body);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !headless.is_empty() {
        assert!(
            Instant::now() < deadline,
            "not received with no controller up: {headless:?}"
        );
        for m in consumer.receive(32, Duration::from_secs(30)).await.unwrap() {
            consumer
                .ack(&m)
                .await
                .expect("an ack with no controller up");
            headless.remove(String::from_utf8_lossy(&m.body).as_ref());
        }
    }

    // Stop everything: the restarted store (ours) and the cluster (SIGTERM).
    cluster.stop(restarted).await;
}
