//! The results table: one line per phase, and the markdown for docs/benchmarks.md.

use super::*;

pub(crate) fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

pub(crate) fn line(r: &PhaseReport) -> String {
    format!(
        "{:<9} {:<11} prod {:>7.0}/s  cons {:>7.0}/s  confirm p50 {:>7} p99 {:>7} ms  e2e p50 {:>8} p99 {:>8} ms  ack p50 {:>6} p99 {:>6} ms  cpu/prod {:>6} µs  cpu/cons {:>6} µs  client {:>3.0}%  other on cores {}/{} %  errors {}/{}{}",
        r.broker,
        r.phase,
        r.produced_per_s,
        r.consumed_per_s,
        opt(r.confirm_p50_ms, 2),
        opt(r.confirm_p99_ms, 2),
        opt(r.e2e_p50_ms, 1),
        opt(r.e2e_p99_ms, 1),
        opt(r.ack_p50_ms, 2),
        opt(r.ack_p99_ms, 2),
        opt(r.broker_cpu_us_per_produced, 1),
        opt(r.broker_cpu_us_per_consumed, 1),
        r.client_cpu_pct,
        opt(r.other_on_broker_core_pct, 0),
        opt(r.other_on_client_core_pct, 0),
        r.produce_errors,
        r.consume_errors,
        r.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    )
}

pub(crate) fn markdown(reports: &[PhaseReport]) -> String {
    let mut out = String::from(
        "| phase | broker | produced msg/s | consumed msg/s | confirm p50 / p99 ms | \
         end-to-end p50 / p99 ms | ack p50 / p99 ms | broker CPU µs per produced / consumed msg | load generator CPU | \
         other load on broker / client core |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut phases: Vec<&str> = Vec::new();
    for r in reports {
        if !phases.contains(&r.phase.as_str()) {
            phases.push(&r.phase);
        }
    }
    for phase in phases {
        for r in reports.iter().filter(|r| r.phase == phase) {
            let rate = |v: f64, n: u64| {
                if n == 0 {
                    "–".to_owned()
                } else {
                    format!("{v:.0}")
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.0}% | {}% / {}% |",
                r.phase,
                r.broker,
                rate(r.produced_per_s, r.produced),
                rate(r.consumed_per_s, r.consumed),
                opt(r.confirm_p50_ms, 2),
                opt(r.confirm_p99_ms, 2),
                opt(r.e2e_p50_ms, 1),
                opt(r.e2e_p99_ms, 1),
                opt(r.ack_p50_ms, 2),
                opt(r.ack_p99_ms, 2),
                opt(r.broker_cpu_us_per_produced, 1),
                opt(r.broker_cpu_us_per_consumed, 1),
                r.client_cpu_pct,
                opt(r.other_on_broker_core_pct, 0),
                opt(r.other_on_client_core_pct, 0),
            );
        }
    }
    out
}
