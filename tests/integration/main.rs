//! Vela's integration tests: the one test binary of the root package. Files are numbered by
//! complexity; each starts with a short list of what it shows.
//!
//! Every test starts its own node on loopback ports chosen by the OS, in its own temporary
//! data directory, so tests run in parallel.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod harness;
mod local_cluster;
mod t01_produce_consume;
mod t02_invisibility;
mod t03_fifo;
mod t04_delay;
mod t05_restart;
mod t06_crash;
mod t07_bad_input;
mod t08_admin_cli;
mod t09_bench_and_http;
mod t10_store_cluster;
mod t11_local_cluster;
mod t12_placement;
mod t13_drain;
mod t14_offsets;
mod t15_transactions;
mod t16_sql_filters;
mod t17_dead_letters;
mod t18_auth;
mod t19_tls;
mod t20_cluster_tls;
mod t21_metrics;
mod t22_traces;
mod t23_tier;
mod t24_scaler;
mod t25_routes;
mod t26_push_consumer;
mod t27_priority;
mod t28_request_reply;
mod t29_lookup;
mod t30_broadcast;
mod t31_receipt_keys;
mod t32_tier_credentials;
mod t33_client_commands;
mod t34_store_join;
mod t35_store_scale;
mod t36_topic_retention;
