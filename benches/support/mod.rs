//! What the benchmarks that start the real `vela` binary share: a free loopback port, an HTTP
//! probe of `/ready`, starting and stopping `vela standalone` on a data directory, and a
//! process's resident memory and open files. Each benchmark uses part of it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200.
pub async fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp).await;
    resp.starts_with("HTTP/1.1 200")
}

/// The sum of the samples of counter `name` on `/metrics` at 127.0.0.1:`port` (0 if absent).
pub async fn scrape_counter(port: u16, name: &str) -> f64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0.0;
    };
    let req = "GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0.0;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp).await;
    resp.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident memory of `child` in MiB (NaN if it cannot be read).
pub fn rss_mib(child: &Child) -> f64 {
    let Some(pid) = child.id() else {
        return f64::NAN;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Open file descriptors of `child` (0 if they cannot be listed).
pub fn open_fds(child: &Child) -> usize {
    child
        .id()
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map_or(0, |d| d.count())
}

/// Bytes under `dir`, in MiB.
pub fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::metadata(p) else {
            return 0;
        };
        if meta.is_file() {
            return meta.len();
        }
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
            .unwrap_or(0)
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}

/// Starts the release `vela standalone` on `data` (extra environment `env`) and returns it with
/// the time from spawn to `/ready`.
pub async fn start_standalone(
    data: &Path,
    grpc: u16,
    http: u16,
    env: &[(&str, &str)],
) -> (Child, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["standalone", "--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("vela starts");
    let deadline = started + Duration::from_secs(3600);
    while !http_ok(http, "/ready").await {
        assert!(Instant::now() < deadline, "vela did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, started.elapsed())
}

/// Stops the broker with SIGTERM and waits for it to exit.
pub async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(600), child.wait()).await;
}

/// Polls `GET /ready` on `port` until it answers 200; panics after `limit`.
pub async fn wait_ready(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !http_ok(port, "/ready").await {
        assert!(Instant::now() < deadline, "not ready on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scenarios' common settings: 16 producers over 4 connections, no consumers, 1 KiB bodies,
/// one message per request, `secs` of sending, 30 s of draining.
pub fn bench_args(server: &str, secs: u64) -> vela::bench::BenchArgs {
    vela::bench::BenchArgs {
        server: server.to_owned(),
        topic: None,
        group: None,
        producers: 16,
        producer_clients: 4,
        consumers: 0,
        message_size: 1024,
        batch_size: 1,
        duration: Duration::from_secs(secs),
        rate: None,
        max_in_flight: 1024,
        drain: Duration::from_secs(30),
        json: false,
        access_key: None,
        secret_key: None,
        ca_file: None,
    }
}

/// Clock ticks per second of /proc's CPU times.
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name and state.
    (field(11) + field(12)) / ticks
}

/// Creates consumer group `name` on `server`, starting at the first message of every queue
/// (a group created later on an old queue would otherwise start at its creation).
pub async fn create_group(server: &str, name: &str) {
    use vela::admin::{AdminCommand, GroupCommand, ResetTarget, Target, execute};
    let target = Target::plain(server);
    execute(
        &target,
        AdminCommand::Group(GroupCommand::Create {
            name: name.to_owned(),
            fifo: false,
            max_attempts: None,
            from: Some(ResetTarget::Earliest),
            retry_delays: None,
            retry_exponential: None,
            broadcast: false,
        }),
    )
    .await
    .unwrap();
}
