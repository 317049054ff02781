//! `vela admin topic …` and `vela admin queues`.

use std::fmt::Write as _;

use anyhow::Context;
use clap::Subcommand;
use vela_proto::TopicType;
use vela_proto::pb::admin::{self as pb};

use serde_json::json;

use super::target::AdminClient;
use super::{OutputFormat, format_ms, status_error};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    Create {
        name: String,
        /// normal | fifo | delay | transaction | priority | mixed (priority: a message goes
        /// to the queue its priority names, receives read the highest queue first)
        #[arg(long = "type", default_value = "normal")]
        topic_type: TopicType,
        /// Number of queues (1-1024).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        queues: u32,
        /// Replicas of each queue's shard, on distinct store nodes (1, 3 or 5; at most the
        /// cluster's store nodes). Default: the configured shards, held by every store node.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=7))]
        replicas: Option<u32>,
        /// How long its messages are kept (for example 12h, 7d, 30d; 1s to 3660d), when not
        /// the store's `retention_time`.
        #[arg(long, value_parser = retention_ms)]
        retention: Option<u64>,
    },
    /// Changes an existing topic: how long its messages are kept.
    Update {
        name: String,
        /// How long its messages are kept (for example 12h, 7d, 30d; 1s to 3660d), or
        /// `default` for the store's `retention_time`.
        #[arg(long, value_parser = retention_choice)]
        retention: RetentionChoice,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// What `topic update --retention` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionChoice {
    Ms(u64),
    StoreDefault,
}

/// A topic's retention as given on the command line: a duration (`7d`, `12h 30m`).
fn retention_ms(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    vela_proto::domain::check_topic_retention(ms)
}

fn retention_choice(s: &str) -> Result<RetentionChoice, String> {
    if s.trim() == "default" {
        return Ok(RetentionChoice::StoreDefault);
    }
    retention_ms(s).map(RetentionChoice::Ms)
}

/// What `topic update --retention` asks for, for the confirmation.
pub(super) fn retention_choice_text(choice: RetentionChoice) -> String {
    match choice {
        RetentionChoice::Ms(ms) => retention_text(Some(ms)),
        RetentionChoice::StoreDefault => "the store's retention_time".to_owned(),
    }
}

/// A topic's retention for people: `7d`, `12h`, or the store's.
fn retention_text(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => humantime::format_duration(std::time::Duration::from_millis(ms)).to_string(),
        None => "store default (retention_time)".to_owned(),
    }
}

