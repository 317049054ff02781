//! `vela admin store scale N` against a `vela local-cluster` whose controller drives a store
//! StatefulSet through a fake Kubernetes API server (the `scale` subresource, over a
//! kubeconfig), the test playing the StatefulSet controller: a pod started when the replicas
//! go up, stopped when they go down (issue 11). Scaling out adds a store node that gets
//! replicas; scaling in drains it first, then lowers the StatefulSet and removes it; a refusal
//! by RBAC is one readable line; every message sent comes back.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vela_sdk::{ClientConfig, Message, Producer};

use crate::harness::unique;
use crate::local_cluster::{LocalCluster, cluster_status, joining_store, receive_all};
use crate::t12_placement::placed_shards;
use crate::t34_store_join::on_node;

/// The StatefulSet as the fake API server keeps it.
#[derive(Default)]
struct Fake {
    replicas: u32,
    forbidden: bool,
    patches: Vec<u32>,
}

type Shared = Arc<Mutex<Fake>>;

fn scale(name: &str, replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": "mq"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas},
    })
}

/// `value` as a JSON response with `code`.
fn json(code: StatusCode, value: &serde_json::Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn forbidden(name: &str) -> Response {
    let status = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": format!("statefulsets.apps \"{name}\" is forbidden: User \"system:serviceaccount:mq:vela\" cannot get resource \"statefulsets/scale\""),
        "reason": "Forbidden",
        "code": 403,
    });
    json(StatusCode::FORBIDDEN, &status)
}

async fn get_scale(
    State(fake): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    assert_eq!((ns.as_str(), name.as_str()), ("mq", "vela-store"));
    let fake = fake.lock().expect("the fake's lock");
    if fake.forbidden {
        return forbidden(&name);
    }
    json(StatusCode::OK, &scale(&name, fake.replicas))
}

async fn patch_scale(
    State(fake): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    body: String,
) -> Response {
    let mut fake = fake.lock().expect("the fake's lock");
    if fake.forbidden {
        return forbidden(&name);
    }
    let patch: serde_json::Value = serde_json::from_str(&body).expect("a JSON merge patch");
    let replicas = patch["spec"]["replicas"].as_u64().expect("spec.replicas") as u32;
    fake.replicas = replicas;
    fake.patches.push(replicas);
    json(StatusCode::OK, &scale(&name, replicas))
}

/// Serves the fake on loopback; returns the kubeconfig file that points at it.
async fn fake_api_server(fake: Shared, dir: &std::path::Path) -> std::path::PathBuf {
    let app = Router::new()
        .route(
            "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale",
            get(get_scale).patch(patch_scale),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: mq\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}

/// A `vela local-cluster` (`stores` store nodes, one controller) whose controller drives the
/// StatefulSet `vela-store` of a fake API server at as many replicas.
async fn cluster_on_a_fake_statefulset(stores: u32) -> (LocalCluster, Shared, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake: Shared = Arc::new(Mutex::new(Fake {
        replicas: stores,
        ..Fake::default()
    }));
    let kubeconfig = fake_api_server(fake.clone(), dir.path()).await;
    let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
    let cluster = LocalCluster::start(
        &[
            "--controllers",
            "1",
            "--shards",
            "1",
            "--stores",
            &stores.to_string(),
        ],
        &[
            ("KUBECONFIG", &kubeconfig),
            ("VELA_CONTROLLER__STORE_STATEFULSET", "vela-store"),
            ("VELA_CONTROLLER__LEADER_BALANCE_INTERVAL", "2s"),
        ],
    )
    .await;
    (cluster, fake, dir)
}

/// `vela admin ARGS` through the second proxy.
fn admin(proxies: &[String], args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["admin", "--server", &proxies[1]])
        .args(args)
        .output()
        .unwrap()
}

