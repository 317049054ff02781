//! `vela admin group …`.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::Subcommand;
use vela_proto::pb::admin::{self as pb};
use vela_proto::retry::RetryBackoff;

use serde_json::json;

use super::target::AdminClient;
use super::{OutputFormat, format_ms, status_error};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    Create {
        name: String,
        /// Deliver in order per message group, one in flight per message group.
        #[arg(long)]
        fifo: bool,
        /// Deliveries before a message moves to %DLQ%<group> (default 17).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Where the group starts on each queue it has not read: earliest (the first retained
        /// message), latest (the messages stored from its creation on) or an RFC 3339 time.
        /// Default: a young queue from its first message, any other from the group's creation.
        #[arg(long, value_parser = parse_start)]
        from: Option<ResetTarget>,
        /// How long a message a push consumer failed waits before its next delivery, after
        /// each failed delivery in turn (the last one repeats): e.g. 1s,10s,1m. Default:
        /// RocketMQ's table, 1s 5s 10s 30s 1m 2m ... 20m 30m 1h 2h.
        #[arg(long, value_parser = parse_retry_delays, conflicts_with = "retry_exponential")]
        retry_delays: Option<RetryBackoff>,
        /// An exponential back-off instead: INITIAL,MAX,MULTIPLIER, e.g. 1s,2h,2 (1 s, 2 s,
        /// 4 s, ... up to 2 h).
        #[arg(long, value_parser = parse_retry_exponential)]
        retry_exponential: Option<RetryBackoff>,
        /// Every consumer instance (client) gets every message, with its own position kept
        /// by the server; without it each message goes to one instance. A new instance starts
        /// where --from says, "auto" and "latest" meaning from its first receive. The name may
        /// have at most 64 characters.
        #[arg(long)]
        broadcast: bool,
    },
    /// Changes the group's max attempts or retry back-off (what is given; the rest stays).
    /// Consumers get the new back-off when they next fetch their settings.
    Update {
        name: String,
        /// Deliveries before a message moves to %DLQ%<group>.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// A delay table, e.g. 1s,10s,1m (the last one repeats).
        #[arg(long, value_parser = parse_retry_delays, group = "retry")]
        retry_delays: Option<RetryBackoff>,
        /// An exponential back-off: INITIAL,MAX,MULTIPLIER, e.g. 1s,2h,2.
        #[arg(long, value_parser = parse_retry_exponential, group = "retry")]
        retry_exponential: Option<RetryBackoff>,
        /// Back to RocketMQ's table (1s 5s 10s 30s 1m 2m ... 1h 2h).
        #[arg(long, group = "retry")]
        retry_standard: bool,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Moves the group's position on a topic's queues: it forgets what it has in flight there
    /// and goes on from the new position, reading again or skipping.
    Reset {
        name: String,
        #[arg(long)]
        topic: String,
        /// earliest (the first retained message), latest (only what is stored from now on),
        /// an RFC 3339 time (the first message stored then or later) or an offset.
        #[arg(long, value_parser = parse_reset_target)]
        to: ResetTarget,
        /// Only this queue (default: every queue of the topic).
        #[arg(long)]
        queue: Option<u32>,
    },
}

fn parse_retry_delays(s: &str) -> Result<RetryBackoff, String> {
    RetryBackoff::parse_delays(s).map_err(|e| e.to_string())
}

fn parse_retry_exponential(s: &str) -> Result<RetryBackoff, String> {
    RetryBackoff::parse_exponential(s).map_err(|e| e.to_string())
}

/// `group create --from`: a reset target other than an offset.
pub(super) fn parse_start(s: &str) -> Result<ResetTarget, String> {
    match parse_reset_target(s) {
        Ok(ResetTarget::Offset(_)) => Err(format!(
            "{s:?}: a group starts at earliest, latest or an RFC 3339 time (offsets differ per queue)"
        )),
        other => other,
    }
}

/// `(start, start_at_ms)` as the admin API carries a group's start.
fn start_to_api(from: Option<ResetTarget>) -> (u32, i64) {
    match from {
        None | Some(ResetTarget::Offset(_)) => (0, 0),
        Some(ResetTarget::Earliest) => (1, 0),
        Some(ResetTarget::Latest) => (2, 0),
        Some(ResetTarget::At(ms)) => (3, ms),
    }
}

