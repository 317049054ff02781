//! `vela admin send` and `vela admin receive`: a producer and a SimpleConsumer of vela-sdk.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::lookup::{Lookup, lookup};
use super::{OutputFormat, Target, messages};

#[derive(Args, Debug)]
pub struct SendArgs {
    pub topic: String,
    /// Message bodies; with none, --count messages "message-<n>" are sent.
    pub bodies: Vec<String>,
    #[arg(long)]
    pub tag: Option<String>,
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// A user property, KEY=VALUE (repeatable); SQL92 filters select on these.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// FIFO message group.
    #[arg(long)]
    pub message_group: Option<String>,
    /// Deliver after this delay (e.g. 10s, 5m). Each send prints the handle that
    /// `vela admin message recall` withdraws the message with before then.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    pub group: String,
    pub topic: String,
    #[arg(long, default_value_t = 16)]
    pub max: u32,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub invisible: Duration,
    /// How long to wait for messages.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Tag expression: * or A||B.
    #[arg(long, default_value = "*")]
    pub tags: String,
    /// An SQL92 filter over user properties and TAGS instead of a tag expression, e.g.
    /// "region = 'eu' AND amount > 100".
    #[arg(long, conflicts_with = "tags")]
    pub sql: Option<String>,
    /// Acknowledge what was received (it is consumed for the group). Without it the messages
    /// stay unacknowledged and come back after --invisible.
    #[arg(long)]
    pub ack: bool,
    /// The default now (kept so older scripts still run).
    #[arg(long, hide = true, conflicts_with = "ack")]
    pub no_ack: bool,
}

#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Withdraw a delay message before its delivery time, by the recall handle its send
    /// printed (`vela admin send --delay`); fails with NOT_FOUND once it was delivered.
    Recall { topic: String, handle: String },
    /// A message by its id: where it is and its track (stored, delivered to which group and
    /// attempt, acknowledged, dead-lettered ...).
    Show {
        message_id: String,
        /// Only look in this topic (faster in a cluster: only its shards are asked).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Messages of a topic by key (RocketMQ's message keys), oldest first, with their track.
    Find {
        /// The topic the messages were sent to.
        #[arg(long)]
        topic: String,
        /// One of the message keys they were sent with (exact match).
        #[arg(long)]
        key: String,
        /// At most this many (1..=64).
        #[arg(long, default_value_t = 16)]
        limit: u32,
    },
    /// Runs a stored message through a push consumer's listener (RocketMQ's
    /// consumeMessageDirectly), to check that it can consume it; the client answers whether
    /// its listener consumed it. Nothing is acknowledged: the message stays where it is.
    Verify {
        message_id: String,
        /// The topic the message was sent to.
        #[arg(long)]
        topic: String,
        /// The consumer to ask (its id as `vela admin client list` shows it).
        #[arg(long)]
        client_id: String,
        /// How long to wait for the client's answer (at most 60s).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `message`: one message, by a handle.
pub(super) async fn message(server: &Target, command: MessageCommand) -> anyhow::Result<String> {
    use vela_sdk::Producer;
    match command {
        MessageCommand::Recall { topic, handle } => {
            let config = server.client_config()?;
            let producer = Producer::builder(config)
                .topics([topic.clone()])
                .build()
                .await?;
            let result = producer.recall(&topic, &handle).await;
            if let Err(e) = producer.shutdown().await {
                tracing::debug!(error = %e, "producer shutdown");
            }
            let id = result.map_err(|e| anyhow::Error::new(e).context("recall failed"))?;
            if server.output == OutputFormat::Json {
                return super::json_line(&serde_json::json!({ "recalled": id }));
            }
            Ok(format!("recalled {id}\n"))
        }
        MessageCommand::Show { message_id, topic } => {
            let what = Lookup::Id {
                id: message_id,
                topic,
            };
            lookup(server, what, 16).await
        }
        MessageCommand::Find { topic, key, limit } => {
            lookup(server, Lookup::Key { topic, key }, limit).await
        }
        MessageCommand::Verify {
            message_id,
            topic,
            client_id,
            timeout,
        } => super::clients::verify(server, &message_id, &topic, &client_id, timeout).await,
    }
}

/// A `--property KEY=VALUE`.
fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `send`: one producer, one message per body; stops at the first failure.
pub(super) async fn send(server: &Target, args: SendArgs) -> anyhow::Result<String> {
    use vela_sdk::{Message, Producer};
    let config = server.client_config()?;
    let producer = Producer::builder(config)
        .topics([args.topic.clone()])
        .build()
        .await?;
    let bodies: Vec<String> = if args.bodies.is_empty() {
        (1..=args.count).map(|n| format!("message-{n}")).collect()
    } else {
        args.bodies
    };
    let mut out = String::new();
    // `--output json`: an array of `{message_id, offset, recall_handle}` (the handle only for
    // a delay message).
    let mut sent = Vec::new();
    let mut result = Ok(());
    for body in bodies {
        let mut b = Message::builder(&args.topic).body(body.into_bytes());
        if let Some(tag) = &args.tag {
            b = b.tag(tag);
        }
        if !args.keys.is_empty() {
            b = b.keys(args.keys.clone());
        }
        for (key, value) in &args.properties {
            b = b.property(key, value);
        }
        if let Some(g) = &args.message_group {
            b = b.message_group(g);
        }
        if let Some(d) = args.delay {
            b = b.delivery_timestamp(SystemTime::now() + d);
        }
        match producer.send(b.build()?).await {
            Ok(r) if server.output == OutputFormat::Json => {
                let mut item = serde_json::json!({
                    "message_id": r.message_id,
                    "offset": r.offset,
                });
                if let Some(handle) = &r.recall_handle {
                    item["recall_handle"] = handle.as_str().into();
                }
                sent.push(item);
            }
            Ok(r) => match &r.recall_handle {
                Some(handle) => writeln!(
                    out,
                    "sent {} offset {} recall-handle {handle}",
                    r.message_id, r.offset
                )?,
                None => writeln!(out, "sent {} offset {}", r.message_id, r.offset)?,
            },
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("send failed"));
                break;
            }
        }
    }
    if let Err(e) = producer.shutdown().await {
        tracing::debug!(error = %e, "producer shutdown");
    }
    result?;
    if server.output == OutputFormat::Json {
        return super::json_line(&sent);
    }
    Ok(out)
}

/// `receive`: one SimpleConsumer receive, printed, and acknowledged with `--ack`.
pub(super) async fn receive(server: &Target, args: ReceiveArgs) -> anyhow::Result<String> {
    use vela_sdk::{FilterExpression, SimpleConsumer};
    let config = server.client_config()?;
    let consumer = SimpleConsumer::builder(config, &args.group)
        .subscribe(
            &args.topic,
            match &args.sql {
                Some(sql) => FilterExpression::sql(sql),
                None => FilterExpression::tag(&args.tags),
            },
        )
        .await_duration(args.wait)
        .build()
        .await?;
    let result = async {
        let messages = consumer.receive(args.max, args.invisible).await?;
        // `--output json`: an array of objects (`message_id`, `topic`, `queue_id`, `offset`,
        // `keys`, `tag`, `properties`, `delivery_attempt`, `body` or `body_base64`).
        let out = match server.output {
            OutputFormat::Json => messages::to_json(&messages)?,
            OutputFormat::Table => messages::to_lines(&messages)?,
        };
        if args.ack {
            for m in &messages {
                consumer.ack(m).await?;
            }
        }
        anyhow::Ok(out)
    }
    .await;
    if let Err(e) = consumer.shutdown().await {
        tracing::debug!(error = %e, "consumer shutdown");
    }
    result
}
