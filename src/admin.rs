//! `vela admin`: the operator's CLI. It talks to the proxy's gRPC address: the Vela admin
//! service for metadata and queue views, `vela-sdk` for `send` / `receive`. Every failure is
//! one readable line and a non-zero exit.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use clap::{Args, Subcommand};
use vela_proto::pb::admin::{self as pb};
use vela_sdk::Credentials;

mod auth;
mod clients;
mod cluster_status;
mod confirm;
mod dlq;
mod groups;
mod lookup;
mod messages;
mod receipt_keys;
mod routes;
mod send_receive;
mod stores;
mod target;
mod tier;
mod topics;

pub use auth::{AclCommand, Secret, UserCommand};
pub use clients::ClientCommand;
pub use dlq::DlqCommand;
pub use groups::{GroupCommand, ResetTarget};
pub use receipt_keys::ReceiptKeyCommand;
pub use routes::RouteCommand;
pub use send_receive::MessageCommand;
pub use send_receive::{ReceiveArgs, SendArgs};
pub use target::Target;
use target::{AdminClient, connect};
pub use tier::TierCredentialsCommand;
pub use topics::TopicCommand;

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
    /// Confirm destructive commands (deletes, group resets) without being asked; without a
    /// terminal they are refused unless given.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// How every command prints its result: `table` (text for people) or `json` (for
    /// scripts: one JSON value; errors stay one line on stderr with a non-zero exit).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
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
            assume_yes: self.yes,
            output: self.output,
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
    /// Store nodes of a cluster: `store list`; `store drain <id>` moves the replicas placed
    /// there elsewhere; `store remove <id>` forgets a drained node that registered at runtime.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Object storage: `tier status` shows per shard what is tiered and what is local.
    #[command(subcommand)]
    Tier(TierCommand),
    /// Send messages (one per BODY, or --count generated ones).
    Send(SendArgs),
    /// Receive messages as a SimpleConsumer and print them (acknowledged with --ack).
    Receive(ReceiveArgs),
    /// One message: `message show ID` and `message find --topic T --key K` find it and its
    /// track; `message recall TOPIC HANDLE` withdraws a delay message before its time;
    /// `message verify ID --topic T --client-id C` runs it through a consumer's listener.
    #[command(subcommand)]
    Message(MessageCommand),
    /// The clients connected to the proxies: `client list [--group G]`, `client stack ID`.
    #[command(subcommand)]
    Client(ClientCommand),
    /// A group's dead letters (`%DLQ%<group>`): list, show, redrive.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Users (access keys and their secrets): create, update, delete, list, show.
    #[command(subcommand)]
    User(UserCommand),
    /// What users may do (ACL 2.0 policies): create, update, delete, list, show.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Routes: copy a topic to another cluster or region (create, list, describe, pause,
    /// resume, delete).
    #[command(subcommand)]
    Route(RouteCommand),
    /// The keys that sign receipt handles, kept sealed by the controller: list, rotate,
    /// retire.
    #[command(subcommand)]
    ReceiptKey(ReceiptKeyCommand),
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
    /// Every store node: id, address, configured ([[cluster.stores]]) or registered at
    /// runtime, and its state (serving, draining, scaled away).
    List,
    /// Ends the drain of store node ID (back from maintenance): replicas may be placed there
    /// again, and the replica balancer moves some of the others' onto it.
    Undrain { id: u64 },
    /// Forgets a drained store node that registered at runtime, once its process is gone
    /// (after scaling the StatefulSet down): it is no longer listed or asked.
    Remove { id: u64 },
    /// On Kubernetes: scales the store StatefulSet to N pods. Up at once (the new pods join
    /// and get replicas); down by draining the nodes above N first, then the controller lowers
    /// the StatefulSet and removes them. Traffic continues throughout.
    Scale {
        replicas: u32,
        /// Wait until the StatefulSet has N pods (asked again every 2 s).
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
    Status,
}

#[derive(Subcommand, Debug)]
pub enum TierCommand {
    /// Per shard and store node: the log range and bytes in object storage and on local disk,
    /// the upload lag (sealed segments not uploaded yet) and the last tiering error.
    Status {
        /// Only the shards this topic has queues on.
        #[arg(long)]
        topic: Option<String>,
    },
    /// The S3 access key pair the controller keeps sealed for every store node (set, show,
    /// clear); store nodes sign with it instead of their own [tier] settings within 10 s.
    #[command(subcommand)]
    Credentials(TierCredentialsCommand),
}

/// How a status is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
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

pub(crate) fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        if s.message().is_empty() {
            s.code().description()
        } else {
            s.message()
        }
    )
}

