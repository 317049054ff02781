//! The controller end to end on a real data directory: what it shows
//! - topics and groups survive a restart with their placement and `created_at` unchanged;
//! - a snapshot plus the log written after it restore everything after a restart;
//! - delete then re-create, validation and reserved names through the public API;
//! - the shard set from the config places new topics, old ones stay put;
//! - a stopped controller refuses writes, and a second instance cannot open a live directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vela_controller::{Controller, ControllerConfig, ControllerOpenError};
use vela_proto::clock::{Clock, SharedClock};
use vela_proto::controller_api::ProxyBeat;
use vela_proto::{
    ControllerApi, ControllerError, DEFAULT_MAX_ATTEMPTS, GroupName, GroupSpec, ShardId, TopicName,
    TopicSpec, TopicType,
};

#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            clock: Arc::new(ManualClock::default()),
        }
    }

    fn config(&self, shards: &[ShardId]) -> ControllerConfig {
        ControllerConfig {
            data_dir: self.dir.path().join("controller"),
            node_id: 1,
            shards: shards.to_vec(),
            ..ControllerConfig::default()
        }
    }

    async fn open(&self) -> Arc<Controller> {
        self.open_with(&[0]).await
    }

    async fn open_with(&self, shards: &[ShardId]) -> Arc<Controller> {
        let clock: SharedClock = self.clock.clone();
        Controller::open(self.config(shards), clock)
            .await
            .expect("controller opens")
    }
}

fn topic(name: &str, queue_count: u32) -> TopicSpec {
    TopicSpec {
        name: TopicName::new(name).expect("valid topic name"),
        topic_type: TopicType::Normal,
        queue_count,
        auto_created: false,
    }
}

