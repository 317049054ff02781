//! `vela admin client list|stack` and `vela admin message verify`: the clients connected to
//! the proxies, and the commands sent to one of them through the Telemetry stream it holds.
//! A client is connected to one proxy of a cluster; the proxy named by `--server` lists the
//! others (from the controller) and each is asked in turn, with the same credentials and TLS.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use vela_proto::pb::admin as pb;

use super::target::{Target, connect};
use super::{OutputFormat, format_ms, status_error};

/// The protocol's status codes a client answers with.
const OK: i32 = 20_000;
const NOT_IMPLEMENTED: i32 = 50_100;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Every client with a Telemetry stream open to a proxy (producers and consumers, as
    /// their Settings describe them), asked of every proxy the controller lists.
    List {
        /// Only the consumers of this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Asks a client for a dump of its threads (RocketMQ's consumer stack; Java clients
    /// answer with one, others say they cannot).
    Stack {
        client_id: String,
        /// How long to wait for the client's answer (at most 60s).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// A client and the proxy that holds it.
struct Found {
    proxy: Target,
    client: pb::ClientInfo,
}

/// What asking every proxy found.
struct Census {
    clients: Vec<Found>,
    /// Proxies asked, the one `--server` names first.
    asked: Vec<String>,
    /// Proxies that could not be asked, with why.
    unreached: Vec<(String, String)>,
    /// Why the other proxies are not known, when they are not.
    peers_error: Option<String>,
}

/// Asks the proxy `target` names, and every other proxy it knows of, for their clients.
async fn census(target: &Target, group: &str) -> anyhow::Result<Census> {
    let request = pb::ListClientsRequest {
        group: group.to_owned(),
    };
    let first = connect(target)
        .await?
        .list_clients(request.clone())
        .await
        .map_err(status_error)?
        .into_inner();
    let mut census = Census {
        clients: Vec::new(),
        asked: vec![target.server.clone()],
        unreached: Vec::new(),
        peers_error: (!first.peers_error.is_empty()).then_some(first.peers_error),
    };
    census
        .clients
        .extend(first.clients.into_iter().map(|client| Found {
            proxy: target.clone(),
            client,
        }));
    let asks = first.peers.into_iter().map(|peer| {
        let at = target.at(&peer);
        let request = request.clone();
        async move {
            let listed = match connect(&at).await {
                Ok(mut client) => client
                    .list_clients(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(status_error),
                Err(e) => Err(e),
            };
            (peer, at, listed)
        }
    });
    for (peer, at, listed) in futures::future::join_all(asks).await {
        match listed {
            Ok(listed) => {
                census.asked.push(peer);
                census
                    .clients
                    .extend(listed.clients.into_iter().map(|client| Found {
                        proxy: at.clone(),
                        client,
                    }));
            }
            Err(e) => census.unreached.push((peer, format!("{e:#}"))),
        }
    }
    Ok(census)
}

/// The proxy holding `client_id`, or why none was found.
async fn holder(target: &Target, client_id: &str) -> anyhow::Result<Found> {
    let census = census(target, "").await?;
    let mut holding = census
        .clients
        .into_iter()
        .filter(|f| f.client.client_id == client_id);
    if let Some(found) = holding.next() {
        return Ok(found);
    }
    let mut why = format!(
        "client {client_id} is not connected to any proxy asked ({})",
        census.asked.join(", ")
    );
    for (proxy, error) in &census.unreached {
        let _ = write!(why, "; {proxy} not reached: {error}");
    }
    if let Some(error) = &census.peers_error {
        let _ = write!(why, "; other proxies not known: {error}");
    }
    anyhow::bail!(why)
}

pub(super) async fn execute(
    target: &Target,
    command: ClientCommand,
    output: OutputFormat,
) -> anyhow::Result<String> {
    match command {
        ClientCommand::List { group } => {
            let census = census(target, group.as_deref().unwrap_or("")).await?;
            match output {
                OutputFormat::Json => list_json(&census),
                OutputFormat::Table => list_table(&census),
            }
        }
        ClientCommand::Stack { client_id, timeout } => {
            let found = holder(target, &client_id).await?;
            let answer = connect(&found.proxy)
                .await?
                .client_stack(pb::ClientStackRequest {
                    client_id: client_id.clone(),
                    timeout_ms: millis(timeout),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            refused(&found, "dump its threads", answer.code, &answer.message)?;
            Ok(match output {
                OutputFormat::Json => format!(
                    "{}\n",
                    json!({
                        "client_id": client_id,
                        "proxy": answer.proxy,
                        "stack": answer.stack,
                    })
                ),
                OutputFormat::Table => {
                    let mut stack = answer.stack;
                    if !stack.ends_with('\n') {
                        stack.push('\n');
                    }
                    stack
                }
            })
        }
    }
}

/// `message verify`: runs message `message_id` of `topic` through the listener of push
/// consumer `client_id`, wherever it is connected.
pub(super) async fn verify(
    target: &Target,
    message_id: &str,
    topic: &str,
    client_id: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let found = holder(target, client_id).await?;
    let answer = connect(&found.proxy)
        .await?
        .verify_message(pb::VerifyMessageRequest {
            client_id: client_id.to_owned(),
            topic: topic.to_owned(),
            message_id: message_id.to_owned(),
            timeout_ms: millis(timeout),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let what = format!("consume message {message_id}");
    refused(&found, &what, answer.code, &answer.message)?;
    Ok(match target.output {
        OutputFormat::Json => format!(
            "{}\n",
            json!({
                "client_id": client_id,
                "message_id": message_id,
                "topic": topic,
                "consumed": true,
                "proxy": answer.proxy,
            })
        ),
        OutputFormat::Table => format!(
            "client {client_id} consumed message {message_id} (through proxy {})\n",
            answer.proxy
        ),
    })
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// An error naming the client and why, unless it answered OK.
fn refused(found: &Found, what: &str, code: i32, message: &str) -> anyhow::Result<()> {
    if code == OK {
        return Ok(());
    }
    let c = &found.client;
    anyhow::bail!(
        "client {} ({}) did not {what}: {}",
        c.client_id,
        describe(c),
        answer_text(code, message)
    )
}

fn describe(c: &pb::ClientInfo) -> String {
    let language = if c.language.is_empty() {
        "unknown language"
    } else {
        &c.language
    };
    format!("{} {language} {}", c.client_type, c.version)
        .trim_end()
        .to_owned()
}

fn answer_text(code: i32, message: &str) -> String {
    let what = match code {
        NOT_IMPLEMENTED => "the client does not support this command".to_owned(),
        code => format!("status {code}"),
    };
    if message.is_empty() {
        what
    } else {
        format!("{what} ({message})")
    }
}

fn list_json(census: &Census) -> anyhow::Result<String> {
    let clients: Vec<_> = census
        .clients
        .iter()
        .map(|f| {
            let c = &f.client;
            json!({
                "client_id": c.client_id,
                "client_type": c.client_type,
                "group": (!c.group.is_empty()).then_some(&c.group),
                "topics": c.topics,
                "language": c.language,
                "version": c.version,
                "hostname": c.hostname,
                "peer": c.peer,
                "connected_ms": c.connected_ms,
                "proxy": c.proxy,
            })
        })
        .collect();
    let unreached: Vec<_> = census
        .unreached
        .iter()
        .map(|(proxy, error)| json!({ "proxy": proxy, "error": error }))
        .collect();
    let mut out = json!({
        "clients": clients,
        "proxies_asked": census.asked,
        "unreached": unreached,
    });
    if let Some(error) = &census.peers_error {
        out["peers_error"] = json!(error);
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&out)?))
}

fn list_table(census: &Census) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{:<36}  {:<16}  {:<20}  {:<24}  {:<16}  {:<22}  CONNECTED",
        "CLIENT_ID", "TYPE", "GROUP", "TOPICS", "LANGUAGE", "PROXY"
    )?;
    for f in &census.clients {
        let c = &f.client;
        writeln!(
            out,
            "{:<36}  {:<16}  {:<20}  {:<24}  {:<16}  {:<22}  {}",
            c.client_id,
            c.client_type,
            if c.group.is_empty() { "-" } else { &c.group },
            c.topics.join(","),
            format!("{} {}", c.language, c.version).trim(),
            c.proxy,
            format_ms(c.connected_ms),
        )?;
    }
    writeln!(
        out,
        "{} clients on {} proxies",
        census.clients.len(),
        census.asked.len()
    )?;
    for (proxy, error) in &census.unreached {
        writeln!(out, "proxy {proxy} not reached: {error}")?;
    }
    if let Some(error) = &census.peers_error {
        writeln!(out, "other proxies not known: {error}")?;
    }
    Ok(out)
}
