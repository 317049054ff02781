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
