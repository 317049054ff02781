//! Many-queues benchmark: what 100,000 queues holding a few messages each cost the broker.
//! Starts the release `vela standalone` (fsync group commit on, auto-created topics of 8
//! queues) in a temp dir, sends `VELA_BENCH_TOPICS` topics (default 12,500, so 100,000 queues)
//! `VELA_BENCH_MESSAGES_PER_TOPIC` messages (default 16) of 256 bytes each, records RSS and open file descriptors, restarts it on the same
//! data and records the time from spawn to `/ready`, RSS and open files again, then receives one
//! topic's messages to show consumption goes on.
//!
//! Run: `cargo bench --bench many_queues` (`VELA_BENCH_TOPICS=N` to change the size).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{dir_mib, free_port, open_fds, rss_mib, start_standalone, stop};
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

const QUEUES_PER_TOPIC: &str = "8";
const SENDERS: u64 = 32;

fn topic_name(n: u64) -> String {
    format!("many-{n}")
}

#[tokio::main]
async fn main() {
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let topics = env_u64("VELA_BENCH_TOPICS", 12_500);
    let per_topic = env_u64("VELA_BENCH_MESSAGES_PER_TOPIC", 16);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (grpc, http) = (free_port(), free_port());
    let server = format!("127.0.0.1:{grpc}");
    let extra = std::env::var("VELA_BENCH_BROKER_ENV").unwrap_or_default();
    let mut env = vec![("VELA_PROXY__DEFAULT_QUEUE_COUNT", QUEUES_PER_TOPIC)];
    env.extend(extra.split(',').filter_map(|kv| kv.split_once('=')));

    let (child, first_ready) = start_standalone(&data, grpc, http, &env).await;
    let idle_rss = rss_mib(&child);
    let idle_fds = open_fds(&child);
    println!("empty: ready after {first_ready:.2?}, RSS {idle_rss:.1} MiB, {idle_fds} open files");

    let config = ClientConfig::builder().endpoint(&server).build().unwrap();
    let producer = Arc::new(Producer::builder(config).build().await.unwrap());
    let next = Arc::new(AtomicU64::new(0));
    // The checking group exists before the fill, so it reads from the beginning.
    support::create_group(&server, "many-check").await;
    let filling = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (producer, next) = (producer.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= topics {
                    return;
                }
                let topic = topic_name(n);
                for _ in 0..per_topic {
                    let message = Message::builder(&topic)
                        .body(vec![b'x'; 256])
                        .build()
                        .unwrap();
                    producer.send(message).await.unwrap();
                }
            }
        }));
    }
    let mut last_report = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  {} topics filled, RSS {:.1} MiB, {} open files",
                next.load(Ordering::Relaxed).min(topics),
                rss_mib(&child),
                open_fds(&child)
            );
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    producer.shutdown().await.unwrap();
    let fill_s = filling.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_rss = rss_mib(&child);
    let loaded_fds = open_fds(&child);
    let disk = dir_mib(&data);
    let messages = topics * per_topic;
    println!(
        "{topics} topics × {QUEUES_PER_TOPIC} queues, {messages} messages in {fill_s:.0} s: RSS \
         {loaded_rss:.1} MiB, {loaded_fds} open files, data {disk:.0} MiB"
    );

    stop(child).await;
    let (child, restart) = start_standalone(&data, grpc, http, &env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_rss = rss_mib(&child);
    let restarted_fds = open_fds(&child);
    println!(
        "restart: ready after {restart:.2?}, RSS {restarted_rss:.1} MiB, {restarted_fds} open files"
    );

    let config = ClientConfig::builder().endpoint(&server).build().unwrap();
    let consumer = SimpleConsumer::builder(config, "many-check")
        .subscribe(topic_name(topics / 2), FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut received = 0u64;
    let receiving = Instant::now();
    while received < per_topic && receiving.elapsed() < Duration::from_secs(60) {
        for m in consumer.receive(32, Duration::from_secs(30)).await.unwrap() {
            consumer.ack(&m).await.unwrap();
            received += 1;
        }
    }
    println!("after restart: received {received} of {per_topic} messages of one topic");
    let json = serde_json::json!({
        "topics": topics,
        "queues": topics * 8,
        "messages": messages,
        "fill_seconds": fill_s,
        "idle_rss_mib": idle_rss,
        "idle_open_files": idle_fds,
        "loaded_rss_mib": loaded_rss,
        "loaded_open_files": loaded_fds,
        "data_mib": disk,
        "restart_to_ready_s": restart.as_secs_f64(),
        "restarted_rss_mib": restarted_rss,
        "restarted_open_files": restarted_fds,
        "received_after_restart": received,
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap());
    stop(child).await;
}
