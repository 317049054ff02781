//! Auth on (ADR 0019): the matrix of who may do what through our SDK, raw gRPC with
//! hand-made signatures (stale, future, replayed, Python's local time) and `vela admin`,
//! and afterwards the queues hold only what was allowed.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use vela_proto::pb::rocketmq as pb;
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer, StatusCode};

use crate::harness::{Node, admin, raw_client, resource, unique};

const ROOT: (&str, &str) = ("root", "root-secret");

async fn start() -> Node {
    Node::start_with(|c| {
        c.auth.enabled = true;
        c.auth.init_user = Some(ROOT.0.into());
        c.auth.init_password = Some(ROOT.1.into());
        c.proxy.auth = c.auth.clone();
    })
    .await
}

/// `vela admin --access-key AK --secret-key SK <args>`.
async fn admin_as(node: &Node, who: (&str, &str), args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--access-key", who.0, "--secret-key", who.1];
    all.extend_from_slice(args);
    admin(&node.endpoint(), &all).await
}

/// Grants `user` the `actions` (comma-separated) on `resource`.
async fn allow(node: &Node, user: &str, resource: &str, actions: &str) {
    let subject = format!("User:{user}");
    root(
        node,
        &[
            "acl",
            "create",
            "--subject",
            &subject,
            "--resource",
            resource,
            "--actions",
            actions,
            "--decision",
            "allow",
        ],
    )
    .await;
}

