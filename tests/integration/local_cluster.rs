//! `vela local-cluster` as the cluster tests start it: the child process, what `cluster.json`
//! says, and the kill/restart/stop steps the tests share.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A running `vela local-cluster` and its `cluster.json`.
pub(crate) struct LocalCluster {
    /// The first port of the cluster's range (`--base-port`).
    pub base: u16,
    pub child: Child,
    pub file: serde_json::Value,
    pub proxies: Vec<String>,
    _slot: PortSlot,
    reaper: Reaper,
    _dir: LogsOnPanic,
}

impl LocalCluster {
    /// Starts `vela local-cluster` on a free [`PortSlot`] with `args` added, waits for
    /// `cluster.json` and for both proxies to be ready.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> LocalCluster {
        let slot = PortSlot::take();
        let base = slot.base;
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vela"))
            .arg("local-cluster")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--base-port")
            .arg(base.to_string())
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // cluster.json appears once every process is started; readiness is checked below.
        let json = dir.path().join("cluster.json");
        let deadline = Instant::now() + Duration::from_secs(90);
        let file: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&json)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            assert!(Instant::now() < deadline, "no cluster.json");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let reaper = Reaper(
            ["proxies", "stores", "controllers"]
                .iter()
                .flat_map(|k| file[*k].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["pid"].as_u64())
                .collect(),
        );
        let proxies: Vec<String> = file["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["addr"].as_str().unwrap().to_owned())
            .collect();
        crate::t06_crash::wait_ready(base + 121).await;
        crate::t06_crash::wait_ready(base + 122).await;
        LocalCluster {
            base,
            child,
            file,
            proxies,
            _slot: slot,
            reaper,
            _dir: LogsOnPanic(dir),
        }
    }

    /// SIGKILLs store `index` (0-based, as `cluster.json` lists them) and waits until its data
    /// directory's lock is free for a restart. That is the condition itself: the process is
    /// `local-cluster`'s child, not ours, and its main thread shows as a zombie while other
    /// threads still hold the open files (and so the lock) for a moment.
    pub fn kill_store(&self, index: usize) {
        let entry = &self.file["stores"][index];
        let pid = entry["pid"].as_u64().unwrap();
        let lock = std::path::Path::new(entry["data_dir"].as_str().unwrap()).join("LOCK");
        kill("-9", pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let file = std::fs::File::options().write(true).open(&lock).unwrap();
            if file.try_lock().is_ok() {
                // Dropping the file releases the lock for the restart.
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "store {pid} held its data dir lock 10 s after SIGKILL"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts store `index` again from the `cmd` `cluster.json` records for it.
    pub fn restart_store(&self, index: usize) -> Child {
        let cmd: Vec<String> = self.file["stores"][index]["cmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// SIGTERMs `restarted` and the cluster; both must exit cleanly.
    pub async fn stop(self, restarted: Child) {
        self.stop_restarted(vec![restarted]).await;
    }

    /// SIGTERMs every process in `restarted` and the cluster; all must exit cleanly.
    pub async fn stop_restarted(mut self, restarted: Vec<Child>) {
        for child in &restarted {
            kill("-TERM", u64::from(child.id().unwrap()));
        }
        kill("-TERM", u64::from(self.child.id().unwrap()));
        let exit = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .expect("local-cluster stops within 90 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "local-cluster exited with {exit}");
        for mut child in restarted {
            let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("the restarted store stops")
                .unwrap();
            assert!(exit.success(), "the restarted store exited with {exit}");
        }
        self.reaper.0.clear();
    }
}

impl LocalCluster {
    /// SIGTERMs the cluster; it must exit cleanly.
    pub async fn stop_all(mut self) {
        kill("-TERM", u64::from(self.child.id().unwrap()));
        let exit = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .expect("local-cluster stops within 90 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "local-cluster exited with {exit}");
        self.reaper.0.clear();
    }

    /// The data directory of store `index` (0-based, as `cluster.json` lists them).
    pub fn store_dir(&self, index: usize) -> std::path::PathBuf {
        self.file["stores"][index]["data_dir"]
            .as_str()
            .unwrap()
            .into()
    }
}

/// A range of 200 ports a local cluster may listen on (`local-cluster` uses base+1..=base+30
/// for gRPC and base+101..=base+130 for HTTP), held by a file lock for as long as the test
/// runs, so two cluster tests running at once never pick the same range.
///
/// Ranges lie between 1,100 and 32,700: below the kernel's ephemeral range (32768 and up),
/// where every other test's port-0 sockets land, and free of any port something else on the
/// machine already listens on (each is probed before it is taken).
pub(crate) struct PortSlot {
    pub base: u16,
    _lock: std::fs::File,
}

impl PortSlot {
    const FIRST: u16 = 1_100;
    const SLOTS: u16 = 158;

    pub fn take() -> PortSlot {
        let dir = std::env::temp_dir().join("vela-it-ports");
        std::fs::create_dir_all(&dir).expect("create the port-slot lock directory");
        // Start where this process's id points, so concurrent tests rarely contend.
        let start = (std::process::id() % u32::from(Self::SLOTS)) as u16;
        for i in 0..Self::SLOTS {
            let base = Self::FIRST + (start + i) % Self::SLOTS * 200;
            let lock = std::fs::File::create(dir.join(format!("{base}.lock")))
                .expect("create a port-slot lock file");
            if lock.try_lock().is_err() {
                continue;
            }
            let free = (1..=30)
                .chain(101..=130)
                .all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok());
            if free {
                return PortSlot { base, _lock: lock };
            }
        }
        panic!("no free range of 200 ports between 1,100 and 32,700 for a local cluster");
    }
}

/// `vela store` as node `id` of `cluster` that is not in its `[[cluster.stores]]`: store 1's
/// configuration file with its own id, ports (base+10+id, base+110+id) and data directory,
/// and the address it is reached at, as a scaled-out StatefulSet pod would be (ADR 0031).
pub(crate) fn joining_store(
    cluster: &LocalCluster,
    id: u16,
    data: &std::path::Path,
) -> tokio::process::Command {
    let config = cluster.file["stores"][0]["cmd"][3]
        .as_str()
        .expect("store 1's config path")
        .to_owned();
    let (grpc, http) = (cluster.base + 10 + id, cluster.base + 110 + id);
    let mut command = Command::new(env!("CARGO_BIN_EXE_vela"));
    command
        .args(["store", "--config", &config])
        .env("VELA_STORE__NODE_ID", id.to_string())
        .env("VELA_DATA_DIR", data)
        .env("VELA_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("VELA_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("VELA_STORE__ADVERTISE_ADDR", format!("127.0.0.1:{grpc}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

pub(crate) fn kill(signal: &str, pid: u64) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {signal} {pid}");
}

/// `vela admin cluster status --output json` through `proxy`.
pub(crate) fn cluster_status(proxy: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
        .args([
            "admin", "--server", proxy, "cluster", "status", "--output", "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The cluster's directory; when the test fails, the tail of every process's log goes to
/// stderr first, so a failure in CI says what the nodes saw.
struct LogsOnPanic(tempfile::TempDir);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(roles) = std::fs::read_dir(self.0.path()) else {
            return;
        };
        let mut logs: Vec<_> = roles
            .flatten()
            .map(|e| e.path().join("vela.log"))
            .filter(|p| p.exists())
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("==== {} (last 80 of {} lines)", log.display(), lines.len());
            for line in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Kills the cluster's processes if the test ends early (a panic): killing local-cluster
/// itself would leave its children running.
/// The cluster's processes, SIGKILLed when the [`LocalCluster`] is dropped without a clean
/// stop (a panic, or a test that never stops it): killing `vela local-cluster` alone would
/// leave its children running, holding their ports for whatever runs next.
struct Reaper(Vec<u64>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// Receives (and acks) through `proxy` as a new consumer group of `topic` until every body in
/// `sent` came back, within `within`; returns the consumer.
pub(crate) async fn receive_all(
    proxy: &str,
    topic: &str,
    sent: &mut std::collections::HashSet<String>,
    within: Duration,
) -> vela_sdk::SimpleConsumer {
    let consumer = vela_sdk::SimpleConsumer::builder(
        vela_sdk::ClientConfig::builder()
            .endpoint(proxy)
            .build()
            .unwrap(),
        crate::harness::unique("received-group"),
    )
    .subscribe(topic, vela_sdk::FilterExpression::tag("*"))
    .await_duration(Duration::from_secs(5))
    .build()
    .await
    .unwrap();
    let deadline = Instant::now() + within;
    while !sent.is_empty() {
        assert!(
            Instant::now() < deadline,
            "never received {} of them, e.g. {:?}",
            sent.len(),
            sent.iter().take(5).collect::<Vec<_>>()
        );
        for m in consumer.receive(32, Duration::from_secs(30)).await.unwrap() {
            consumer.ack(&m).await.unwrap();
            sent.remove(String::from_utf8_lossy(&m.body).as_ref());
        }
    }
    consumer
}
