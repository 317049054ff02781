//! Three real `vela store` processes on loopback, reached the way a cluster's proxies reach them
//! (`RemoteStore` over `vela.store.v1`):
//! - sends and receives find each shard's leader by themselves;
//! - the node leading shard 0 is SIGKILLed under load: sends resume on a new leader (the
//!   failover time is printed), and it is restarted on its data directory (without
//!   `--bootstrap`, which only the first start of a new data directory needs);
//! - every acknowledged send is delivered, nothing is delivered after its ack was acknowledged;
//! - with another node killed afterwards, the restarted one and the third still commit: it
//!   caught up;
//! - SIGTERM stops every node cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::process::{Child, Command};
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TagFilter, TopicName};
use vela_proto::store_api::{AppendRequest, PopRequest, QueueSelector, StoreApi};
use vela_proto::store_client::{ClusterMap, RemoteStore};

use crate::t06_crash::wait_ready;

const SHARDS: [u32; 2] = [0, 1];
/// Short, so a message whose ack was lost comes back within the drain.
const INVISIBLE: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct StoreProcess {
    config: PathBuf,
    http: u16,
    child: Child,
}

fn write_config(dir: &Path, id: u64, grpc: &BTreeMap<u64, u16>, http: u16) -> PathBuf {
    let mut text = format!(
        "data_dir = \"{}\"\ngrpc_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
         [store]\nnode_id = {id}\n[cluster]\nshards = [0, 1]\n",
        dir.join("data").display(),
        grpc[&id]
    );
    for (node, port) in grpc {
        text.push_str(&format!(
            "[[cluster.stores]]\nid = {node}\naddr = \"127.0.0.1:{port}\"\n"
        ));
    }
    let path = dir.join("store.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, bootstrap: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vela"));
    command.arg("store").arg("--config").arg(config);
    if bootstrap {
        command.arg("--bootstrap");
    }
    command
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn message(body: &str) -> MessageRecord {
    MessageRecord {
        message_id: format!("id-{body}"),
        topic: TopicName::new("cluster-t").unwrap(),
        kind: MessageKind::Normal,
        tag: None,
        keys: vec![],
        message_group: None,
        delivery_timestamp_ms: None,
        born_timestamp_ms: 1,
        born_host: "test".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from(body.to_owned()),
    }
}

async fn send(store: &RemoteStore, shard: u32, body: &str) -> bool {
    let req = AppendRequest {
        topic: TopicName::new("cluster-t").unwrap(),
        queue_id: shard,
        shard,
        messages: vec![message(body)],
        client_id: None,
    };
    tokio::time::timeout(Duration::from_secs(15), store.append(req))
        .await
        .is_ok_and(|r| r.is_ok())
}

fn receive() -> PopRequest {
    PopRequest {
        group: GroupName::new("cluster-g").unwrap(),
        topic: TopicName::new("cluster-t").unwrap(),
        queues: QueueSelector::All,
        max_messages: 32,
        invisible: INVISIBLE,
        filter: TagFilter::All.into(),
        fifo: false,
        max_attempts: 16,
        wait: Duration::from_millis(500),
        group_created_ms: None,
        group_start: Default::default(),
        shards: Vec::new(),
        client_id: None,
    }
}

