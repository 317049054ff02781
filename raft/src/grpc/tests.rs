//! Raft over real gRPC connections on loopback: three members elect and replicate (entries
//! larger than one request's budget are split), a member that was down catches up through the
//! log or, once the leader purged what it missed, through a streamed snapshot; leaders pipeline
//! to followers (`AppendStream`) and replicate to a member of an older version one request at a
//! time; a stream keeps to the route it names; the wire layouts of a request and of a stream's
//! answers are pinned.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Raft, ServerState};
use prost::Message;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

use super::*;
use crate::group::start_member;
use crate::single_node::default_config;
use crate::test_support::*;

type TestRaft = Raft<TestConfig, TestStateMachine>;

struct Member {
    raft: TestRaft,
    sm: TestStateMachine,
    server: Arc<RaftServer<TestConfig, TestStateMachine>>,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

/// Serves `server` on `addr` until `stop` fires.
async fn serve(
    server: &Arc<RaftServer<TestConfig, TestStateMachine>>,
    addr: SocketAddr,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = server.service();
    let served = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    stopped.await.ok();
                },
            )
            .await
            .unwrap();
    });
    (bound, stop, served)
}

async fn start(
    id: u64,
    dir: &std::path::Path,
    listen: SocketAddr,
    voters: &BTreeMap<u64, BasicNode>,
    cfg: openraft::Config,
) -> Member {
    start_version(id, dir, listen, voters, cfg, true).await
}

/// `streams`: false starts a member of a version before `AppendStream`.
async fn start_version(
    id: u64,
    dir: &std::path::Path,
    listen: SocketAddr,
    voters: &BTreeMap<u64, BasicNode>,
    cfg: openraft::Config,
    streams: bool,
) -> Member {
    let server = RaftServer::<TestConfig, TestStateMachine>::new(id);
    server
        .without_streams
        .store(!streams, std::sync::atomic::Ordering::Relaxed);
    let (_, stop, served) = serve(&server, listen).await;
    let store = TestStore::open(config(dir, 1 << 20, 1 << 20))
        .await
        .unwrap();
    let sm = TestStateMachine::default();
    let raft = start_member(
        id,
        voters.clone(),
        cfg,
        GrpcNetwork::<Vec<u8>>::new(1, id, ChannelPool::new()),
        store,
        sm.clone(),
        true,
    )
    .await
    .unwrap();
    server.register(1, raft.clone());
    Member {
        raft,
        sm,
        server,
        stop,
        served,
    }
}

async fn stop(member: Member) {
    member.raft.shutdown().await.unwrap();
    member.stop.send(()).ok();
    member.served.await.unwrap();
}

