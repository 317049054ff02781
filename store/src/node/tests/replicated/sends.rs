//! A proxy's concurrent sends to one shard share calls (`AppendMany`) and Raft entries, and
//! each is still answered on its own.

use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use vela_proto::ClientId;
use vela_proto::pb::store as pb;
use vela_proto::pb::store::store_client::StoreClient;
use vela_proto::store_wire::{append_result_from_wire, append_to_wire};

use super::*;

pub(super) fn last_index(cluster: &Cluster, id: NodeId) -> u64 {
    let shards = cluster.node(id).shards();
    let metrics = shards[&0].shard.raft.metrics();
    let last = metrics.borrow_watched().last_log_index;
    last.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_through_a_proxy_share_calls_and_entries() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 5, shared).await;
    let leader = cluster.leader().await;
    let remote = cluster.remote_store();
    let client = ClientId::new("proxy-test-client").expect("valid");
    let warm = AppendRequest {
        client_id: Some(client.clone()),
        ..append(vec![message("warm")])
    };
    remote.append(warm).await.expect("the first send lands");
    let calls_before = remote.append_calls();
    let entries_before = last_index(&cluster, leader);

    const SENDS: usize = 64;
    let sends = (0..SENDS).map(|i| {
        let remote = remote.clone();
        let req = AppendRequest {
            client_id: Some(client.clone()),
            ..append(vec![message(&format!("m{i:02}"))])
        };
        tokio::spawn(async move { remote.append(req).await })
    });
    let mut offsets = Vec::new();
    for send in futures::future::join_all(sends).await {
        let outcomes = send.expect("joins").expect("every send lands");
        assert_eq!(outcomes.len(), 1, "one outcome per message");
        offsets.push(
            outcomes[0]
                .offset
                .expect("a normal message gets its offset"),
        );
    }
    offsets.sort_unstable();
    let expected: Vec<u64> = (1..=SENDS as u64).collect();
    assert_eq!(offsets, expected, "every send its own offset, none twice");

    let calls = remote.append_calls() - calls_before;
    let entries = last_index(&cluster, leader) - entries_before;
    assert!(
        calls < SENDS as u64 / 2,
        "{SENDS} concurrent sends took {calls} calls: they did not share"
    );
    assert!(entries <= calls, "{entries} entries for {calls} calls");
    let got = drain(&cluster.node(leader), SENDS + 1).await;
    assert_eq!(got.len(), SENDS + 1, "every send readable once");
}

/// With a send linger, sends that queue behind a busy call wait for company before they go, so
/// sends spread over 150 ms share two or three calls; a send that finds its shard
/// idle still goes at once, however long the linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_linger_gathers_queued_sends_and_never_delays_a_lone_one() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 6, shared).await;
    let leader = cluster.leader().await;
    let remote = cluster.remote_store();
    let client = ClientId::new("linger-test-client").expect("valid");
    let send = |body: String| {
        let remote = remote.clone();
        let req = AppendRequest {
            client_id: Some(client.clone()),
            ..append(vec![message(&body)])
        };
        async move { remote.append(req).await }
    };
    remote.set_send_linger(Duration::from_secs(60));
    let lone = tokio::time::timeout(Duration::from_secs(20), send("lone".into())).await;
    lone.expect("a lone send does not wait out the linger")
        .expect("it lands");

    remote.set_send_linger(Duration::from_millis(500));
    let calls_before = remote.append_calls();
    const SENDS: usize = 20;
    let mut sends = Vec::new();
    // Five at once (the first takes the call, four queue behind it), then the rest 10 ms apart:
    // without a linger those mostly find the shard idle again and go one call each.
    for i in 0..SENDS {
        sends.push(tokio::spawn(send(format!("s{i:02}"))));
        if i >= 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for sent in futures::future::join_all(sends).await {
        sent.expect("joins").expect("every send lands");
    }
    let calls = remote.append_calls() - calls_before;
    assert!(
        calls <= 3,
        "{SENDS} sends 10 ms apart took {calls} calls with a 500 ms linger: they did not gather"
    );
    let got = drain(&cluster.node(leader), SENDS + 1).await;
    assert_eq!(got.len(), SENDS + 1, "every send readable once");
}

