//! Draining a store node of a `vela local-cluster` with four store nodes (ADR 0014): a topic of
//! three replicas lives on shards placed on three of the four nodes each; `vela admin store
//! drain <id> --wait` moves every replica on that node to the node that had none (learner,
//! caught up, voter, then the old replica is deleted) while messages keep flowing, hands every
//! leadership over (the configured shards, which every node holds, stay on it as followers),
//! and every message sent before, during and after comes back.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use vela_sdk::{ClientConfig, Message, Producer};

use crate::harness::unique;
use crate::local_cluster::{LocalCluster, cluster_status, receive_all};
use crate::t12_placement::placed_shards;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_store_hands_its_replicas_over_and_nothing_is_lost() {
    let cluster = LocalCluster::start(
        &["--controllers", "1", "--stores", "4"],
        &[("VELA_CONTROLLER__LEADER_BALANCE_INTERVAL", "2s")],
    )
    .await;
    let proxies = &cluster.proxies;
    let admin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .args(["admin", "--server", &proxies[1]])
            .args(args)
            .output()
            .unwrap()
    };
    let topic = unique("drained");
    let created = admin(&[
        "topic",
        "create",
        &topic,
        "--replicas",
        "3",
        "--queues",
        "8",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let placed = placed_shards(&proxies[1], &topic);
    assert_eq!(placed.len(), 4, "one shard per store node: {placed:?}");
    let node = cluster.file["stores"][0]["id"].as_u64().unwrap();

    let producer = Producer::builder(
        ClientConfig::builder()
            .endpoint(&proxies[0])
            .build()
            .unwrap(),
    )
    .topics([topic.clone()])
    .build()
    .await
    .unwrap();
    let mut sent = HashSet::new();
    let mut send = async |body: String| {
        let m = Message::builder(&topic).body(body.clone()).build().unwrap();
        producer.send(m).await.expect("a send");
        sent.insert(body);
    };
    for i in 0..40 {
        send(format!("before-{i:02}")).await;
    }

    // Drained while a producer keeps sending.
    let server = proxies[1].clone();
    let drain = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .args(["admin", "--server", &server, "store", "drain"])
            .arg(node.to_string())
            .args(["--wait", "--timeout", "3m"])
            .output()
            .unwrap()
    });
    let mut i = 0;
    // Asked again while the replicas move: it names what is still moving, never "done".
    let mut asked_again = None;
    while !drain.is_finished() {
        send(format!("during-{i:03}")).await;
        i += 1;
        if i == 20 {
            let again = admin(&["store", "drain", &node.to_string()]);
            assert!(again.status.success());
            let again = String::from_utf8_lossy(&again.stdout).into_owned();
            if again.contains("holds no placed replica") {
                // Already done (a fast machine): then it must be true.
                assert!(placed_on(&cluster_status(&proxies[0]), node, &placed).is_empty());
            } else {
                asked_again = Some(again);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = drain.await.unwrap();
    let said = String::from_utf8_lossy(&drained.stdout);
    assert!(
        drained.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        said.contains(&format!("store node {node} is")) && said.contains("draining"),
        "{said}"
    );
    if let Some(again) = asked_again {
        let both = format!("{said}{again}");
        assert!(
            both.contains("move to other store nodes")
                && both.contains("is already draining: the replicas of shard(s)"),
            "{both}"
        );
    }
    assert!(said.contains("holds none of them anymore"), "{said}");
    for i in 0..20 {
        send(format!("after-{i:02}")).await;
    }

    // The cluster status agrees: no placed shard has a replica on the node, each is led by
    // one of three replicas.
    let status = cluster_status(&proxies[0]);
    for shard in status["shards"].as_array().unwrap() {
        if !placed.contains(&shard["shard"].as_u64().unwrap()) {
            continue;
        }
        let replicas: Vec<u64> = shard["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["node"].as_u64().unwrap())
            .collect();
        assert!(!replicas.contains(&node), "{shard}");
        assert_eq!(replicas.len(), 3, "{shard}");
        assert!(shard["leader"].is_u64(), "{shard}");
    }
    // The node deleted its replicas' data.
    let shards_dir = cluster.store_dir(0).join("shards");
    for shard in &placed {
        assert!(
            !shards_dir.join(shard.to_string()).exists(),
            "shard {shard} is still on disk at node {node}"
        );
    }
    // Draining again moves nothing; an unknown node is one readable line.
    let again = admin(&["store", "drain", &node.to_string()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("holds no placed replica"));
    let unknown = admin(&["store", "drain", "99"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("store node 99 is not one of the cluster's store nodes")
            && err.trim().lines().count() == 1,
        "{err}"
    );

    // The configured shards (every node holds them: nowhere to move) stay on it as followers:
    // the drain said so, `store list` names them, and the leader balancer takes every
    // leadership off it (ADR 0032).
    let configured: Vec<u64> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["shard"].as_u64())
        .filter(|s| !placed.contains(s))
        .collect();
    assert!(!configured.is_empty(), "{status}");
    assert!(
        said.contains("configured shard(s)") && said.contains("stay on it"),
        "{said}"
    );
    let listed = admin(&["store", "list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let entry = listed["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == node)
        .cloned()
        .unwrap();
    assert_eq!(entry["staying"], serde_json::json!(configured), "{listed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster_status(&proxies[0]);
        let leads = status["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == node)
            .and_then(|s| s["leads"].as_u64());
        if leads == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} still leads: {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Back from maintenance: undrained, it takes replicas again (the replica balancer moves
    // some of the others' onto it); undraining it again is refused in one line.
    let node_id = node.to_string();
    let undrained = admin(&["store", "undrain", &node_id]);
    assert!(
        undrained.status.success(),
        "{}",
        String::from_utf8_lossy(&undrained.stderr)
    );
    assert!(String::from_utf8_lossy(&undrained.stdout).contains("serving again"));
    let twice = admin(&["store", "undrain", &node_id]);
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(
        !twice.status.success() && err.contains("not draining") && err.trim().lines().count() == 1,
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while placed_on(&cluster_status(&proxies[0]), node, &placed).is_empty() {
        assert!(
            Instant::now() < deadline,
            "node {node} never got a replica back"
        );
        send(format!("undrained-{i:03}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    receive_all(&proxies[1], &topic, &mut sent, Duration::from_secs(90)).await;
    cluster.stop_all().await;
}

/// The shards of `placed` that the cluster status shows with a replica on `node`.
fn placed_on(status: &serde_json::Value, node: u64, placed: &BTreeSet<u64>) -> Vec<u64> {
    status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            let shard = s["shard"].as_u64().unwrap_or(u64::MAX);
            placed.contains(&shard)
                && s["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["node"].as_u64() == Some(node))
        })
        .filter_map(|s| s["shard"].as_u64())
        .collect()
}
