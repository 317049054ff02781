//! What recording a metric costs on the send path: OpenTelemetry instruments (what the roles
//! use, ADR 0022) against the `prometheus-client` families they replaced, same labels, same
//! run. `cargo bench -p vela-telemetry --bench record`; results in docs/benchmarks.md.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::hint::black_box;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use vela_telemetry::{KeyValue, MetricsHub, NodeLabels, NodeType};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InLabels {
    topic: String,
    message_type: &'static str,
}

const N: u32 = 2_000_000;
const TOPICS: [&str; 8] = ["orders", "payments", "audit", "clicks", "a", "b", "c", "d"];

/// Median nanoseconds per call over five runs of `N` calls.
fn measure(name: &str, mut f: impl FnMut(u32)) {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for i in 0..N {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{name:<58} {:>7.1} ns/call (median of 5 x {N})", runs[2]);
}

fn main() {
    let family: Family<InLabels, Counter> = Family::default();
    measure("prometheus-client counter, 2 labels (before)", |i| {
        family
            .get_or_create(&InLabels {
                topic: TOPICS[(i % 8) as usize].to_owned(),
                message_type: "normal",
            })
            .inc_by(black_box(1));
    });

    let hub = MetricsHub::standalone();
    let meter = hub.meter("bench");
    let labels = NodeLabels::new("vela", NodeType::Proxy, "127.0.0.1:8081");
    let counter = meter.u64_counter("rocketmq_messages_in_total").build();
    measure("OTel counter, 3 common + 3 labels (now)", |i| {
        counter.add(
            black_box(1),
            &labels.with([
                KeyValue::new("topic", TOPICS[(i % 8) as usize].to_owned()),
                KeyValue::new("message_type", "normal"),
                KeyValue::new("is_system", false),
            ]),
        );
    });
    let histogram = meter
        .u64_histogram("rocketmq_message_size")
        .with_boundaries(vec![
            1024.0, 4096.0, 524288.0, 1048576.0, 2097152.0, 4194304.0,
        ])
        .build();
    let attrs = labels.with([
        KeyValue::new("topic", "orders"),
        KeyValue::new("message_type", "normal"),
    ]);
    measure("OTel histogram record, labels built once", |i| {
        histogram.record(black_box(u64::from(i % 5000)), &attrs);
    });
    // Keeps the recorded data alive to the end (and shows it was recorded).
    println!(
        "exposition: {} bytes",
        hub.prometheus_text().map_or(0, |t| t.len())
    );
}
