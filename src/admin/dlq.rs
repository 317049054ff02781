//! `vela admin dlq`: a group's dead letters (`%DLQ%<group>`, a topic like any other) counted,
//! shown and redriven back to the topic they came from.
//!
//! `show` reads through a throwaway group that starts at the first dead letter and is deleted
//! afterwards, so it changes nothing for anyone. `redrive` reads through the group
//! `vela-redrive-<group>` (created on first use, from the first dead letter): a message is
//! acknowledged there only once it has been sent back, so a redrive that stops half way, or
//! one limited to some `--ids`, leaves the rest for the next.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use tonic::Code;
use vela_proto::pb::admin::{self as pb};
use vela_sdk::{FilterExpression, Message, MessageView, Producer, SimpleConsumer};

use super::{OutputFormat, Target, connect, status_error};

/// Properties the broker adds on delivery; a redrive does not send them back as user
/// properties.
const DELIVERY_PROPERTIES: [&str; 2] = ["__SHARDINGKEY", "__transactionId__"];
/// How long a read holds a dead letter invisible to the reading group.
const HOLD: Duration = Duration::from_secs(30);

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Every group with dead letters, and how many are retained.
    List,
    /// Prints a group's dead letters without consuming them.
    Show {
        group: String,
        /// At most this many.
        #[arg(long, default_value_t = 16)]
        max: u32,
    },
    /// Sends a group's dead letters back to the topic each came from (or `--to-topic`) and
    /// consumes them from the dead-letter topic.
    Redrive {
        group: String,
        /// Send them here instead of where each came from.
        #[arg(long)]
        to_topic: Option<String>,
        /// Only these message ids (comma-separated); the others stay for a later redrive.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 10_000)]
        max: u64,
    },
}

fn dead_letter_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// With `--output json`: `list` an array of `{group, dead_letters}`, `show` as `vela admin
/// receive --output json` with `dead_letter_topic`, `redrive` `{group, redriven, skipped,
/// to_topic}`.
pub(super) async fn execute(server: &Target, command: DlqCommand) -> anyhow::Result<String> {
    match command {
        DlqCommand::List => list(server).await,
        DlqCommand::Show { group, max } => show(server, &group, max, server.output).await,
        DlqCommand::Redrive {
            group,
            to_topic,
            ids,
            max,
        } => redrive(server, &group, to_topic.as_deref(), &ids, max).await,
    }
}