fn group(name: &str, max_attempts: u32) -> GroupSpec {
    GroupSpec {
        name: GroupName::new(name).expect("valid group name"),
        fifo: false,
        max_attempts,
        auto_created: false,
        start: vela_proto::GroupStart::Auto,
        retry: vela_proto::retry::RetryBackoff::Standard,
        broadcast: false,
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

fn group_name(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_restart() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    fx.clock.set(1_000);
    let orders = controller
        .create_topic(topic("orders", 4))
        .await
        .expect("create orders");
    assert_eq!(orders.queue_shards, vec![0; 4]);
    assert_eq!(orders.created_at_ms, 1_000);
    fx.clock.set(2_000);
    let billing = controller
        .create_group(group("billing", 5))
        .await
        .expect("create billing");
    assert_eq!((billing.max_attempts, billing.created_at_ms), (5, 2_000));
    let topics_before = controller.list_topics().await.expect("list");
    let groups_before = controller.list_groups().await.expect("list");
    controller.shutdown().await.expect("shutdown");

    fx.clock.set(9_000);
    let controller = fx.open().await;
    assert_eq!(controller.list_topics().await.expect("list"), topics_before);
    assert_eq!(controller.list_groups().await.expect("list"), groups_before);
    let reopened = controller
        .get_topic(&topic_name("orders"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        reopened.created_at_ms, 1_000,
        "created_at comes from the log, not the new clock"
    );
    assert_eq!(
        controller
            .get_group(&group_name("billing"))
            .await
            .expect("get"),
        Some(billing)
    );
    assert!(matches!(
        controller.create_topic(topic("orders", 2)).await,
        Err(ControllerError::AlreadyExists(_))
    ));
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_later_log_restore_after_restart() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    for i in 0..20 {
        fx.clock.set(100 + i);
        controller
            .create_topic(topic(&format!("before-{i}"), 2))
            .await
            .expect("create");
    }
    controller
        .create_group(group("g-before", 0))
        .await
        .expect("create group");
    let covered = controller
        .compact_log()
        .await
        .expect("compact")
        .expect("something was applied");
    assert!(covered >= 21, "snapshot covers index {covered}");
    assert_eq!(snapshot_files(&fx).len(), 1, "one snapshot generation");

    // Changes after the snapshot live only in the log.
    controller
        .delete_topic(&topic_name("before-0"))
        .await
        .expect("delete");
    fx.clock.set(5_000);
    controller
        .create_topic(topic("after", 3))
        .await
        .expect("create");
    let expected_topics = controller.list_topics().await.expect("list");
    let expected_groups = controller.list_groups().await.expect("list");
    assert_eq!(expected_topics.len(), 20);
    // The deleted topic's drop is recorded until the stores finish it (never here).
    let pending = controller.pending_drops();
    assert_eq!(pending.len(), 1);
    controller.shutdown().await.expect("shutdown");

    let controller = fx.open().await;
    assert_eq!(
        controller.list_topics().await.expect("list"),
        expected_topics
    );
    assert_eq!(controller.pending_drops(), pending);
    assert_eq!(
        controller.list_groups().await.expect("list"),
        expected_groups
    );
    assert_eq!(
        controller
            .get_topic(&topic_name("before-0"))
            .await
            .expect("get"),
        None
    );
    let before_5 = controller
        .get_topic(&topic_name("before-5"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(before_5.created_at_ms, 105);

    // A second compaction right after restart works on top of the restored snapshot.
    assert!(controller.compact_log().await.expect("compact").is_some());
    controller.shutdown().await.expect("shutdown");
    let controller = fx.open().await;
    assert_eq!(
        controller.list_topics().await.expect("list"),
        expected_topics
    );
    assert_eq!(
        controller.pending_drops(),
        pending,
        "the snapshot holds the drops"
    );
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_recreate() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    fx.clock.set(10);
    controller
        .create_topic(topic("orders", 8))
        .await
        .expect("create");
    controller
        .create_group(group("billing", 3))
        .await
        .expect("create");

    let drop = controller
        .delete_topic(&topic_name("orders"))
        .await
        .expect("delete topic");
    assert_eq!(
        drop.id, 10_000,
        "never below the clock (10 ms), in thousandths of a ms"
    );
    assert_eq!(drop.shards.len(), 1, "its queues' shards");
    let group_drop = controller
        .delete_group(&group_name("billing"))
        .await
        .expect("delete group");
    assert_eq!(
        group_drop.drop.id, 10_001,
        "from the same counter as the topic's drop"
    );
    assert_eq!(
        group_drop.drop.floor, 10_000,
        "every group drop before it is finished"
    );
    assert_eq!(
        group_drop.shards,
        vec![0],
        "the shards of topics, the deleted one's included"
    );
    assert_eq!(
        controller
            .get_topic(&topic_name("orders"))
            .await
            .expect("get"),
        None
    );
    // Until the stores dropped its queues, deleting again answers the same drop, and the name
    // cannot be created again (it would serve the old messages).
    assert_eq!(
        controller.delete_topic(&topic_name("orders")).await,
        Ok(drop.clone())
    );
    let log_before = controller.member_status().last_log_index;
    let refused = controller
        .create_topic(topic("orders", 2))
        .await
        .expect_err("still being deleted");
    assert!(
        matches!(&refused, ControllerError::BeingDeleted(m) if m.contains("still being deleted")),
        "{refused}"
    );
    assert_eq!(
        controller.member_status().last_log_index,
        log_before,
        "refused before the log (producers declaring it at every send write nothing)"
    );
    // A finish for another drop changes nothing; this one's frees the name.
    controller
        .finish_topic_drop(&topic_name("orders"), drop.id + 1)
        .await
        .expect("answered");
    assert_eq!(controller.pending_drops().len(), 1);
    controller
        .finish_topic_drop(&topic_name("orders"), drop.id)
        .await
        .expect("finished");
    assert!(controller.pending_drops().is_empty());
    assert!(matches!(
        controller.delete_topic(&topic_name("orders")).await,
        Err(ControllerError::NotFound(_))
    ));
    // A group's deletion is recorded the same way, until its state is dropped everywhere.
    assert_eq!(
        controller.delete_group(&group_name("billing")).await,
        Ok(group_drop.clone())
    );
    let log_before = controller.member_status().last_log_index;
    let refused = controller
        .create_group(group("billing", 0))
        .await
        .expect_err("still being deleted");
    assert!(
        matches!(&refused, ControllerError::BeingDeleted(m) if m.contains("still being deleted")),
        "{refused}"
    );
    assert_eq!(
        controller.member_status().last_log_index,
        log_before,
        "refused before the log"
    );
    controller
        .finish_group_drop(&group_name("billing"), group_drop.drop.id)
        .await
        .expect("finished");
    assert!(matches!(
        controller.delete_group(&group_name("billing")).await,
        Err(ControllerError::NotFound(_))
    ));

    fx.clock.set(20);
    let again = controller
        .create_topic(topic("orders", 2))
        .await
        .expect("re-create");
    assert_eq!((again.queue_count, again.created_at_ms), (2, 20));
    let group_again = controller
        .create_group(group("billing", 0))
        .await
        .expect("re-create");
    assert_eq!(group_again.max_attempts, DEFAULT_MAX_ATTEMPTS);
    controller.shutdown().await.expect("shutdown");

    let controller = fx.open().await;
    let reopened = controller
        .get_topic(&topic_name("orders"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!((reopened.queue_count, reopened.created_at_ms), (2, 20));
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_before_the_log() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    for spec in [
        topic("zero", 0),
        topic("huge", 1025),
        topic("%DLQ%billing", 1),
        topic("%RETRY%billing", 1),
    ] {
        let name = spec.name.clone();
        assert!(
            matches!(
                controller.create_topic(spec).await,
                Err(ControllerError::Invalid(_))
            ),
            "{name} must be invalid"
        );
    }
    assert!(matches!(
        controller.create_group(group("billing", 1001)).await,
        Err(ControllerError::Invalid(_))
    ));
    assert!(controller.list_topics().await.expect("list").is_empty());
    assert!(controller.list_groups().await.expect("list").is_empty());

    let dlq = controller
        .create_system_topic(topic("%DLQ%billing", 1))
        .await
        .expect("system topic");
    assert_eq!(dlq.queue_shards, vec![0]);
    assert!(matches!(
        controller.create_system_topic(topic("orders", 1)).await,
        Err(ControllerError::Invalid(_))
    ));
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_set_from_config_places_new_topics() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    let old = controller
        .create_topic(topic("old", 3))
        .await
        .expect("create");
    assert_eq!(old.queue_shards, vec![0, 0, 0]);
    controller.shutdown().await.expect("shutdown");

    let controller = fx.open_with(&[2, 1, 0]).await;
    let new = controller
        .create_topic(topic("new", 5))
        .await
        .expect("create");
    // Shard 0 already holds 3 queues, so the new ones fill 1 and 2 first.
    assert_eq!(new.queue_shards, vec![1, 2, 1, 2, 1]);
    let old_again = controller
        .get_topic(&topic_name("old"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(old_again.queue_shards, vec![0, 0, 0]);
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_errors() {
    let fx = Fixture::new();
    let clock: SharedClock = fx.clock.clone();
    let empty = ControllerConfig {
        shards: vec![],
        ..fx.config(&[0])
    };
    assert!(matches!(
        Controller::open(empty, clock.clone()).await,
        Err(ControllerOpenError::Config(_))
    ));

    let controller = fx.open().await;
    let second = Controller::open(fx.config(&[0]), clock).await;
    assert!(
        matches!(second, Err(ControllerOpenError::Raft(_))),
        "the log directory is locked"
    );

    controller.shutdown().await.expect("shutdown");
    controller
        .shutdown()
        .await
        .expect("second shutdown is a no-op");
    assert!(matches!(
        controller.create_topic(topic("late", 1)).await,
        Err(ControllerError::Unavailable(_))
    ));
}

/// The controller's snapshot generations, oldest first.
fn snapshot_files(fx: &Fixture) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fx.dir.path().join("controller/snapshots"))
        .expect("snapshot directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    files
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    std::fs::write(path, bytes).expect("write snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_snapshot_falls_back_to_the_previous_generation() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    controller
        .create_topic(topic("first", 2))
        .await
        .expect("create");
    controller.compact_log().await.expect("compact");
    controller
        .create_topic(topic("second", 2))
        .await
        .expect("create");
    controller.compact_log().await.expect("compact");
    controller
        .create_topic(topic("third", 2))
        .await
        .expect("create");
    controller.shutdown().await.expect("shutdown");
    let files = snapshot_files(&fx);
    assert_eq!(files.len(), 2, "two generations are kept: {files:?}");
    flip_last_byte(&files[1]);

    let clock: SharedClock = fx.clock.clone();
    let controller = Controller::open(fx.config(&[0]), clock)
        .await
        .expect("the older generation and the log rebuild the state");
    for name in ["first", "second", "third"] {
        assert!(
            controller
                .get_topic(&topic_name(name))
                .await
                .expect("get")
                .is_some(),
            "{name} survives"
        );
    }
    controller.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_fails_open_with_a_readable_error() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    controller
        .create_topic(topic("orders", 2))
        .await
        .expect("create");
    controller.compact_log().await.expect("compact");
    controller.shutdown().await.expect("shutdown");

    let files = snapshot_files(&fx);
    assert_eq!(files.len(), 1);
    flip_last_byte(&files[0]);

    let clock: SharedClock = fx.clock.clone();
    let err = match Controller::open(fx.config(&[0]), clock).await {
        Ok(_) => panic!("a corrupt snapshot must not open"),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(message.contains("snap-"), "{message}");
    assert!(
        message.contains("no snapshot generation is readable"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_are_listed_while_they_heartbeat_and_the_member_reports_itself() {
    let fx = Fixture::new();
    let controller = fx.open().await;
    assert!(controller.proxies().await.expect("list").is_empty());
    let beat = |addr: &str, admin: Option<&str>| ProxyBeat {
        addr: addr.to_owned(),
        admin_addr: admin.map(str::to_owned),
        version: "0.1.0".to_owned(),
    };
    controller
        .proxy_heartbeat(&beat("10.0.0.7:8081", None))
        .await
        .expect("heartbeat");
    controller
        .proxy_heartbeat(&beat("10.0.0.8:8081", Some("10.0.0.8:9091")))
        .await
        .expect("heartbeat");
    let listed: Vec<(String, Option<String>)> = controller
        .proxies()
        .await
        .expect("list")
        .into_iter()
        .map(|p| (p.addr, p.admin_addr))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("10.0.0.7:8081".to_owned(), None),
            ("10.0.0.8:8081".to_owned(), Some("10.0.0.8:9091".to_owned()))
        ]
    );
    let refused = controller.proxy_heartbeat(&beat("", None)).await;
    assert!(
        matches!(refused, Err(ControllerError::Invalid(_))),
        "{refused:?}"
    );

    let reports = controller.node_status().await;
    assert_eq!(reports.len(), 1);
    let status = reports[0]
        .report
        .as_ref()
        .expect("in-process member answers");
    assert_eq!(status.role, vela_proto::cluster_status::MemberRole::Leader);
    assert_eq!(status.voters, vec![1]);
    controller.shutdown().await.expect("shutdown");
}

/// Every file under `dir`, recursively.
fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Issue 8: passwords, routes' secret keys, HTTP header values and receipt keys are sealed
/// before they are logged, so neither the log nor a snapshot holds them in plaintext; they open
/// again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_on_disk_in_plaintext() {
    use vela_proto::auth::{Password, User, UserName, UserStatus, UserType};
    use vela_proto::route::{
        HttpHeader, HttpTarget, RouteCredentials, RouteEndpoint, RouteFilter, RouteSpec,
        RouteTarget,
    };
    use vela_proto::{GroupStart, RouteName};

    let secrets = [
        "pw-plain-7c1e0b",
        "pw-later-41aa9d",
        "src-secret-9d2f33",
        "tgt-secret-5e4c71",
        "Bearer hdr-secret-3a8b55",
        "tier-secret-0f3b7c",
        "tier-secret-later-88d1e2",
    ];
    let tier = |id: &str, secret: &str| {
        Some(vela_proto::tier_credentials::TierCredentials::new(id, secret).expect("pair"))
    };
    let user = |name: &str, password: &str| User {
        name: UserName::new(name).expect("name"),
        password: Password::new(password).expect("password"),
        user_type: UserType::Normal,
        status: UserStatus::Enabled,
    };
    let route = |name: &str, target: RouteTarget| RouteSpec {
        name: RouteName::new(name).expect("name"),
        source_topic: topic_name("orders"),
        group: group_name("copier"),
        source: RouteEndpoint {
            address: Some("source.example:8081".into()),
            tls: false,
            credentials: Some(RouteCredentials::new("src-ak", secrets[2]).expect("creds")),
        },
        target,
        filter: RouteFilter::All,
        start: GroupStart::Auto,
        keep_message_id: false,
    };
    let fx = Fixture::new();
    let controller = fx.open().await;
    controller
        .create_user(user("alice", secrets[0]))
        .await
        .expect("user");
    controller
        .create_route(route(
            "to-topic",
            RouteTarget::Topic {
                topic: topic_name("copies"),
                endpoint: RouteEndpoint {
                    address: Some("target.example:8081".into()),
                    tls: true,
                    credentials: Some(RouteCredentials::new("tgt-ak", secrets[3]).expect("creds")),
                },
            },
        ))
        .await
        .expect("route");
    let hook = HttpTarget::new("https://hooks.example/in", 1)
        .expect("url")
        .with_headers(vec![
            HttpHeader::new("Authorization", secrets[4]).expect("header"),
        ])
        .expect("headers");
    controller
        .create_route(route("to-hook", RouteTarget::Http(hook.clone())))
        .await
        .expect("route");
    let first_keys = controller.receipt_keys().await.expect("receipt keys");
    controller
        .set_tier_credentials(tier("AKFIRST", secrets[5]))
        .await
        .expect("tier credentials");
    // One snapshot, and entries after it in the log.
    controller.compact_log().await.expect("compact");
    controller
        .create_user(user("bob", secrets[1]))
        .await
        .expect("user");
    let keys = controller.rotate_receipt_key().await.expect("rotated");
    let set = controller
        .set_tier_credentials(tier("AKLATER", secrets[6]))
        .await
        .expect("tier credentials")
        .expect("set");
    assert_eq!(keys.keys.len(), 2);
    assert_eq!(
        keys.keys[&first_keys.signing],
        first_keys.keys[&first_keys.signing]
    );
    controller.shutdown().await.expect("shutdown");

    let files = all_files(fx.dir.path());
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("snap")),
        "a snapshot was written: {files:?}"
    );
    let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // The scan reads what was written: the URL, not a secret, is there in plaintext.
    assert!(
        files.iter().any(|f| holds(
            &std::fs::read(f).expect("read"),
            b"https://hooks.example/in"
        )),
        "the route is on disk"
    );
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    for key in keys.keys.values() {
        needles.push(key.secret.clone());
        needles.push(hex::encode(&key.secret).into_bytes());
    }
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        for needle in &needles {
            assert!(
                !holds(&bytes, needle),
                "{} holds {:?} in plaintext",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }

    let clock: SharedClock = fx.clock.clone();
    let controller = Controller::open(fx.config(&[0]), clock)
        .await
        .expect("reopens");
    let users = controller.auth_data().await.expect("auth data").users;
    for (name, password) in [("alice", secrets[0]), ("bob", secrets[1])] {
        let u = users
            .iter()
            .find(|u| u.name.as_str() == name)
            .expect("user");
        assert_eq!(u.password.expose(), password);
    }
    let routes = controller.routes().await.expect("routes");
    let hooked = routes
        .iter()
        .find(|r| r.spec.name.as_str() == "to-hook")
        .expect("route");
    assert_eq!(hooked.spec.target, RouteTarget::Http(hook));
    assert_eq!(
        controller.receipt_keys().await.expect("receipt keys"),
        keys,
        "the receipt keys open after a restart"
    );
    assert_eq!(
        controller
            .tier_credentials()
            .await
            .expect("tier credentials"),
        Some(set),
        "the tier credentials open after a restart"
    );
    assert_eq!(
        controller
            .set_tier_credentials(None)
            .await
            .expect("cleared"),
        None
    );
    assert_eq!(controller.tier_credentials().await.expect("read"), None);
    controller.shutdown().await.expect("shutdown");
}
