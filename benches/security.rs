//! What auth and TLS cost (ADR 0019, ADR 0020): the release `vela standalone` started fresh in
//! four set-ups (plaintext without auth, auth on, TLS, both), in alternating rounds so the
//! noisy machine drifts alike for all, each driven by the same `vela bench` scenarios from this
//! process: single sends (64 producers, one message per request) then receive + ack of what
//! they sent. Prints the broker's CPU per message (from /proc, the broker process only) and the
//! rates.
//!
//! Run: `cargo bench --bench security` (VELA_BENCH_SECONDS=N per scenario, default 10;
//! VELA_BENCH_ROUNDS, default 2).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::{bench_args, cpu_seconds, free_port, start_standalone, stop, ticks_per_second};
use vela::bench::{BenchArgs, execute};

const ROOT: (&str, &str) = ("bench-root", "bench-root-secret");

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 (`server.pem`, `server.key`).
fn certs(dir: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

struct Setup {
    name: &'static str,
    auth: bool,
    tls: bool,
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("VELA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rounds: u32 = std::env::var("VELA_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let certs_dir = tempfile::tempdir().unwrap();
    certs(certs_dir.path());
    let ticks = ticks_per_second();
    let setups = [
        Setup {
            name: "plaintext, auth off",
            auth: false,
            tls: false,
        },
        Setup {
            name: "plaintext, auth on",
            auth: true,
            tls: false,
        },
        Setup {
            name: "TLS, auth off",
            auth: false,
            tls: true,
        },
        Setup {
            name: "TLS, auth on",
            auth: true,
            tls: true,
        },
    ];
    println!(
        "{:<22} {:>5} {:>11} {:>14} {:>11} {:>14}",
        "set-up", "round", "send msg/s", "send CPU µs", "drain msg/s", "drain CPU µs"
    );
    for round in 1..=rounds {
        for setup in &setups {
            let dir = tempfile::tempdir().unwrap();
            let (grpc, http) = (free_port(), free_port());
            let cert = certs_dir.path().join("server.pem");
            let key = certs_dir.path().join("server.key");
            let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
            let mut env = vec![("VELA_PROXY__MIN_LONG_POLLING", "1s")];
            if setup.auth {
                env.extend([
                    ("VELA_AUTH__ENABLED", "true"),
                    ("VELA_AUTH__INIT_USER", ROOT.0),
                    ("VELA_AUTH__INIT_PASSWORD", ROOT.1),
                ]);
            }
            if setup.tls {
                env.extend([
                    ("VELA_TLS__ENABLED", "true"),
                    ("VELA_TLS__CERT_FILE", cert),
                    ("VELA_TLS__KEY_FILE", key),
                ]);
            }
            let (child, _) = start_standalone(dir.path(), grpc, http, &env).await;
            let pid = child.id().unwrap();
            let server = if setup.tls {
                format!("https://127.0.0.1:{grpc}")
            } else {
                format!("127.0.0.1:{grpc}")
            };
            let signed = |args: BenchArgs| BenchArgs {
                access_key: setup.auth.then(|| ROOT.0.to_owned()),
                secret_key: setup.auth.then(|| ROOT.1.to_owned()),
                ca_file: setup.tls.then(|| certs_dir.path().join("ca.pem")),
                ..args
            };
            let before = cpu_seconds(pid, ticks);
            let send = execute(signed(BenchArgs {
                producers: 64,
                producer_clients: 8,
                drain: std::time::Duration::ZERO,
                ..bench_args(&server, secs)
            }))
            .await
            .unwrap();
            let sent_cpu = cpu_seconds(pid, ticks) - before;
            let before = cpu_seconds(pid, ticks);
            let drain = execute(signed(BenchArgs {
                topic: Some(send.topic.clone()),
                producers: 0,
                consumers: 8,
                ..bench_args(&server, secs)
            }))
            .await
            .unwrap();
            let drain_cpu = cpu_seconds(pid, ticks) - before;
            assert_eq!(send.send_errors, 0, "{}", setup.name);
            println!(
                "{:<22} {:>5} {:>11.0} {:>14.1} {:>11.0} {:>14.1}",
                setup.name,
                round,
                send.send_rate,
                sent_cpu * 1e6 / send.sent.max(1) as f64,
                drain.receive_rate,
                drain_cpu * 1e6 / drain.received.max(1) as f64,
            );
            stop(child).await;
        }
    }
}