async fn list(server: &Target) -> anyhow::Result<String> {
    let mut client = connect(server).await?;
    let groups = client
        .list_groups(pb::ListGroupsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .groups;
    let mut out = String::new();
    let mut rows = Vec::new();
    writeln!(out, "{:<40} {:>14}", "GROUP", "DEAD_LETTERS")?;
    for g in groups {
        let queues = match client
            .queue_stats(pb::QueueStatsRequest {
                topic: dead_letter_topic(&g.name),
                group: String::new(),
            })
            .await
        {
            Ok(reply) => reply.into_inner().queues,
            // Nothing was ever dead-lettered for it.
            Err(status) if status.code() == Code::NotFound => continue,
            Err(status) => return Err(status_error(status)),
        };
        let retained: u64 = queues
            .iter()
            .map(|q| q.max_offset.saturating_sub(q.min_offset))
            .sum();
        if retained > 0 {
            writeln!(out, "{:<40} {:>14}", g.name, retained)?;
            rows.push(serde_json::json!({ "group": g.name, "dead_letters": retained }));
        }
    }
    if server.output == OutputFormat::Json {
        return super::json_line(&rows);
    }
    Ok(out)
}

/// Creates `name` starting at the first message of every queue; an existing group is fine.
async fn ensure_reader(server: &Target, name: &str) -> anyhow::Result<()> {
    let mut client = connect(server).await?;
    match client
        .create_group(pb::CreateGroupRequest {
            name: name.to_owned(),
            fifo: false,
            max_attempts: 0,
            start: 1,
            start_at_ms: 0,
            retry_backoff: None,
            broadcast: false,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => Ok(()),
        Err(status) => Err(status_error(status)).context(format!("creating group {name}")),
    }
}

async fn reader(server: &Target, name: &str, topic: &str) -> anyhow::Result<SimpleConsumer> {
    let config = server.client_config()?;
    Ok(SimpleConsumer::builder(config, name)
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(1))
        .build()
        .await?)
}

/// Receives until `max` messages came or a receive finds none.
async fn read(consumer: &SimpleConsumer, max: u64) -> anyhow::Result<Vec<MessageView>> {
    let mut got = Vec::new();
    while (got.len() as u64) < max {
        let want = u32::try_from(max - got.len() as u64).unwrap_or(32).min(32);
        let batch = consumer.receive(want, HOLD).await?;
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    Ok(got)
}

async fn show(
    server: &Target,
    group: &str,
    max: u32,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("vela-dlq-show-{}-{nanos}", std::process::id());
    ensure_reader(server, &name).await?;
    let shown = async {
        let consumer = reader(server, &name, &dead_letter_topic(group)).await?;
        let messages = read(&consumer, u64::from(max)).await;
        consumer.shutdown().await.ok();
        messages
    }
    .await;
    // The throwaway group goes whatever happened.
    let mut client = connect(server).await?;
    if let Err(status) = client
        .delete_group(pb::DeleteGroupRequest { name: name.clone() })
        .await
    {
        tracing::warn!(group = %name, error = %status.message(), "could not delete the reading group");
    }
    let messages = shown?;
    if output == OutputFormat::Json {
        return super::messages::to_json(&messages);
    }
    let mut out = String::new();
    if messages.is_empty() {
        writeln!(out, "no dead letters for group {group}")?;
    }
    for m in &messages {
        let dead_since = m
            .store_timestamp
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(
                || "-".to_owned(),
                |d| super::format_ms(d.as_millis() as i64),
            );
        writeln!(
            out,
            "{} from {} dead since {} tag {} body {}",
            m.message_id,
            m.dead_letter_topic.as_deref().unwrap_or("-"),
            dead_since,
            m.tag.as_deref().unwrap_or("-"),
            String::from_utf8_lossy(&m.body)
        )?;
    }
    Ok(out)
}

async fn redrive(
    server: &Target,
    group: &str,
    to_topic: Option<&str>,
    ids: &[String],
    max: u64,
) -> anyhow::Result<String> {
    let name = format!("vela-redrive-{group}");
    ensure_reader(server, &name).await?;
    let consumer = reader(server, &name, &dead_letter_topic(group)).await?;
    let config = server.client_config()?;
    let producer = Producer::builder(config).build().await?;
    let result = async {
        let mut sent = 0u64;
        let mut skipped = 0u64;
        while sent < max {
            let batch = read(&consumer, (max - sent).min(32)).await?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                if !ids.is_empty() && !ids.contains(&m.message_id) {
                    // Left in flight for this run; it comes back for a later redrive.
                    skipped += 1;
                    continue;
                }
                let Some(target) = to_topic.or(m.dead_letter_topic.as_deref()) else {
                    bail!(
                        "message {} does not say which topic it came from; use --to-topic",
                        m.message_id
                    );
                };
                let mut message = Message::builder(target).body(m.body.clone());
                if let Some(tag) = &m.tag {
                    message = message.tag(tag);
                }
                if !m.keys.is_empty() {
                    message = message.keys(m.keys.clone());
                }
                for (key, value) in &m.properties {
                    if !DELIVERY_PROPERTIES.contains(&key.as_str()) {
                        message = message.property(key, value);
                    }
                }
                if let Some(message_group) = &m.message_group {
                    message = message.message_group(message_group);
                }
                producer
                    .send(message.build()?)
                    .await
                    .with_context(|| format!("sending {} back to {target}", m.message_id))?;
                consumer.ack(&m).await?;
                sent += 1;
            }
            if !ids.is_empty() && sent >= ids.len() as u64 {
                break;
            }
        }
        anyhow::Ok((sent, skipped))
    }
    .await;
    consumer.shutdown().await.ok();
    producer.shutdown().await.ok();
    let (sent, skipped) = result?;
    if server.output == OutputFormat::Json {
        return super::json_line(&serde_json::json!({
            "group": group,
            "redriven": sent,
            "skipped": skipped,
            "to_topic": to_topic,
        }));
    }
    let mut out = String::new();
    writeln!(
        out,
        "redrove {sent} dead letter(s) of group {group} to {}",
        to_topic.unwrap_or("the topics they came from")
    )?;
    if skipped > 0 {
        writeln!(
            out,
            "left {skipped} not named by --ids (they stay for a later redrive)"
        )?;
    }
    Ok(out)
}
