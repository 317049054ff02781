//! Rust client for Vela and any other `apache.rocketmq.v2` (RocketMQ 5 gRPC) server.
//!
//! - [`Producer`]: send normal, FIFO (`message_group`) and delay (`delivery_timestamp`) messages,
//!   one per request or as a same-topic batch; transactional messages through a
//!   [`Transaction`], with a checker the server asks about transactions left open.
//! - [`SimpleConsumer`]: long-poll receive, ack, change invisible duration.
//! - [`PushConsumer`]: a listener called for each message, with bounded concurrency; success
//!   acknowledges, failure retries after the group's back-off (in place and in order on FIFO
//!   groups, then to the dead-letter queue).
//!
//! On the wire it behaves like the official clients: a Telemetry stream per endpoint carrying
//! the client's Settings, heartbeats every 10 s, `x-mq-*` headers and optional
//! `MQv2-HMAC-SHA1` signatures on every call, and `NotifyClientTermination` on shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vela_sdk::Error> {
//! use std::time::Duration;
//! use vela_sdk::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};
//!
//! let config = ClientConfig::builder().endpoint("127.0.0.1:8081").build()?;
//! let producer = Producer::builder(config.clone()).topics(["orders"]).build().await?;
//! let receipt = producer.send(Message::builder("orders").body("hello").tag("A").build()?).await?;
//! println!("stored {} at offset {}", receipt.message_id, receipt.offset);
//!
//! let consumer = SimpleConsumer::builder(config, "billing")
//!     .subscribe("orders", FilterExpression::tag("A||B"))
//!     .build()
//!     .await?;
//! for message in consumer.receive(16, Duration::from_secs(30)).await? {
//!     consumer.ack(&message).await?;
//! }
//! consumer.shutdown().await?;
//! producer.shutdown().await?;
//! # Ok(()) }
//! ```

// Tests may unwrap: a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod config;
mod consume;
mod consumer;
mod error;
mod identity;
mod message;
mod metadata;
mod metrics;
mod policy;
mod producer;
mod push;
mod receive;
mod request;
mod route;
mod trace;
mod transaction;

#[cfg(test)]
mod fake_server;

pub use config::{
    ClientConfig, ClientConfigBuilder, Credentials, DEFAULT_REQUEST_TIMEOUT, Endpoint,
};
pub use consumer::{DEFAULT_AWAIT_DURATION, SimpleConsumer, SimpleConsumerBuilder};
pub use error::{Error, Result};
pub use message::{
    FilterExpression, Message, MessageBuilder, MessageKind, MessageView, SendReceipt,
};
pub use metadata::RequestSigner;
pub use producer::{Producer, ProducerBuilder, SendFuture};
pub use push::{
    ConsumeResult, DEFAULT_CONSUMPTION_CONCURRENCY, DEFAULT_MAX_CACHED_MESSAGES,
    DEFAULT_PUSH_INVISIBLE_DURATION, PushConsumer, PushConsumerBuilder,
};
pub use request::{CORRELATION_ID_PROPERTY, REPLY_TO_PROPERTY, Requester, reply_to, send_reply};
pub use transaction::{Transaction, TransactionResolution};
/// The protocol's business status codes (`apache.rocketmq.v2.Code`), as [`Error::code`] gives
/// them.
pub use vela_proto::pb::rocketmq::Code as StatusCode;
