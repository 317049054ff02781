//! `vela admin tier status`: per shard and store node, what is in object storage and what is
//! local, the upload lag and the last tiering error, as a table or as JSON (`--output json`,
//! whose field names are a contract for scripts).

use std::fmt::Write as _;

use bytesize::ByteSize;
use serde::Serialize;
use vela_proto::pb::admin as pb;

#[derive(Serialize)]
struct Status {
    shards: Vec<ShardTier>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<Unreachable>,
}

#[derive(Serialize)]
struct ShardTier {
    shard: u32,
    node: u64,
    leader: bool,
    tiering: bool,
    tiered_segments: u64,
    tiered_first: Option<u64>,
    tiered_last: Option<u64>,
    tiered_bytes: u64,
    local_first: Option<u64>,
    local_last: Option<u64>,
    local_bytes: u64,
    pending_segments: u64,
    pending_bytes: u64,
    retained_from: u64,
    uploaded_segments: u64,
    uploaded_bytes: u64,
    evicted_bytes: u64,
    last_upload_ms: Option<i64>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct Unreachable {
    node: u64,
    addr: String,
    error: String,
}

fn from_pb(r: pb::TierStatusResponse) -> Status {
    Status {
        shards: r
            .shards
            .into_iter()
            .map(|s| ShardTier {
                shard: s.shard,
                node: s.node,
                leader: s.leader,
                tiering: s.tiering,
                tiered_segments: s.tiered_segments,
                tiered_first: s.tiered_first,
                tiered_last: s.tiered_last,
                tiered_bytes: s.tiered_bytes,
                local_first: s.local_first,
                local_last: s.local_last,
                local_bytes: s.local_bytes,
                pending_segments: s.pending_segments,
                pending_bytes: s.pending_bytes,
                retained_from: s.retained_from,
                uploaded_segments: s.uploaded_segments,
                uploaded_bytes: s.uploaded_bytes,
                evicted_bytes: s.evicted_bytes,
                last_upload_ms: s.last_upload_ms,
                last_error: (!s.last_error.is_empty()).then_some(s.last_error),
            })
            .collect(),
        unreachable: r
            .unreachable
            .into_iter()
            .map(|u| Unreachable {
                node: u.node,
                addr: u.addr,
                error: u.error,
            })
            .collect(),
    }
}

/// The status as pretty JSON.
pub(super) fn to_json(r: pb::TierStatusResponse) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&from_pb(r))? + "\n")
}

fn range(first: Option<u64>, last: Option<u64>) -> String {
    match (first, last) {
        (Some(f), Some(l)) => format!("{f}..={l}"),
        _ => "-".to_owned(),
    }
}

/// The status as a table.
pub(super) fn to_table(r: pb::TierStatusResponse) -> Result<String, std::fmt::Error> {
    let s = from_pb(r);
    let mut out = String::new();
    writeln!(
        out,
        "{:>5}  {:>4}  {:<8}  {:<24}  {:>10}  {:<24}  {:>10}  {:>14}  STATE",
        "SHARD",
        "NODE",
        "ROLE",
        "TIERED (LOG INDEXES)",
        "TIERED",
        "LOCAL (LOG INDEXES)",
        "LOCAL",
        "UPLOAD LAG"
    )?;
    for t in &s.shards {
        let state = match (&t.last_error, t.tiering) {
            (Some(err), _) => format!("error: {err}"),
            (None, false) => "no tier configured".to_owned(),
            (None, true) => "ok".to_owned(),
        };
        writeln!(
            out,
            "{:>5}  {:>4}  {:<8}  {:<24}  {:>10}  {:<24}  {:>10}  {:>14}  {state}",
            t.shard,
            t.node,
            if t.leader { "leader" } else { "replica" },
            range(t.tiered_first, t.tiered_last),
            ByteSize::b(t.tiered_bytes).to_string(),
            range(t.local_first, t.local_last),
            ByteSize::b(t.local_bytes).to_string(),
            format!(
                "{} seg, {}",
                t.pending_segments,
                ByteSize::b(t.pending_bytes)
            ),
        )?;
    }
    for u in &s.unreachable {
        writeln!(
            out,
            "store node {} ({}) unreachable: {}",
            u.node, u.addr, u.error
        )?;
    }
    Ok(out)
}

/// `vela admin tier credentials …`
#[derive(clap::Subcommand, Debug)]
pub enum TierCredentialsCommand {
    /// Sets (or replaces) the pair; the secret is sealed in the controller's metadata and
    /// never shown again. Give it with --secret-access-key, VELA_TIER_SECRET_ACCESS_KEY or
    /// --secret-access-key-stdin (keeps it out of the shell history and the process list).
    Set {
        #[arg(long)]
        access_key_id: String,
        #[arg(
            long,
            env = "VELA_TIER_SECRET_ACCESS_KEY",
            hide_env_values = true,
            required_unless_present = "secret_access_key_stdin"
        )]
        secret_access_key: Option<super::Secret>,
        /// Read the secret from the first line of standard input.
        #[arg(long, conflicts_with = "secret_access_key")]
        secret_access_key_stdin: bool,
    },
    /// The access key id the controller keeps and when it was set (never the secret).
    Show,
    /// Forgets the pair: store nodes sign with their own [tier] settings again.
    Clear,
}

pub(super) async fn credentials(
    client: &mut super::AdminClient,
    command: TierCredentialsCommand,
    output: super::OutputFormat,
) -> anyhow::Result<String> {
    use super::status_error;
    let (info, done) = match command {
        TierCredentialsCommand::Set {
            access_key_id,
            secret_access_key,
            secret_access_key_stdin,
        } => {
            let secret = super::auth::secret_from(
                secret_access_key,
                secret_access_key_stdin,
                "secret access key",
            )?
            .ok_or_else(|| anyhow::anyhow!("no secret access key given"))?;
            let info = client
                .set_tier_credentials(pb::SetTierCredentialsRequest {
                    access_key_id,
                    secret_access_key: secret,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            (
                info,
                Some("set: store nodes sign tier requests with it within 10 s"),
            )
        }
        TierCredentialsCommand::Show => (
            client
                .describe_tier_credentials(pb::DescribeTierCredentialsRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            None,
        ),
        TierCredentialsCommand::Clear => (
            client
                .clear_tier_credentials(pb::ClearTierCredentialsRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            Some("cleared: store nodes sign with their own [tier] settings within 10 s"),
        ),
    };
    let updated = info
        .access_key_id
        .as_ref()
        .map(|_| super::format_ms(info.updated_ms));
    if output == super::OutputFormat::Json {
        let shown = serde_json::json!({
            "access_key_id": info.access_key_id,
            "updated_at": updated,
        });
        return Ok(serde_json::to_string_pretty(&shown)? + "\n");
    }
    let mut out = String::new();
    if let Some(done) = done {
        writeln!(out, "{done}")?;
    }
    match (&info.access_key_id, updated) {
        (Some(id), Some(at)) => writeln!(out, "access key id: {id} (set {at}; secret sealed)")?,
        _ => writeln!(
            out,
            "none set: store nodes sign with their own [tier] settings"
        )?,
    }
    Ok(out)
}
