//! `vela bench`: a bounded load generator on `vela-sdk`. Producers send for `--duration`
//! (optionally at a fixed total `--rate`), consumers receive and ack; the report gives
//! throughput and HDR-histogram latency percentiles as text or JSON. Latency under a fixed
//! rate is measured from each send's scheduled time, so a stall is not hidden (no
//! coordinated omission).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};

/// `vela bench …`
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The proxy's gRPC address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub server: String,
    /// Topic to use (default: a fresh auto-created one per run).
    #[arg(long)]
    pub topic: Option<String>,
    /// Consumer group (default: a fresh one per run).
    #[arg(long)]
    pub group: Option<String>,
    /// Concurrent sending tasks (0: only consume the backlog of --topic).
    #[arg(long, default_value_t = 16)]
    pub producers: u32,
    /// Producer clients (connections) the sending tasks share.
    #[arg(long, default_value_t = 4)]
    pub producer_clients: u32,
    /// Concurrent receiving consumers (0 = produce only).
    #[arg(long, default_value_t = 4)]
    pub consumers: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Messages per send request (1 = one message per request, as the official clients send).
    #[arg(long, default_value_t = 1)]
    pub batch_size: u32,
    /// How long producers send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Fixed total send rate in messages per second (default: as fast as possible). Each send
    /// leaves on its schedule without waiting for the answer to the one before (open loop).
    #[arg(long)]
    pub rate: Option<u64>,
    /// With --rate: sends awaiting their answer at most, over all producers; a send that finds
    /// the limit reached waits, and that wait counts in its latency.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: u32,
    /// After producers stop, how long consumers may drain.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Sign every request as this user (a server with auth on).
    #[arg(long, env = "VELA_BENCH_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Secret key of --access-key.
    #[arg(
        long,
        env = "VELA_BENCH_SECRET_KEY",
        hide_env_values = true,
        requires = "access_key"
    )]
    pub secret_key: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` server.
    #[arg(long, env = "VELA_BENCH_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Sends scheduled in one second of the run (counted from the start of sending): a stall shows
/// as one bad second that the run's overall percentiles average away.
#[derive(Debug, Clone, Serialize)]
pub struct SecondStats {
    pub second: u64,
    pub sent: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Per-second send latency, shared by the producer tasks.
#[derive(Default)]
struct PerSecond(Mutex<BTreeMap<u64, Histogram<u64>>>);

impl PerSecond {
    fn record(&self, second: u64, micros: u64) {
        let mut seconds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let h = seconds.entry(second).or_insert_with(|| {
            // Two significant digits keep each second's histogram small (a few KiB).
            Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds are valid")
        });
        h.saturating_record(micros);
    }

    fn stats(&self) -> Vec<SecondStats> {
        let ms = |v: u64| v as f64 / 1000.0;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(second, h)| SecondStats {
                second: *second,
                sent: h.len(),
                p50_ms: ms(h.value_at_quantile(0.50)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            })
            .collect()
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub topic: String,
    pub producers: u32,
    pub consumers: u32,
    pub message_size: usize,
    pub batch_size: u32,
    pub target_rate: Option<u64>,
    pub duration_s: f64,
    pub sent: u64,
    pub send_errors: u64,
    pub send_rate: f64,
    pub send_latency: Percentiles,
    /// Send latency of each second of the run.
    pub send_per_second: Vec<SecondStats>,
    pub received: u64,
    pub acked: u64,
    pub receive_errors: u64,
    pub receive_rate: f64,
    /// Born (client clock) to received, milliseconds resolution of the born timestamp.
    pub end_to_end_latency: Percentiles,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, up to one minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")
}

/// One send request of `batch` messages (a single `SendMessage` entry when `batch` is 1, as
/// the official clients send); how many messages it stored.
async fn send_request(
    producer: &Producer,
    topic: &str,
    body: Bytes,
    batch: u32,
) -> anyhow::Result<u64> {
    let build = |_| Message::builder(topic).body(body.clone()).build();
    if batch == 1 {
        producer.send(build(0)?).await?;
        Ok(1)
    } else {
        let messages = (0..batch).map(build).collect::<Result<Vec<_>, _>>()?;
        Ok(producer.send_batch(messages).await?.len() as u64)
    }
}

/// Sends until `stop`: as fast as possible one at a time (no `interval`: closed loop), or one
/// every `interval` from `first` whether or not the earlier ones were answered (open loop, at
/// most `limit` awaiting an answer). `send` is given each send's scheduled time, and `record` the time and
/// the result, so a fixed-rate latency counts from when the send was due.
async fn drive_sends<F, Fut>(
    stop: &AtomicBool,
    interval: Option<Duration>,
    first: Instant,
    limit: usize,
    send: F,
    record: &mut impl FnMut(Instant, anyhow::Result<u64>),
) where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = (Instant, anyhow::Result<u64>)>,
{
    let Some(interval) = interval else {
        while !stop.load(Ordering::Relaxed) {
            let (scheduled, result) = send(Instant::now()).await;
            record(scheduled, result);
        }
        return;
    };
    let mut pending = FuturesUnordered::new();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        if pending.len() >= limit {
            if let Some((scheduled, result)) = pending.next().await {
                record(scheduled, result);
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                pending.push(send(next));
                next += interval;
            }
            Some((scheduled, result)) = pending.next(), if !pending.is_empty() => {
                record(scheduled, result);
            }
        }
    }
    while let Some((scheduled, result)) = pending.next().await {
        record(scheduled, result);
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = execute(args.clone()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Human-readable report.
pub fn render(r: &BenchReport) -> String {
    let lat = |p: &Percentiles| {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
        )
    };
    format!(
        "topic {} | {} producers x batch {} | {} consumers | {} B bodies | {:.1} s{}\n\
         sent      {:>10} msgs  {:>10.0} msg/s  errors {}\n\
         send      {}\n\
         received  {:>10} msgs  {:>10.0} msg/s  acked {}  errors {}\n\
         end2end   {}\n\
         send p99 per second (ms): {}\n",
        r.topic,
        r.producers,
        r.batch_size,
        r.consumers,
        r.message_size,
        r.duration_s,
        r.target_rate
            .map(|t| format!(" | target {t} msg/s"))
            .unwrap_or_default(),
        r.sent,
        r.send_rate,
        r.send_errors,
        lat(&r.send_latency),
        r.received,
        r.receive_rate,
        r.acked,
        r.receive_errors,
        lat(&r.end_to_end_latency),
        r.send_per_second
            .iter()
            .map(|s| format!("{:.1}", s.p99_ms))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Runs the benchmark and returns the report (tests call this with tiny durations).
pub async fn execute(args: BenchArgs) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        args.producers > 0 || (args.consumers > 0 && args.topic.is_some()),
        "--producers 0 (consume an existing backlog) needs --consumers and --topic"
    );
    anyhow::ensure!(
        args.batch_size > 0 && args.batch_size <= 1024,
        "--batch-size must be 1..=1024"
    );
    anyhow::ensure!(args.message_size > 0, "--message-size must be at least 1");
    anyhow::ensure!(args.rate != Some(0), "--rate must be positive");
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
    let suffix = unique_suffix();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{suffix}"));
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("bench-{suffix}"));
    let builder = ClientConfig::builder().endpoint(&args.server);
    let builder = match (&args.access_key, &args.secret_key) {
        (Some(ak), Some(sk)) => builder.credentials(ak.clone(), sk.clone()),
        _ => builder,
    };
    let builder = match &args.ca_file {
        Some(path) => builder.ca_pem(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => builder,
    };
    let config = builder.build()?;

    let clients = args.producer_clients.clamp(1, args.producers.max(1));
    let mut producers = Vec::new();
    for _ in 0..clients.min(args.producers) {
        producers.push(Arc::new(
            Producer::builder(config.clone())
                .topics([topic.clone()])
                .build()
                .await?,
        ));
    }
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        consumers.push(Arc::new(
            SimpleConsumer::builder(config.clone(), &group)
                .subscribe(&topic, FilterExpression::tag("*"))
                .await_duration(Duration::from_secs(5))
                .build()
                .await?,
        ));
    }

    let body = Bytes::from(vec![b'v'; args.message_size]);
    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let received_total = Arc::new(AtomicU64::new(0));

    let mut consumer_tasks = JoinSet::new();
    for consumer in &consumers {
        let consumer = consumer.clone();
        let stop = stop_consuming.clone();
        let received_total = received_total.clone();
        consumer_tasks.spawn(async move {
            let mut e2e = new_histogram()?;
            let (mut received, mut acked, mut errors) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match consumer.receive(32, Duration::from_secs(30)).await {
                    Ok(messages) => {
                        let now = SystemTime::now();
                        for m in &messages {
                            if let Some(born) = m.born_timestamp {
                                let age = now.duration_since(born).unwrap_or_default();
                                e2e.saturating_record(age.as_micros().max(1) as u64);
                            }
                        }
                        received += messages.len() as u64;
                        received_total.fetch_add(messages.len() as u64, Ordering::Relaxed);
                        let acks = messages.iter().map(|m| consumer.ack(m));
                        for r in futures::future::join_all(acks).await {
                            match r {
                                Ok(()) => acked += 1,
                                Err(_) => errors += 1,
                            }
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            anyhow::Ok((e2e, received, acked, errors))
        });
    }

    let started = Instant::now();
    let per_second = Arc::new(PerSecond::default());
    let per_task_rate = args.rate.map(|r| r as f64 / f64::from(args.producers));
    let interval =
        per_task_rate.map(|r| Duration::from_secs_f64(f64::from(args.batch_size) / r.max(1e-9)));
    let in_flight_per_task = (args.max_in_flight / args.producers.max(1)).max(1) as usize;
    let mut producer_tasks = JoinSet::new();
    for i in 0..args.producers {
        let producer = producers[(i % clients) as usize].clone();
        let stop = stop_producing.clone();
        let sent_total = sent_total.clone();
        let topic = topic.clone();
        let body = body.clone();
        let batch = args.batch_size;
        let per_second = per_second.clone();
        producer_tasks.spawn(async move {
            let mut lat = new_histogram()?;
            let (mut sent, mut errors) = (0u64, 0u64);
            let mut record = |scheduled: Instant, result: anyhow::Result<u64>| match result {
                Ok(n) => {
                    let micros = scheduled.elapsed().as_micros().max(1) as u64;
                    lat.saturating_record(micros);
                    per_second.record(
                        scheduled.saturating_duration_since(started).as_secs(),
                        micros,
                    );
                    sent += n;
                    sent_total.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => errors += 1,
            };
            let send = |scheduled: Instant| {
                let (producer, topic, body) = (producer.clone(), topic.clone(), body.clone());
                async move {
                    (
                        scheduled,
                        send_request(&producer, &topic, body, batch).await,
                    )
                }
            };
            // The tasks' schedules are spread over one interval, so sends arrive evenly
            // rather than all tasks' at once.
            let first = started + interval.unwrap_or_default() * i / args.producers.max(1);
            drive_sends(
                &stop,
                interval,
                first,
                in_flight_per_task,
                send,
                &mut record,
            )
            .await;
            anyhow::Ok((lat, sent, errors))
        });
    }

    tokio::time::sleep(args.duration).await;
    stop_producing.store(true, Ordering::Relaxed);
    let mut send_latency = new_histogram()?;
    let (mut sent, mut send_errors) = (0u64, 0u64);
    while let Some(joined) = producer_tasks.join_next().await {
        let (h, s, e) = joined.context("producer task panicked")??;
        send_latency.add(&h).context("merge histograms")?;
        sent += s;
        send_errors += e;
    }
    let send_elapsed = started.elapsed();

    // Let consumers drain what was sent, bounded by --drain (consume-only runs just stop).
    let drain_deadline = Instant::now() + args.drain;
    while !consumers.is_empty()
        && args.producers > 0
        && received_total.load(Ordering::Relaxed) < sent
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receive_elapsed = started.elapsed();
    stop_consuming.store(true, Ordering::Relaxed);
    let mut e2e = new_histogram()?;
    let (mut received, mut acked, mut receive_errors) = (0u64, 0u64, 0u64);
    while let Some(joined) = consumer_tasks.join_next().await {
        let (h, r, a, e) = joined.context("consumer task panicked")??;
        e2e.add(&h).context("merge histograms")?;
        received += r;
        acked += a;
        receive_errors += e;
    }
    for p in &producers {
        if let Err(e) = p.shutdown().await {
            tracing::debug!(error = %e, "producer shutdown");
        }
    }
    for c in &consumers {
        if let Err(e) = c.shutdown().await {
            tracing::debug!(error = %e, "consumer shutdown");
        }
    }
    Ok(BenchReport {
        topic,
        producers: args.producers,
        consumers: args.consumers,
        message_size: args.message_size,
        batch_size: args.batch_size,
        target_rate: args.rate,
        duration_s: send_elapsed.as_secs_f64(),
        sent,
        send_errors,
        send_rate: sent as f64 / send_elapsed.as_secs_f64().max(1e-9),
        send_latency: Percentiles::of(&send_latency),
        send_per_second: per_second.stats(),
        received,
        acked,
        receive_errors,
        receive_rate: received as f64 / receive_elapsed.as_secs_f64().max(1e-9),
        end_to_end_latency: Percentiles::of(&e2e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every send after `delay`: what `drive_sends` sends in `run`, and
    /// each send's latency from its scheduled time (ms).
    async fn against_slow_server(
        interval: Option<Duration>,
        limit: usize,
        delay: Duration,
        run: Duration,
    ) -> Vec<u64> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(run).await;
            stopper.store(true, Ordering::Relaxed);
        });
        let send = |scheduled: Instant| async move {
            tokio::time::sleep(delay).await;
            (scheduled, Ok(1))
        };
        let mut latencies = Vec::new();
        let mut record = |scheduled: Instant, result: anyhow::Result<u64>| {
            assert_eq!(result.ok(), Some(1));
            latencies.push(scheduled.elapsed().as_millis() as u64);
        };
        drive_sends(&stop, interval, Instant::now(), limit, send, &mut record).await;
        latencies
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_rate_does_not_wait_for_answers() {
        // 100 sends a second against a server taking 50 ms: all 100 leave on time, each waits
        // 50 ms; a send waiting for the one before could send 20.
        let l = against_slow_server(
            Some(Duration::from_millis(10)),
            64,
            Duration::from_millis(50),
            Duration::from_millis(995),
        )
        .await;
        // (The stop is seen at the next wake-up, so one more may leave.)
        assert!((100..=101).contains(&l.len()), "{}", l.len());
        assert!(l.iter().all(|&ms| ms == 50), "{l:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_in_flight_limit_delays_sends_and_counts_the_wait() {
        // At most 2 awaiting an answer: 40 per second get through, and later sends have waited
        // longer and longer since their schedule.
        let l = against_slow_server(
            Some(Duration::from_millis(10)),
            2,
            Duration::from_millis(50),
            Duration::from_millis(995),
        )
        .await;
        assert!((38..=42).contains(&l.len()), "{}", l.len());
        assert!(l.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
        assert!(*l.last().unwrap_or(&0) > 500, "{l:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn as_fast_as_possible_sends_one_at_a_time() {
        let l = against_slow_server(
            None,
            64,
            Duration::from_millis(50),
            Duration::from_millis(995),
        )
        .await;
        assert_eq!(l.len(), 20);
        assert!(l.iter().all(|&ms| ms == 50), "{l:?}");
    }
}
