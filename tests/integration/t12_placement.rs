//! Topics with a replication factor on a `vela local-cluster` of three store nodes (ADR 0013):
//! - `vela admin topic create T --replicas 1` places one single-replica shard on each store
//!   node, opened by the controller's reconciler; the topic takes sends through one proxy and
//!   gives them back through the other;
//! - `cluster status` shows those shards, each on one store node, each led;
//! - a retention set through one proxy is what the other describes, and one recorded in the
//!   controller alone reaches every placed shard through the reconciler;
//! - a factor above the store count is one readable line and a non-zero exit;
//! - a store restarted on its data directory reopens its placed shard without the controller,
//!   and the topic serves on every placed shard again;
//! - a deletion while a store is down deletes the metadata but cannot drop the queues on that
//!   store's shard: the name is refused until the controller finishes the drop after the
//!   store returns, and the topic created again holds none of the old messages.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Output;
use std::time::{Duration, Instant};

use vela_proto::controller_client::RemoteController;
use vela_proto::store_api::StoreApi;
use vela_proto::store_client::{ClusterMap, RemoteStore};
use vela_proto::{ControllerApi, TopicName};
use vela_sdk::{ClientConfig, Message, Producer};

use crate::harness::unique;
use crate::local_cluster::{LocalCluster, cluster_status, receive_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_one_replica_lives_on_shards_placed_one_per_store() {
    let cluster = LocalCluster::start(&["--controllers", "1"], &[]).await;
    let proxies = &cluster.proxies;

    let admin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .args(["admin", "--server", &proxies[1]])
            .args(args)
            .output()
            .unwrap()
    };
    let refused = admin(&["topic", "create", "too-many", "--replicas", "5"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("needs 5 store nodes; the cluster has 3") && err.trim().lines().count() == 1,
        "{err}"
    );

    let topic = unique("placed");
    let created = admin(&[
        "topic",
        "create",
        &topic,
        "--replicas",
        "1",
        "--queues",
        "6",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let placed = placed_shards(&proxies[1], &topic);
    assert_eq!(placed.len(), 3, "one shard per store node: {placed:?}");

    // Its retention, set through one proxy (the controller, then every placed shard's leader,
    // over gRPC), is what the other describes.
    let updated = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["admin", "--server", &proxies[0], "topic", "update", &topic])
        .args(["--retention", "7d", "--yes"])
        .output()
        .unwrap();
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let described = admin(&["topic", "describe", &topic]);
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("retention: 7days"), "{described}");
    retention_recorded_only_in_the_metadata_reaches_the_shards(&cluster, &topic, &placed).await;

    // Each placed shard: one replica, on its own store node, led.
    let status = cluster_status(&proxies[1]);
    let mut on = BTreeSet::new();
    for shard in status["shards"].as_array().unwrap() {
        if !placed.contains(&shard["shard"].as_u64().unwrap()) {
            continue;
        }
        let replicas = shard["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 1, "{shard}");
        assert!(shard["leader"].is_u64(), "{shard}");
        on.insert(replicas[0]["node"].as_u64().unwrap());
    }
    assert_eq!(on.len(), 3, "{status:#}");

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
    for i in 0..30 {
        let body = format!("placed-{i:02}");
        let m = Message::builder(&topic).body(body.clone()).build().unwrap();
        producer.send(m).await.expect("a send to a placed shard");
        sent.insert(body);
    }
    let consumer = receive_all(&proxies[1], &topic, &mut sent, Duration::from_secs(60)).await;

    // A store restarted on its data directory reopens its placed shard by itself. Meanwhile
    // the consumer's group is deleted: its positions on that shard cannot be dropped yet.
    cluster.kill_store(1);
    let group = consumer.group().to_owned();
    group_deletion_waits_for_the_store(&admin, &group);
    let restarted = cluster.restart_store(1);
    let node = cluster.file["stores"][1]["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster_status(&proxies[1]);
        let led_there = status["shards"].as_array().unwrap().iter().any(|s| {
            placed.contains(&s["shard"].as_u64().unwrap()) && s["leader"].as_u64() == Some(node)
        });
        if led_there {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store {node} did not reopen its placed shard: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    group_comes_back_fresh(&admin, &group).await;

    // And serves: sends spread over every queue, so over every placed shard, all come back
    // (to the group created again, which starts at the young queues' first messages).
    let mut again = HashSet::new();
    for i in 0..12 {
        let body = format!("after-{i:02}");
        let m = Message::builder(&topic).body(body.clone()).build().unwrap();
        producer.send(m).await.expect("a send after the restart");
        again.insert(body);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !again.is_empty() {
        assert!(Instant::now() < deadline, "never received: {again:?}");
        for m in consumer.receive(32, Duration::from_secs(30)).await.unwrap() {
            consumer.ack(&m).await.unwrap();
            again.remove(String::from_utf8_lossy(&m.body).as_ref());
        }
    }
    drop(consumer);
    drop(producer);

    let second =
        a_deletion_a_store_missed_is_finished_before_the_name_returns(&cluster, &topic).await;
    cluster.stop_restarted(vec![restarted, second]).await;
}

/// Deletes `group`, which consumed from every placed shard, while a store node is down: the
/// delete says its state was not dropped, and the name is refused until it is.
fn group_deletion_waits_for_the_store(admin: &dyn Fn(&[&str]) -> Output, group: &str) {
    let half = admin(&["group", "delete", group, "--yes"]);
    let err = String::from_utf8_lossy(&half.stderr);
    assert!(
        !half.status.success(),
        "a shard without a leader cannot drop"
    );
    assert!(
        err.contains("its state was not dropped from every shard")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    let refused = admin(&["group", "create", group]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("still being deleted"), "{err}");
    // `cluster status` shows it, and the shard it waits for.
    let status = deletions(admin);
    let pending = status
        .iter()
        .find(|d| d["name"] == group)
        .unwrap_or_else(|| panic!("no deletion of {group} in {status:?}"));
    assert_eq!(pending["kind"], "group");
    assert_eq!(
        pending["waiting_for"].as_array().map(Vec::len),
        Some(1),
        "{pending}"
    );
}

/// The deletions in progress `cluster status` lists.
fn deletions(admin: &dyn Fn(&[&str]) -> Output) -> Vec<serde_json::Value> {
    let status = admin(&["cluster", "status", "--output", "json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["deletions"].as_array().unwrap().clone()
}

/// Once the store is back, the controller's reconciler finishes `group`'s drop and the name can
/// be created again (by this, or by its consumer, which auto-creates it); the group created
/// again has no position from before on any queue (every one it lists starts at 0: the queues
/// are young), nor anything in flight.
async fn group_comes_back_fresh(admin: &dyn Fn(&[&str]) -> Output, group: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = admin(&["group", "create", group]);
        let err = String::from_utf8_lossy(&created.stderr);
        if created.status.success() || err.contains("already exists") {
            break;
        }
        assert!(err.contains("still being deleted"), "{err}");
        assert!(
            Instant::now() < deadline,
            "the controller did not finish the group's drop: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        deletions(admin).iter().all(|d| d["name"] != group),
        "finished deletions are not listed"
    );
    let described = admin(&["group", "describe", group, "--output", "json"]);
    assert!(described.status.success());
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    for q in described["queues"].as_array().unwrap() {
        assert_eq!(
            (q["consumer_offset"].as_u64(), q["inflight"].as_u64()),
            (Some(0), Some(0)),
            "the group came back with old positions: {described:#}"
        );
    }
}

/// Deletes `topic` (whose queues hold messages on every store's placed shard) while store 2 is
/// down: the metadata goes, the queues on its shard stay, and the name is refused until the
/// controller's reconciler drops them after the store returns (restarted: the child answered).
/// The topic created again is empty.
async fn a_deletion_a_store_missed_is_finished_before_the_name_returns(
    cluster: &LocalCluster,
    topic: &str,
) -> tokio::process::Child {
    let admin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .args(["admin", "--server", &cluster.proxies[0], "--yes"])
            .args(args)
            .output()
            .unwrap()
    };
    let create = || admin(&["topic", "create", topic, "--replicas", "1", "--queues", "6"]);
    cluster.kill_store(2);
    let half = admin(&["topic", "delete", topic]);
    let err = String::from_utf8_lossy(&half.stderr);
    assert!(
        !half.status.success(),
        "a shard without a leader cannot drop"
    );
    assert!(
        err.contains("not dropped from every shard") && err.trim().lines().count() == 1,
        "{err}"
    );
    let refused = create();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("still being deleted"), "{err}");

    let restarted = cluster.restart_store(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = create();
        if created.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&created.stderr);
        assert!(err.contains("still being deleted"), "{err}");
        assert!(
            Instant::now() < deadline,
            "the controller did not finish the drop: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let described = admin(&["topic", "describe", topic, "--output", "json"]);
    assert!(described.status.success());
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    // A queue is listed once it held a message: none of the new topic's has.
    for q in described["queues"].as_array().unwrap() {
        assert_eq!(
            q["max_offset"].as_u64(),
            Some(0),
            "the name came back with old messages: {described:#}"
        );
    }
    restarted
}

/// A retention written to the controller alone (as when the store part of an update failed)
/// reaches every placed shard's leader by the controller's reconciler, over gRPC.
async fn retention_recorded_only_in_the_metadata_reaches_the_shards(
    cluster: &LocalCluster,
    topic: &str,
    placed: &BTreeSet<u64>,
) {
    let addrs = |role: &str| -> BTreeMap<u64, String> {
        cluster.file[role]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_u64().unwrap(),
                    p["addr"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let name = TopicName::new(topic).unwrap();
    let three_days = 3 * 86_400_000;
    RemoteController::new(&addrs("controllers"))
        .unwrap()
        .set_topic_retention(&name, Some(three_days))
        .await
        .expect("the controller records the retention");
    let stores = addrs("stores");
    let ids: Vec<u64> = stores.keys().copied().collect();
    let stores = RemoteStore::new(ClusterMap {
        shards: placed
            .iter()
            .map(|&s| (u32::try_from(s).unwrap(), ids.clone()))
            .collect(),
        stores,
    })
    .unwrap();
    let want = BTreeMap::from([(name, three_days)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reports = stores.node_status().await;
        let reached: BTreeSet<u64> = reports
            .iter()
            .filter_map(|r| r.report.as_ref().ok())
            .flatten()
            .filter(|m| m.retention.as_ref() == Some(&want))
            .map(|m| u64::from(m.shard))
            .collect();
        if placed.is_subset(&reached) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reconciler did not bring the retention to shards {placed:?}: {reports:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The shards a topic's queues are on (the `shards:` line of `vela admin topic describe`).
pub(crate) fn placed_shards(proxy: &str, topic: &str) -> BTreeSet<u64> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["admin", "--server", proxy, "topic", "describe", topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("shards:"))
        .unwrap_or_else(|| panic!("no shards line in {text}"))
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}
