//! What the benchmarks that start the real `vela` binary share: a free loopback port, an HTTP
//! probe of `/ready`, and a process's resident memory.

use std::net::TcpListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

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