/// Receives and acks until nothing comes, not even after every invisibility ran out (a message
/// whose ack was lost would be back by then); checks no message is delivered after its ack was
/// acknowledged. Returns the bodies delivered.
async fn drain(store: &RemoteStore, acked: &mut BTreeSet<(u32, u64)>) -> BTreeSet<String> {
    let mut bodies = BTreeSet::new();
    let mut empty = 0;
    let mut waited_out = false;
    loop {
        if empty >= 3 {
            if waited_out {
                break;
            }
            tokio::time::sleep(INVISIBLE + Duration::from_millis(500)).await;
            waited_out = true;
            empty = 0;
        }
        let got = store.pop(receive()).await.unwrap();
        empty = if got.is_empty() { empty + 1 } else { 0 };
        for d in got {
            let key = (d.queue_id, d.offset);
            assert!(!acked.contains(&key), "{key:?} delivered after its ack");
            store.ack(&d.ticket).await.unwrap();
            acked.insert(key);
            bodies.insert(String::from_utf8_lossy(&d.message.body).into_owned());
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_needs_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let grpc: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let config = write_config(dir.path(), 1, &grpc, free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .arg("store")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--bootstrap"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one readable line: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_killed_under_load_loses_no_acknowledged_message() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let grpc: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let mut nodes: BTreeMap<u64, StoreProcess> = BTreeMap::new();
    for id in 1..=3u64 {
        let http = free_port();
        let config = write_config(dirs[id as usize - 1].path(), id, &grpc, http);
        let child = spawn(&config, true);
        nodes.insert(
            id,
            StoreProcess {
                config,
                http,
                child,
            },
        );
    }
    for node in nodes.values() {
        wait_ready(node.http).await;
    }
    let map = ClusterMap {
        stores: grpc
            .iter()
            .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
            .collect(),
        shards: SHARDS.iter().map(|&s| (s, vec![1, 2, 3])).collect(),
    };
    let store = Arc::new(RemoteStore::new(map).unwrap());

    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    for i in 0..20 {
        let body = format!("before-{i:03}");
        assert!(
            send(&store, SHARDS[i % 2], &body).await,
            "{body} not acknowledged"
        );
        sent.lock().unwrap().insert(body);
    }
    let victim = store.known_leader(0).expect("shard 0 answered");

    // Load on shard 0 while its leader is killed.
    let producer = {
        let (store, sent) = (store.clone(), sent.clone());
        tokio::spawn(async move {
            let mut acked_at = Vec::new();
            for i in 0..150 {
                let body = format!("during-{i:03}");
                if send(&store, 0, &body).await {
                    sent.lock().unwrap().insert(body);
                    acked_at.push(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked_at
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim_process = nodes.get_mut(&victim).unwrap();
    victim_process.child.start_kill().unwrap();
    let killed_at = Instant::now();
    victim_process.child.wait().await.unwrap();
    let acked_at = producer.await.unwrap();
    let resumed = acked_at
        .iter()
        .find(|t| **t > killed_at)
        .expect("no send was acknowledged after the kill");
    println!(
        "store cluster failover: SIGKILL of node {victim} (leader of shard 0) to the next \
         acknowledged send {:?}",
        resumed.duration_since(killed_at)
    );

    // Restart it with the same command, on the same data directory.
    let victim_process = nodes.get_mut(&victim).unwrap();
    victim_process.child = spawn(&victim_process.config, false);
    wait_ready(victim_process.http).await;

    let mut acked = BTreeSet::new();
    let delivered = drain(&store, &mut acked).await;
    let sent_now = sent.lock().unwrap().clone();
    let missing: Vec<_> = sent_now.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "acknowledged sends never delivered: {missing:?}"
    );

    // Another node goes: the restarted one and the third must form the majority now.
    let other = *nodes.keys().find(|&&id| id != victim).unwrap();
    let other_process = nodes.get_mut(&other).unwrap();
    other_process.child.start_kill().unwrap();
    other_process.child.wait().await.unwrap();
    for &shard in &SHARDS {
        assert!(
            send(&store, shard, &format!("after-{shard}")).await,
            "shard {shard} takes no sends with node {other} down"
        );
    }
    let delivered = drain(&store, &mut acked).await;
    assert_eq!(
        delivered,
        ["after-0", "after-1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    for (id, node) in nodes.iter_mut() {
        if *id == other {
            continue;
        }
        let pid = node.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), node.child.wait())
            .await
            .expect("store node stops within 30 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "node {id} exited with {exit}");
    }
}