async fn leader(members: &BTreeMap<u64, Member>) -> u64 {
    for _ in 0..400 {
        let views: Vec<_> = members
            .values()
            .map(|m| {
                let metrics = m.raft.metrics().borrow_watched().clone();
                (metrics.state, metrics.current_leader)
            })
            .collect();
        if let Some((_, Some(l))) = views.first()
            && members.contains_key(l)
            && views.iter().all(|(_, v)| *v == Some(*l))
            && views.iter().any(|(s, _)| *s == ServerState::Leader)
        {
            return *l;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no agreed leader");
}

async fn converged(members: &BTreeMap<u64, Member>, count: usize) {
    for _ in 0..400 {
        if members.values().all(|m| m.sm.values().len() == count) {
            let first = members.values().next().unwrap().sm.values();
            assert!(members.values().all(|m| m.sm.values() == first));
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let lens: Vec<_> = members.values().map(|m| m.sm.values().len()).collect();
    panic!("members hold {lens:?} values, not {count} each");
}

/// Free loopback addresses for three members (bound once, then released).
async fn addresses() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        out.push(l.local_addr().unwrap());
        keep.push(l);
    }
    out
}

/// Members 1, 2 and 3 at `addrs`, in order.
fn voters_at(addrs: &[SocketAddr]) -> BTreeMap<u64, BasicNode> {
    (1..=3)
        .map(|id| (id, BasicNode::new(addrs[id as usize - 1].to_string())))
        .collect()
}

/// The shards' election settings: heartbeats every 100 ms, elections after 0.5–1 s, Pre-Vote.
fn member_config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        enable_pre_vote: Some(true),
        ..default_config("grpc-test")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_pipeline_to_followers_and_replicate_to_an_older_one_request_by_request() {
    let addrs = addresses().await;
    let voters = voters_at(&addrs);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = member_config;
    // Member 3 runs a version that does not know AppendStream.
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let i = id as usize - 1;
        let member = start_version(id, dirs[i].path(), addrs[i], &voters, cfg(), id != 3).await;
        members.insert(id, member);
    }
    let first = leader(&members).await;
    let leader_raft = members[&first].raft.clone();
    for round in 0..5 {
        let writes = (0..40)
            .map(|i| {
                let (raft, body) = (&leader_raft, format!("{round}-{i}"));
                async move { write_leased(raft, &body).await }
            })
            .collect::<Vec<_>>();
        for w in futures::future::join_all(writes).await {
            w.unwrap();
        }
    }
    converged(&members, 200).await;
    // The follower of this version was sent streams; the older one none, and it has every
    // entry all the same.
    let new_follower = if first == 1 { 2 } else { 1 };
    assert!(members[&new_follower].server.streams_served() > 0);
    assert_eq!(members[&3].server.streams_served(), 0);
    for (_, m) in members {
        stop(m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_replicate_over_grpc_and_a_returning_member_catches_up_by_snapshot() {
    let addrs = addresses().await;
    let voters = voters_at(&addrs);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = member_config;
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let i = id as usize - 1;
        members.insert(
            id,
            start(id, dirs[i].path(), addrs[i], &voters, cfg()).await,
        );
    }
    let first = leader(&members).await;

    // Entries of 1.5 MiB: a batch of them is more than one request may carry.
    let big = "x".repeat(1536 * 1024);
    let batch: Vec<String> = (0..6).map(|i| format!("{i}{big}")).collect();
    let leader_raft = members[&first].raft.clone();
    let writes = batch
        .iter()
        .map(|b| write_leased(&leader_raft, b))
        .collect::<Vec<_>>();
    for w in futures::future::join_all(writes).await {
        w.unwrap();
    }
    converged(&members, 6).await;

    // One follower goes away; the others write on, snapshot and purge what it has not seen.
    let away = *members.keys().find(|&&id| id != first).unwrap();
    let away_index = away as usize - 1;
    stop(members.remove(&away).unwrap()).await;
    for i in 0..20 {
        write_leased(&leader_raft, &format!("small-{i}"))
            .await
            .unwrap();
    }
    leader_raft.trigger().snapshot().await.unwrap();
    leader_raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 26), "snapshot")
        .await
        .unwrap();
    let last = leader_raft
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap();
    leader_raft.trigger().purge_log(last).await.unwrap();
    leader_raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "purge")
        .await
        .unwrap();

    // It returns on its old directory and address: the log it needs is gone, so it gets the
    // snapshot, streamed in chunks, then the entries after it.
    let back = start(
        away,
        dirs[away_index].path(),
        addrs[away_index],
        &voters,
        cfg(),
    )
    .await;
    back.raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "the returning member installed a snapshot",
        )
        .await
        .unwrap();
    members.insert(away, back);
    write_leased(&leader_raft, "after").await.unwrap();
    converged(&members, 27).await;
    for (_, m) in members {
        stop(m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_reported_as_unreachable_and_a_slow_one_as_a_timeout() {
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::VoteRequest;

    let vote = || VoteRequest::<TestConfig> {
        vote: openraft::Vote::new(1, 1),
        last_log_id: None,
        leadership_transfer: false,
    };
    // Nobody listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut net = GrpcNetwork::<Vec<u8>>::new(1, 1, ChannelPool::new());
    let mut conn = RaftNetworkFactory::<TestConfig>::new_client(
        &mut net,
        2,
        &BasicNode::new(closed.to_string()),
    )
    .await;
    let err = RaftNetworkV2::<TestConfig>::vote(
        &mut conn,
        vote(),
        RPCOption::new(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, openraft::error::RPCError::Unreachable(_)),
        "{err:?}"
    );

    // A server that holds no group 1 answers "not found": also unreachable (not yet there).
    let server = RaftServer::<TestConfig, TestStateMachine>::new(2);
    let (addr, stop_server, served) = serve(&server, "127.0.0.1:0".parse().unwrap()).await;
    let mut conn = RaftNetworkFactory::<TestConfig>::new_client(
        &mut net,
        2,
        &BasicNode::new(addr.to_string()),
    )
    .await;
    let err = RaftNetworkV2::<TestConfig>::vote(
        &mut conn,
        vote(),
        RPCOption::new(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, openraft::error::RPCError::Unreachable(_)),
        "{err:?}"
    );
    // A request addressed to another node id is refused, not handed to a group.
    let mut wrong = RaftNetworkFactory::<TestConfig>::new_client(
        &mut net,
        3,
        &BasicNode::new(addr.to_string()),
    )
    .await;
    let err = RaftNetworkV2::<TestConfig>::vote(
        &mut wrong,
        vote(),
        RPCOption::new(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, openraft::error::RPCError::Network(_)),
        "{err:?}"
    );
    stop_server.send(()).ok();
    served.await.unwrap();

    // A peer that accepts but never answers: the deadline classifies it as a timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = RaftNetworkFactory::<TestConfig>::new_client(
        &mut net,
        2,
        &BasicNode::new(silent.local_addr().unwrap().to_string()),
    )
    .await;
    let err = RaftNetworkV2::<TestConfig>::vote(
        &mut conn,
        vote(),
        RPCOption::new(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, openraft::error::RPCError::Timeout(_)),
        "{err:?}"
    );
}

#[test]
fn an_append_request_has_a_pinned_wire_layout() {
    let entries = vec![entry(3, 7, "hello")];
    let mut records = Vec::new();
    for e in &entries {
        crate::entry::encode_entry::<TestConfig>(e, &mut records).unwrap();
    }
    let request = pb::AppendEntriesRequest {
        route: Some(pb::Route {
            group: 5,
            target: 2,
        }),
        vote: Some(pb::Vote {
            term: 3,
            node: 1,
            committed: true,
        }),
        prev_log_id: Some(pb::LogId {
            term: 2,
            node: 1,
            index: 6,
        }),
        leader_commit: Some(pb::LogId {
            term: 2,
            node: 1,
            index: 6,
        }),
        entries: records.into(),
    };
    let bytes = request.encode_to_vec();
    assert_eq!(
        hex::encode(&bytes),
        GOLDEN_APPEND,
        "the AppendEntries wire layout changed: nodes of neighbouring versions must still \
         understand each other"
    );
    let decoded = pb::AppendEntriesRequest::decode(bytes.as_slice()).unwrap();
    let back = server_decode(&decoded.entries);
    assert_eq!(back, entries);
}

fn server_decode(bytes: &[u8]) -> Vec<TestEntry> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, payload, used) = crate::codec::decode_record(rest).unwrap();
        out.push(crate::entry::decode_entry::<TestConfig>(head, payload).unwrap());
        rest = &rest[used..];
    }
    out
}