/// A store client straight to node `id`, as a proxy would hold one.
pub(super) fn direct_client(
    cluster: &Cluster,
    id: NodeId,
) -> StoreClient<tonic::transport::Channel> {
    StoreClient::new(
        vela_proto::store_client::lazy_channel(&cluster.addrs[&id].to_string())
            .expect("a valid address"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_many_answers_each_append_and_fails_only_the_bad_ones() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 6, shared).await;
    let leader = cluster.leader().await;
    let mut client = direct_client(&cluster, leader);
    let other_shard = AppendRequest {
        shard: 7,
        ..append(vec![message("elsewhere")])
    };
    let request = pb::AppendManyRequest {
        shard: 0,
        appends: vec![
            append_to_wire(&append(vec![message("a"), message("b")])),
            append_to_wire(&append(vec![])),
            append_to_wire(&other_shard),
            append_to_wire(&append(vec![message("c")])),
        ],
    };
    let reply = client
        .append_many(request)
        .await
        .expect("the call succeeds")
        .into_inner();
    let results: Vec<_> = reply
        .results
        .into_iter()
        .map(append_result_from_wire)
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    let offsets = |r: &Result<Vec<AppendOutcome>, StoreError>| -> Vec<Option<u64>> {
        r.as_ref()
            .expect("appended")
            .iter()
            .map(|o| o.offset)
            .collect()
    };
    assert_eq!(offsets(&results[0]), [Some(0), Some(1)]);
    assert!(
        matches!(&results[1], Err(StoreError::Invalid(m)) if m.contains("no messages")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(StoreError::Invalid(m)) if m.contains("shard 7")),
        "{:?}",
        results[2]
    );
    assert_eq!(offsets(&results[3]), [Some(2)]);
    assert_eq!(
        bodies(
            &cluster
                .node(leader)
                .pop(pop(10, Duration::ZERO))
                .await
                .expect("pops")
        ),
        ["a", "b", "c"]
    );
}

/// A store service that answers the method named `.0` (`AppendMany`, `AckMany`) as a version
/// without it does.
#[derive(Clone)]
pub(super) struct Without<S>(pub(super) &'static str, pub(super) S);

impl<S> tonic::server::NamedService for Without<S>
where
    S: tonic::server::NamedService,
{
    const NAME: &'static str = S::NAME;
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tonic::codegen::Service<HttpRequest> for Without<S>
where
    S: tonic::codegen::Service<
            HttpRequest,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<HttpResponse, std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let method = self.0;
        if req.uri().path().ends_with(&format!("/{method}")) {
            return Box::pin(async move {
                Ok(tonic::Status::unimplemented(format!("unknown method {method}")).into_http())
            });
        }
        Box::pin(self.1.call(req))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_append_many_gets_one_append_per_send() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 7, shared).await;
    let leader = cluster.leader().await;
    let (remote, stop, server) = older_leader(&cluster, leader, "AppendMany").await;
    const SENDS: usize = 32;
    let sends = (0..SENDS).map(|i| {
        let remote = remote.clone();
        let req = append(vec![message(&format!("old{i:02}"))]);
        tokio::spawn(async move { remote.append(req).await })
    });
    for send in futures::future::join_all(sends).await {
        send.expect("joins")
            .expect("every send lands, one call each");
    }
    let calls = remote.append_calls();
    assert!(
        calls > SENDS as u64,
        "{calls} calls: the refused AppendMany calls and then one Append per send"
    );
    let got = drain(&cluster.node(leader), SENDS).await;
    assert_eq!(got.len(), SENDS, "every send stored once: {got:?}");
    stop.send(()).ok();
    server.await.expect("joins").expect("serves");
}

/// The leader's store service once more, on a port of its own, as an older version without
/// `method` serves it, and a proxy's client of it; stop the server with the sender.
pub(super) async fn older_leader(
    cluster: &Cluster,
    leader: NodeId,
    method: &'static str,
) -> (
    Arc<vela_proto::store_client::RemoteStore>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = Without(
        method,
        crate::service::StoreService::server(cluster.node(leader)),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    stopped.await.ok();
                },
            ),
    );
    let remote = Arc::new(
        vela_proto::store_client::RemoteStore::new(vela_proto::store_client::ClusterMap {
            stores: [(leader, addr.to_string())].into_iter().collect(),
            shards: [(0, vec![leader])].into_iter().collect(),
        })
        .expect("a valid cluster map"),
    );
    (remote, stop, server)
}
