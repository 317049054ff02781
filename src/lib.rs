//! The `vela` binary's library half: configuration, telemetry, the standalone composition
//! (start order controller → store → proxy, stop in reverse), the admin CLI and the load
//! generator. `src/main.rs` only parses the command line and calls into here, so the
//! integration tests start exactly what users start.

pub mod admin;
pub mod bench;
pub mod certs;
pub mod config;
pub mod controller_node;
pub mod http;
pub mod local_cluster;
pub mod proxy_node;
pub mod routes;
mod serving;
pub mod standalone;
pub mod store_node;
pub mod telemetry;
pub mod tier;
