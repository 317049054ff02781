//! Routes (issue 12, ADR 0025) between two standalones on loopback:
//! - a route from A to B with a tag filter and a timestamp start point copies exactly the
//!   matching messages stored from then on, as sent (body, keys, tag, properties), in order
//!   per message group, across a SIGKILL of A and a restart of B, with at most the in-flight
//!   window resent per interruption;
//! - routes both ways between A and B while both produce: nothing loops, nothing is lost;
//! - `route pause|resume|delete`, `--output json` and the errors users get.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::process::Child;
use vela_sdk::{ClientConfig, FilterExpression, Message, MessageView, Producer, SimpleConsumer};

use crate::harness::{Node, admin, unique};
use crate::t06_crash::{free_port, spawn_vela, wait_ready};

/// What a route resends at most per interruption: the messages it received and had not
/// acknowledged (its receive batch).
const IN_FLIGHT_WINDOW: usize = 16;

struct Broker {
    dir: tempfile::TempDir,
    grpc: u16,
    http: u16,
    child: Child,
}

impl Broker {
    async fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let child = spawn_vela(dir.path(), grpc, http);
        wait_ready(http).await;
        Broker {
            dir,
            grpc,
            http,
            child,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    async fn restart(&mut self, signal: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("vela stops")
            .unwrap();
        self.child = respawn(self.dir.path(), self.grpc, self.http).await;
    }
}

async fn respawn(dir: &Path, grpc: u16, http: u16) -> Child {
    // The port may take a moment to be free again after the kill.
    for _ in 0..50 {
        let child = spawn_vela(dir, grpc, http);
        if tokio::time::timeout(Duration::from_secs(20), wait_ready(http))
            .await
            .is_ok()
        {
            return child;
        }
        drop(child);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("vela did not restart on port {grpc}");
}

async fn producer(endpoint: &str, topic: &str) -> Producer {
    let config = ClientConfig::builder().endpoint(endpoint).build().unwrap();
    Producer::builder(config)
        .topics([topic])
        .build()
        .await
        .unwrap()
}

/// A message as a test sent it.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    seq: u32,
    group: String,
    tag: String,
    keys: Vec<String>,
    body: String,
}

fn message(topic: &str, seq: u32, tag: &str) -> (Message, Sent) {
    let sent = Sent {
        seq,
        group: format!("user-{}", seq % 3),
        tag: tag.to_owned(),
        keys: vec![format!("order-{seq}"), format!("k{}", seq % 5)],
        body: format!("body {seq} {}", "x".repeat(seq as usize % 40)),
    };
    let m = Message::builder(topic)
        .body(sent.body.clone())
        .tag(tag)
        .keys(sent.keys.clone())
        .property("seq", seq.to_string())
        .property("origin-app", "checkout")
        .message_group(sent.group.clone())
        .build()
        .unwrap();
    (m, sent)
}

async fn send_range(
    producer: &Producer,
    topic: &str,
    range: std::ops::Range<u32>,
    expected: &mut BTreeMap<u32, Sent>,
) {
    for seq in range {
        let tag = if seq % 4 == 3 { "skip" } else { "keep" };
        let (m, sent) = message(topic, seq, tag);
        // A send that fails while a broker restarts is retried: the oracle holds what A
        // acknowledged.
        let mut attempts = 0;
        loop {
            match producer.send(m.clone()).await {
                Ok(_) => break,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "send retried");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("send {seq}: {e}"),
            }
        }
        if tag == "keep" {
            expected.insert(seq, sent);
        }
    }
}

