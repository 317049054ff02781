//! `vela admin store list`, `store undrain`, `store remove` and `store scale`: the cluster's
//! store nodes, configured and registered at runtime (ADR 0031), as a table or as JSON
//! (`--output json`, whose field names are a contract for scripts); ending a drain;
//! forgetting a drained registered node; and scaling the store StatefulSet on Kubernetes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use vela_proto::pb::admin as pb;

use super::target::AdminClient;
use super::{OutputFormat, json_line, status_error};

#[derive(Serialize)]
struct StoreNode {
    id: u64,
    addr: String,
    configured: bool,
    /// Unix ms; absent for a configured node.
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_ms: Option<i64>,
    draining: bool,
    /// Beyond the store StatefulSet's replicas (a plain `kubectl scale` down): its replicas
    /// are being re-created on the other nodes.
    scaled_away: bool,
    /// Draining: the configured shards whose replica stays on it (every other store node
    /// already holds one, ADR 0032).
    staying: Vec<u32>,
}

pub(super) async fn list(client: &mut AdminClient, output: OutputFormat) -> anyhow::Result<String> {
    let stores: Vec<StoreNode> = client
        .list_stores(pb::ListStoresRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .stores
        .into_iter()
        .map(|s| StoreNode {
            id: s.id,
            addr: s.addr,
            configured: s.configured,
            registered_ms: (!s.configured).then_some(s.registered_ms),
            draining: s.draining,
            scaled_away: s.scaled_away,
            staying: s.staying,
        })
        .collect();
    if output == OutputFormat::Json {
        return json_line(&serde_json::json!({ "stores": stores }));
    }
    let mut out = String::new();
    writeln!(out, "{:<6} {:<40} {:<11} STATE", "ID", "ADDRESS", "JOINED")?;
    for s in &stores {
        let joined = if s.configured {
            "configured"
        } else {
            "registered"
        };
        let state = match (s.scaled_away, s.draining) {
            (true, true) => "scaled away: its replicas are moving to the other nodes",
            (true, false) => {
                "scaled away: repaired once it stops answering, if it can be (see the \
                 controller's log)"
            }
            (false, true) if s.staying.is_empty() => "draining",
            (false, true) => "draining (configured shards stay: every other store node holds them)",
            (false, false) => "serving",
        };
        writeln!(out, "{:<6} {:<40} {:<11} {state}", s.id, s.addr, joined)?;
    }
    Ok(out)
}

pub(super) async fn remove(
    client: &mut AdminClient,
    id: u64,
    output: OutputFormat,
) -> anyhow::Result<String> {
    client
        .remove_store(pb::RemoveStoreRequest { store: id })
        .await
        .map_err(status_error)?;
    if output == OutputFormat::Json {
        return json_line(&serde_json::json!({ "removed": { "store": id } }));
    }
    Ok(format!(
        "store node {id} removed: it is no longer listed; started again it registers as a new node\n"
    ))
}

pub(super) async fn undrain(
    client: &mut AdminClient,
    id: u64,
    output: OutputFormat,
) -> anyhow::Result<String> {
    client
        .undrain_store(pb::UndrainStoreRequest { store: id })
        .await
        .map_err(status_error)?;
    if output == OutputFormat::Json {
        return json_line(&serde_json::json!({ "undrained": { "store": id } }));
    }
    Ok(format!(
        "store node {id} is serving again: new replicas may be placed there, and the replica \
         balancer moves some of the others' onto it\n"
    ))
}

pub(super) async fn scale(
    client: &mut AdminClient,
    replicas: u32,
    wait: bool,
    timeout: Duration,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let ask = async |client: &mut AdminClient| {
        client
            .scale_stores(pb::ScaleStoresRequest { replicas })
            .await
            .map_err(status_error)
            .map(tonic::Response::into_inner)
    };
    let first = ask(client).await?;
    let mut done = first.done;
    let deadline = Instant::now() + timeout;
    while wait && !done {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the store nodes are not scaled to {replicas} after {}: store node(s) {:?} still \
             hold replicas (vela admin cluster status)",
            humantime::format_duration(timeout),
            first.draining
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Asking again continues a scale-in on a new controller leader too.
        done = ask(client).await?.done;
    }
    if output == OutputFormat::Json {
        return json_line(&serde_json::json!({
            "from": first.from,
            "to": first.to,
            "draining": first.draining,
            "moving": first.moving,
            "done": done,
        }));
    }
    let mut out = String::new();
    if first.to >= first.from {
        writeln!(
            out,
            "store StatefulSet scaled from {} to {} pods: the new store nodes join as they start",
            first.from, first.to
        )?;
        return Ok(out);
    }
    writeln!(
        out,
        "scaling the store nodes from {} to {}: draining store node(s) {:?} first",
        first.from, first.to, first.draining
    )?;
    if done {
        writeln!(out, "store StatefulSet scaled to {} pods", first.to)?;
    } else {
        writeln!(
            out,
            "the controller lowers the StatefulSet once their replicas have moved; follow it \
             with: vela admin store list"
        )?;
    }
    Ok(out)
}
