//! `vela admin cluster status`: nodes, shards, leaders, replica lag and health, as a table or
//! as JSON (`--output json`, whose field names are a contract for scripts).

use std::fmt::Write as _;

use serde::Serialize;
use vela_proto::pb::admin as pb;

#[derive(Serialize)]
struct Status {
    mode: String,
    controllers: Vec<Node>,
    stores: Vec<Node>,
    shards: Vec<Shard>,
    proxies: Vec<Proxy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxies_error: Option<String>,
    /// Deleted topics and groups whose drop from the shards is not finished.
    deletions: Vec<Deletion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletions_error: Option<String>,
}

#[derive(Serialize)]
struct Deletion {
    /// "topic" or "group".
    kind: String,
    name: String,
    drop_id: u64,
    shards: Vec<u32>,
    /// Those of `shards` without a leader: the drop waits for them.
    waiting_for: Vec<u32>,
}

#[derive(Serialize)]
struct Proxy {
    addr: String,
    version: String,
    last_seen_ms: u64,
    /// Where its admin service is, when not on `addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_addr: Option<String>,
}

#[derive(Serialize)]
struct Node {
    id: u64,
    addr: String,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Controllers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    /// Stores only: shards it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    leads: Option<u32>,
    /// Stores only: "serving", "draining" or "scaled-away", as the controller places replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<String>,
    /// Stores only, draining: the configured shards whose replica stays there (every other
    /// store node already holds one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    staying: Vec<u32>,
}

#[derive(Serialize)]
struct Shard {
    shard: u32,
    leader: Option<u64>,
    term: u64,
    health: String,
    last_log_index: Option<u64>,
    replicas: Vec<Replica>,
}

#[derive(Serialize)]
struct Replica {
    node: u64,
    role: String,
    lag: Option<u64>,
}

fn node(n: pb::NodeStatus, controller: bool) -> Node {
    let reachable = n.reachable;
    Node {
        id: n.id,
        addr: n.addr,
        reachable,
        error: (!reachable).then_some(n.error),
        role: (controller && reachable).then_some(n.role),
        term: (controller && reachable).then_some(n.term),
        leads: (!controller && reachable).then_some(n.leads),
        placement: (!controller && !n.placement.is_empty()).then_some(n.placement),
        staying: n.staying,
    }
}

