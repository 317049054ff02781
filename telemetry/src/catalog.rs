//! Every metric Vela emits, by the name `/metrics` shows (a histogram by its family name), and
//! the `vela-sdk` clients export.
//! `docs/metrics.md` documents exactly these (a test checks), and the integration tests check
//! that nothing else is emitted.

/// The names, sorted.
pub const METRICS: &[&str] = &[
    "rocketmq_await_time",
    "rocketmq_commit_messages_total",
    "rocketmq_consumer_connections",
    "rocketmq_consumer_group_number",
    "rocketmq_consumer_inflight_messages",
    "rocketmq_consumer_lag_latency",
    "rocketmq_consumer_lag_messages",
    "rocketmq_consumer_queueing_latency",
    "rocketmq_consumer_ready_messages",
    "rocketmq_delivery_latency",
    "rocketmq_half_messages",
    "rocketmq_message_size",
    "rocketmq_messages_in_total",
    "rocketmq_messages_out_total",
    "rocketmq_process_time",
    "rocketmq_producer_connections",
    "rocketmq_proxy_up",
    "rocketmq_rollback_messages_total",
    "rocketmq_rpc_latency",
    "rocketmq_send_cost_time",
    "rocketmq_send_to_dlq_messages_total",
    "rocketmq_storage_size",
    "rocketmq_throughput_in_total",
    "rocketmq_throughput_out_total",
    "rocketmq_tiered_store_read_ahead_cache_access_total",
    "rocketmq_tiered_store_read_ahead_cache_hit_total",
    "rocketmq_topic_number",
    "vela_auth_decisions_total",
    "vela_raft_apply_lag_entries",
    "vela_raft_fsync_batch_appends",
    "vela_raft_fsync_seconds",
    "vela_raft_leader",
    "vela_raft_leader_changes_total",
    "vela_raft_term",
    "vela_raft_write_seconds",
    "vela_route_copied_messages_total",
    "vela_route_duplicates_total",
    "vela_route_errors_total",
    "vela_route_lag_messages",
    "vela_route_lag_seconds",
    "vela_route_running",
    "vela_route_skipped_messages_total",
    "vela_store_damaged_segments",
    "vela_store_disk_full",
    "vela_store_disk_used_ratio",
    "vela_store_index_bytes",
    "vela_store_log_bytes",
    "vela_store_log_segments",
    "vela_store_orphans_rolled_back_total",
    "vela_store_runtime_lag_seconds",
    "vela_store_saturated",
    "vela_store_scrubs_total",
    "vela_store_snapshot_seconds",
    "vela_tier_deletes_total",
    "vela_tier_get_bytes_total",
    "vela_tier_get_requests_total",
    "vela_tier_last_upload_age_seconds",
    "vela_tier_segments",
    "vela_tier_upload_bytes_total",
    "vela_tier_upload_failures_total",
    "vela_tier_upload_lag_bytes",
    "vela_tier_uploads_total",
    "vela_transaction_checks_total",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_docs_list_exactly_the_catalog() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let docs = std::fs::read_to_string(path).expect("docs/metrics.md");
        let documented: BTreeSet<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let catalog: BTreeSet<&str> = super::METRICS.iter().copied().collect();
        assert_eq!(
            documented, catalog,
            "docs/metrics.md and the catalog differ"
        );
        let mut sorted = super::METRICS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, super::METRICS, "keep the catalog sorted");
        assert!(super::METRICS.iter().all(|m| !m.starts_with('_')));
    }

    /// Every metric the shipped Grafana dashboard queries is one Vela emits (the dashboard
    /// check in scripts/dashboard-check.sh then runs each query against a real Prometheus).
    #[test]
    fn the_dashboard_queries_only_catalogued_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/vela-dashboard.json"
        );
        let dashboard = std::fs::read_to_string(path).expect("the dashboard");
        let catalog: BTreeSet<&str> = super::METRICS.iter().copied().collect();
        let mut queried = BTreeSet::new();
        for (start, _) in dashboard
            .match_indices("rocketmq_")
            .chain(dashboard.match_indices("vela_"))
        {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if start > 0 && dashboard.as_bytes()[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            queried.insert(family);
        }
        assert!(queried.len() > 20, "{queried:?}");
        for name in &queried {
            assert!(
                catalog.contains(name.as_str()),
                "the dashboard queries {name}, which Vela does not emit"
            );
        }
    }
}
