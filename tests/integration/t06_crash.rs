//! Crash safety of the real binary: producers send under load, the broker is SIGKILLed
//! mid-stream, restarted on the same data dir, and an oracle of every acknowledged send checks
//! that none is lost and no body is corrupted.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

use crate::harness::unique;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn spawn_vela(data_dir: &Path, grpc: u16, http: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vela"))
        .arg("standalone")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Polls `GET /ready` until it answers 200.
pub(crate) async fn wait_ready(http: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await {
            let req = "GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp).await;
                if resp.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("vela did not become ready on port {http}");
}

fn body_for(id: u64) -> Vec<u8> {
    // Content derived from the sequence, so corruption is detectable.
    let mut b = format!("crash-{id}-").into_bytes();
    b.resize(512, (id % 251) as u8);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut child = spawn_vela(dir.path(), grpc, http);
    wait_ready(http).await;

    let topic = unique("crash");
    let endpoint = format!("127.0.0.1:{grpc}");
    let config = ClientConfig::builder().endpoint(&endpoint).build().unwrap();
    // Oracle: every send the broker acknowledged, with its body.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut producers = JoinSet::new();
    for p in 0..4u64 {
        let producer = Producer::builder(config.clone())
            .topics([topic.clone()])
            .build()
            .await
            .unwrap();
        let acked = acked.clone();
        let topic = topic.clone();
        producers.spawn(async move {
            let mut seq = p << 32;
            // Bounded: stops at the first failure (the kill) or after 20 000 sends.
            for _ in 0..20_000 {
                seq += 1;
                let m = Message::builder(&topic)
                    .body(body_for(seq))
                    .build()
                    .unwrap();
                match producer.send(m).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(r.message_id, seq);
                    }
                    Err(_) => break,
                }
            }
        });
    }
    // Let load build up, then kill -9 mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    while producers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} sends before the kill",
        acked.len()
    );

    let mut child = spawn_vela(dir.path(), grpc, http);
    wait_ready(http).await;
    let config = ClientConfig::builder().endpoint(&endpoint).build().unwrap();
    let consumer = SimpleConsumer::builder(config, unique("crash-reader"))
        .subscribe(&topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut empty = 0;
    while empty < 2 {
        let batch = consumer.receive(32, Duration::from_secs(60)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            if let Some(seq) = acked.get(&m.message_id) {
                assert_eq!(
                    &m.body[..],
                    &body_for(*seq)[..],
                    "corrupted body for {}",
                    m.message_id
                );
            }
            consumer.ack(&m).await.unwrap();
            seen.insert(m.message_id);
        }
    }
    let lost: Vec<_> = acked.keys().filter(|id| !seen.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    println!(
        "crash test: {} acknowledged before SIGKILL, {} delivered after restart",
        acked.len(),
        seen.len()
    );
    consumer.shutdown().await.unwrap();

    // A clean SIGTERM shutdown exits 0.
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "vela exited with {exit} after SIGTERM");
}
