//! `vela admin`: the operator's CLI. It talks to the proxy's gRPC address: the Vela admin
//! service for metadata and queue views, `vela-sdk` for `send` / `receive`. Every failure is
//! one readable line and a non-zero exit.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use vela_proto::TopicType;
use vela_proto::pb::admin::{self as pb};
use vela_sdk::Credentials;

mod auth;
mod cluster_status;
mod dlq;
mod messages;
mod target;
mod tier;

pub use auth::{AclCommand, Secret, UserCommand};
pub use dlq::DlqCommand;
pub use target::Target;
use target::{AdminClient, connect};

/// `vela admin …`
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The proxy's gRPC address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8081",
        env = "VELA_ADMIN_SERVER"
    )]
    pub server: String,
    /// Access key (user name) to sign admin calls with, when the server has auth on.
    #[arg(
        long,
        global = true,
        env = "VELA_ADMIN_ACCESS_KEY",
        requires = "secret_key"
    )]
    pub access_key: Option<String>,
    /// Secret key (password) of --access-key.
    #[arg(
        long,
        global = true,
        env = "VELA_ADMIN_SECRET_KEY",
        hide_env_values = true,
        requires = "access_key"
    )]
    pub secret_key: Option<auth::Secret>,
    /// CA certificate (PEM) to trust for an `https://` server (default: the system's roots).
    #[arg(long, global = true, env = "VELA_ADMIN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for a server that requires them (mutual TLS).
    #[arg(long, global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

