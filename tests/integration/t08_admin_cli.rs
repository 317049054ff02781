//! `vela admin` against a live node: topic and group lifecycle, queue view, send/receive, and
//! one readable error line for every mistake.

use crate::harness::{Node, admin, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_group_lifecycle() {
    let node = Node::start().await;
    let topic = unique("admin-t");
    let group = unique("admin-g");

    let out = node
        .admin(&["topic", "create", &topic, "--type", "fifo", "--queues", "4"])
        .await
        .unwrap();
    assert!(
        out.contains(&format!("created topic {topic} (fifo, 4 queues)")),
        "{out}"
    );
    let dup = node
        .admin(&["topic", "create", &topic])
        .await
        .unwrap_err()
        .to_string();
    assert!(dup.contains("already exists"), "{dup}");
    let list = node.admin(&["topic", "list"]).await.unwrap();
    assert!(list.contains(&topic) && list.contains("fifo"), "{list}");

    let out = node
        .admin(&["group", "create", &group, "--fifo", "--max-attempts", "5"])
        .await
        .unwrap();
    assert!(
        out.contains("fifo") && out.contains("max attempts 5"),
        "{out}"
    );
    let list = node.admin(&["group", "list"]).await.unwrap();
    assert!(list.contains(&group), "{list}");

    let out = node
        .admin(&["send", &topic, "one", "two", "--message-group", "mg"])
        .await
        .unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("sent ")).count(),
        2,
        "{out}"
    );
    let out = node
        .admin(&[
            "receive", &group, &topic, "--max", "1", "--wait", "5s", "--ack",
        ])
        .await
        .unwrap();
    assert!(out.contains("body one"), "{out}");
    // Without --ack a receive leaves what it got in flight.
    let out = node
        .admin(&["receive", &group, &topic, "--max", "1", "--wait", "5s"])
        .await
        .unwrap();
    assert!(out.contains("body two"), "{out}");

    let queues = node.admin(&["queues", &topic]).await.unwrap();
    assert!(
        queues.contains("MAX_OFFSET") && queues.contains(&group),
        "{queues}"
    );
    let describe = node.admin(&["topic", "describe", &topic]).await.unwrap();
    assert!(describe.contains("queues:   4"), "{describe}");
    let describe = node.admin(&["group", "describe", &group]).await.unwrap();
    assert!(describe.contains("max attempts:  5"), "{describe}");

    // The same as JSON, for scripts.
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).unwrap() };
    let topics = json(
        node.admin(&["topic", "list", "--output", "json"])
            .await
            .unwrap(),
    );
    let listed = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .expect("the topic is listed");
    assert_eq!(
        (listed["type"].as_str(), listed["queues"].as_u64()),
        (Some("fifo"), Some(4))
    );
    let described = json(
        node.admin(&["topic", "describe", &topic, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(described["topic"]["name"], topic.as_str());
    // Queues appear once they held a message: the two sent went to one.
    let stored: u64 = described["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_u64().unwrap() - q["min_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, 2, "{described}");
    let queues = json(
        node.admin(&["queues", &topic, "--output", "json"])
            .await
            .unwrap(),
    );
    let read: Vec<&serde_json::Value> = queues
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q["groups"].as_array().unwrap())
        .filter(|g| g["group"] == group.as_str())
        .collect();
    // `receive --ack` acknowledged one of the two; the other is in flight.
    let sum = |key: &str| read.iter().map(|g| g[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("consumer_offset"), sum("backlog"), sum("inflight")),
        (1, 1, 1),
        "{queues}"
    );
    let groups = json(
        node.admin(&["group", "list", "--output", "json"])
            .await
            .unwrap(),
    );
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == group.as_str()
                && g["fifo"] == true
                && g["max_attempts"] == 5
                && g["retry"]["kind"] == "standard"),
        "{groups}"
    );
    let described = json(
        node.admin(&["group", "describe", &group, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(described["group"]["start"], "auto");
    let out = node
        .admin(&[
            "group",
            "update",
            &group,
            "--retry-exponential",
            "2s,1m,3",
            "--max-attempts",
            "7",
        ])
        .await
        .unwrap();
    assert!(
        out.contains("max attempts 7") && out.contains("times 3"),
        "{out}"
    );
    let updated = json(
        node.admin(&["group", "describe", &group, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(updated["group"]["max_attempts"], 7);
    assert_eq!(updated["group"]["retry"]["kind"], "exponential");
    assert_eq!(updated["group"]["retry"]["initial_ms"], 2000);
    assert_eq!(updated["group"]["fifo"], true, "the rest stays");
    let out = node
        .admin(&["group", "update", &group, "--retry-standard"])
        .await
        .unwrap();
    assert!(out.contains("max attempts 7, retry standard"), "{out}");
    let nothing = node.admin(&["group", "update", &group]).await.unwrap_err();
    assert!(
        nothing.to_string().contains("nothing to change"),
        "{nothing}"
    );
    let unknown = node
        .admin(&["group", "update", "no-such-group", "--max-attempts", "2"])
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("no-such-group"), "{unknown}");
    assert!(
        described["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["topic"] == topic.as_str())
    );

    // Destructive commands need --yes without a terminal; refused, nothing is deleted.
    let refused = node.admin(&["topic", "delete", &topic]).await.unwrap_err();
    assert!(format!("{refused:#}").contains("--yes"), "{refused:#}");
    let listed = node.admin(&["topic", "list"]).await.unwrap();
    assert!(listed.contains(&topic), "{listed}");
    node.admin(&["group", "delete", &group, "--yes"])
        .await
        .unwrap();
    node.admin(&["topic", "delete", &topic, "-y"])
        .await
        .unwrap();
    let gone = node
        .admin(&["topic", "describe", &topic])
        .await
        .unwrap_err()
        .to_string();
    assert!(gone.contains("not found"), "{gone}");
    let gone = node
        .admin(&["group", "delete", &group, "--yes"])
        .await
        .unwrap_err()
        .to_string();
    assert!(gone.contains("not found"), "{gone}");

    let bad = node
        .admin(&["topic", "create", "bad name"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("bad name"), "{bad}");
    let bad = node
        .admin(&["topic", "create", "x", "--queues", "0"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("0 is not in 1..=1024"), "{bad}");
    let bad = node
        .admin(&["topic", "create", "x", "--type", "queue"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("unknown topic type"), "{bad}");
    // A standalone node holds one replica of each shard.
    let bad = node
        .admin(&["topic", "create", "x", "--replicas", "3"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("3 replicas need a cluster"), "{bad}");
    let one = unique("admin-r1");
    let out = node
        .admin(&["topic", "create", &one, "--replicas", "1"])
        .await
        .unwrap();
    assert!(out.contains(&format!("created topic {one}")), "{out}");
    let described = node.admin(&["topic", "describe", &one]).await.unwrap();
    assert!(described.contains("shards:   0"), "{described}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_one_readable_line() {
    let err = admin("127.0.0.1:1", &["topic", "list"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot reach vela at 127.0.0.1:1"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// `send --delay` prints a recall handle; `message recall` withdraws the message with it
/// (printing its id), and a second recall is one readable error line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_message_sent_from_the_cli_can_be_recalled() {
    let node = Node::start().await;
    let topic = unique("cli-recall");
    let out = node
        .admin(&["send", &topic, "later", "--delay", "10m"])
        .await
        .unwrap();
    let (id, handle) = out
        .lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                ["sent", id, "offset", _, "recall-handle", handle] => {
                    Some((id.to_string(), handle.to_string()))
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no recall handle printed: {out}"));
    let out = node
        .admin(&["message", "recall", &topic, &handle])
        .await
        .unwrap();
    assert_eq!(out.trim(), format!("recalled {id}"));
    let err = node
        .admin(&["message", "recall", &topic, &handle])
        .await
        .unwrap_err();
    let line = format!("{err:#}");
    assert!(line.contains("NOT_FOUND") && !line.contains('\n'), "{line}");
    node.stop().await;
}

/// `--output json` on every command (a global flag, before or after the subcommand): the
/// mutating ones print what they made or changed, deletes `{"deleted": {KIND: NAME}}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_json_when_asked() {
    let node = Node::start().await;
    let topic = unique("json-t");
    let group = unique("json-g");
    // Delay messages go to an auto-created topic (a created one is normal-only).
    let later = unique("json-later");
    let json = |out: String| -> serde_json::Value {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };

    let created = json(
        node.admin(&[
            "--output", "json", "topic", "create", &topic, "--queues", "2",
        ])
        .await
        .unwrap(),
    );
    assert_eq!(created["topic"]["name"], topic.as_str(), "{created}");
    assert_eq!(created["topic"]["queues"], 2, "{created}");
    assert!(created["queues"].is_array(), "as topic describe: {created}");
    let group_json = json(
        node.admin(&[
            "group",
            "create",
            &group,
            "--max-attempts",
            "4",
            "--output",
            "json",
        ])
        .await
        .unwrap(),
    );
    assert_eq!(group_json["name"], group.as_str());
    assert_eq!(group_json["max_attempts"], 4);
    let updated = json(
        node.admin(&[
            "group",
            "update",
            &group,
            "--max-attempts",
            "6",
            "--output",
            "json",
        ])
        .await
        .unwrap(),
    );
    assert_eq!(updated["max_attempts"], 6);

    let sent = json(
        node.admin(&["send", &topic, "a", "b", "--output", "json"])
            .await
            .unwrap(),
    );
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[0]["message_id"].is_string() && sent[0]["offset"].is_i64(),
        "{sent:?}"
    );
    assert!(sent[0].get("recall_handle").is_none(), "{sent:?}");
    let delayed = json(
        node.admin(&[
            "send", &later, "later", "--delay", "10m", "--output", "json",
        ])
        .await
        .unwrap(),
    );
    let handle = delayed[0]["recall_handle"].as_str().unwrap().to_owned();
    let recalled = json(
        node.admin(&["message", "recall", &later, &handle, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(recalled["recalled"], delayed[0]["message_id"]);

    let reset = json(
        node.admin(&[
            "--yes", "group", "reset", &group, "--topic", &topic, "--to", "earliest", "--output",
            "json",
        ])
        .await
        .unwrap(),
    );
    assert_eq!(reset["group"], group.as_str());
    assert!(
        reset["queues"].as_array().is_some_and(|q| !q.is_empty()),
        "{reset}"
    );
    let info = json(node.admin(&["cluster", "--output", "json"]).await.unwrap());
    assert!(
        info["version"].is_string() && info["shards"].is_u64(),
        "{info}"
    );
    let dlq = json(
        node.admin(&["dlq", "list", "--output", "json"])
            .await
            .unwrap(),
    );
    assert!(dlq.is_array(), "{dlq}");

    let deleted = json(
        node.admin(&["--yes", "group", "delete", &group, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(deleted["deleted"]["group"], group.as_str());
    let deleted = json(
        node.admin(&["--yes", "topic", "delete", &topic, "--output", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(deleted["deleted"]["topic"], topic.as_str());
    // Errors stay one readable line, whatever the format.
    let err = node
        .admin(&["--output", "json", "topic", "describe", &topic])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    node.stop().await;
}
