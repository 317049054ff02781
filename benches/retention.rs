//! Retention benchmark: how broker memory and restart time grow with the messages it retains.
//! Starts the release `vela standalone` (fsync group commit on) in a temp dir, fills one topic
//! with `VELA_BENCH_RETAIN_MESSAGES` messages of 256 bytes (default 5,000,000; the store-engine target
//! is 50,000,000), records RSS, stops the broker with SIGTERM, starts it again on the same data,
//! records the time from spawn to `/ready` and RSS, and receives from the backlog to show
//! consumption continues where it was.
//!
//! Every message is tagged `B` except one in a million, tagged `A`: after the restart a group
//! subscribed to `A` alone receives those few out of the whole backlog (the selective-filter
//! scenario of the store-engine work: every match within 10 s, no log entries for empty
//! receives). Then a second new group selects the same messages with the SQL92 condition
//! `kind = 'A'` (every message carries its tag as the property `kind`): the leader reads and
//! evaluates every message, so this measures SQL92 evaluation over a backlog, with broker CPU
//! per message evaluated.
//!
//! Run: `cargo bench --bench retention` (`VELA_BENCH_RETAIN_MESSAGES=N` to change the size).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use support::{dir_mib, free_port, rss_mib, start_standalone, stop};
use tokio::process::Child;
use vela::bench::{BenchArgs, execute};
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

/// One message in this many is tagged `A`.
const MATCH_EVERY: u64 = 1_000_000;
const BATCH: u64 = 64;
const PRODUCERS: u64 = 8;

/// Sends `total` messages of 256 bytes in batches of 64 from 8 concurrent senders; message `n`
/// is tagged `A` when `n % MATCH_EVERY == MATCH_EVERY - 1`, else `B`.
async fn fill(server: &str, topic: &str, total: u64, child: &Child) -> u64 {
    let config = ClientConfig::builder().endpoint(server).build().unwrap();
    let producer = Arc::new(
        Producer::builder(config)
            .topics([topic.to_owned()])
            .build()
            .await
            .unwrap(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PRODUCERS {
        let (producer, next, topic) = (producer.clone(), next.clone(), topic.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let tag = |n: u64| {
                    if n % MATCH_EVERY == MATCH_EVERY - 1 {
                        "A"
                    } else {
                        "B"
                    }
                };
                // A batch shares one tag: the matches go out alone.
                let mut batch = Vec::new();
                for n in first..(first + BATCH).min(total) {
                    let message = Message::builder(&topic)
                        .body(vec![b'x'; 256])
                        .tag(tag(n))
                        .property("kind", tag(n))
                        .build()
                        .unwrap();
                    if tag(n) == "A" {
                        producer.send_batch(vec![message]).await.unwrap();
                    } else {
                        batch.push(message);
                    }
                }
                if !batch.is_empty() {
                    producer.send_batch(batch).await.unwrap();
                }
            }
        }));
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let sent = next.load(Ordering::Relaxed).min(total);
            println!(
                "  retained {sent} messages ({:.0} msg/s), RSS {:.1} MiB",
                sent as f64 / started.elapsed().as_secs_f64(),
                rss_mib(child)
            );
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    total
}

/// A new group `group` with `filter` receives (and acks) from the whole backlog until it has
/// `matches` messages, all tagged `A`, or 10 minutes pass; returns how many and the seconds.
async fn search(
    server: &str,
    topic: &str,
    group: &str,
    filter: FilterExpression,
    matches: u64,
) -> (u64, f64) {
    let config = ClientConfig::builder().endpoint(server).build().unwrap();
    let consumer = SimpleConsumer::builder(config, group)
        .subscribe(topic, filter)
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let searching = Instant::now();
    let mut found = 0u64;
    while found < matches && searching.elapsed() < Duration::from_secs(600) {
        for m in consumer.receive(32, Duration::from_secs(60)).await.unwrap() {
            assert_eq!(m.tag.as_deref(), Some("A"));
            consumer.ack(&m).await.unwrap();
            found += 1;
        }
    }
    let seconds = searching.elapsed().as_secs_f64();
    consumer.shutdown().await.unwrap();
    (found, seconds)
}

