//! `vela admin message show ID` and `vela admin message find --topic T --key K` (ADR 0028): a
//! message found through the store's lookup index, where it is, and its track (stored,
//! delivered to which group and attempt, acknowledged, dead-lettered ...). With `--output
//! json`, an array of objects whose fields are a contract for scripts: `message_id`, `topic`,
//! `kind`, `queue_id` and `offset` (where it was first stored), `keys`, `tag`, `properties`,
//! `body` (printable text) or `body_base64`, `born_timestamp`, `store_timestamp`, `born_host`,
//! `message_group`, `shard`, `positions`, and `track` (each with `kind`, `time`, and `group`,
//! `topic`, `queue_id`, `offset`, `attempt`, `client`, `until` where the kind has them).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vela_proto::pb::admin as pb;

use super::messages::{body_fields, printable};
use super::{OutputFormat, Target, connect, status_error};

/// What to look for.
pub(super) enum Lookup {
    Id { id: String, topic: Option<String> },
    Key { topic: String, key: String },
}

pub(super) async fn lookup(server: &Target, what: Lookup, limit: u32) -> anyhow::Result<String> {
    let output = server.output;
    let request = match what {
        Lookup::Id { id, topic } => pb::LookupMessagesRequest {
            message_id: id,
            topic: topic.unwrap_or_default(),
            limit,
            ..Default::default()
        },
        Lookup::Key { topic, key } => pb::LookupMessagesRequest {
            key,
            topic,
            limit,
            ..Default::default()
        },
    };
    let by_id = !request.message_id.is_empty();
    let mut client = connect(server).await?;
    let found = client
        .lookup_messages(request.clone())
        .await
        .map_err(status_error)?
        .into_inner()
        .messages;
    if found.is_empty() && by_id && output == OutputFormat::Table {
        anyhow::bail!("message {} not found", request.message_id);
    }
    match output {
        OutputFormat::Json => to_json(&found),
        OutputFormat::Table => to_text(&found),
    }
}

fn time(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(Serialize)]
struct FoundJson<'a> {
    message_id: &'a str,
    topic: &'a str,
    kind: &'a str,
    queue_id: Option<u32>,
    offset: Option<u64>,
    keys: &'a [String],
    tag: Option<&'a str>,
    properties: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    born_timestamp: String,
    store_timestamp: String,
    born_host: &'a str,
    message_group: Option<&'a str>,
    shard: u32,
    positions: Vec<PositionJson<'a>>,
    track: Vec<EventJson<'a>>,
}

#[derive(Serialize)]
struct PositionJson<'a> {
    topic: &'a str,
    queue_id: u32,
    offset: u64,
    store_timestamp: String,
}

#[derive(Serialize)]
struct EventJson<'a> {
    kind: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn to_json(found: &[pb::FoundMessage]) -> anyhow::Result<String> {
    let items: Vec<FoundJson<'_>> = found
        .iter()
        .map(|m| {
            let (body, body_base64) = body_fields(&m.body);
            let first = m.positions.first();
            FoundJson {
                message_id: &m.message_id,
                topic: &m.topic,
                kind: &m.kind,
                queue_id: first.map(|p| p.queue_id),
                offset: first.map(|p| p.offset),
                keys: &m.keys,
                tag: m.tag.as_deref(),
                properties: m
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                body,
                body_base64,
                born_timestamp: time(m.born_timestamp_ms),
                store_timestamp: time(m.store_timestamp_ms),
                born_host: &m.born_host,
                message_group: m.message_group.as_deref(),
                shard: m.shard,
                positions: m
                    .positions
                    .iter()
                    .map(|p| PositionJson {
                        topic: &p.topic,
                        queue_id: p.queue_id,
                        offset: p.offset,
                        store_timestamp: time(p.store_timestamp_ms),
                    })
                    .collect(),
                track: m
                    .track
                    .iter()
                    .map(|e| EventJson {
                        kind: &e.kind,
                        time: time(e.time_ms),
                        group: non_empty(&e.group),
                        topic: non_empty(&e.topic),
                        queue_id: e.queue_id,
                        offset: e.offset,
                        attempt: e.attempt,
                        client: non_empty(&e.client),
                        until: e.until_ms.map(time),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&items)?;
    out.push('\n');
    Ok(out)
}

fn to_text(found: &[pb::FoundMessage]) -> anyhow::Result<String> {
    let mut out = String::new();
    if found.is_empty() {
        writeln!(out, "no messages")?;
    }
    for (i, m) in found.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "message_id  {}", m.message_id)?;
        writeln!(out, "topic       {} ({})", m.topic, m.kind)?;
        if let Some(tag) = &m.tag {
            writeln!(out, "tag         {tag}")?;
        }
        if !m.keys.is_empty() {
            writeln!(out, "keys        {}", m.keys.join(", "))?;
        }
        if let Some(group) = &m.message_group {
            writeln!(out, "group       {group}")?;
        }
        writeln!(
            out,
            "born        {} on {}",
            time(m.born_timestamp_ms),
            m.born_host
        )?;
        writeln!(
            out,
            "stored      {} on shard {}",
            time(m.store_timestamp_ms),
            m.shard
        )?;
        for p in &m.positions {
            writeln!(
                out,
                "in          {} queue {} offset {}",
                p.topic, p.queue_id, p.offset
            )?;
        }
        for (k, v) in &m.properties {
            writeln!(out, "property    {k}={v}")?;
        }
        match printable(&m.body) {
            Some(text) => writeln!(out, "body        {text}")?,
            None => writeln!(out, "body        ({} bytes, not text)", m.body.len())?,
        }
        writeln!(out, "track")?;
        for e in &m.track {
            writeln!(out, "  {}  {}", time(e.time_ms), describe(e))?;
        }
    }
    Ok(out)
}

/// One track event in words.
fn describe(e: &pb::TrackEvent) -> String {
    let until = e.until_ms.map(time).unwrap_or_default();
    match e.kind.as_str() {
        "stored" => format!(
            "stored in {} queue {} offset {}",
            e.topic,
            e.queue_id.unwrap_or_default(),
            e.offset.unwrap_or_default()
        ),
        "delayed" => format!("delayed until {until}"),
        "prepared" => "prepared (transaction half message)".into(),
        "committed" => "transaction committed".into(),
        "rolled_back" => "transaction rolled back".into(),
        "recalled" => "recalled".into(),
        "delivered" => format!(
            "delivered to {}{} (attempt {}, invisible until {until})",
            e.group,
            match e.client.as_str() {
                "" => String::new(),
                client => format!(", client {client}"),
            },
            e.attempt.unwrap_or_default()
        ),
        "acked" => format!("acked by {}", e.group),
        "invisibility_changed" => format!("{} changed its invisibility to {until}", e.group),
        "dead_lettered" => format!("dead-lettered by {} (to %DLQ%{})", e.group, e.group),
        other => other.to_owned(),
    }
}