const GOLDEN_APPEND: &str = "0a040805100212060803100118011a0608021001180622060802100118062a2921000000546da8250300000003000000000000000000000000000000070000000000000068656c6c6f";

#[test]
fn the_answers_of_a_pipelined_stream_have_a_pinned_wire_layout() {
    use pb::append_stream_reply::Result as R;
    let log_id = pb::LogId {
        term: 4,
        node: 2,
        index: 9,
    };
    let answers = [
        R::Accepted(pb::Matching {
            matching: Some(log_id),
        }),
        R::Accepted(pb::Matching { matching: None }),
        R::Conflict(log_id),
        R::HigherVote(pb::Vote {
            term: 5,
            node: 3,
            committed: false,
        }),
    ];
    let wire: Vec<String> = answers
        .into_iter()
        .map(|a| hex::encode(pb::AppendStreamReply { result: Some(a) }.encode_to_vec()))
        .collect();
    assert_eq!(
        wire,
        [
            "0a080a06080410021809",
            "0a00",
            "1206080410021809",
            "1a0408051003"
        ],
        "the AppendStream answer layout changed: nodes of neighbouring versions must still \
         understand each other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_stream_names_its_route_up_front_and_keeps_to_it() {
    use pb::raft_transport_client::RaftTransportClient;

    let addr = addresses().await[0];
    let voters: BTreeMap<u64, BasicNode> = [(1, BasicNode::new(addr.to_string()))].into();
    let dir = tempfile::tempdir().unwrap();
    let member = start(1, dir.path(), addr, &voters, default_config("grpc-test")).await;
    let mut client = RaftTransportClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let open = |group: Option<u64>, requests: Vec<pb::AppendEntriesRequest>| {
        let mut request = tonic::Request::new(tokio_stream::iter(requests));
        if let Some(group) = group {
            request.metadata_mut().insert(STREAM_GROUP, group.into());
            request.metadata_mut().insert(STREAM_TARGET, 1u64.into());
        }
        request
    };
    let wrong_route = pb::AppendEntriesRequest {
        route: Some(pb::Route {
            group: 2,
            target: 1,
        }),
        vote: Some(pb::Vote {
            term: 1,
            node: 1,
            committed: true,
        }),
        ..Default::default()
    };

    // No route in the metadata: refused at once.
    let err = client.append_stream(open(None, vec![])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // A group this node does not hold: not found (unreachable to the sender).
    let err = client
        .append_stream(open(Some(9), vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // A request naming another route than the stream's ends it with an error, unanswered.
    let mut answers = client
        .append_stream(open(Some(1), vec![wrong_route]))
        .await
        .unwrap()
        .into_inner();
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    stop(member).await;
}
