use super::*;
use crate::{MetricsHub, NodeLabels, NodeType};

#[test]
fn counters_gauges_and_histograms_come_out_as_prometheus_families() {
    let hub = MetricsHub::standalone();
    let proxy = NodeLabels::new("c1", NodeType::Proxy, "p1");
    let store = NodeLabels::new("c1", NodeType::Store, "1");
    let meter = hub.meter("vela-proxy");
    let sent = meter
        .u64_counter("rocketmq_messages_in_total")
        .with_description("Messages produced")
        .build();
    sent.add(3, &proxy.with([KeyValue::new("topic", "orders")]));
    // The same name from another role's meter joins the same family.
    let store_meter = hub.meter("vela-store");
    let dlq_proxy = meter
        .u64_counter("rocketmq_send_to_dlq_messages_total")
        .build();
    let dlq_store = store_meter
        .u64_counter("rocketmq_send_to_dlq_messages_total")
        .build();
    dlq_proxy.add(1, &proxy.with([]));
    dlq_store.add(2, &store.with([]));
    let size = meter
        .f64_histogram("rocketmq_message_size")
        .with_boundaries(vec![1024.0, 4096.0])
        .build();
    size.record(10.0, &proxy.with([]));
    size.record(2000.0, &proxy.with([]));
    size.record(1e6, &proxy.with([]));
    let _up = meter
        .i64_observable_gauge("rocketmq_proxy_up")
        .with_callback({
            let proxy = proxy.clone();
            move |o| o.observe(1, &proxy.with([KeyValue::new("otel.odd-key", "x")]))
        })
        .build();

    let text = hub.prometheus_text().expect("encodes");
    for line in [
        "# TYPE rocketmq_messages_in counter",
        r#"rocketmq_messages_in_total{cluster="c1",node_id="p1",node_type="proxy",topic="orders"} 3"#,
        r#"rocketmq_send_to_dlq_messages_total{cluster="c1",node_id="p1",node_type="proxy"} 1"#,
        r#"rocketmq_send_to_dlq_messages_total{cluster="c1",node_id="1",node_type="store"} 2"#,
        "# TYPE rocketmq_message_size histogram",
        r#"rocketmq_message_size_bucket{le="1024.0",cluster="c1",node_id="p1",node_type="proxy"} 1"#,
        r#"rocketmq_message_size_bucket{le="4096.0",cluster="c1",node_id="p1",node_type="proxy"} 2"#,
        r#"rocketmq_message_size_bucket{le="+Inf",cluster="c1",node_id="p1",node_type="proxy"} 3"#,
        r#"rocketmq_message_size_count{cluster="c1",node_id="p1",node_type="proxy"} 3"#,
        "# TYPE rocketmq_proxy_up gauge",
        r#"rocketmq_proxy_up{cluster="c1",node_id="p1",node_type="proxy",otel_odd_key="x"} 1"#,
    ] {
        assert!(text.contains(line), "{line}\nnot in\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE rocketmq_send_to_dlq_messages counter")
            .count(),
        1,
        "one family for both roles:\n{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn translation_appends_units_and_total_as_a_collector_does() {
    assert_eq!(
        translated_name("rocketmq_messages_in_total", "", true),
        "rocketmq_messages_in_total"
    );
    assert_eq!(
        translated_name("rocketmq_messages_in", "", true),
        "rocketmq_messages_in_total"
    );
    assert_eq!(
        translated_name("rocketmq_rpc_latency", "ms", false),
        "rocketmq_rpc_latency_milliseconds"
    );
    assert_eq!(
        translated_name("vela_raft_fsync_seconds", "s", false),
        "vela_raft_fsync_seconds"
    );
    assert_eq!(
        translated_name("rocketmq_message_size", "{byte}", false),
        "rocketmq_message_size"
    );
    assert_eq!(
        translated_name("http.server.duration", "", false),
        "http_server_duration"
    );
}

#[test]
fn past_the_cardinality_limit_label_sets_fold_into_one_overflow_series() {
    let hub = MetricsHub::new(&crate::TelemetryConfig {
        cardinality_limit: 3,
        ..Default::default()
    });
    let counter = hub.meter("t").u64_counter("vela_test_total").build();
    for topic in 0..10 {
        counter.add(1, &[KeyValue::new("topic", format!("t{topic}"))]);
    }
    let text = hub.prometheus_text().expect("encodes");
    let series = text
        .lines()
        .filter(|l| l.starts_with("vela_test_total{"))
        .count();
    assert!(series <= 4, "{text}");
    assert!(text.contains(r#"otel_metric_overflow="true""#), "{text}");
}

#[test]
fn the_classic_format_names_counter_families_with_total_and_has_no_eof() {
    let hub = MetricsHub::standalone();
    let meter = hub.meter("t");
    meter
        .u64_counter("rocketmq_messages_in_total")
        .with_description("Messages produced")
        .build()
        .add(2, &[]);
    meter
        .i64_gauge("vela_g")
        .with_description("A gauge")
        .build()
        .record(5, &[]);
    let classic = classic_text(&hub.prometheus_text().expect("encodes"));
    assert!(
        classic.contains("# HELP rocketmq_messages_in_total Messages produced\n"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE rocketmq_messages_in_total counter\n"),
        "{classic}"
    );
    assert!(
        classic.contains("rocketmq_messages_in_total 2\n"),
        "{classic}"
    );
    assert!(classic.contains("# TYPE vela_g gauge\n"), "{classic}");
    assert!(!classic.contains("# EOF"), "{classic}");
}