/// A group's start as `describe` shows it.
/// A group in `group list|describe --output json`. `start`: auto, earliest, latest or
/// `at` (with `start_at_ms`); `retry`: `{"kind": "standard"}`, `{"kind": "exponential",
/// "initial_ms", "max_ms", "multiplier"}` or `{"kind": "delays", "delays_ms"}`.
fn group_json(g: &pb::ConsumerGroup) -> anyhow::Result<serde_json::Value> {
    let retry = vela_proto::retry::from_wire(g.retry_backoff.as_ref())
        .context("server sent an invalid retry back-off")?;
    let retry = match retry {
        RetryBackoff::Standard => json!({ "kind": "standard" }),
        RetryBackoff::Exponential {
            initial_ms,
            max_ms,
            multiplier,
        } => json!({
            "kind": "exponential",
            "initial_ms": initial_ms,
            "max_ms": max_ms,
            "multiplier": multiplier,
        }),
        RetryBackoff::Delays { delays_ms } => json!({ "kind": "delays", "delays_ms": delays_ms }),
    };
    let (start, start_at_ms) = match g.start {
        1 => ("earliest", None),
        2 => ("latest", None),
        3 => ("at", Some(g.start_at_ms)),
        _ => ("auto", None),
    };
    Ok(json!({
        "name": g.name,
        "fifo": g.fifo,
        "broadcast": g.broadcast,
        "max_attempts": g.max_attempts,
        "start": start,
        "start_at_ms": start_at_ms,
        "retry": retry,
        "created_at_ms": g.created_at_ms,
        "auto_created": g.auto_created,
    }))
}

fn start_text(start: u32, at_ms: i64, broadcast: bool) -> String {
    // A broadcast group's instances are born at their first receive.
    let born = if broadcast {
        "each instance's first receive"
    } else {
        "its creation"
    };
    match start {
        1 => "earliest".into(),
        2 => format!("latest (messages stored since {born})"),
        3 => format!("messages stored from {}", format_ms(at_ms)),
        _ => format!("auto (a young queue from its first message, else from {born})"),
    }
}

/// How a group delivers, as `list` and `describe` show it.
fn delivery(g: &pb::ConsumerGroup) -> &'static str {
    match (g.fifo, g.broadcast) {
        (false, false) => "concurrent",
        (true, false) => "fifo",
        (false, true) => "broadcast",
        (true, true) => "fifo+broadcast",
    }
}

/// Where `group reset --to` moves a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    /// Unix ms.
    At(i64),
    Offset(u64),
}