impl AdminArgs {
    /// Where to send the command and how to sign it.
    pub fn target(&self) -> Target {
        Target {
            server: self.server.clone(),
            ca_file: self.ca_file.clone(),
            client_identity: self.client_cert.clone().zip(self.client_key.clone()),
            credentials: self.access_key.clone().zip(self.secret_key.clone()).map(
                |(access_key, secret_key)| Credentials {
                    access_key,
                    secret_key: secret_key.0,
                },
            ),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Create, list, describe and delete consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Offsets, in-flight messages and backlog per queue and group.
    Queues {
        topic: String,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// What this node runs; `cluster status`: nodes, shards, leaders, replica lag, health.
    Cluster {
        #[command(subcommand)]
        command: Option<ClusterCommand>,
    },
    /// Store nodes of a cluster: `store drain <id>` moves the replicas placed there elsewhere.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Object storage: `tier status` shows per shard what is tiered and what is local.
    #[command(subcommand)]
    Tier(TierCommand),
    /// Send messages (one per BODY, or --count generated ones).
    Send(SendArgs),
    /// Receive messages as a SimpleConsumer, print them and ack them.
    Receive(ReceiveArgs),
    /// A group's dead letters (`%DLQ%<group>`): list, show, redrive.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Users (access keys and their secrets): create, update, delete, list, show.
    #[command(subcommand)]
    User(UserCommand),
    /// What users may do (ACL 2.0 policies): create, update, delete, list, show.
    #[command(subcommand)]
    Acl(AclCommand),
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    Create {
        name: String,
        /// normal | fifo | delay | transaction | mixed
        #[arg(long = "type", default_value = "normal")]
        topic_type: TopicType,
        /// Number of queues (1-1024).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        queues: u32,
        /// Replicas of each queue's shard, on distinct store nodes (1, 3 or 5; at most the
        /// cluster's store nodes). Default: the configured shards, held by every store node.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=7))]
        replicas: Option<u32>,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Moves every replica the controller placed on store node ID to other store nodes
    /// (learner, caught up, voter, then the old replica is deleted) and places nothing new
    /// there, for maintenance or before removing the node. Traffic continues throughout.
    Drain {
        id: u64,
        /// Wait until the node holds none of those replicas (checked every 2 s).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits before it gives up (with a non-zero exit).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every controller and store node, every shard: leader, term, health, replica lag.
    Status {
        /// table | json
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Subcommand, Debug)]
pub enum TierCommand {
    /// Per shard and store node: the log range and bytes in object storage and on local disk,
    /// the upload lag (sealed segments not uploaded yet) and the last tiering error.
    Status {
        /// Only the shards this topic has queues on.
        #[arg(long)]
        topic: Option<String>,
        /// table | json
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

/// How a status is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

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

/// `group create --from`: a reset target other than an offset.
fn parse_start(s: &str) -> Result<ResetTarget, String> {
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
fn start_text(start: u32, at_ms: i64) -> String {
    match start {
        1 => "earliest".into(),
        2 => "latest (messages stored since its creation)".into(),
        3 => format!("messages stored from {}", format_ms(at_ms)),
        _ => "auto (a young queue from its first message, else from its creation)".into(),
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
    /// Deliver after this delay (e.g. 10s, 5m).
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
    /// Leave the messages unacknowledged (they come back after --invisible).
    #[arg(long)]
    pub no_ack: bool,
    /// `json`: an array of objects (`message_id`, `topic`, `queue_id`, `offset`, `keys`,
    /// `tag`, `properties`, `delivery_attempt`, `body` or `body_base64`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
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

/// Runs one admin command, printing to stdout.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let target = args.target();
    let out = execute(&target, args.command).await?;
    print!("{out}");
    Ok(())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        if s.message().is_empty() {
            s.code().description()
        } else {
            s.message()
        }
    )
}

/// Executes a command and returns what to print (tests call this directly).
pub async fn execute(server: &Target, command: AdminCommand) -> anyhow::Result<String> {
    match command {
        AdminCommand::Send(args) => return send(server, args).await,
        AdminCommand::Receive(args) => return receive(server, args).await,
        AdminCommand::Dlq(command) => return dlq::execute(server, command).await,
        AdminCommand::User(command) => return auth::user(server, command).await,
        AdminCommand::Acl(command) => return auth::acl(server, command).await,
        _ => {}
    }
    let mut client = connect(server).await?;
    let mut out = String::new();
    match command {
        AdminCommand::Topic(TopicCommand::Create {
            name,
            topic_type,
            queues,
            replicas,
        }) => {
            let topic = client
                .create_topic(pb::CreateTopicRequest {
                    name,
                    topic_type: topic_type_to_pb(topic_type) as i32,
                    queue_count: queues,
                    replicas,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .topic
                .context("server returned no topic")?;
            writeln!(
                out,
                "created topic {} ({}, {} queues)",
                topic.name,
                type_name(topic.topic_type),
                topic.queue_count
            )?;
        }
        AdminCommand::Topic(TopicCommand::List) => {
            let topics = client
                .list_topics(pb::ListTopicsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .topics;
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
        AdminCommand::Topic(TopicCommand::Describe { name }) => {
            let resp = client
                .describe_topic(pb::DescribeTopicRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            let t = resp.topic.context("server returned no topic")?;
            writeln!(out, "topic:    {}", t.name)?;
            writeln!(out, "type:     {}", type_name(t.topic_type))?;
            writeln!(out, "queues:   {}", t.queue_count)?;
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
        AdminCommand::Topic(TopicCommand::Delete { name }) => {
            client
                .delete_topic(pb::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            writeln!(out, "deleted topic {name}")?;
        }
        AdminCommand::Group(GroupCommand::Create {
            name,
            fifo,
            max_attempts,
            from,
        }) => {
            if max_attempts == Some(0) {
                bail!("--max-attempts must be at least 1");
            }
            let (start, start_at_ms) = start_to_api(from);
            let g = client
                .create_group(pb::CreateGroupRequest {
                    name,
                    fifo,
                    max_attempts: max_attempts.unwrap_or(0),
                    start,
                    start_at_ms,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .group
                .context("server returned no group")?;
            writeln!(
                out,
                "created group {} ({}, max attempts {})",
                g.name,
                if g.fifo { "fifo" } else { "concurrent" },
                g.max_attempts
            )?;
        }
        AdminCommand::Group(GroupCommand::List) => {
            let groups = client
                .list_groups(pb::ListGroupsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .groups;
            writeln!(
                out,
                "{:<40} {:<11} {:>12}  CREATED",
                "GROUP", "DELIVERY", "MAX_ATTEMPTS"
            )?;
            for g in groups {
                writeln!(
                    out,
                    "{:<40} {:<11} {:>12}  {}{}",
                    g.name,
                    if g.fifo { "fifo" } else { "concurrent" },
                    g.max_attempts,
                    format_ms(g.created_at_ms),
                    if g.auto_created { " (auto)" } else { "" }
                )?;
            }
        }
        AdminCommand::Group(GroupCommand::Describe { name }) => {
            let resp = client
                .describe_group(pb::DescribeGroupRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            let g = resp.group.context("server returned no group")?;
            writeln!(out, "group:         {}", g.name)?;
            writeln!(
                out,
                "delivery:      {}",
                if g.fifo { "fifo" } else { "concurrent" }
            )?;
            writeln!(out, "max attempts:  {}", g.max_attempts)?;
            writeln!(out, "starts:        {}", start_text(g.start, g.start_at_ms))?;
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
            write_group_table(&mut out, &resp.queues)?;
        }
        AdminCommand::Group(GroupCommand::Delete { name }) => {
            client
                .delete_group(pb::DeleteGroupRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            writeln!(out, "deleted group {name}")?;
        }
        AdminCommand::Group(GroupCommand::Reset {
            name,
            topic,
            to,
            queue,
        }) => {
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
            writeln!(out, "reset group {name} on {topic}")?;
            writeln!(out, "{:>5}  {:>12}", "queue", "offset")?;
            for q in resp.queues {
                let offset = q.offset.map_or("-".to_owned(), |o| o.to_string());
                writeln!(out, "{:>5}  {:>12}", q.queue_id, offset)?;
            }
        }
        AdminCommand::Queues { topic, group } => {
            let queues = client
                .queue_stats(pb::QueueStatsRequest {
                    topic,
                    group: group.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .queues;
            write_queue_table(&mut out, &queues)?;
        }
        AdminCommand::Cluster {
            command: Some(ClusterCommand::Status { output }),
        } => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            out = match output {
                OutputFormat::Json => cluster_status::to_json(status)?,
                OutputFormat::Table => cluster_status::to_table(status)?,
            };
        }
        AdminCommand::Tier(TierCommand::Status { topic, output }) => {
            let status = client
                .tier_status(pb::TierStatusRequest {
                    topic: topic.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            out = match output {
                OutputFormat::Json => tier::to_json(status)?,
                OutputFormat::Table => tier::to_table(status)?,
            };
        }
        AdminCommand::Cluster { command: None } => {
            let info = client
                .cluster_info(pb::ClusterInfoRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            writeln!(out, "version:             {}", info.version)?;
            writeln!(out, "mode:                {}", info.mode)?;
            writeln!(out, "shards:              {}", info.shard_count)?;
            writeln!(out, "auto-create topics:  {}", info.auto_create_topics)?;
            writeln!(out, "auto-create groups:  {}", info.auto_create_groups)?;
        }
        AdminCommand::Store(StoreCommand::Drain { id, wait, timeout }) => {
            let drain = client
                .drain_store(pb::DrainStoreRequest { store: id })
                .await
                .map_err(status_error)?
                .into_inner();
            let list = |shards: &[u32]| {
                shards
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // A drain asked again while replicas still move: those count too.
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let mut moving: Vec<u32> = status
                .shards
                .iter()
                .filter(|s| {
                    !drain.configured.contains(&s.shard) && s.replicas.iter().any(|r| r.node == id)
                })
                .map(|s| s.shard)
                .chain(drain.moving.iter().copied())
                .collect();
            moving.sort_unstable();
            moving.dedup();
            if moving.is_empty() {
                writeln!(
                    out,
                    "store node {id} is draining: it holds no placed replica"
                )?;
            } else if drain.moving.is_empty() {
                writeln!(
                    out,
                    "store node {id} is already draining: the replicas of shard(s) {} are still moving",
                    list(&moving)
                )?;
            } else {
                writeln!(
                    out,
                    "store node {id} is draining: the replicas of shard(s) {} move to other store nodes",
                    list(&drain.moving)
                )?;
            }
            if !drain.configured.is_empty() {
                writeln!(
                    out,
                    "configured shard(s) {} stay: every store node holds them (cluster.shards)",
                    list(&drain.configured)
                )?;
            }
            if wait && !moving.is_empty() {
                wait_drained(&mut client, id, &moving, timeout).await?;
                writeln!(out, "store node {id} holds none of them anymore")?;
            } else if !moving.is_empty() {
                writeln!(out, "follow it with: vela admin cluster status")?;
            }
        }
        AdminCommand::Send(_)
        | AdminCommand::Receive(_)
        | AdminCommand::Dlq(_)
        | AdminCommand::User(_)
        | AdminCommand::Acl(_) => {}
    }
    Ok(out)
}

/// Polls the cluster status until every shard of `moving` has a leader and no replica on
/// `store`, or `timeout` passes (an error naming what is left).
async fn wait_drained(
    client: &mut AdminClient,
    store: u64,
    moving: &[u32],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = client
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        let left: Vec<u32> = moving
            .iter()
            .copied()
            .filter(|shard| {
                status
                    .shards
                    .iter()
                    .find(|s| s.shard == *shard)
                    .is_none_or(|s| {
                        s.leader.is_none() || s.replicas.iter().any(|r| r.node == store)
                    })
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "store node {store} still holds replicas of shard(s) {left:?} after {}; see \
                 vela admin cluster status",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
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

fn write_group_table(out: &mut String, queues: &[pb::GroupQueueStats]) -> std::fmt::Result {
    writeln!(
        out,
        "{:<40} {:>5} {:>12} {:>9} {:>10}",
        "TOPIC", "QUEUE", "CONSUMED_TO", "INFLIGHT", "BACKLOG"
    )?;
    for g in queues {
        writeln!(
            out,
            "{:<40} {:>5} {:>12} {:>9} {:>10}",
            g.topic, g.queue_id, g.consumer_offset, g.inflight, g.backlog
        )?;
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
    }
}

fn type_name(t: i32) -> &'static str {
    match pb::TopicType::try_from(t) {
        Ok(pb::TopicType::Normal) => "normal",
        Ok(pb::TopicType::Fifo) => "fifo",
        Ok(pb::TopicType::Delay) => "delay",
        Ok(pb::TopicType::Transaction) => "transaction",
        Ok(pb::TopicType::Mixed) => "mixed",
        _ => "unknown",
    }
}

fn format_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn send(server: &Target, args: SendArgs) -> anyhow::Result<String> {
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
            Ok(r) => writeln!(out, "sent {} offset {}", r.message_id, r.offset)?,
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("send failed"));
                break;
            }
        }
    }
    if let Err(e) = producer.shutdown().await {
        tracing::debug!(error = %e, "producer shutdown");
    }
    result.map(|()| out)
}

async fn receive(server: &Target, args: ReceiveArgs) -> anyhow::Result<String> {
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
        let out = match args.output {
            OutputFormat::Json => messages::to_json(&messages)?,
            OutputFormat::Table => messages::to_lines(&messages)?,
        };
        if !args.no_ack {
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