/// With `--output json`: `list` an array of topics, `describe`, `create` and `update` the topic
/// with its queues, `delete` `{"deleted": {"topic": NAME}}`.
pub(super) async fn execute(
    client: &mut AdminClient,
    command: TopicCommand,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    match command {
        TopicCommand::Create {
            name,
            topic_type,
            queues,
            replicas,
            retention,
        } => {
            let topic = client
                .create_topic(pb::CreateTopicRequest {
                    name,
                    topic_type: topic_type_to_pb(topic_type) as i32,
                    queue_count: queues,
                    replicas,
                    retention_ms: retention,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .topic
                .context("server returned no topic")?;
            if output == OutputFormat::Json {
                return describe(client, topic.name, output).await;
            }
            writeln!(
                out,
                "created topic {} ({}, {} queues)",
                topic.name,
                type_name(topic.topic_type),
                topic.queue_count
            )?;
        }
        TopicCommand::List => {
            let topics = client
                .list_topics(pb::ListTopicsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .topics;
            if output == OutputFormat::Json {
                let list: Vec<_> = topics.iter().map(topic_json).collect();
                return Ok(serde_json::to_string_pretty(&list)? + "\n");
            }
            writeln!(
                out,
                "{:<40} {:<12} {:>6}  CREATED",
                "TOPIC", "TYPE", "QUEUES"
            )?;
            for t in topics {
                writeln!(
                    out,
                    "{:<40} {:<12} {:>6}  {}{}",
                    t.name,
                    type_name(t.topic_type),
                    t.queue_count,
                    format_ms(t.created_at_ms),
                    if t.auto_created { " (auto)" } else { "" }
                )?;
            }
        }
        TopicCommand::Update { name, retention } => {
            use pb::update_topic_request::Retention;
            let topic = client
                .update_topic(pb::UpdateTopicRequest {
                    name,
                    retention: Some(match retention {
                        RetentionChoice::Ms(ms) => Retention::RetentionMs(ms),
                        RetentionChoice::StoreDefault => Retention::StoreDefaultRetention(true),
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .topic
                .context("server returned no topic")?;
            if output == OutputFormat::Json {
                return describe(client, topic.name, output).await;
            }
            writeln!(
                out,
                "updated topic {}: retention {}",
                topic.name,
                retention_text(topic.retention_ms)
            )?;
        }
        TopicCommand::Describe { name } => return describe(client, name, output).await,
        TopicCommand::Delete { name } => {
            client
                .delete_topic(pb::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            if output == OutputFormat::Json {
                return super::deleted_json("topic", &name);
            }
            writeln!(out, "deleted topic {name}")?;
        }
    }
    Ok(out)
}

/// `topic describe NAME`: the topic and its queues.
async fn describe(
    client: &mut AdminClient,
    name: String,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        {
            let resp = client
                .describe_topic(pb::DescribeTopicRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            let t = resp.topic.context("server returned no topic")?;
            if output == OutputFormat::Json {
                let described = json!({
                    "topic": topic_json(&t),
                    "queues": resp.queues.iter().map(queue_json).collect::<Vec<_>>(),
                });
                return Ok(serde_json::to_string_pretty(&described)? + "\n");
            }
            writeln!(out, "topic:    {}", t.name)?;
            writeln!(out, "type:     {}", type_name(t.topic_type))?;
            writeln!(out, "queues:   {}", t.queue_count)?;
            writeln!(out, "retention: {}", retention_text(t.retention_ms))?;
            let shards: std::collections::BTreeSet<u32> = t.queue_shards.iter().copied().collect();
            writeln!(
                out,
                "shards:   {}",
                shards
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
            writeln!(
                out,
                "created:  {}{}",
                format_ms(t.created_at_ms),
                if t.auto_created {
                    " (auto-created)"
                } else {
                    ""
                }
            )?;
            out.push('\n');
            write_queue_table(&mut out, &resp.queues)?;
        }
    }
    Ok(out)
}

/// `queues TOPIC [--group G]`: offsets, in flight and backlog per queue.
pub(super) async fn queues(
    client: &mut AdminClient,
    topic: String,
    group: Option<String>,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let queues = client
        .queue_stats(pb::QueueStatsRequest {
            topic,
            group: group.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .queues;
    if output == OutputFormat::Json {
        let list: Vec<_> = queues.iter().map(queue_json).collect();
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    write_queue_table(&mut out, &queues)?;
    Ok(out)
}

/// A topic in `topic list|describe --output json`.
fn topic_json(t: &pb::Topic) -> serde_json::Value {
    let shards: std::collections::BTreeSet<u32> = t.queue_shards.iter().copied().collect();
    json!({
        "name": t.name,
        "type": type_name(t.topic_type),
        "queues": t.queue_count,
        "shards": shards,
        "created_at_ms": t.created_at_ms,
        "auto_created": t.auto_created,
        "retention_ms": t.retention_ms,
    })
}

/// A queue in `queues --output json` and `topic describe --output json`: its offsets and,
/// per group that read it, where the group stands.
fn queue_json(q: &pb::QueueStats) -> serde_json::Value {
    json!({
        "queue_id": q.queue_id,
        "min_offset": q.min_offset,
        "max_offset": q.max_offset,
        "groups": q.groups.iter().map(|g| json!({
            "group": g.group,
            "consumer_offset": g.consumer_offset,
            "inflight": g.inflight,
            "backlog": g.backlog,
        })).collect::<Vec<_>>(),
    })
}

fn write_queue_table(out: &mut String, queues: &[pb::QueueStats]) -> std::fmt::Result {
    writeln!(
        out,
        "{:>5} {:>12} {:>12}  {:<30} {:>12} {:>9} {:>10}",
        "QUEUE", "MIN_OFFSET", "MAX_OFFSET", "GROUP", "CONSUMED_TO", "INFLIGHT", "BACKLOG"
    )?;
    for q in queues {
        if q.groups.is_empty() {
            writeln!(
                out,
                "{:>5} {:>12} {:>12}  {:<30} {:>12} {:>9} {:>10}",
                q.queue_id, q.min_offset, q.max_offset, "-", "-", "-", "-"
            )?;
        }
        for g in &q.groups {
            writeln!(
                out,
                "{:>5} {:>12} {:>12}  {:<30} {:>12} {:>9} {:>10}",
                q.queue_id,
                q.min_offset,
                q.max_offset,
                g.group,
                g.consumer_offset,
                g.inflight,
                g.backlog
            )?;
        }
    }
    Ok(())
}

fn topic_type_to_pb(t: TopicType) -> pb::TopicType {
    match t {
        TopicType::Normal => pb::TopicType::Normal,
        TopicType::Fifo => pb::TopicType::Fifo,
        TopicType::Delay => pb::TopicType::Delay,
        TopicType::Transaction => pb::TopicType::Transaction,
        TopicType::Mixed => pb::TopicType::Mixed,
        TopicType::Priority => pb::TopicType::Priority,
    }
}

fn type_name(t: i32) -> &'static str {
    match pb::TopicType::try_from(t) {
        Ok(pb::TopicType::Normal) => "normal",
        Ok(pb::TopicType::Fifo) => "fifo",
        Ok(pb::TopicType::Delay) => "delay",
        Ok(pb::TopicType::Transaction) => "transaction",
        Ok(pb::TopicType::Mixed) => "mixed",
        Ok(pb::TopicType::Priority) => "priority",
        _ => "unknown",
    }
}