fn parse_reset_target(s: &str) -> Result<ResetTarget, String> {
    match s.trim() {
        "earliest" => return Ok(ResetTarget::Earliest),
        "latest" => return Ok(ResetTarget::Latest),
        _ => {}
    }
    if let Ok(offset) = s.trim().parse::<u64>() {
        return Ok(ResetTarget::Offset(offset));
    }
    let at = humantime::parse_rfc3339_weak(s.trim()).map_err(|_| {
        format!(
            "{s:?} is not earliest, latest, an RFC 3339 time (2026-12-04T10:00:00Z) or an offset"
        )
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    i64::try_from(ms)
        .map(ResetTarget::At)
        .map_err(|_| format!("{s:?} is too far in the future"))
}

/// With `--output json`: `list` an array of groups, `describe` the group and its queues,
/// `create` and `update` the group, `delete` `{"deleted": {"group": NAME}}`, `reset`
/// `{"group", "topic", "queues": [{"queue_id", "offset"}]}`.
pub(super) async fn execute(
    client: &mut AdminClient,
    command: GroupCommand,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    match command {
        GroupCommand::Create {
            name,
            fifo,
            max_attempts,
            from,
            retry_delays,
            retry_exponential,
            broadcast,
        } => {
            if max_attempts == Some(0) {
                bail!("--max-attempts must be at least 1");
            }
            let (start, start_at_ms) = start_to_api(from);
            let retry = retry_delays.or(retry_exponential).unwrap_or_default();
            let g = client
                .create_group(pb::CreateGroupRequest {
                    name,
                    fifo,
                    max_attempts: max_attempts.unwrap_or(0),
                    start,
                    start_at_ms,
                    retry_backoff: vela_proto::retry::to_wire(&retry),
                    broadcast,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .group
                .context("server returned no group")?;
            if output == OutputFormat::Json {
                return super::json_line(&group_json(&g)?);
            }
            writeln!(
                out,
                "created group {} ({}, max attempts {})",
                g.name,
                delivery(&g),
                g.max_attempts
            )?;
        }
        GroupCommand::Update {
            name,
            max_attempts,
            retry_delays,
            retry_exponential,
            retry_standard,
        } => {
            if max_attempts == Some(0) {
                bail!("--max-attempts must be at least 1");
            }
            let retry = retry_delays.or(retry_exponential);
            if max_attempts.is_none() && retry.is_none() && !retry_standard {
                bail!(
                    "nothing to change: give --max-attempts, --retry-delays, --retry-exponential or --retry-standard"
                );
            }
            let g = client
                .update_group(pb::UpdateGroupRequest {
                    name,
                    max_attempts,
                    retry_backoff: retry.as_ref().and_then(vela_proto::retry::to_wire),
                    retry_standard,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .group
                .context("server returned no group")?;
            if output == OutputFormat::Json {
                return super::json_line(&group_json(&g)?);
            }
            let retry = vela_proto::retry::from_wire(g.retry_backoff.as_ref())
                .context("server sent an invalid retry back-off")?;
            writeln!(
                out,
                "updated group {} (max attempts {}, retry {})",
                g.name,
                g.max_attempts,
                retry.describe()
            )?;
        }
        GroupCommand::List => {
            let groups = client
                .list_groups(pb::ListGroupsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .groups;
            if output == OutputFormat::Json {
                let list = groups
                    .iter()
                    .map(group_json)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                return Ok(serde_json::to_string_pretty(&list)? + "\n");
            }
            writeln!(
                out,
                "{:<40} {:<14} {:>12}  CREATED",
                "GROUP", "DELIVERY", "MAX_ATTEMPTS"
            )?;
            for g in groups {
                writeln!(
                    out,
                    "{:<40} {:<14} {:>12}  {}{}",
                    g.name,
                    delivery(&g),
                    g.max_attempts,
                    format_ms(g.created_at_ms),
                    if g.auto_created { " (auto)" } else { "" }
                )?;
            }
        }
        GroupCommand::Describe { name } => {
            let resp = client
                .describe_group(pb::DescribeGroupRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            let g = resp.group.context("server returned no group")?;
            if output == OutputFormat::Json {
                let described = json!({
                    "group": group_json(&g)?,
                    "queues": resp.queues.iter().map(|q| json!({
                        "instance": instance_of(q),
                        "topic": q.topic,
                        "queue_id": q.queue_id,
                        "consumer_offset": q.consumer_offset,
                        "inflight": q.inflight,
                        "backlog": q.backlog,
                    })).collect::<Vec<_>>(),
                });
                return Ok(serde_json::to_string_pretty(&described)? + "\n");
            }
            writeln!(out, "group:         {}", g.name)?;
            writeln!(out, "delivery:      {}", delivery(&g))?;
            writeln!(out, "max attempts:  {}", g.max_attempts)?;
            writeln!(
                out,
                "starts:        {}",
                start_text(g.start, g.start_at_ms, g.broadcast)
            )?;
            let retry = vela_proto::retry::from_wire(g.retry_backoff.as_ref())
                .context("server sent an invalid retry back-off")?;
            writeln!(out, "retry:         {}", retry.describe())?;
            writeln!(
                out,
                "created:       {}{}",
                format_ms(g.created_at_ms),
                if g.auto_created {
                    " (auto-created)"
                } else {
                    ""
                }
            )?;
            out.push('\n');
            write_group_table(&mut out, &resp.queues, g.broadcast)?;
        }
        GroupCommand::Delete { name } => {
            client
                .delete_group(pb::DeleteGroupRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            if output == OutputFormat::Json {
                return super::deleted_json("group", &name);
            }
            writeln!(out, "deleted group {name}")?;
        }
        GroupCommand::Reset {
            name,
            topic,
            to,
            queue,
        } => {
            use pb::reset_group_request::To;
            let to = match to {
                ResetTarget::Earliest => To::Earliest(true),
                ResetTarget::Latest => To::Latest(true),
                ResetTarget::At(at_ms) => To::AtMs(at_ms),
                ResetTarget::Offset(offset) => To::Offset(offset),
            };
            let resp = client
                .reset_group(pb::ResetGroupRequest {
                    group: name.clone(),
                    topic: topic.clone(),
                    to: Some(to),
                    queue_id: queue,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if output == OutputFormat::Json {
                return super::json_line(&json!({
                    "group": name,
                    "topic": topic,
                    "queues": resp.queues.iter().map(|q| json!({
                        "queue_id": q.queue_id,
                        "offset": q.offset,
                    })).collect::<Vec<_>>(),
                }));
            }
            writeln!(out, "reset group {name} on {topic}")?;
            writeln!(out, "{:>5}  {:>12}", "queue", "offset")?;
            for q in resp.queues {
                let offset = q.offset.map_or("-".to_owned(), |o| o.to_string());
                writeln!(out, "{:>5}  {:>12}", q.queue_id, offset)?;
            }
        }
    }
    Ok(out)
}

/// A broadcast group's positions each belong to one instance (`<group>%BCAST%<instance>` in
/// the store); the instance part, or `None` for a group's own position.
fn instance_of(position: &pb::GroupQueueStats) -> Option<&str> {
    position
        .group
        .split_once(vela_proto::BROADCAST_MARKER)
        .map(|(_, instance)| instance)
}

fn write_group_table(
    out: &mut String,
    queues: &[pb::GroupQueueStats],
    broadcast: bool,
) -> std::fmt::Result {
    if broadcast {
        write!(out, "{:<48} ", "INSTANCE")?;
    }
    writeln!(
        out,
        "{:<40} {:>5} {:>12} {:>9} {:>10}",
        "TOPIC", "QUEUE", "CONSUMED_TO", "INFLIGHT", "BACKLOG"
    )?;
    for g in queues {
        if broadcast {
            write!(out, "{:<48} ", instance_of(g).unwrap_or("-"))?;
        }
        writeln!(
            out,
            "{:<40} {:>5} {:>12} {:>9} {:>10}",
            g.topic, g.queue_id, g.consumer_offset, g.inflight, g.backlog
        )?;
    }
    Ok(())
}
