//! `vela admin route …` (issue 12, ADR 0025): routes copy a topic to another RocketMQ 5 gRPC
//! endpoint through a consumer group on the source.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde_json::json;
use vela_proto::pb::admin as pb;
use vela_proto::pb::route as route_pb;

use super::auth::Secret;
use super::groups::{ResetTarget, parse_start};
use super::target::AdminClient;
use super::{OutputFormat, format_ms, status_error};

#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// Copies a topic to another RocketMQ 5 gRPC endpoint (another Vela, Apache RocketMQ's
    /// proxy, a cloud instance): at least once, in order per message group, checkpointed by
    /// the route's consumer group on the source.
    Create(Box<CreateRouteArgs>),
    /// Every route with its state, lag and counters.
    List,
    /// One route: where from, where to, state, lag, rates, errors and the last error.
    Describe { name: String },
    /// Stops copying; the route's group keeps its position.
    Pause { name: String },
    /// Copies again from where the route's group stands.
    Resume { name: String },
    /// Deletes the route (its consumer group stays, with its position).
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct CreateRouteArgs {
    name: String,
    /// The topic to copy.
    #[arg(long)]
    source_topic: String,
    /// The route's consumer group on the source: its position is the route's checkpoint.
    /// Created when the source is this Vela and it does not exist.
    #[arg(long)]
    group: String,
    /// HOST:PORT of the target's gRPC endpoint.
    #[arg(
        long,
        required_unless_present = "target_url",
        requires = "target_topic"
    )]
    target_endpoint: Option<String>,
    /// The topic copies are sent to.
    #[arg(long, requires = "target_endpoint")]
    target_topic: Option<String>,
    /// An HTTP target instead: each message is POSTed as a CloudEvents 1.0 event in
    /// structured JSON (a webhook); failed requests (5xx, timeouts) are retried with back-off.
    #[arg(long, conflicts_with_all = ["target_endpoint", "target_topic", "keep_message_id", "target_tls", "target_access_key"])]
    target_url: Option<String>,
    /// Events per HTTP request (1-16): more than 1 POSTs a CloudEvents batch (a JSON array).
    #[arg(long, requires = "target_url", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    target_batch: u32,
    /// A header every request to the --target-url carries, "NAME: VALUE" (repeatable, up to
    /// 16; e.g. "Authorization: Bearer …"). Values are kept sealed and never shown. Also
    /// VELA_ROUTE_TARGET_HEADERS, one header per line, which keeps them off the command line.
    #[arg(
        long = "target-header",
        value_name = "NAME: VALUE",
        requires = "target_url",
        env = "VELA_ROUTE_TARGET_HEADERS",
        value_delimiter = '\n',
        hide_env_values = true,
        value_parser = parse_header
    )]
    target_headers: Vec<route_pb::Header>,
    /// HOST:PORT of the source (default: this Vela).
    #[arg(long)]
    source_endpoint: Option<String>,
    /// Copy only messages whose tag matches (`A||B`).
    #[arg(long, conflicts_with = "filter_sql")]
    filter_tag: Option<String>,
    /// Copy only messages matching an SQL92 expression over their properties.
    #[arg(long)]
    filter_sql: Option<String>,
    /// Where a new group starts: earliest, latest or an RFC 3339 time (default: the group's
    /// default; needs a source that is this Vela).
    #[arg(long, value_parser = parse_start)]
    start: Option<ResetTarget>,
    /// Access key the target checks signatures with.
    #[arg(long, requires = "target_secret_key")]
    target_access_key: Option<String>,
    #[arg(
        long,
        requires = "target_access_key",
        env = "VELA_ROUTE_TARGET_SECRET_KEY",
        hide_env_values = true
    )]
    target_secret_key: Option<Secret>,
    /// Speak TLS to the target (trusting the system's roots).
    #[arg(long)]
    target_tls: bool,
    /// Access key the source checks signatures with (a source with auth on, this Vela too).
    #[arg(long, requires = "source_secret_key")]
    source_access_key: Option<String>,
    #[arg(
        long,
        requires = "source_access_key",
        env = "VELA_ROUTE_SOURCE_SECRET_KEY",
        hide_env_values = true
    )]
    source_secret_key: Option<Secret>,
    /// Speak TLS to a --source-endpoint (trusting the system's roots).
    #[arg(long, requires = "source_endpoint")]
    source_tls: bool,
    /// Send each copy under the source message's id (default: a new id; the original is in the
    /// VELA_ORIGIN_MSG_ID property either way).
    #[arg(long)]
    keep_message_id: bool,
}