#[tokio::main]
async fn main() {
    let target: u64 = std::env::var("VELA_BENCH_RETAIN_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (grpc, http) = (free_port(), free_port());
    let server = format!("127.0.0.1:{grpc}");

    let (child, first_ready) = start_standalone(&data, grpc, http, &[]).await;
    let idle_rss = rss_mib(&child);
    println!("empty: ready after {first_ready:.2?}, RSS {idle_rss:.1} MiB");

    let topic = format!("retain-{}", std::process::id());
    // The groups that read the backlog exist before it is written, so they start at its
    // beginning however long the fill takes.
    for group in ["only-a", "only-a-sql", "retain-drain"] {
        support::create_group(&server, group).await;
    }
    let filling = Instant::now();
    let sent = fill(&server, &topic, target, &child).await;
    let fill_s = filling.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_rss = rss_mib(&child);
    let disk = dir_mib(&data);
    println!(
        "retained {sent} messages of 256 B in {fill_s:.0} s: RSS {loaded_rss:.1} MiB, data {disk:.0} MiB"
    );

    stop(child).await;
    let (child, restart) = start_standalone(&data, grpc, http, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_rss = rss_mib(&child);
    println!("restart: ready after {restart:.2?}, RSS {restarted_rss:.1} MiB");

    // The selective filter: a new group subscribed to `A` alone, over the whole backlog; then
    // the same selection as an SQL92 condition on the `kind` property, which the leader has to
    // read every message for (the tag search reads only the index).
    let matches = target / MATCH_EVERY;
    let (found, search_s) = search(
        &server,
        &topic,
        "only-a",
        FilterExpression::tag("A"),
        matches,
    )
    .await;
    println!(
        "selective filter: {found} of {matches} matches (1 in {MATCH_EVERY}) in {search_s:.2} s"
    );
    let (pid, ticks) = (child.id().unwrap(), support::ticks_per_second());
    let cpu_before = support::cpu_seconds(pid, ticks);
    let (sql_found, sql_s) = search(
        &server,
        &topic,
        "only-a-sql",
        FilterExpression::sql("kind = 'A'"),
        matches,
    )
    .await;
    let sql_cpu = support::cpu_seconds(pid, ticks) - cpu_before;
    println!(
        "selective SQL92 filter: {sql_found} of {matches} matches in {sql_s:.2} s \
         ({:.0} messages evaluated/s, broker CPU {:.2} µs per message evaluated)",
        sent as f64 / sql_s,
        sql_cpu * 1e6 / sent as f64
    );

    let drain = execute(BenchArgs {
        server: server.clone(),
        topic: Some(topic.clone()),
        group: Some("retain-drain".into()),
        producers: 0,
        producer_clients: 1,
        consumers: 4,
        message_size: 256,
        batch_size: 1,
        duration: Duration::from_secs(10),
        rate: None,
        max_in_flight: 1024,
        drain: Duration::ZERO,
        json: false,
        access_key: None,
        secret_key: None,
        ca_file: None,
    })
    .await
    .unwrap();
    println!(
        "after restart: received {} messages in {:.0} s ({:.0} msg/s)",
        drain.received, drain.duration_s, drain.receive_rate
    );
    let json = serde_json::json!({
        "messages": sent,
        "message_bytes": 256,
        "fill_seconds": fill_s,
        "idle_rss_mib": idle_rss,
        "loaded_rss_mib": loaded_rss,
        "data_mib": disk,
        "restart_to_ready_s": restart.as_secs_f64(),
        "restarted_rss_mib": restarted_rss,
        "received_after_restart": drain.received,
        "selective_matches": matches,
        "selective_found": found,
        "selective_seconds": search_s,
        "selective_sql_found": sql_found,
        "selective_sql_seconds": sql_s,
        "selective_sql_broker_cpu_seconds": sql_cpu,
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap());
    stop(child).await;
}