/// `vela admin store list --output json`'s nodes.
fn store_list(proxies: &[String]) -> Vec<serde_json::Value> {
    let listed = admin(proxies, &["store", "list", "--output", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    listed["stores"].as_array().cloned().unwrap_or_default()
}

/// A placed topic and the messages sent to it.
struct Traffic {
    topic: String,
    /// Its placed shards.
    placed: BTreeSet<u64>,
    producer: Producer,
    sent: HashSet<String>,
}

impl Traffic {
    /// Creates a topic of `replicas` replicas and 8 queues through the second proxy and a
    /// producer of it on the first, and sends 32 messages.
    async fn start(proxies: &[String], name: &str, replicas: &str) -> Traffic {
        let topic = unique(name);
        let created = admin(
            proxies,
            &[
                "topic",
                "create",
                &topic,
                "--replicas",
                replicas,
                "--queues",
                "8",
            ],
        );
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
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
        let mut traffic = Traffic {
            placed: placed_shards(&proxies[1], &topic),
            topic,
            producer,
            sent: HashSet::new(),
        };
        for i in 0..32 {
            traffic.send(format!("before-{i:02}")).await;
        }
        traffic
    }

    async fn send(&mut self, body: String) {
        let m = Message::builder(&self.topic)
            .body(body.clone())
            .build()
            .unwrap();
        self.producer.send(m).await.expect("a send");
        self.sent.insert(body);
    }

    /// Sends every 300 ms until store node `node` holds a replica of a placed shard.
    async fn until_on_node(&mut self, proxies: &[String], node: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut i = 0;
        while on_node(&cluster_status(&proxies[0]), node, &self.placed) == 0 {
            assert!(Instant::now() < deadline, "node {node} never got a replica");
            self.send(format!("until-{node}-{i:03}")).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Receives everything sent through the second proxy.
    async fn receive_all(mut self, proxies: &[String]) {
        receive_all(
            &proxies[1],
            &self.topic,
            &mut self.sent,
            Duration::from_secs(60),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_scale_adds_a_node_then_drains_and_removes_it() {
    let (cluster, fake, _dir) = cluster_on_a_fake_statefulset(3).await;
    let proxies = &cluster.proxies;
    let admin = |args: &[&str]| admin(proxies, args);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // RBAC refuses: one readable line that says what to grant.
    fake.lock().expect("the fake's lock").forbidden = true;
    let refused = admin(&["store", "scale", "4"]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("get and patch on statefulsets/scale") && err.trim().lines().count() == 1,
        "{err}"
    );
    fake.lock().expect("the fake's lock").forbidden = false;
    // Below the configured store nodes is refused too.
    let below = admin(&["store", "scale", "2"]);
    assert!(!below.status.success());
    assert!(
        stderr(&below).contains("scale to 3 or more"),
        "{}",
        stderr(&below)
    );

    let mut traffic = Traffic::start(proxies, "scaled", "2").await;

    // Out: the StatefulSet goes to 4, its new pod (node 4) starts, joins and gets a replica.
    let out = admin(&["store", "scale", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("scaled from 3 to 4"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fake.lock().expect("the fake's lock").patches, vec![4]);
    let data = tempfile::tempdir().unwrap();
    let mut node4 = joining_store(&cluster, 4, data.path()).spawn().unwrap();
    traffic.until_on_node(proxies, 4).await;

    // In: drained first, then the StatefulSet goes back to 3 and node 4 is removed; the test
    // stops the pod when the replicas go down, as the StatefulSet controller would.
    let server = proxies[1].clone();
    let scale_in = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .args([
                "admin", "--server", &server, "store", "scale", "3", "--wait",
            ])
            .args(["--timeout", "3m"])
            .output()
            .unwrap()
    });
    let mut i = 0;
    while fake.lock().expect("the fake's lock").replicas != 3 {
        assert!(
            !scale_in.is_finished(),
            "scale 3 --wait ended before the StatefulSet went down"
        );
        // Node 4 holds no replica any more by the time the StatefulSet goes down.
        traffic.send(format!("during-in-{i:03}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(on_node(&cluster_status(&proxies[0]), 4, &traffic.placed), 0);
    crate::local_cluster::kill("-TERM", u64::from(node4.id().unwrap()));
    let exit = tokio::time::timeout(Duration::from_secs(30), node4.wait())
        .await
        .expect("node 4 stops")
        .unwrap();
    assert!(exit.success(), "node 4 exited with {exit}");
    let scaled = scale_in.await.unwrap();
    let said = String::from_utf8_lossy(&scaled.stdout).into_owned();
    assert!(scaled.status.success(), "{said}{}", stderr(&scaled));
    assert!(
        said.contains("draining store node(s) [4] first") && said.contains("scaled to 3 pods"),
        "{said}"
    );
    assert_eq!(fake.lock().expect("the fake's lock").patches, vec![4, 3]);
    let listed = store_list(proxies);
    assert_eq!(listed.len(), 3, "{listed:?}");

    traffic.receive_all(proxies).await;
    cluster.stop_all().await;
}

/// A plain `kubectl scale` down (the StatefulSet lowered, the pod killed, no drain): the
/// controller reports node 5 as scaled away, re-creates its replicas on the other four from
/// each shard's surviving majority, then removes it; it never patches the StatefulSet back;
/// every message sent comes back. Four configured nodes, so a topic of three replicas gets
/// shards of its own (with three it would share the configured shards, ADR 0032).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_kubectl_scale_down_is_detected_and_repaired() {
    let (cluster, fake, _dir) = cluster_on_a_fake_statefulset(4).await;
    let proxies = &cluster.proxies;
    let mut traffic = Traffic::start(proxies, "kubectl-scaled", "3").await;

    // kubectl scale --replicas 5: pod 4 (node 5) starts, joins and gets replicas.
    fake.lock().expect("the fake's lock").replicas = 5;
    let data = tempfile::tempdir().unwrap();
    let mut node5 = joining_store(&cluster, 5, data.path()).spawn().unwrap();
    traffic.until_on_node(proxies, 5).await;
    let placed = traffic.placed.clone();

    // kubectl scale --replicas 4: the StatefulSet goes down and its pod with it, undrained.
    fake.lock().expect("the fake's lock").replicas = 4;
    crate::local_cluster::kill("-KILL", u64::from(node5.id().unwrap()));
    node5.wait().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut reported, mut i) = (false, 0);
    loop {
        let listed = store_list(proxies);
        if let Some(n5) = listed.iter().find(|n| n["id"] == 5) {
            let status = cluster_status(&proxies[0]);
            let shown = status["stores"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["id"] == 5 && n["placement"] == "scaled-away");
            reported |= n5["scaled_away"] == true && shown;
        } else {
            let status = cluster_status(&proxies[0]);
            let whole = status["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| placed.contains(&s["shard"].as_u64().unwrap_or(u64::MAX)))
                .all(|s| {
                    s["leader"].is_u64()
                        && s["replicas"].as_array().map(Vec::len) == Some(3)
                        && on_node(&status, 5, &placed) == 0
                });
            if whole {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 5's replicas were never re-created elsewhere: {listed:?}\n{:#}",
            cluster_status(&proxies[0])
        );
        traffic.send(format!("repairing-{i:03}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        reported,
        "store list and cluster status never showed node 5 scaled away"
    );
    assert!(
        fake.lock().expect("the fake's lock").patches.is_empty(),
        "the controller patched the StatefulSet the user scaled"
    );
    // Every placed shard is back to three replicas, all on the remaining nodes.
    let status = cluster_status(&proxies[0]);
    for shard in status["shards"].as_array().unwrap() {
        if placed.contains(&shard["shard"].as_u64().unwrap()) {
            let nodes: BTreeSet<u64> = shard["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["node"].as_u64().unwrap())
                .collect();
            assert!(nodes.len() == 3 && !nodes.contains(&5), "{shard}");
        }
    }
    traffic.receive_all(proxies).await;
    cluster.stop_all().await;
}