/// `--target-header`, checked as the server will check it.
fn parse_header(text: &str) -> Result<route_pb::Header, String> {
    let header = vela_proto::route::HttpHeader::parse(text).map_err(|e| e.0)?;
    Ok(route_pb::Header {
        name: header.name().to_owned(),
        value: header.expose().to_owned(),
    })
}

fn credentials(key: Option<String>, secret: Option<Secret>) -> Option<route_pb::Credentials> {
    key.zip(secret)
        .map(|(access_key, secret)| route_pb::Credentials {
            access_key,
            secret_key: secret.0,
        })
}

fn spec(a: CreateRouteArgs) -> route_pb::RouteSpec {
    let (start, start_time_ms) = match a.start {
        None | Some(ResetTarget::Offset(_)) => (String::new(), 0),
        Some(ResetTarget::Earliest) => ("earliest".into(), 0),
        Some(ResetTarget::Latest) => ("latest".into(), 0),
        Some(ResetTarget::At(ms)) => ("at".into(), ms),
    };
    route_pb::RouteSpec {
        name: a.name,
        source_topic: a.source_topic,
        group: a.group,
        source: Some(route_pb::Endpoint {
            address: a.source_endpoint.unwrap_or_default(),
            tls: a.source_tls,
            credentials: credentials(a.source_access_key, a.source_secret_key),
        }),
        target_topic: a.target_topic.unwrap_or_default(),
        target: a.target_endpoint.map(|address| route_pb::Endpoint {
            address,
            tls: a.target_tls,
            credentials: credentials(a.target_access_key, a.target_secret_key),
        }),
        target_url: a.target_url.unwrap_or_default(),
        target_headers: a.target_headers,
        target_batch: if a.target_batch > 1 {
            a.target_batch
        } else {
            0
        },
        filter_tag: a.filter_tag.unwrap_or_default(),
        filter_sql: a.filter_sql.unwrap_or_default(),
        start,
        start_time_ms,
        keep_message_id: a.keep_message_id,
    }
}