async fn root(node: &Node, args: &[&str]) -> String {
    admin_as(node, ROOT, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn config(node: &Node, who: Option<(&str, &str)>) -> ClientConfig {
    let builder = ClientConfig::builder().endpoint(node.endpoint());
    match who {
        Some((ak, sk)) => builder.credentials(ak, sk),
        None => builder,
    }
    .build()
    .unwrap()
}

async fn producer(
    node: &Node,
    who: Option<(&str, &str)>,
    topic: &str,
) -> vela_sdk::Result<Producer> {
    Producer::builder(config(node, who))
        .topics([topic])
        .build()
        .await
}

async fn consumer(
    node: &Node,
    who: (&str, &str),
    group: &str,
    topic: &str,
) -> vela_sdk::Result<SimpleConsumer> {
    SimpleConsumer::builder(config(node, Some(who)), group)
        .subscribe(topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(1))
        .build()
        .await
}

async fn send(p: &Producer, topic: &str, body: &str) -> Result<(), Option<StatusCode>> {
    let message = Message::builder(topic)
        .body(body.to_owned())
        .build()
        .unwrap();
    p.send(message).await.map(|_| ()).map_err(|e| e.code())
}

/// The messages in a topic's queues, counted by the SUPER user.
async fn stored(node: &Node, topic: &str, admin_server: &str) -> u64 {
    let mut args = vec!["topic", "describe", topic];
    if node.config.auth.enabled {
        args.splice(0..0, ["--access-key", ROOT.0, "--secret-key", ROOT.1]);
    }
    let out = admin(admin_server, &args).await.unwrap();
    // Rows of `QUEUE MIN_OFFSET MAX_OFFSET ...`, one per queue and group.
    let per_queue: std::collections::BTreeMap<u32, u64> = out
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let queue = cols.first()?.parse::<u32>().ok()?;
            let min = cols.get(1)?.parse::<u64>().ok()?;
            let max = cols.get(2)?.parse::<u64>().ok()?;
            Some((queue, max - min))
        })
        .collect();
    per_queue.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_decide_every_request() {
    let node = start().await;
    let orders = unique("orders");
    let secret = format!("{orders}-secret");
    let payments = unique("payments");
    for topic in [&orders, &secret, &payments] {
        root(&node, &["topic", "create", topic, "--queues", "2"]).await;
    }
    // alice may not create groups: this one is made for her.
    root(&node, &["group", "create", "g-1", "--from", "earliest"]).await;
    // Without credentials, even admin calls are refused.
    let err = admin(&node.endpoint(), &["topic", "list"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authorization"), "{err}");

    root(
        &node,
        &["user", "create", "alice", "--password", "a-secret"],
    )
    .await;
    root(
        &node,
        &["user", "create", "carol", "--password", "c-secret"],
    )
    .await;
    root(&node, &["user", "update", "carol", "--status", "disable"]).await;
    let alice = ("alice", "a-secret");
    let carol = ("carol", "c-secret");
    // alice publishes to every order topic but the secret one, reads order topics with g-*.
    let prefix = format!("Topic:{orders}*");
    let secret_res = format!("Topic:{secret}");
    for args in [
        vec![
            "--resource",
            &prefix,
            "--actions",
            "PUB,SUB",
            "--decision",
            "allow",
        ],
        vec![
            "--resource",
            &secret_res,
            "--actions",
            "PUB",
            "--decision",
            "deny",
        ],
        vec![
            "--resource",
            "Group:g-*",
            "--actions",
            "SUB",
            "--decision",
            "allow",
        ],
    ] {
        let mut all = vec!["acl", "create", "--subject", "User:alice"];
        all.extend(args);
        root(&node, &all).await;
    }
    let shown = root(&node, &["user", "show", "alice", "--output", "json"]).await;
    assert!(!shown.contains("a-secret"), "{shown}");
    let acls = root(&node, &["acl", "show", "--subject", "User:alice"]).await;
    assert_eq!(acls.lines().count(), 4, "{acls}");

    // Who cannot even connect.
    let code = |r: vela_sdk::Result<Producer>| r.err().and_then(|e| e.code());
    assert_eq!(
        code(producer(&node, None, &orders).await),
        Some(StatusCode::Unauthorized)
    );
    assert_eq!(
        code(producer(&node, Some(("alice", "wrong")), &orders).await),
        Some(StatusCode::Unauthorized)
    );
    assert_eq!(
        code(producer(&node, Some(("mallory", "x")), &orders).await),
        Some(StatusCode::Unauthorized)
    );
    assert_eq!(
        code(producer(&node, Some(carol), &orders).await),
        Some(StatusCode::Unauthorized)
    );
    // A route needs PUB or SUB on the topic.
    assert_eq!(
        code(producer(&node, Some(alice), &payments).await),
        Some(StatusCode::Forbidden)
    );

    // What alice may and may not do.
    let p = producer(&node, Some(alice), &orders).await.unwrap();
    assert_eq!(send(&p, &orders, "ok-1").await, Ok(()));
    assert_eq!(send(&p, &orders, "ok-2").await, Ok(()));
    assert_eq!(
        send(&p, &payments, "no").await,
        Err(Some(StatusCode::Forbidden))
    );
    // DENY on the literal name beats ALLOW on the prefix.
    assert_eq!(
        send(&p, &secret, "no").await,
        Err(Some(StatusCode::Forbidden))
    );
    let c = consumer(&node, alice, "g-1", &orders).await.unwrap();
    let mut got = 0;
    for _ in 0..10 {
        let batch = c.receive(16, Duration::from_secs(30)).await.unwrap();
        for m in &batch {
            c.ack(m).await.unwrap();
        }
        got += batch.len();
        if got == 2 {
            break;
        }
    }
    assert_eq!(got, 2);
    // Reading with a group alice has no policy for (it exists, and could read both).
    root(&node, &["group", "create", "h-1", "--from", "earliest"]).await;
    let other = consumer(&node, alice, "h-1", &orders).await.unwrap();
    let refused = other
        .receive(16, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(StatusCode::Forbidden), "{refused}");
    // The refused receive took nothing: the group's first receive gets both messages now,
    // not after an invisibility.
    let h1 = consumer(&node, ROOT, "h-1", &orders).await.unwrap();
    let mut seen = 0;
    for _ in 0..5 {
        seen += h1.receive(16, Duration::from_secs(30)).await.unwrap().len();
        if seen == 2 {
            break;
        }
    }
    assert_eq!(seen, 2, "a refused receive consumed nothing");

    // A SUPER user bypasses every policy.
    let r = producer(&node, Some(ROOT), &payments).await.unwrap();
    assert_eq!(send(&r, &payments, "root").await, Ok(()));

    // Nothing refused was stored.
    assert_eq!(stored(&node, &orders, &node.endpoint()).await, 2);
    assert_eq!(stored(&node, &secret, &node.endpoint()).await, 0);
    assert_eq!(stored(&node, &payments, &node.endpoint()).await, 1);

    // A disabled user enabled again gets in; a deleted one does not.
    root(&node, &["user", "update", "carol", "--status", "enable"]).await;
    allow(&node, "carol", "*", "ALL").await;
    let c = eventually(|| producer(&node, Some(carol), &payments)).await;
    assert_eq!(send(&c, &payments, "carol").await, Ok(()));
    // Changed through this proxy: seen by it at once (other proxies within about 2 s).
    root(&node, &["user", "delete", "carol", "--yes"]).await;
    assert_eq!(
        send(&c, &payments, "gone").await,
        Err(Some(StatusCode::Unauthorized))
    );
    // Every decision is counted by its result.
    let metrics = crate::t21_metrics::scrape(node.http()).await;
    for result in ["allowed", "unauthenticated", "forbidden"] {
        let count = metrics
            .lines()
            .filter(|l| l.starts_with("vela_auth_decisions_total{"))
            .filter(|l| l.contains(&format!(r#"result="{result}""#)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        assert!(count > 0, "no {result} decision counted:\n{metrics}");
    }
}

async fn eventually<F, Fut>(f: F) -> Producer
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = vela_sdk::Result<Producer>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(p) => return p,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rights_can_be_granted_narrowly_and_only_super_users_manage_users() {
    let node = start().await;
    root(&node, &["user", "create", "ops", "--password", "o-secret"]).await;
    let ops = ("ops", "o-secret");
    allow(&node, "ops", "Topic:ops-*", "CREATE,GET").await;
    let mine = unique("ops-t");
    let theirs = unique("other-t");
    admin_as(&node, ops, &["topic", "create", &mine])
        .await
        .unwrap();
    admin_as(&node, ops, &["topic", "describe", &mine])
        .await
        .unwrap();
    let refused = admin_as(&node, ops, &["topic", "create", &theirs])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no policy"), "{refused}");
    let refused = admin_as(&node, ops, &["topic", "delete", &mine, "--yes"])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("DELETE"), "{refused}");
    // Looking messages up is GET on the topic: by key in its own topic, yes; in another
    // topic, or by id across every topic, no.
    admin_as(
        &node,
        ops,
        &["message", "find", "--topic", &mine, "--key", "k"],
    )
    .await
    .unwrap();
    root(&node, &["topic", "create", &theirs]).await;
    let refused = admin_as(
        &node,
        ops,
        &["message", "find", "--topic", &theirs, "--key", "k"],
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("no policy"), "{refused}");
    let refused = admin_as(&node, ops, &["message", "show", "some-id"])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("GET"), "{refused}");
    // LIST and UPDATE, granted as narrowly: listing topics (LIST on every topic) but not
    // groups, updating its own groups but no other.
    for (resource, actions) in [("Topic:*", "LIST"), ("Group:ops-*", "UPDATE")] {
        allow(&node, "ops", resource, actions).await;
    }
    let listed = admin_as(&node, ops, &["topic", "list"]).await.unwrap();
    assert!(listed.contains(&mine), "{listed}");
    let refused = admin_as(&node, ops, &["group", "list"]).await.unwrap_err();
    assert!(refused.to_string().contains("LIST"), "{refused}");
    let (my_group, other_group) = (unique("ops-g"), unique("other-g"));
    for g in [&my_group, &other_group] {
        root(&node, &["group", "create", g]).await;
    }
    admin_as(
        &node,
        ops,
        &["group", "update", &my_group, "--max-attempts", "3"],
    )
    .await
    .unwrap();
    let refused = admin_as(
        &node,
        ops,
        &["group", "update", &other_group, "--max-attempts", "3"],
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("UPDATE"), "{refused}");
    let refused = admin_as(&node, ops, &["user", "list"]).await.unwrap_err();
    assert!(refused.to_string().contains("SUPER"), "{refused}");
    let refused = admin_as(&node, ("ops", "nope"), &["topic", "describe", &mine])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("does not match"), "{refused}");
    let users = root(&node, &["user", "list"]).await;
    assert!(users.contains("root") && users.contains("ops"), "{users}");
    assert!(
        !users.contains("o-secret") && !users.contains(ROOT.1),
        "{users}"
    );
    // Users and ACLs with `--output json`: what was made, never a password.
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).unwrap() };
    let made = root(
        &node,
        &[
            "user",
            "create",
            "temp",
            "--password",
            "t-secret",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(!made.contains("t-secret"), "{made}");
    let made = json(made);
    assert_eq!(
        (made["name"].as_str(), made["type"].as_str()),
        (Some("temp"), Some("Normal"))
    );
    let acl = json(
        root(
            &node,
            &[
                "acl",
                "create",
                "--subject",
                "User:temp",
                "--resource",
                "Topic:t-*",
                "--actions",
                "PUB",
                "--decision",
                "allow",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(acl["subject"], "User:temp");
    assert_eq!(acl["entries"][0]["resource"], "Topic:t-*");
    let gone = json(
        root(
            &node,
            &[
                "--yes",
                "acl",
                "delete",
                "--subject",
                "User:temp",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(gone["deleted"]["acl"], "User:temp");
    let gone = json(
        root(
            &node,
            &["--yes", "user", "delete", "temp", "--output", "json"],
        )
        .await,
    );
    assert_eq!(gone["deleted"]["user"], "temp");
}

/// Signs like the official clients: HMAC-SHA1 of the date header, hex.
fn signed<T>(msg: T, ak: &str, sk: &str, date: &str, language: &str) -> tonic::Request<T> {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(sk.as_bytes()).unwrap();
    mac.update(date.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    md.insert("x-mq-client-id", "auth-test@1#0".parse().unwrap());
    md.insert("x-mq-language", language.parse().unwrap());
    md.insert("x-mq-date-time", date.parse().unwrap());
    md.insert(
        "authorization",
        format!(
            "MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={signature}"
        )
        .parse()
        .unwrap(),
    );
    r
}

/// `yyyyMMddTHHmmssZ` of `at` shifted by `by` seconds.
fn compact(at: SystemTime, by: i64) -> String {
    let at = if by >= 0 {
        at + Duration::from_secs(by as u64)
    } else {
        at - Duration::from_secs(by.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_accepted_only_within_the_window() {
    let node = start().await;
    let topic = unique("window");
    root(&node, &["topic", "create", &topic]).await;
    let mut client = raw_client(&node).await;
    let now = SystemTime::now();
    let route = |date: String, language: &str, sk: &str| {
        signed(
            pb::QueryRouteRequest {
                topic: resource(&topic),
                endpoints: None,
            },
            ROOT.0,
            sk,
            &date,
            language,
        )
    };
    let mut code_of = async |r: tonic::Request<pb::QueryRouteRequest>| {
        let resp = client.query_route(r).await.unwrap().into_inner();
        resp.status.unwrap().code
    };
    let ok = StatusCode::Ok as i32;
    let unauthorized = StatusCode::Unauthorized as i32;
    assert_eq!(code_of(route(compact(now, 0), "HTTP", ROOT.1)).await, ok);
    assert_eq!(
        code_of(route(compact(now, 0), "HTTP", "bad")).await,
        unauthorized
    );
    // The Rust client's RFC 3339, in UTC and with an offset: the same instant.
    let rust = humantime::format_rfc3339_nanos(now).to_string();
    assert_eq!(code_of(route(rust, "RUST", ROOT.1)).await, ok);
    let shanghai = humantime::format_rfc3339_nanos(now + Duration::from_secs(8 * 3600))
        .to_string()
        .replace('Z', "+08:00");
    assert_eq!(code_of(route(shanghai, "RUST", ROOT.1)).await, ok);
    // A captured header stops working once outside the ±15 min window, either way.
    assert_eq!(
        code_of(route(compact(now, -20 * 60), "HTTP", ROOT.1)).await,
        unauthorized
    );
    assert_eq!(
        code_of(route(compact(now, 20 * 60), "HTTP", ROOT.1)).await,
        unauthorized
    );
    assert_eq!(
        code_of(route(compact(now, -10 * 60), "HTTP", ROOT.1)).await,
        ok
    );
    // Python stamps its local time as UTC: a whole zone offset is allowed for it only.
    for zone in [8 * 3600, -8 * 3600, -7 * 3600, 5 * 3600 + 45 * 60] {
        assert_eq!(
            code_of(route(compact(now, zone), "PYTHON", ROOT.1)).await,
            ok,
            "{zone}"
        );
        assert_eq!(
            code_of(route(compact(now, zone), "HTTP", ROOT.1)).await,
            unauthorized,
            "{zone}"
        );
    }
    assert_eq!(
        code_of(route(compact(now, 15 * 3600 + 30 * 60), "PYTHON", ROOT.1)).await,
        unauthorized
    );
    // No header at all.
    let mut bare = tonic::Request::new(pb::QueryRouteRequest {
        topic: resource(&topic),
        endpoints: None,
    });
    bare.metadata_mut()
        .insert("x-mq-client-id", "auth-test@1#1".parse().unwrap());
    assert_eq!(code_of(bare).await, unauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_creation_needs_create_on_the_topic_or_group() {
    let node = start().await;
    assert!(node.config.proxy.auto_create_topics && node.config.proxy.auto_create_groups);
    root(
        &node,
        &["user", "create", "maker", "--password", "m-secret"],
    )
    .await;
    let maker = ("maker", "m-secret");
    for (resource, actions) in [
        ("Topic:auto-*", "PUB,SUB,CREATE"),
        ("Topic:plain-*", "PUB,SUB"),
        ("Group:*", "SUB"),
        ("Group:made-*", "CREATE"),
    ] {
        allow(&node, "maker", resource, actions).await;
    }
    let created = unique("auto");
    let p = producer(&node, Some(maker), &created).await.unwrap();
    assert_eq!(send(&p, &created, "first").await, Ok(()));
    assert!(
        root(&node, &["topic", "describe", &created])
            .await
            .contains("auto-created")
    );

    let plain = unique("plain");
    let refused = producer(&node, Some(maker), &plain).await.unwrap_err();
    assert_eq!(refused.code(), Some(StatusCode::Forbidden), "{refused}");
    assert!(refused.to_string().contains("CREATE"), "{refused}");
    let listed = root(&node, &["topic", "list"]).await;
    assert!(!listed.contains(&plain), "{listed}");

    // A group is created only where the user may create groups.
    let made = unique("made");
    let c = consumer(&node, maker, &made, &created).await.unwrap();
    c.receive(1, Duration::from_secs(30)).await.unwrap();
    let other = unique("other-g");
    let c = consumer(&node, maker, &other, &created).await.unwrap();
    let refused = c.receive(1, Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(refused.code(), Some(StatusCode::Forbidden), "{refused}");
    let groups = root(&node, &["group", "list"]).await;
    assert!(
        groups.contains(&made) && !groups.contains(&other),
        "{groups}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vela_bench_signs_its_requests() {
    let node = start().await;
    let args = vela::bench::BenchArgs {
        server: node.endpoint(),
        topic: None,
        group: None,
        producers: 2,
        producer_clients: 1,
        consumers: 1,
        message_size: 64,
        batch_size: 1,
        duration: Duration::from_millis(500),
        rate: None,
        max_in_flight: 1024,
        drain: Duration::from_secs(20),
        json: true,
        access_key: Some(ROOT.0.into()),
        secret_key: Some(ROOT.1.into()),
        ca_file: None,
    };
    let report = vela::bench::execute(args).await.unwrap();
    assert!(report.sent > 0);
    assert_eq!(report.send_errors, 0);
    assert_eq!(report.received, report.sent, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_can_have_its_own_port() {
    let node = Node::start_with(|c| c.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin_port = node
        .node
        .as_ref()
        .unwrap()
        .admin_addr()
        .unwrap()
        .to_string();
    let topic = unique("own-port");
    admin(&admin_port, &["topic", "create", &topic])
        .await
        .unwrap();
    // The client port serves clients only.
    let refused = admin(&node.endpoint(), &["topic", "list"])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("unimplemented")
            || refused.to_string().contains("not implemented"),
        "{refused}"
    );
    let p = producer(&node, None, &topic).await.unwrap();
    assert_eq!(send(&p, &topic, "via the client port").await, Ok(()));
    assert_eq!(stored(&node, &topic, &admin_port).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telemetry_stream_stays_authorized_past_the_signature_window() {
    let node = start().await;
    let topic = unique("long-stream");
    root(&node, &["topic", "create", &topic]).await;
    let mut client = raw_client(&node).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let settings = || pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![resource(&topic).unwrap()],
                max_body_size: 0,
                validate_message_type: false,
            })),
            ..Default::default()
        })),
    };
    let opened = signed(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        ROOT.0,
        ROOT.1,
        &compact(SystemTime::now(), 0),
        "HTTP",
    );
    tx.send(settings()).await.unwrap();
    let mut replies = client.telemetry(opened).await.unwrap().into_inner();
    let first = replies.message().await.unwrap().unwrap();
    assert!(matches!(
        first.command,
        Some(pb::telemetry_command::Command::Settings(_))
    ));
    // A stream of a user deleted since is refused its next Settings.
    root(
        &node,
        &["user", "create", "brief", "--password", "b-secret"],
    )
    .await;
    allow(&node, "brief", "*", "ALL").await;
    let (tx2, rx2) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let opened = signed(
        tokio_stream::wrappers::ReceiverStream::new(rx2),
        "brief",
        "b-secret",
        &compact(SystemTime::now(), 0),
        "HTTP",
    );
    tx2.send(settings()).await.unwrap();
    let mut brief_replies = client.telemetry(opened).await.unwrap().into_inner();
    assert!(matches!(
        brief_replies.message().await.unwrap().unwrap().command,
        Some(pb::telemetry_command::Command::Settings(_))
    ));
    root(&node, &["user", "delete", "brief", "--yes"]).await;
    tx2.send(settings()).await.unwrap();
    let refused = brief_replies.message().await.unwrap().unwrap();
    assert_eq!(
        refused.status.map(|s| s.code),
        Some(StatusCode::Unauthorized as i32)
    );
    // Clients keep one stream open for hours and send Settings again on it; the header
    // signed when it opened is long out of its window by then.
    node.clock.advance(Duration::from_secs(3600));
    tx.send(settings()).await.unwrap();
    let later = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(
            later.command,
            Some(pb::telemetry_command::Command::Settings(_))
        ),
        "{later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_can_come_from_standard_input() {
    use std::io::Write;
    let node = start().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["admin", "--server", &node.endpoint()])
        .args(["--access-key", ROOT.0, "--secret-key", ROOT.1])
        .args(["user", "create", "piped", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-a-pipe\n")
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The piped password (without its newline) signs: the user is known, and has no rights.
    let refused = admin_as(&node, ("piped", "from-a-pipe"), &["topic", "list"])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no policy"), "{refused}");
    let missing = admin_as(&node, ROOT, &["user", "create", "nopw"])
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("password"), "{missing}");
}

/// Admin changes are audit-logged on the `vela::audit` target (who, from where, what; the
/// line's time is when), refused ones too, and a password given to `user create` is never in
/// the log. (Each test runs in its own process, so the global subscriber is this test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_audit_logged_without_secrets() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let node = start().await;
    root(
        &node,
        &["user", "create", "ops", "--password", "never-logged-7"],
    )
    .await;
    let topic = unique("audited");
    root(&node, &["topic", "create", &topic]).await;
    let refused = admin_as(
        &node,
        ("ops", "never-logged-7"),
        &["topic", "delete", &topic, "--yes"],
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("DELETE"), "{refused}");
    root(&node, &["topic", "delete", &topic, "--yes"]).await;
    node.stop().await;

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("vela::audit")).collect();
    let has = |words: &[&str]| audit.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(has(&["admin change", "user=\"root\"", "ops"]), "{audit:#?}");
    assert!(has(&["admin change refused", &topic]), "{audit:#?}");
    assert!(
        has(&["admin change", "user=\"root\"", &topic, "delete"]),
        "{audit:#?}"
    );
    assert!(
        !log.contains("never-logged-7"),
        "a password reached the log:\n{log}"
    );
}
