//! The load generator runs end to end (a tiny bounded run; numbers live in docs/benchmarks.md),
//! and the HTTP endpoint answers health, readiness and Prometheus metrics with RocketMQ names.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Node;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_and_metrics_count_it() {
    let node = Node::start().await;
    let args = vela::bench::BenchArgs {
        server: node.endpoint(),
        topic: None,
        group: None,
        producers: 2,
        producer_clients: 1,
        consumers: 1,
        message_size: 128,
        batch_size: 4,
        duration: Duration::from_millis(700),
        rate: None,
        max_in_flight: 1024,
        drain: Duration::from_secs(20),
        json: true,
        access_key: None,
        secret_key: None,
        ca_file: None,
    };
    let report = vela::bench::execute(args).await.unwrap();
    assert!(report.sent > 0);
    assert_eq!(report.send_errors, 0);
    assert_eq!(report.received, report.sent, "{report:?}");
    assert_eq!(report.acked, report.received);
    assert!(vela::bench::render(&report).contains("msg/s"));
    assert!(report.send_latency.count > 0);
    // Every timed send is in exactly one second of the series.
    assert!(!report.send_per_second.is_empty());
    assert_eq!(
        report.send_per_second.iter().map(|s| s.sent).sum::<u64>(),
        report.send_latency.count
    );
    assert!(vela::bench::render(&report).contains("send p99 per second"));

    let health = http_get(node.http(), "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(node.http(), "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = http_get(node.http(), "/metrics").await;
    // Names exactly as RocketMQ's, so its users' queries match: no prefix, not even `_`.
    let body = metrics.split("\r\n\r\n").nth(1).unwrap_or_default();
    // (Chunk-size lines, should the body come chunked, are hex digits alone.)
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c.is_ascii_hexdigit()))
    {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        assert!(
            name.starts_with("rocketmq_") || name.starts_with("vela_") || name.starts_with("# EOF"),
            "a metric line with a name RocketMQ users would not query: {line:?}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("rocketmq_messages_in_total{")),
        "{metrics}"
    );
    assert!(metrics.contains("rocketmq_messages_out_total"), "{metrics}");
    assert!(
        metrics.contains(&report.topic),
        "metrics are labelled by topic"
    );
    node.stop().await;
}
