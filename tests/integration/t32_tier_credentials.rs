//! Tier credentials the controller keeps (issue 8): `vela admin tier credentials set` seals an
//! S3 key pair in the controller's metadata; every store node signs its tier requests with it
//! within seconds, without a restart, and with its own `[tier]` settings again after `clear`.
//! The tier is a stand-in S3 endpoint that records which access key signed each request.

use std::time::Duration;

use tokio::time::Instant;
use vela_tier::signed_by::SignedBy;

use crate::harness::{Node, admin};
use crate::local_cluster::LocalCluster;

/// Waits until `endpoint` has seen `count` requests signed by `key` after the first `from`.
async fn signed(endpoint: &SignedBy, from: usize, key: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = endpoint.seen();
        if seen.iter().skip(from).filter(|k| *k == key).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} requests signed by {key} after #{from}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the managed pair through `proxy`, checks what `show` answers, waits for `stores`
/// store nodes to sign with it, clears it and waits for them to sign with their own again.
async fn set_then_clear(proxy: &str, endpoint: &SignedBy, stores: usize) {
    let shown = admin(proxy, &["tier", "credentials", "show"])
        .await
        .unwrap();
    assert!(shown.contains("none set"), "{shown}");
    let from = endpoint.seen().len();
    let set = admin(
        proxy,
        &[
            "tier",
            "credentials",
            "set",
            "--access-key-id",
            "MANAGED",
            "--secret-access-key",
            "managed-secret-7f2a",
        ],
    )
    .await
    .unwrap();
    assert!(set.contains("access key id: MANAGED"), "{set}");
    assert!(!set.contains("managed-secret-7f2a"), "{set}");
    signed(endpoint, from, "MANAGED", stores).await;

    let json = admin(proxy, &["tier", "credentials", "show", "--output", "json"])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["access_key_id"], "MANAGED", "{json}");
    assert!(json["updated_at"].is_string(), "{json}");

    let from = endpoint.seen().len();
    let cleared = admin(proxy, &["tier", "credentials", "clear", "--yes"])
        .await
        .unwrap();
    assert!(cleared.contains("none set"), "{cleared}");
    signed(endpoint, from, "CONFIGURED", stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_nodes_of_a_cluster_follow_the_credentials_the_controllers_keep() {
    let endpoint = SignedBy::start().await.unwrap();
    let url = endpoint.endpoint();
    let cluster = LocalCluster::start(
        &["--shards", "1"],
        &[
            ("VELA_TIER__URL", "s3://bkt/t32"),
            ("VELA_TIER__ENDPOINT", &url),
            ("VELA_TIER__ALLOW_HTTP", "true"),
            ("VELA_TIER__ACCESS_KEY_ID", "CONFIGURED"),
            ("VELA_TIER__SECRET_ACCESS_KEY", "configured-secret"),
        ],
    )
    .await;
    // Each of the three store nodes checks the tier at start with its own settings.
    signed(&endpoint, 0, "CONFIGURED", 3).await;
    set_then_clear(&cluster.proxies[1], &endpoint, 3).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_follows_the_credentials_its_controller_keeps() {
    let endpoint = SignedBy::start().await.unwrap();
    let node = Node::start_with(|c| {
        c.tier.url = Some("s3://bkt/t32".into());
        c.tier.endpoint = Some(endpoint.endpoint());
        c.tier.allow_http = true;
        c.tier.access_key_id = Some("CONFIGURED".into());
        c.tier.secret_access_key = Some("configured-secret".into());
    })
    .await;
    signed(&endpoint, 0, "CONFIGURED", 1).await;
    set_then_clear(&node.endpoint(), &endpoint, 1).await;
    node.stop().await;
}
