//! A store node that is not in `[[cluster.stores]]` joins a running `vela local-cluster`
//! (issue 11: a store StatefulSet scaled out): it registers with the controller, the proxies
//! and the controller learn its address, the cluster status lists it, the controller moves
//! replicas onto it until it holds its share (learner, voter, old replica removed), a
//! configured shard's among them, and leadership, and every message sent before and after
//! comes back.

use std::collections::{BTreeSet, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vela_sdk::{ClientConfig, Message, Producer};

use crate::harness::unique;
use crate::local_cluster::{LocalCluster, cluster_status, joining_store, receive_all};
use crate::t12_placement::placed_shards;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_joins_a_running_cluster_and_holds_placed_replicas() {
    // The controller leader balances every 2 s.
    let cluster = LocalCluster::start(
        &["--controllers", "1", "--shards", "1"],
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

    // A topic of two replicas on the three configured store nodes: three placed shards, each
    // node holds two replicas.
    let topic = unique("joined");
    let created = admin(&[
        "topic",
        "create",
        &topic,
        "--replicas",
        "2",
        "--queues",
        "8",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let placed = placed_shards(&proxies[1], &topic);
    assert_eq!(placed.len(), 3, "one shard per store node: {placed:?}");
    // And a topic without --replicas, on the configured shard, which moves too (ADR 0032).
    let default_topic = unique("joined-default");
    let created = admin(&["topic", "create", &default_topic, "--queues", "2"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let producer = Producer::builder(
        ClientConfig::builder()
            .endpoint(&proxies[0])
            .build()
            .unwrap(),
    )
    .topics([topic.clone(), default_topic.clone()])
    .build()
    .await
    .unwrap();
    let (mut sent, mut sent_default) = (HashSet::new(), HashSet::new());
    let mut send = async |body: String| {
        let m = Message::builder(&topic).body(body.clone()).build().unwrap();
        producer.send(m).await.expect("a send");
        let m = Message::builder(&default_topic)
            .body(body.clone())
            .build()
            .unwrap();
        producer.send(m).await.expect("a send to the default topic");
        sent.insert(body.clone());
        sent_default.insert(body);
    };
    for i in 0..64 {
        send(format!("before-{i:02}")).await;
    }

    // Node 4, not in [[cluster.stores]]. No --bootstrap: a joining node holds no configured
    // shard. Without an address to advertise it is refused in one readable line.
    let data = tempfile::tempdir().unwrap();
    let (grpc, http) = (cluster.base + 14, cluster.base + 114);
    let refused = joining_store(&cluster, 4, data.path())
        .env_remove("VELA_STORE__ADVERTISE_ADDR")
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("store.advertise_addr"), "{err}");

    let mut node4 = joining_store(&cluster, 4, data.path()).spawn().unwrap();
    crate::t06_crash::wait_ready(http).await;

    // The proxies learn it from the controller: the cluster status lists it, reachable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster_status(&proxies[0]);
        let listed = status["stores"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["id"] == 4 && s["reachable"] == true);
        if listed {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never listed: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The replica balancer moves replicas onto it, one at a time, while sends go on: the
    // configured shard's (adopted as a placed shard, ADR 0032) and the topic's, nine replicas
    // over four nodes, leave it two: configured shard 0's first (the lowest id on the busiest
    // node), then one of the topic's. The leader balancer then hands it a leadership.
    let configured = BTreeSet::from([0u64]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    loop {
        send(format!("during-{i:03}")).await;
        i += 1;
        let status = cluster_status(&proxies[0]);
        let settled = on_node(&status, 4, &placed);
        let replicas = |shards: &BTreeSet<u64>, n: usize| {
            status["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| shards.contains(&s["shard"].as_u64().unwrap_or(u64::MAX)))
                .all(|s| s["replicas"].as_array().map(Vec::len) == Some(n))
        };
        let leads = status["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["leader"] == 4)
            .count();
        if settled == 1
            && on_node(&status, 4, &configured) == 1
            && replicas(&placed, 2)
            && replicas(&configured, 3)
            && leads >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 holds {settled} settled placed replicas and leads {leads}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for i in 0..32 {
        send(format!("after-{i:02}")).await;
    }

    let consumer = receive_all(&proxies[1], &topic, &mut sent, Duration::from_secs(60)).await;
    receive_all(
        &proxies[0],
        &default_topic,
        &mut sent_default,
        Duration::from_secs(60),
    )
    .await;

    // `store list` shows it registered; it cannot be removed before it is drained.
    let listed = admin(&["store", "list", "--output", "json"]);
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let nodes = listed["stores"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{listed}");
    assert!(
        nodes[..3].iter().all(|n| n["configured"] == true) && nodes[3]["configured"] == false,
        "{listed}"
    );
    assert_eq!(nodes[3]["addr"], format!("127.0.0.1:{grpc}"));
    let early = admin(&["--yes", "store", "remove", "4"]);
    assert!(!early.status.success());
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(
        err.contains("not drained") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Scaling in by hand: drain it, stop it, remove it.
    let drained = admin(&["store", "drain", "4", "--wait", "--timeout", "2m"]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let status = cluster_status(&proxies[0]);
    assert_eq!(on_node(&status, 4, &placed), 0, "{status}");
    assert_eq!(on_node(&status, 4, &configured), 0, "{status}");
    crate::local_cluster::kill("-TERM", u64::from(node4.id().unwrap()));
    let exit = tokio::time::timeout(Duration::from_secs(30), node4.wait())
        .await
        .expect("node 4 stops")
        .unwrap();
    assert!(exit.success(), "node 4 exited with {exit}");
    let removed = admin(&["--yes", "store", "remove", "4"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let configured = admin(&["store", "remove", "1", "--yes"]);
    assert!(!configured.status.success());
    assert!(String::from_utf8_lossy(&configured.stderr).contains("[[cluster.stores]]"));
    // The proxies forget it: the cluster status no longer lists it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster_status(&proxies[1]);
        let ids: Vec<u64> = status["stores"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_u64())
            .collect();
        if ids == [1, 2, 3] {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 still listed: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The topic still serves.
    let last = Message::builder(&topic).body("last").build().unwrap();
    producer.send(last).await.expect("a send after the removal");
    let got = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    assert!(
        got.iter().any(|m| m.body.as_ref() == b"last"),
        "{:?}",
        got.iter().map(|m| m.body.clone()).collect::<Vec<_>>()
    );
    cluster.stop_all().await;
}

/// The shards of `placed` that have a leader and a replica on `node` in `status`.
pub(crate) fn on_node(status: &serde_json::Value, node: u64, placed: &BTreeSet<u64>) -> usize {
    status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            placed.contains(&s["shard"].as_u64().unwrap_or(u64::MAX))
                && s["leader"].is_u64()
                && s["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["node"] == node)
        })
        .count()
}