/// What a destructive command is about to do, for [`confirm::confirm`]; `None` for the rest.
fn destructive(command: &AdminCommand) -> Option<String> {
    Some(match command {
        AdminCommand::Topic(TopicCommand::Delete { name }) => {
            format!("delete topic {name} and every message in it")
        }
        AdminCommand::Group(GroupCommand::Delete { name }) => {
            format!("delete consumer group {name} and its positions")
        }
        AdminCommand::Topic(TopicCommand::Update { name, retention }) => {
            format!(
                "keep topic {name}'s messages for {} (older ones are deleted at the next \
                 retention pass)",
                topics::retention_choice_text(*retention)
            )
        }
        AdminCommand::Group(GroupCommand::Reset { name, topic, .. }) => {
            format!("move group {name} on {topic} (what it has in flight there is forgotten)")
        }
        AdminCommand::User(UserCommand::Delete { name }) => {
            format!("delete user {name} and its ACL")
        }
        AdminCommand::Acl(AclCommand::Delete { subject, resource }) if resource.is_empty() => {
            format!("delete the whole ACL of {subject}")
        }
        AdminCommand::Acl(AclCommand::Delete { subject, resource }) => {
            format!(
                "delete the entries of {subject} for {}",
                resource.join(", ")
            )
        }
        AdminCommand::Route(RouteCommand::Delete { name }) => format!("delete route {name}"),
        AdminCommand::Store(StoreCommand::Remove { id }) => {
            format!("forget store node {id} (it must be drained and its process gone)")
        }
        AdminCommand::ReceiptKey(command) => return receipt_keys::destructive(command),
        AdminCommand::Tier(TierCommand::Credentials(TierCredentialsCommand::Clear)) => {
            "clear the tier credentials the controller keeps (store nodes go back to their own \
             [tier] settings)"
                .to_owned()
        }
        _ => return None,
    })
}

/// Executes a command and returns what to print (tests call this directly). A destructive
/// one asks first, or needs `--yes` without a terminal.
pub async fn execute(server: &Target, command: AdminCommand) -> anyhow::Result<String> {
    if let Some(what) = destructive(&command) {
        confirm::confirm(server, &what)?;
    }
    match command {
        AdminCommand::Send(args) => return send_receive::send(server, args).await,
        AdminCommand::Receive(args) => return send_receive::receive(server, args).await,
        AdminCommand::Message(command) => return send_receive::message(server, command).await,
        AdminCommand::Dlq(command) => return dlq::execute(server, command).await,
        AdminCommand::Client(command) => {
            return clients::execute(server, command, server.output).await;
        }
        AdminCommand::User(command) => return auth::user(server, command).await,
        AdminCommand::Acl(command) => return auth::acl(server, command).await,
        _ => {}
    }
    let output = server.output;
    let mut client = connect(server).await?;
    let mut out = String::new();
    match command {
        AdminCommand::Topic(command) => {
            out = topics::execute(&mut client, command, output).await?;
        }
        AdminCommand::Group(command) => {
            out = groups::execute(&mut client, command, output).await?;
        }
        AdminCommand::Route(command) => {
            out = routes::execute(&mut client, command, output).await?;
        }
        AdminCommand::ReceiptKey(command) => {
            out = receipt_keys::execute(&mut client, command, output).await?;
        }
        AdminCommand::Queues { topic, group } => {
            out = topics::queues(&mut client, topic, group, output).await?;
        }
        AdminCommand::Cluster {
            command: Some(ClusterCommand::Status),
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
        AdminCommand::Tier(TierCommand::Credentials(command)) => {
            out = tier::credentials(&mut client, command, output).await?;
        }
        AdminCommand::Tier(TierCommand::Status { topic }) => {
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
            if output == OutputFormat::Json {
                return json_line(&serde_json::json!({
                    "version": info.version,
                    "mode": info.mode,
                    "shards": info.shard_count,
                    "auto_create_topics": info.auto_create_topics,
                    "auto_create_groups": info.auto_create_groups,
                }));
            }
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
            if output == OutputFormat::Json {
                if wait && !moving.is_empty() {
                    wait_drained(&mut client, id, &moving, timeout).await?;
                }
                return json_line(&serde_json::json!({
                    "store": id,
                    "moving": moving,
                    "configured": drain.configured,
                    "drained": moving.is_empty() || wait,
                }));
            }
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
                    "configured shard(s) {} stay on it: every other store node already holds them (add a store node, then drain again)",
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
        AdminCommand::Store(StoreCommand::List) => {
            out = stores::list(&mut client, output).await?;
        }
        AdminCommand::Store(StoreCommand::Remove { id }) => {
            out = stores::remove(&mut client, id, output).await?;
        }
        AdminCommand::Store(StoreCommand::Undrain { id }) => {
            out = stores::undrain(&mut client, id, output).await?;
        }
        AdminCommand::Store(StoreCommand::Scale {
            replicas,
            wait,
            timeout,
        }) => {
            out = stores::scale(&mut client, replicas, wait, timeout, output).await?;
        }
        AdminCommand::Send(_)
        | AdminCommand::Receive(_)
        | AdminCommand::Message(_)
        | AdminCommand::Dlq(_)
        | AdminCommand::Client(_)
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

/// `value` as pretty JSON ending with a newline: what every command prints with `--output
/// json`.
pub(crate) fn json_line(value: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// What a delete prints with `--output json`: `{"deleted": {"<kind>": "<name>"}}`.
pub(crate) fn deleted_json(kind: &str, name: &str) -> anyhow::Result<String> {
    json_line(&serde_json::json!({ "deleted": { kind: name } }))
}

/// A Unix-ms time as RFC 3339 (seconds).
pub(crate) fn format_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
