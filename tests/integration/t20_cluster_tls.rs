//! `vela local-cluster --cluster-tls` (ADR 0021): the processes speak mutual TLS to each other
//! and clients are served through the proxies as before, while a store or controller port
//! refuses whoever lacks a certificate of the cluster CA: plaintext, TLS without a client
//! certificate, or a certificate of another CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vela_proto::pb::controller::controller_client::ControllerClient;
use vela_proto::pb::store::store_client::StoreClient;
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

use crate::harness::unique;
use crate::local_cluster::LocalCluster;
use crate::t19_tls::make_certs;

/// A store client over `endpoint`; true if `NodeStatus` was answered.
async fn store_answers(endpoint: Endpoint) -> bool {
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
    else {
        return false;
    };
    StoreClient::new(channel)
        .node_status(vela_proto::pb::store::Empty {})
        .await
        .is_ok()
}

fn tls(addr: &str, config: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config.domain_name("vela-cluster"))
        .unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_processes_speak_mutual_tls_and_refuse_strangers() {
    let cluster = LocalCluster::start(&["--cluster-tls", "--shards", "1"], &[]).await;

    // Clients are served as before.
    let proxy = &cluster.proxies[0];
    let config = ClientConfig::builder().endpoint(proxy).build().unwrap();
    let topic = unique("ctls");
    let producer = Producer::builder(config.clone())
        .topics([topic.clone()])
        .build()
        .await
        .unwrap();
    let sent = producer
        .send(Message::builder(&topic).body("inside").build().unwrap())
        .await
        .unwrap();
    let consumer = SimpleConsumer::builder(
        ClientConfig::builder()
            .endpoint(&cluster.proxies[1])
            .build()
            .unwrap(),
        unique("ctls-g"),
    )
    .subscribe(&topic, FilterExpression::tag("*"))
    .await_duration(Duration::from_secs(1))
    .build()
    .await
    .unwrap();
    let mut found = false;
    for _ in 0..30 {
        for m in consumer.receive(16, Duration::from_secs(30)).await.unwrap() {
            consumer.ack(&m).await.unwrap();
            found |= m.message_id == sent.message_id;
        }
        if found {
            break;
        }
    }
    assert!(found, "the message never arrived through the other proxy");

    // The cluster's own ports.
    let store = cluster.file["stores"][0]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let controller = cluster.file["controllers"][0]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir: PathBuf = cluster
        .store_dir(0)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("tls");
    let ca = read(&dir.join("ca.pem"));
    let member = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(
            read(&dir.join("proxy-1.pem")),
            read(&dir.join("proxy-1.key")),
        ));
    assert!(
        store_answers(tls(&store, member)).await,
        "a certificate of the cluster CA is served"
    );
    let plaintext = Endpoint::from_shared(format!("http://{store}")).unwrap();
    assert!(!store_answers(plaintext).await, "plaintext is refused");
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    assert!(
        !store_answers(tls(&store, anonymous)).await,
        "TLS without a client certificate is refused"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let other = make_certs(elsewhere.path(), "not the cluster CA");
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(
            read(&other.client_cert),
            read(&other.client_key),
        ));
    assert!(
        !store_answers(tls(&store, stranger)).await,
        "a certificate of another CA is refused"
    );
    let plaintext = Endpoint::from_shared(format!("http://{controller}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    let refused = match plaintext.connect().await {
        Ok(channel) => ControllerClient::new(channel)
            .auth_data(vela_proto::pb::controller::Empty {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "the controller hands nothing to a plaintext caller"
    );

    // `vela cluster-certs` adds a member to the same CA (the shipped cluster configs' way).
    let certs = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
            .arg("cluster-certs")
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = certs(&["ops-1", "proxy-1"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("wrote") && printed.contains("ops-1.pem"),
        "{printed}"
    );
    assert!(
        printed.contains("kept") && printed.contains("proxy-1.pem"),
        "{printed}"
    );
    let added = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(
            read(&dir.join("ops-1.pem")),
            read(&dir.join("ops-1.key")),
        ));
    assert!(
        store_answers(tls(&store, added)).await,
        "a certificate vela cluster-certs made is a member's"
    );
    let bad = certs(&["../ops"]);
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.contains("invalid process name"), "{said}");
    cluster.stop_all().await;
}