fn from_pb(s: pb::ClusterStatusResponse) -> Status {
    Status {
        mode: s.mode,
        proxies: s
            .proxies
            .into_iter()
            .map(|p| Proxy {
                addr: p.addr,
                version: p.version,
                last_seen_ms: p.last_seen_ms,
                admin_addr: (!p.admin_addr.is_empty()).then_some(p.admin_addr),
            })
            .collect(),
        proxies_error: (!s.proxies_error.is_empty()).then_some(s.proxies_error),
        deletions: s
            .deletions
            .into_iter()
            .map(|d| Deletion {
                kind: d.kind,
                name: d.name,
                drop_id: d.drop_id,
                shards: d.shards,
                waiting_for: d.waiting_for,
            })
            .collect(),
        deletions_error: (!s.deletions_error.is_empty()).then_some(s.deletions_error),
        controllers: s.controllers.into_iter().map(|n| node(n, true)).collect(),
        stores: s.stores.into_iter().map(|n| node(n, false)).collect(),
        shards: s
            .shards
            .into_iter()
            .map(|sh| Shard {
                shard: sh.shard,
                leader: sh.leader,
                term: sh.term,
                health: sh.health,
                last_log_index: sh.last_log_index,
                replicas: sh
                    .replicas
                    .into_iter()
                    .map(|r| Replica {
                        node: r.node,
                        role: r.role,
                        lag: r.lag,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The status as pretty JSON.
pub(super) fn to_json(s: pb::ClusterStatusResponse) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&from_pb(s))? + "\n")
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The status as tables.
pub(super) fn to_table(s: pb::ClusterStatusResponse) -> Result<String, std::fmt::Error> {
    let s = from_pb(s);
    let mut out = String::new();
    writeln!(out, "mode: {}", s.mode)?;
    writeln!(out, "\nCONTROLLERS")?;
    writeln!(out, "{:>4}  {:<22} STATE", "ID", "ADDR")?;
    for n in &s.controllers {
        let state = match (&n.role, n.term) {
            (Some(role), Some(term)) => format!("{role} (term {term})"),
            _ => format!("unreachable: {}", n.error.as_deref().unwrap_or("")),
        };
        writeln!(out, "{:>4}  {:<22} {state}", n.id, n.addr)?;
    }
    writeln!(out, "\nSTORES")?;
    writeln!(out, "{:>4}  {:<22} STATE", "ID", "ADDR")?;
    for n in &s.stores {
        let mut state = match n.leads {
            Some(leads) => format!("up, leads {leads} shard(s)"),
            None => format!("unreachable: {}", n.error.as_deref().unwrap_or("")),
        };
        let left = s
            .shards
            .iter()
            .filter(|sh| !n.staying.contains(&sh.shard))
            .filter(|sh| sh.replicas.iter().any(|r| r.node == n.id))
            .count();
        match n.placement.as_deref() {
            Some("draining") => {
                write!(state, "; draining: {left} replica(s) left to move")?;
                if !n.staying.is_empty() {
                    let ids: Vec<String> = n.staying.iter().map(u32::to_string).collect();
                    write!(
                        state,
                        " (configured shard(s) {} stay: every other store node holds them)",
                        ids.join(", ")
                    )?;
                }
            }
            Some("scaled-away") => write!(
                state,
                "; scaled away (beyond the store StatefulSet): {left} replica(s) left to re-create \
                 elsewhere"
            )?,
            _ => {}
        }
        writeln!(out, "{:>4}  {:<22} {state}", n.id, n.addr)?;
    }
    writeln!(out, "\nPROXIES")?;
    if let Some(err) = &s.proxies_error {
        writeln!(out, "  not known: {err}")?;
    }
    for p in &s.proxies {
        writeln!(
            out,
            "      {:<22} up, version {}, heard from {} ms ago{}",
            p.addr,
            p.version,
            p.last_seen_ms,
            p.admin_addr
                .as_deref()
                .map(|a| format!(", admin at {a}"))
                .unwrap_or_default()
        )?;
    }
    writeln!(out, "\nSHARDS")?;
    writeln!(
        out,
        "{:>5}  {:>6}  {:>5}  {:<11}  {:>10}  REPLICAS (node:role:lag)",
        "SHARD", "LEADER", "TERM", "HEALTH", "LAST_INDEX"
    )?;
    for sh in &s.shards {
        let replicas: Vec<String> = sh
            .replicas
            .iter()
            .map(|r| format!("{}:{}:{}", r.node, r.role, opt(r.lag)))
            .collect();
        writeln!(
            out,
            "{:>5}  {:>6}  {:>5}  {:<11}  {:>10}  {}",
            sh.shard,
            opt(sh.leader),
            sh.term,
            sh.health,
            opt(sh.last_log_index),
            replicas.join(" ")
        )?;
    }
    if !s.deletions.is_empty() || s.deletions_error.is_some() {
        writeln!(
            out,
            "\nDELETIONS IN PROGRESS (the names are reserved until they finish)"
        )?;
        if let Some(err) = &s.deletions_error {
            writeln!(out, "  not known: {err}")?;
        }
        for d in &s.deletions {
            let ids = |shards: &[u32]| {
                shards
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let state = if d.waiting_for.is_empty() {
                "dropping (the controller retries every few seconds)".to_owned()
            } else {
                format!(
                    "waiting for shard(s) {} to have a leader",
                    ids(&d.waiting_for)
                )
            };
            writeln!(
                out,
                "  {} {} (drop {}, shards {}): {state}",
                d.kind,
                d.name,
                d.drop_id,
                ids(&d.shards)
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64, reachable: bool, placement: &str) -> pb::NodeStatus {
        pb::NodeStatus {
            id,
            addr: format!("127.0.0.1:{id}"),
            reachable,
            error: if reachable { "" } else { "refused" }.to_owned(),
            leads: u32::from(reachable),
            placement: placement.to_owned(),
            ..Default::default()
        }
    }

    fn shard(shard: u32, nodes: &[u64]) -> pb::ShardStatus {
        pb::ShardStatus {
            shard,
            leader: Some(nodes[0]),
            term: 2,
            health: "ok".into(),
            replicas: nodes
                .iter()
                .map(|&node| pb::ReplicaStatus {
                    node,
                    role: "follower".into(),
                    lag: Some(0),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A draining or scaled-away store node says how many replicas it still holds; a serving
    /// one says nothing more, and JSON carries the placement as it came.
    #[test]
    fn store_nodes_show_how_far_a_drain_or_a_repair_got() {
        let status = pb::ClusterStatusResponse {
            mode: "cluster".into(),
            stores: vec![
                store(1, true, "serving"),
                store(2, true, "draining"),
                store(4, false, "scaled-away"),
                pb::NodeStatus {
                    staying: vec![0],
                    ..store(5, true, "draining")
                },
            ],
            shards: vec![
                shard(0, &[1, 5]),
                shard(7, &[1, 2, 4]),
                shard(8, &[1, 4]),
                shard(9, &[1]),
            ],
            ..Default::default()
        };
        let table = to_table(status.clone()).expect("a table");
        let line = |id: &str| {
            table
                .lines()
                .find(|l| l.trim_start().starts_with(id))
                .unwrap_or_else(|| panic!("no line for {id} in {table}"))
                .to_owned()
        };
        assert!(line("1 ").ends_with("up, leads 1 shard(s)"), "{table}");
        assert!(
            line("5 ").ends_with(
                "draining: 0 replica(s) left to move (configured shard(s) 0 stay: every other \
                 store node holds them)"
            ),
            "{table}"
        );
        assert!(
            line("2 ").ends_with("draining: 1 replica(s) left to move"),
            "{table}"
        );
        assert!(
            line("4 ").contains("unreachable: refused; scaled away")
                && line("4 ").ends_with("2 replica(s) left to re-create elsewhere"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&to_json(status).expect("JSON")).expect("valid JSON");
        assert_eq!(json["stores"][2]["placement"], "scaled-away");
        assert_eq!(json["stores"][0]["placement"], "serving");
        assert_eq!(json["stores"][3]["staying"], serde_json::json!([0]));
        assert!(json["stores"][1].get("staying").is_none());
        assert_eq!(json["deletions"], serde_json::json!([]));
        assert!(!table.contains("DELETIONS"), "{table}");
    }

    /// Deletions in progress say what they wait for.
    #[test]
    fn deletions_in_progress_say_what_they_wait_for() {
        let status = pb::ClusterStatusResponse {
            mode: "cluster".into(),
            deletions: vec![
                pb::PendingDeletion {
                    kind: "group".into(),
                    name: "billing".into(),
                    drop_id: 17,
                    shards: vec![1, 2, 3],
                    waiting_for: vec![2, 3],
                },
                pb::PendingDeletion {
                    kind: "topic".into(),
                    name: "orders".into(),
                    drop_id: 18,
                    shards: vec![1],
                    waiting_for: Vec::new(),
                },
            ],
            ..Default::default()
        };
        let table = to_table(status.clone()).expect("a table");
        assert!(
            table.contains(
                "  group billing (drop 17, shards 1, 2, 3): waiting for shard(s) 2, 3 to have a \
                 leader"
            ),
            "{table}"
        );
        assert!(
            table.contains("  topic orders (drop 18, shards 1): dropping"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&to_json(status).expect("JSON")).expect("valid JSON");
        assert_eq!(
            json["deletions"][0],
            serde_json::json!({
                "kind": "group", "name": "billing", "drop_id": 17,
                "shards": [1, 2, 3], "waiting_for": [2, 3],
            })
        );
        let unknown = pb::ClusterStatusResponse {
            deletions_error: "no controller leader".into(),
            ..Default::default()
        };
        assert!(
            to_table(unknown)
                .expect("a table")
                .contains("  not known: no controller leader")
        );
    }
}
