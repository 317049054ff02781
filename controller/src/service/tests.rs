//! Three controller nodes over gRPC on loopback, reached the way proxies reach them
//! (`RemoteController`): topics and groups created through the leader are read back; a
//! follower refuses to answer (no stale reads); when the leader stops, another takes over with
//! the metadata intact, and a restarted node rejoins.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use vela_proto::controller_client::RemoteController;
use vela_proto::{ControllerError, GroupName, GroupSpec, TopicName, TopicSpec, TopicType};

use super::*;
use crate::ControllerConfig;

struct Node {
    controller: Arc<Controller>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(id: u64, dir: &std::path::Path, addrs: &BTreeMap<u64, SocketAddr>) -> Node {
    let voters: BTreeMap<u64, String> = addrs.iter().map(|(i, a)| (*i, a.to_string())).collect();
    let cfg = ControllerConfig {
        data_dir: dir.to_path_buf(),
        node_id: id,
        shards: vec![0, 1, 2],
        ..ControllerConfig::default()
    };
    let controller =
        Controller::open_replicated(cfg, vela_proto::clock::system_clock(), &voters, true)
            .await
            .unwrap();
    let listener = tokio::net::TcpListener::bind(addrs[&id]).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(controller.raft_service().unwrap())
        .add_service(ControllerService::server(controller.clone()));
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    stopped.await.ok();
                },
            )
            .await
            .unwrap();
    });
    Node {
        controller,
        stop,
        task,
    }
}

async fn stop(node: Node) {
    node.controller.shutdown().await.unwrap();
    node.stop.send(()).ok();
    node.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_controller_keeps_its_metadata_across_a_leader_change() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut addrs = BTreeMap::new();
    let mut holders = Vec::new();
    for id in 1..=3u64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        holders.push(l);
    }
    drop(holders);
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        nodes.insert(id, start(id, dirs[id as usize - 1].path(), &addrs).await);
    }
    let remote =
        RemoteController::new(&addrs.iter().map(|(i, a)| (*i, a.to_string())).collect()).unwrap();

    let topic = remote
        .create_topic(TopicSpec {
            name: TopicName::new("orders").unwrap(),
            topic_type: TopicType::Normal,
            queue_count: 4,
            auto_created: false,
        })
        .await
        .unwrap();
    // Queues are placed on the configured shards (recorded by whichever node led first).
    assert!(topic.queue_shards.iter().all(|s| [0, 1, 2].contains(s)));
    remote
        .create_group(GroupSpec {
            name: GroupName::new("billing").unwrap(),
            fifo: false,
            max_attempts: 5,
            auto_created: false,
            start: vela_proto::GroupStart::Latest,
            retry: vela_proto::retry::RetryBackoff::parse_exponential("1s,1m,2").unwrap(),
            broadcast: false,
        })
        .await
        .unwrap();
    let groups = remote.list_groups().await.unwrap();
    assert_eq!(
        groups[0].retry,
        vela_proto::retry::RetryBackoff::parse_exponential("1s,1m,2").unwrap(),
        "the back-off crosses the controller's wire and log"
    );
    let updated = remote
        .update_group(
            &GroupName::new("billing").unwrap(),
            vela_proto::GroupUpdate {
                max_attempts: Some(9),
                retry: Some(vela_proto::retry::RetryBackoff::Standard),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.max_attempts, updated.retry),
        (9, vela_proto::retry::RetryBackoff::Standard),
        "an update crosses the wire too"
    );
    let dlq = remote
        .ensure_dead_letter_topic(&GroupName::new("billing").unwrap())
        .await
        .unwrap();
    assert!(dlq.name.as_str().starts_with("%DLQ%"));

    // Followers do not answer reads from their own (possibly stale) state.
    let mut refused = 0;
    for node in nodes.values() {
        match node.controller.list_topics().await {
            Ok(topics) => assert_eq!(topics.len(), 2),
            Err(ControllerError::NotLeader { .. }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(refused, 2, "exactly the two followers refuse");

    // The leader stops; the others elect one of themselves and still hold everything.
    let leader = *nodes
        .iter()
        .find(|(_, n)| n.controller.group_leads())
        .map(|(id, _)| id)
        .unwrap();
    stop(nodes.remove(&leader).unwrap()).await;
    let got = remote
        .get_topic(&TopicName::new("orders").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, topic);
    assert_eq!(remote.list_groups().await.unwrap().len(), 1);
    assert!(matches!(
        remote
            .create_topic(TopicSpec {
                name: TopicName::new("orders").unwrap(),
                topic_type: TopicType::Normal,
                queue_count: 4,
                auto_created: false,
            })
            .await,
        Err(ControllerError::AlreadyExists(_))
    ));

    // The stopped node returns on its data and follows the new leader.
    nodes.insert(
        leader,
        start(leader, dirs[leader as usize - 1].path(), &addrs).await,
    );
    remote
        .delete_group(&GroupName::new("billing").unwrap())
        .await
        .unwrap();
    assert!(remote.list_groups().await.unwrap().is_empty());
    for (_, node) in nodes {
        stop(node).await;
    }
}

/// A topic created the moment a member opens, before it has recorded the configured shard set,
/// waits for that record: its placed shards never take ids of the configured shards (the set
/// would then be refused for good and the configured shards taken for placed ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_before_the_shard_set_is_recorded_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let voters = BTreeMap::from([(1u64, l.local_addr().unwrap().to_string())]);
    drop(l);
    let cfg = ControllerConfig {
        data_dir: dir.path().to_path_buf(),
        node_id: 1,
        shards: vec![0, 1, 2],
        stores: (1..=4u64)
            .map(|n| (n, format!("127.0.0.1:{}", 40_000 + n)))
            .collect(),
        ..ControllerConfig::default()
    };
    let controller =
        Controller::open_replicated(cfg, vela_proto::clock::system_clock(), &voters, true)
            .await
            .unwrap();
    let spec = TopicSpec {
        name: TopicName::new("early").unwrap(),
        topic_type: TopicType::Normal,
        queue_count: 4,
        auto_created: false,
    };
    let created = loop {
        match controller.create_topic_replicated(spec.clone(), 3).await {
            // Asked again at once: the first call that finds the member leading may come
            // before it has recorded the shard set.
            Err(ControllerError::NotLeader { .. }) => tokio::task::yield_now().await,
            other => break other.unwrap(),
        }
    };
    assert!(
        created.queue_shards.iter().all(|s| *s > 2),
        "placed shards reuse configured ids: {:?}",
        created.queue_shards
    );
    controller.shutdown().await.unwrap();
}