/// With `--output json`: `list` an array of routes; `describe`, `create`, `pause` and
/// `resume` the route; `delete` `{"deleted": {"route": NAME}}`.
pub(super) async fn execute(
    client: &mut AdminClient,
    command: RouteCommand,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    match command {
        RouteCommand::Create(args) => {
            let name = args.name.clone();
            let info = client
                .create_route(spec(*args))
                .await
                .map_err(status_error)?
                .into_inner();
            if output == OutputFormat::Json {
                return super::json_line(&to_json(&info));
            }
            writeln!(out, "route {name} created")?;
            out += &describe_table(&info)?;
        }
        RouteCommand::List => {
            let routes = client
                .list_routes(pb::ListRoutesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .routes;
            out = match output {
                OutputFormat::Json => {
                    serde_json::to_string_pretty(&routes.iter().map(to_json).collect::<Vec<_>>())?
                        + "\n"
                }
                OutputFormat::Table => list_table(&routes)?,
            };
        }
        RouteCommand::Describe { name } => {
            let info = client
                .describe_route(pb::DescribeRouteRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            out = match output {
                OutputFormat::Json => serde_json::to_string_pretty(&to_json(&info))? + "\n",
                OutputFormat::Table => describe_table(&info)?,
            };
        }
        RouteCommand::Pause { name } => {
            let info = set_paused(client, &name, true).await?;
            if output == OutputFormat::Json {
                return super::json_line(&to_json(&info));
            }
            writeln!(out, "route {name} paused (its group keeps its position)")?;
        }
        RouteCommand::Resume { name } => {
            let info = set_paused(client, &name, false).await?;
            if output == OutputFormat::Json {
                return super::json_line(&to_json(&info));
            }
            writeln!(out, "route {name} resumed")?;
        }
        RouteCommand::Delete { name } => {
            client
                .delete_route(pb::DeleteRouteRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            if output == OutputFormat::Json {
                return super::deleted_json("route", &name);
            }
            writeln!(out, "route {name} deleted (its consumer group stays)")?;
        }
    }
    Ok(out)
}

async fn set_paused(
    client: &mut AdminClient,
    name: &str,
    paused: bool,
) -> anyhow::Result<pb::RouteInfo> {
    Ok(client
        .set_route_paused(route_pb::SetRoutePaused {
            name: name.to_owned(),
            paused,
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

fn side(e: Option<&route_pb::Endpoint>) -> serde_json::Value {
    let e = e.cloned().unwrap_or_default();
    json!({
        "endpoint": if e.address.is_empty() { None } else { Some(e.address) },
        "tls": e.tls,
        "access_key": e.credentials.map(|c| c.access_key),
    })
}

fn start_text(spec: &route_pb::RouteSpec) -> String {
    match spec.start.as_str() {
        "" => "the group's default".into(),
        "at" => format_ms(spec.start_time_ms),
        other => other.to_owned(),
    }
}

fn filter_text(spec: &route_pb::RouteSpec) -> String {
    if !spec.filter_tag.is_empty() {
        format!("tag {}", spec.filter_tag)
    } else if !spec.filter_sql.is_empty() {
        format!("sql {}", spec.filter_sql)
    } else {
        "*".into()
    }
}

/// A negative count or time means "unknown".
fn known(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

/// `route describe --output json`, and each entry of `route list --output json`.
fn to_json(info: &pb::RouteInfo) -> serde_json::Value {
    let route = info.route.clone().unwrap_or_default();
    let spec = route.spec.unwrap_or_default();
    let status = info.status.as_ref().map(|s| {
        json!({
            "state": s.state,
            "copied": s.copied,
            "skipped_routed": s.skipped_routed,
            "duplicates": s.duplicates,
            "errors": s.errors,
            "last_error": if s.last_error.is_empty() { None } else { Some(&s.last_error) },
            "last_error_at": (s.last_error_ms > 0).then(|| format_ms(s.last_error_ms)),
            "lag_messages": known(s.lag_messages),
            "lag_seconds": known(s.lag_ms).map(|ms| ms as f64 / 1000.0),
            "last_copied_at": (s.last_copied_ms > 0).then(|| format_ms(s.last_copied_ms)),
            "copy_rate": s.copy_rate,
        })
    });
    json!({
        "name": spec.name,
        "paused": route.paused,
        "created_at": format_ms(route.created_at_ms),
        "source_topic": spec.source_topic,
        "group": spec.group,
        "source": side(spec.source.as_ref()),
        "target_topic": if spec.target_url.is_empty() { Some(&spec.target_topic) } else { None },
        "target": if spec.target_url.is_empty() { side(spec.target.as_ref()) } else { serde_json::Value::Null },
        "target_url": if spec.target_url.is_empty() { None } else { Some(&spec.target_url) },
        "target_batch": if spec.target_url.is_empty() { None } else { Some(spec.target_batch.max(1)) },
        "target_headers": if spec.target_url.is_empty() { None } else {
            Some(spec.target_headers.iter().map(|h| h.name.clone()).collect::<Vec<_>>())
        },
        "filter_tag": if spec.filter_tag.is_empty() { None } else { Some(&spec.filter_tag) },
        "filter_sql": if spec.filter_sql.is_empty() { None } else { Some(&spec.filter_sql) },
        "start": start_text(&spec),
        "keep_message_id": spec.keep_message_id,
        "status": status,
    })
}

fn state_of(info: &pb::RouteInfo) -> String {
    match &info.status {
        Some(s) => s.state.clone(),
        None if info.route.as_ref().is_some_and(|r| r.paused) => "paused".into(),
        None => "not running here".into(),
    }
}

fn list_table(routes: &[pb::RouteInfo]) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    if routes.is_empty() {
        writeln!(out, "no routes")?;
        return Ok(out);
    }
    writeln!(
        out,
        "{:<20} {:<10} {:<24} {:<32} {:>10} {:>10} {:>8}",
        "NAME", "STATE", "SOURCE", "TARGET", "COPIED", "LAG", "ERRORS"
    )?;
    for info in routes {
        let route = info.route.clone().unwrap_or_default();
        let spec = route.spec.unwrap_or_default();
        let source = match spec.source.as_ref().map(|s| s.address.as_str()) {
            Some(a) if !a.is_empty() => format!("{}@{a}", spec.source_topic),
            _ => spec.source_topic.clone(),
        };
        let target = if spec.target_url.is_empty() {
            format!(
                "{}@{}",
                spec.target_topic,
                spec.target.as_ref().map_or("", |t| t.address.as_str())
            )
        } else {
            spec.target_url.clone()
        };
        let (copied, lag, errors) = match &info.status {
            Some(s) => (
                s.copied.to_string(),
                known(s.lag_messages).map_or("-".into(), |v| v.to_string()),
                s.errors.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<20} {:<10} {:<24} {:<32} {:>10} {:>10} {:>8}",
            spec.name,
            state_of(info),
            source,
            target,
            copied,
            lag,
            errors
        )?;
    }
    Ok(out)
}

fn describe_table(info: &pb::RouteInfo) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let route = info.route.clone().unwrap_or_default();
    let spec = route.spec.clone().unwrap_or_default();
    let endpoint = |e: Option<&route_pb::Endpoint>, local: &str| {
        let e = e.cloned().unwrap_or_default();
        let mut text = if e.address.is_empty() {
            local.to_owned()
        } else {
            e.address
        };
        if e.tls {
            text += " (TLS)";
        }
        if let Some(c) = e.credentials {
            text += &format!(" as {}", c.access_key);
        }
        text
    };
    writeln!(out, "name:            {}", spec.name)?;
    writeln!(out, "state:           {}", state_of(info))?;
    writeln!(out, "created:         {}", format_ms(route.created_at_ms))?;
    writeln!(
        out,
        "source:          topic {} at {}",
        spec.source_topic,
        endpoint(spec.source.as_ref(), "this Vela")
    )?;
    writeln!(out, "group:           {}", spec.group)?;
    if spec.target_url.is_empty() {
        writeln!(
            out,
            "target:          topic {} at {}",
            spec.target_topic,
            endpoint(spec.target.as_ref(), "-")
        )?;
    } else {
        writeln!(
            out,
            "target:          {} (CloudEvents, {} per request)",
            spec.target_url,
            spec.target_batch.max(1)
        )?;
        if !spec.target_headers.is_empty() {
            let names: Vec<&str> = spec
                .target_headers
                .iter()
                .map(|h| h.name.as_str())
                .collect();
            writeln!(out, "headers:         {} (values sealed)", names.join(", "))?;
        }
    }
    writeln!(out, "filter:          {}", filter_text(&spec))?;
    writeln!(out, "start:           {}", start_text(&spec))?;
    writeln!(out, "keep message id: {}", spec.keep_message_id)?;
    if let Some(s) = &info.status {
        let lag = match (known(s.lag_messages), known(s.lag_ms)) {
            (Some(m), Some(ms)) => format!("{m} messages, {:.1} s behind", ms as f64 / 1000.0),
            (Some(m), None) => format!("{m} messages"),
            (None, Some(ms)) => format!(
                "{:.1} s behind (message count unknown for a remote source)",
                ms as f64 / 1000.0
            ),
            (None, None) => "unknown".into(),
        };
        writeln!(out, "lag:             {lag}")?;
        writeln!(
            out,
            "copied:          {} ({:.1}/s over the last minute)",
            s.copied, s.copy_rate
        )?;
        if s.last_copied_ms > 0 {
            writeln!(out, "last copied:     {}", format_ms(s.last_copied_ms))?;
        }
        writeln!(
            out,
            "skipped:         {} (written by a route: not copied back)",
            s.skipped_routed
        )?;
        writeln!(
            out,
            "duplicates:      {} (delivered to the route again and resent)",
            s.duplicates
        )?;
        writeln!(out, "errors:          {}", s.errors)?;
        if !s.last_error.is_empty() {
            writeln!(
                out,
                "last error:      {} ({})",
                s.last_error,
                format_ms(s.last_error_ms)
            )?;
        }
    }
    Ok(out)
}
