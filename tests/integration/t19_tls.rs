//! TLS on the client port: our SDK and `vela admin` over `https://` with a CA file, mutual TLS
//! with client certificates, and plaintext or untrusted clients refused cleanly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

use crate::harness::{Node, admin, unique};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn make_certs(dir: &Path, ca_name: &str) -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["vela-test-client".into()]);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
    }
}

async fn tls_node(certs: &Certs, mutual: bool) -> Node {
    let (cert, key, ca) = (
        certs.server_cert.clone(),
        certs.server_key.clone(),
        certs.ca.clone(),
    );
    Node::start_with(move |c| {
        c.tls.enabled = true;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.tls.client_ca_file = mutual.then_some(ca);
    })
    .await
}

fn https(node: &Node) -> String {
    format!("https://{}", node.endpoint())
}

async fn round_trip(config: ClientConfig, topic: &str) -> vela_sdk::Result<()> {
    let producer = Producer::builder(config.clone())
        .topics([topic])
        .build()
        .await?;
    let sent = producer
        .send(Message::builder(topic).body("over tls").build()?)
        .await?;
    let consumer = SimpleConsumer::builder(config, unique("tls-g"))
        .subscribe(topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(1))
        .build()
        .await?;
    for _ in 0..20 {
        for m in consumer.receive(16, Duration::from_secs(30)).await? {
            consumer.ack(&m).await?;
            if m.message_id == sent.message_id {
                return Ok(());
            }
        }
    }
    panic!("the message sent over TLS never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_the_ca_speak_tls_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "vela test CA");
    let node = tls_node(&certs, false).await;
    let topic = unique("tls");
    let ca = std::fs::read(&certs.ca).unwrap();
    let trusted = ClientConfig::builder()
        .endpoint(https(&node))
        .ca_pem(ca)
        .build()
        .unwrap();
    round_trip(trusted, &topic).await.unwrap();

    // Plaintext to the TLS port fails with an error, quickly, and harms nothing.
    let plain = ClientConfig::builder()
        .endpoint(node.endpoint())
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert!(round_trip(plain, &topic).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(20));
    // A CA the server's certificate does not chain to.
    let other = make_certs(
        &{
            let d = dir.path().join("other");
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        "another CA",
    );
    let untrusted = ClientConfig::builder()
        .endpoint(https(&node))
        .ca_pem(std::fs::read(&other.ca).unwrap())
        .build()
        .unwrap();
    assert!(round_trip(untrusted, &topic).await.is_err());

    // vela admin with --ca-file; without it the system roots do not trust the test CA.
    let ca_file = certs.ca.to_str().unwrap();
    let listed = admin(&https(&node), &["--ca-file", ca_file, "topic", "list"])
        .await
        .unwrap();
    assert!(listed.contains(&topic), "{listed}");
    let refused = admin(&https(&node), &["topic", "list"]).await.unwrap_err();
    assert!(refused.to_string().contains("cannot reach"), "{refused}");
    // The server still answers trusted clients after all that.
    admin(&https(&node), &["--ca-file", ca_file, "cluster"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "vela test CA");
    let node = tls_node(&certs, true).await;
    let topic = unique("mtls");
    let ca = std::fs::read(&certs.ca).unwrap();
    let anonymous = ClientConfig::builder()
        .endpoint(https(&node))
        .ca_pem(ca.clone())
        .build()
        .unwrap();
    assert!(round_trip(anonymous, &topic).await.is_err());
    let identified = ClientConfig::builder()
        .endpoint(https(&node))
        .ca_pem(ca)
        .client_identity(
            std::fs::read(&certs.client_cert).unwrap(),
            std::fs::read(&certs.client_key).unwrap(),
        )
        .build()
        .unwrap();
    round_trip(identified, &topic).await.unwrap();
    let args = [
        "--ca-file",
        certs.ca.to_str().unwrap(),
        "--client-cert",
        certs.client_cert.to_str().unwrap(),
        "--client-key",
        certs.client_key.to_str().unwrap(),
        "topic",
        "list",
    ];
    let listed = admin(&https(&node), &args).await.unwrap();
    assert!(listed.contains(&topic), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_stops_the_start_with_a_readable_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path().join("data"));
    config.tls.enabled = true;
    config.tls.cert_file = Some(dir.path().join("absent.pem"));
    config.tls.key_file = Some(dir.path().join("absent.key"));
    let err = vela::standalone::Standalone::start(config)
        .await
        .err()
        .expect("no certificate");
    let text = format!("{err:#}");
    assert!(
        text.contains("tls.cert_file") && text.contains("absent.pem"),
        "{text}"
    );
}

/// Whether `vela admin cluster` over TLS trusting only `ca` gets an answer.
async fn admin_trusts(node: &Node, ca: &Path) -> bool {
    admin(
        &https(node),
        &["--ca-file", ca.to_str().unwrap(), "cluster"],
    )
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let first = make_certs(&served, "first CA");
    let node = tls_node(&first, false).await;
    let first_ca = dir.path().join("first-ca.pem");
    std::fs::copy(&first.ca, &first_ca).unwrap();
    assert!(admin_trusts(&node, &first_ca).await);

    // A half-written renewal (a key that is not PEM) is not taken: the old certificate stays.
    std::fs::write(&first.server_key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        admin_trusts(&node, &first_ca).await,
        "a broken renewal took the server down"
    );

    // The renewal lands (cert-manager rewrites the files): new connections get the new
    // certificate, which only the new CA trusts.
    let renewed_dir = dir.path().join("renewed");
    std::fs::create_dir_all(&renewed_dir).unwrap();
    let renewed = make_certs(&renewed_dir, "second CA");
    std::fs::copy(&renewed.server_cert, &first.server_cert).unwrap();
    std::fs::copy(&renewed.server_key, &first.server_key).unwrap();
    let mut switched = false;
    for _ in 0..40 {
        if admin_trusts(&node, &renewed.ca).await {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(switched, "the renewed certificate was never served");
    assert!(
        !admin_trusts(&node, &first_ca).await,
        "the old certificate is still served"
    );
    node.stop().await;
}
