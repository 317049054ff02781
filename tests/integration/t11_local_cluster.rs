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
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

use crate::harness::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_loses_nothing_when_a_store_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // Below the ephemeral range (32768 and up), where other tests' sockets land.
    let base: u16 = 20_000 + (std::process::id() % 60) as u16 * 200;
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_vela"))
        .arg("local-cluster")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--base-port")
        .arg(base.to_string())
        .env("RUST_LOG", "error")
        // The children inherit it: the controller leader balances shard leaders every 2 s.
        .env("VELA_CONTROLLER__LEADER_BALANCE_INTERVAL", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // cluster.json appears once every process is started; their readiness is checked below.
    let json = dir.path().join("cluster.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    let file: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&json)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no cluster.json");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _reaper = Reaper(
        ["proxies", "stores", "controllers"]
            .iter()
            .flat_map(|k| file[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["pid"].as_u64())
            .collect(),
    );
    let proxies: Vec<String> = file["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["addr"].as_str().unwrap().to_owned())
        .collect();
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
    crate::t06_crash::wait_ready(base + 121).await;
    crate::t06_crash::wait_ready(base + 122).await;

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
    let victim = &file["stores"][0];
    let pid = victim["pid"].as_u64().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    sending.await.unwrap();
    let sent = acked.lock().unwrap().clone();
    assert_eq!(sent.len(), 200, "some sends never succeeded");

    // Start it again from the recorded command.
    let cmd: Vec<String> = victim["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let mut restarted = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::t06_crash::wait_ready(base + 111).await;

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
        let pid = c["pid"].as_u64().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
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
    for pid in [restarted.id().unwrap(), cluster.id().unwrap()] {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let exit = tokio::time::timeout(Duration::from_secs(90), cluster.wait())
        .await
        .expect("local-cluster stops within 90 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "local-cluster exited with {exit}");
    let exit = tokio::time::timeout(Duration::from_secs(30), restarted.wait())
        .await
        .expect("the restarted store stops")
        .unwrap();
    assert!(exit.success(), "the restarted store exited with {exit}");
}

/// `vela admin cluster status --output json` through `proxy`.
pub(crate) fn cluster_status(proxy: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args([
            "admin", "--server", proxy, "cluster", "status", "--output", "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Kills the cluster's processes if the test ends early (a panic): killing local-cluster
/// itself would leave its children running.
pub(crate) struct Reaper(pub(crate) Vec<u64>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in &self.0 {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}