async fn route_status(endpoint: &str, name: &str) -> serde_json::Value {
    let out = admin(endpoint, &["route", "describe", name, "--output", "json"])
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Receives everything `consumer` gets until `done` says so or `within` passes; acks each.
async fn receive_until(
    consumer: &SimpleConsumer,
    within: Duration,
    mut done: impl FnMut(&[MessageView]) -> bool,
) -> Vec<MessageView> {
    let deadline = tokio::time::Instant::now() + within;
    let mut all = Vec::new();
    while !done(&all) && tokio::time::Instant::now() < deadline {
        let batch = match consumer.receive(16, Duration::from_secs(20)).await {
            Ok(batch) => batch,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for m in batch {
            let _ = consumer.ack(&m).await;
            all.push(m);
        }
    }
    all
}

fn seq_of(m: &MessageView) -> u32 {
    m.properties["seq"].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_copies_what_matches_from_its_start_across_a_kill_and_a_restart() {
    let mut a = Broker::start().await;
    let mut b = Broker::start().await;
    let (ea, eb) = (a.endpoint(), b.endpoint());
    for (e, t) in [(&ea, "orders"), (&eb, "orders-copy")] {
        admin(
            e,
            &["topic", "create", t, "--type", "fifo", "--queues", "4"],
        )
        .await
        .unwrap();
    }
    let mut pa = producer(&ea, "orders").await;
    // Stored before the route's start point: matching, but never copied.
    let mut before = BTreeMap::new();
    send_range(&pa, "orders", 1000..1010, &mut before).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let start = Duration::from_secs(now.as_secs() + 2);
    tokio::time::sleep(start - now + Duration::from_millis(50)).await;
    let start_text = humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + start).to_string();

    let mut expected = BTreeMap::new();
    send_range(&pa, "orders", 0..40, &mut expected).await;
    let created = admin(
        &ea,
        &[
            "route",
            "create",
            "dr",
            "--source-topic",
            "orders",
            "--group",
            "route-dr",
            "--target-endpoint",
            &eb,
            "--target-topic",
            "orders-copy",
            "--filter-tag",
            "keep",
            "--start",
            &start_text,
        ],
    )
    .await
    .unwrap();
    assert!(created.contains("route dr created"), "{created}");
    send_range(&pa, "orders", 40..80, &mut expected).await;

    // Kill A while the route copies.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while route_status(&ea, "dr").await["status"]["copied"].as_u64() < Some(10) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route copies nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = pa.shutdown().await;
    a.restart("-KILL").await;
    pa = producer(&ea, "orders").await;
    send_range(&pa, "orders", 80..120, &mut expected).await;
    // Stop B (the target) cleanly and start it again while A produces.
    b.restart("-TERM").await;
    send_range(&pa, "orders", 120..160, &mut expected).await;
    pa.shutdown().await.unwrap();

    admin(
        &eb,
        &["group", "create", "check", "--fifo", "--from", "earliest"],
    )
    .await
    .unwrap();
    let config = ClientConfig::builder().endpoint(&eb).build().unwrap();
    let consumer = SimpleConsumer::builder(config, "check")
        .subscribe("orders-copy", FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let want: BTreeSet<u32> = expected.keys().copied().collect();
    let received = receive_until(&consumer, Duration::from_secs(120), |got| {
        let seen: BTreeSet<u32> = got.iter().map(seq_of).collect();
        want.is_subset(&seen)
    })
    .await;
    consumer.shutdown().await.unwrap();

    // Every matching message from the start point on, exactly as sent; nothing else.
    let mut first: HashMap<u32, &MessageView> = HashMap::new();
    let mut order: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for m in &received {
        let seq = seq_of(m);
        let sent = expected
            .get(&seq)
            .unwrap_or_else(|| panic!("B got message {seq}, which the route must not copy"));
        assert_eq!(m.body, sent.body.as_bytes(), "body of {seq}");
        assert_eq!(m.tag.as_deref(), Some("keep"));
        assert_eq!(m.keys, sent.keys, "keys of {seq}");
        assert_eq!(m.message_group.as_deref(), Some(sent.group.as_str()));
        assert_eq!(m.properties["origin-app"], "checkout");
        assert_eq!(m.properties["VELA_ORIGIN_TOPIC"], "orders");
        assert_eq!(m.properties["VELA_ROUTE"], "dr");
        assert!(!m.properties["VELA_ORIGIN_MSG_ID"].is_empty());
        if first.insert(seq, m).is_none() {
            order.entry(sent.group.clone()).or_default().push(seq);
        }
    }
    let missing: Vec<u32> = want
        .iter()
        .filter(|s| !first.contains_key(s))
        .copied()
        .collect();
    assert!(missing.is_empty(), "B lacks {missing:?}");
    // FIFO per message group: first copies arrive in the order A stored them.
    for (group, seqs) in &order {
        assert!(seqs.is_sorted(), "group {group} out of order: {seqs:?}");
    }
    // At least once: what was resent is bounded by the in-flight window per interruption.
    let duplicates = received.len() - first.len();
    let status = route_status(&ea, "dr").await;
    println!(
        "route test: {} expected, {} received on B, {duplicates} duplicates; route reports {}",
        want.len(),
        received.len(),
        status["status"]
    );
    assert!(
        duplicates <= 2 * IN_FLIGHT_WINDOW,
        "{duplicates} duplicates for two interruptions"
    );
    let reported = status["status"]["duplicates"].as_u64().unwrap();
    assert!(reported as usize <= received.len());
    assert_eq!(status["status"]["state"], "running");
    // Messages the filter skips count until the group reads past them.
    assert!(
        status["status"]["lag_messages"].as_u64().is_some(),
        "{status}"
    );
}

/// A consumer of `topic` on `node` in a new group that starts at its first message.
async fn reader(node: &Node, topic: &str) -> SimpleConsumer {
    let group = unique("check");
    node.admin(&["group", "create", &group, "--from", "earliest"])
        .await
        .unwrap();
    SimpleConsumer::builder(node.client_config(), group.as_str())
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
}

/// Receives from `node`'s `topic` as a new group until it has `want` distinct messages, then
/// a few seconds more (anything looping would show then); returns all it received.
async fn collect(node: &Node, topic: &str, want: usize) -> Vec<MessageView> {
    let consumer = reader(node, topic).await;
    let got = receive_until(&consumer, Duration::from_secs(60), |got| {
        got.iter()
            .map(|m| m.properties["seq"].clone())
            .collect::<BTreeSet<_>>()
            .len()
            >= want
    })
    .await;
    // A little longer: anything looping would show up now.
    let more = receive_until(&consumer, Duration::from_secs(3), |_| false).await;
    consumer.shutdown().await.unwrap();
    got.into_iter().chain(more).collect()
}

fn create_route(name: &str, target: &str, group: &str) -> Vec<String> {
    [
        "route",
        "create",
        name,
        "--source-topic",
        "events",
        "--group",
        group,
        "--target-endpoint",
        target,
        "--target-topic",
        "events",
        "--start",
        "earliest",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_both_ways_neither_loop_nor_lose() {
    let a = Node::start().await;
    let b = Node::start().await;
    for node in [&a, &b] {
        node.admin(&["topic", "create", "events"]).await.unwrap();
    }
    let ab = create_route("a-to-b", &b.endpoint(), "route-a-to-b");
    let ba = create_route("b-to-a", &a.endpoint(), "route-b-to-a");
    a.admin(&ab.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .unwrap();
    b.admin(&ba.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .unwrap();
    let (pa, pb) = (a.producer("events").await, b.producer("events").await);
    let send = |p: &Producer, origin: &str, i: u32| {
        let m = Message::builder("events")
            .body(format!("{origin}-{i}"))
            .property("seq", format!("{origin}-{i}"))
            .build()
            .unwrap();
        let p = p.clone();
        async move { p.send(m).await.unwrap() }
    };
    for i in 0..30 {
        tokio::join!(send(&pa, "a", i), send(&pb, "b", i));
    }
    for (node, name) in [(&a, "events on A"), (&b, "events on B")] {
        let got = collect(node, "events", 60).await;
        let mut by_seq: BTreeMap<String, usize> = BTreeMap::new();
        for m in &got {
            *by_seq.entry(m.properties["seq"].clone()).or_default() += 1;
        }
        assert_eq!(
            by_seq.len(),
            60,
            "{name}: every message of both sides once: {by_seq:?}"
        );
        assert!(
            by_seq.values().all(|n| *n == 1),
            "{name}: a message looped: {by_seq:?}"
        );
    }
    // Each side skipped the copies the other route wrote.
    for (node, route) in [(&a, "a-to-b"), (&b, "b-to-a")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = route_status(&node.endpoint(), route).await;
            let s = &status["status"];
            if s["copied"] == 30 && s["skipped_routed"] == 30 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{route}: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    pa.shutdown().await.unwrap();
    pb.shutdown().await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_managed_from_the_cli_with_clear_errors() {
    let a = Node::start().await;
    let b = Node::start().await;
    a.admin(&["topic", "create", "src"]).await.unwrap();
    b.admin(&["topic", "create", "dst"]).await.unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "route",
            "create",
            "r1",
            "--source-topic",
            "src",
            "--group",
            "route-r1",
            "--target-endpoint",
            "TARGET",
            "--target-topic",
            "dst",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v[8] = b.endpoint();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |v: Vec<String>| {
        let endpoint = a.endpoint();
        async move {
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            admin(&endpoint, &refs).await
        }
    };
    // Refusals name the problem.
    let err = run(args(&["--filter-tag", "A||"])).await.unwrap_err();
    assert!(err.to_string().contains("tag"), "{err}");
    let err = run(args(&["--filter-sql", "a >"])).await.unwrap_err();
    assert!(err.to_string().contains("SQL92"), "{err}");
    let err = run(args(&[
        "--source-endpoint",
        "10.0.0.1:8081",
        "--start",
        "earliest",
    ]))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("start point"), "{err}");
    let mut missing_topic = args(&[]);
    missing_topic[4] = "nope".into();
    let err = run(missing_topic).await.unwrap_err();
    assert!(err.to_string().contains("topic nope"), "{err}");
    let mut bad_target = args(&[]);
    bad_target[8] = "no-port".into();
    let err = run(bad_target).await.unwrap_err();
    assert!(err.to_string().contains("HOST:PORT"), "{err}");

    // An HTTP target is a URL, and replaces the endpoint and topic.
    let http = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "route",
            "create",
            "h1",
            "--source-topic",
            "src",
            "--group",
            "route-h1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let err = run(http(&["--target-url", "ftp://hooks/x"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http:// or https://"), "{err}");
    let err = run(http(&[
        "--target-url",
        "http://h/x",
        "--target-topic",
        "dst",
    ]))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot be used with"), "{err}");
    let err = run(http(&[])).await.unwrap_err();
    assert!(err.to_string().contains("--target-endpoint"), "{err}");
    let err = run(http(&[
        "--target-url",
        "http://h/x",
        "--target-batch",
        "17",
    ]))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("17"), "{err}");

    // Create with credentials: the secret never comes back.
    let out = run(args(&[
        "--target-access-key",
        "ak",
        "--target-secret-key",
        "very-secret",
        "--filter-sql",
        "region = 'eu'",
    ]))
    .await
    .unwrap();
    assert!(out.contains("route r1 created"), "{out}");
    let err = run(args(&[])).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let listed = a
        .admin(&["route", "list", "--output", "json"])
        .await
        .unwrap();
    assert!(!listed.contains("very-secret"), "{listed}");
    let routes: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(routes[0]["name"], "r1");
    assert_eq!(routes[0]["filter_sql"], "region = 'eu'");
    assert_eq!(routes[0]["target"]["access_key"], "ak");
    assert_eq!(routes[0]["start"], "the group's default");
    let table = a.admin(&["route", "list"]).await.unwrap();
    assert!(table.contains("r1") && table.contains("dst@"), "{table}");

    // Pause, resume, delete.
    a.admin(&["route", "pause", "r1"]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while route_status(&a.endpoint(), "r1").await["status"]["state"] != "paused" {
        assert!(tokio::time::Instant::now() < deadline, "not paused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(route_status(&a.endpoint(), "r1").await["paused"], true);
    a.admin(&["route", "resume", "r1"]).await.unwrap();
    assert_eq!(route_status(&a.endpoint(), "r1").await["paused"], false);
    let out = a.admin(&["route", "delete", "r1", "--yes"]).await.unwrap();
    assert!(out.contains("deleted"), "{out}");
    let err = a.admin(&["route", "describe", "r1"]).await.unwrap_err();
    assert!(err.to_string().contains("route r1 not found"), "{err}");
    // The group stays, with its position.
    a.admin(&["group", "describe", "route-r1"]).await.unwrap();
    a.stop().await;
    b.stop().await;
}

/// Receives from `topic` on `node` as a new group until the bodies in `want` all arrived.
async fn bodies_on(node: &Node, topic: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let consumer = reader(node, topic).await;
    let got = receive_until(&consumer, Duration::from_secs(90), |got| {
        let seen: BTreeSet<String> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        want.is_subset(&seen)
    })
    .await;
    consumer.shutdown().await.unwrap();
    got.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_routes_on_its_controller_leader_and_moves_them_when_it_dies() {
    let cluster = crate::local_cluster::LocalCluster::start(&[], &[]).await;
    let (p0, p1) = (cluster.proxies[0].clone(), cluster.proxies[1].clone());
    let b = Node::start().await;
    admin(&p0, &["topic", "create", "orders"]).await.unwrap();
    b.admin(&["topic", "create", "orders-copy"]).await.unwrap();
    let created = admin(
        &p0,
        &[
            "route",
            "create",
            "c1",
            "--source-topic",
            "orders",
            "--group",
            "route-c1",
            "--target-endpoint",
            &b.endpoint(),
            "--target-topic",
            "orders-copy",
            "--start",
            "earliest",
        ],
    )
    .await
    .unwrap();
    assert!(created.contains("route c1 created"), "{created}");
    let send = |proxy: String, range: std::ops::Range<u32>| async move {
        let p = producer(&proxy, "orders").await;
        for i in range {
            let m = Message::builder("orders")
                .body(format!("c-{i}"))
                .build()
                .unwrap();
            let mut tries = 0;
            while let Err(e) = p.send(m.clone()).await {
                tries += 1;
                assert!(tries < 50, "send c-{i}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        p.shutdown().await.unwrap();
    };
    send(p0.clone(), 0..20).await;
    let want: BTreeSet<String> = (0..20).map(|i| format!("c-{i}")).collect();
    let got = bodies_on(&b, "orders-copy", &want).await;
    assert!(want.is_subset(&got), "B lacks {:?}", want.difference(&got));
    // Any proxy reports the route as the leader runs it.
    let status = route_status(&p1, "c1").await;
    assert_eq!(status["status"]["state"], "running", "{status}");
    assert!(status["status"]["copied"].as_u64() >= Some(20), "{status}");

    // The controller leader dies: another controller takes the route over from its group's
    // position, and what is produced meanwhile and after is copied.
    let status = crate::local_cluster::cluster_status(&p0);
    let leader = status["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "leader")
        .map(|c| c["id"].as_u64().unwrap())
        .expect("a controller leader");
    let pid = cluster.file["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"].as_u64() == Some(leader))
        .and_then(|c| c["pid"].as_u64())
        .unwrap();
    crate::local_cluster::kill("-9", pid);
    send(p1.clone(), 20..40).await;
    let want: BTreeSet<String> = (0..40).map(|i| format!("c-{i}")).collect();
    let got = bodies_on(&b, "orders-copy", &want).await;
    assert!(want.is_subset(&got), "B lacks {:?}", want.difference(&got));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = route_status(&p0, "c1").await;
        if status["status"]["state"] == "running" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.stop().await;
    cluster.stop_all().await;
}

/// What the test webhook saw: every request's content type and body, and whether it was
/// accepted.
#[derive(Default)]
struct Hook {
    requests: std::sync::Mutex<Vec<(String, serde_json::Value, bool)>>,
    /// Requests without the route's headers (answered 401, not recorded).
    unauthorized: std::sync::atomic::AtomicUsize,
}

async fn hook_handler(
    axum::extract::State(hook): axum::extract::State<std::sync::Arc<Hook>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("authorization") != Some("Bearer t0ken.x") || header("x-api-key") != Some("k-1") {
        hook.unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    let mut requests = hook.requests.lock().unwrap();
    // The first two requests fail as an overloaded server would; the route must retry them.
    let accept = requests.len() >= 2;
    requests.push((content_type, serde_json::from_str(&body).unwrap(), accept));
    if accept {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_posts_cloud_events_and_retries_server_errors() {
    let hook = std::sync::Arc::new(Hook::default());
    let app = axum::Router::new()
        .route("/events", axum::routing::post(hook_handler))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let a = Node::start().await;
    a.admin(&["topic", "create", "hooks", "--queues", "1"])
        .await
        .unwrap();
    let p = a.producer("hooks").await;
    for n in 0..10 {
        let m = Message::builder("hooks")
            .body(format!(r#"{{"n": {n}}}"#))
            .tag("paid")
            .keys([format!("order-{n}")])
            .property("region", "eu")
            .build()
            .unwrap();
        p.send(m).await.unwrap();
    }
    let out = a
        .admin(&[
            "route",
            "create",
            "hook",
            "--source-topic",
            "hooks",
            "--group",
            "route-hook",
            "--target-url",
            &url,
            "--target-batch",
            "4",
            "--target-header",
            "Authorization: Bearer t0ken.x",
            "--target-header",
            "X-Api-Key:k-1",
            "--start",
            "earliest",
        ])
        .await
        .unwrap();
    assert!(out.contains("CloudEvents, 4 per request"), "{out}");
    assert!(
        out.contains("headers:         Authorization, X-Api-Key (values sealed)"),
        "{out}"
    );
    assert!(!out.contains("t0ken") && !out.contains("k-1"), "{out}");
    // A header the route sets itself is refused, with a readable error.
    let err = a
        .admin(&[
            "route",
            "create",
            "hook2",
            "--source-topic",
            "hooks",
            "--group",
            "route-hook2",
            "--target-url",
            &url,
            "--target-header",
            "Content-Type: text/plain",
        ])
        .await
        .expect_err("reserved header");
    assert!(err.to_string().contains("Content-Type"), "{err}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let delivered: Vec<serde_json::Value> = loop {
        let events: Vec<serde_json::Value> = hook
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, accepted)| *accepted)
            .flat_map(|(_, body, _)| {
                body.as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![body.clone()])
            })
            .collect();
        if events.len() >= 10 {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let requests = hook.requests.lock().unwrap().clone();
    assert!(requests.len() >= 4, "{} requests", requests.len());
    assert!(!requests[0].2 && !requests[1].2 && requests[2].2);
    // The failed request was sent again as it was: nothing skipped, nothing reordered.
    assert_eq!(requests[0].1, requests[2].1);
    for (content_type, body, _) in &requests {
        assert_eq!(
            content_type, "application/cloudevents-batch+json; charset=utf-8",
            "{body}"
        );
        assert!(body.as_array().unwrap().len() <= 4);
    }
    let ns: Vec<i64> = delivered
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
    for e in &delivered {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "dev.vela.message");
        assert_eq!(e["source"], "vela://vela/topics/hooks");
        assert_eq!(e["subject"], "paid");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["velaroute"], "hook");
        assert_eq!(e["velakeys"], format!("order-{}", e["data"]["n"]));
        assert_eq!(e["velaproperties"], r#"{"region":"eu"}"#);
        assert!(e["id"].as_str().unwrap().len() > 10);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    let status = route_status(&a.endpoint(), "hook").await;
    assert!(status["status"]["errors"].as_u64() >= Some(2), "{status}");
    assert!(
        status["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{status}"
    );
    assert_eq!(status["target_url"], url.as_str());
    assert_eq!(
        status["target_headers"],
        serde_json::json!(["Authorization", "X-Api-Key"])
    );
    assert!(!status.to_string().contains("t0ken"), "{status}");
    assert_eq!(
        hook.unauthorized.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every request carried the route's headers"
    );
    p.shutdown().await.unwrap();
    a.stop().await;
}
