//! A proxy's concurrent acks of one shard share calls (`AckMany`) and Raft entries, and each is
//! still answered on its own.

use vela_proto::pb::store as pb;
use vela_proto::store_wire::{ack_result_from_wire, ticket_to_wire};

use super::sends::{direct_client, last_index, older_leader};
use super::*;

/// Sends `n` messages through the leader and receives them all there.
async fn delivered(cluster: &Cluster, leader: NodeId, n: usize) -> Vec<Delivery> {
    let store = cluster.node(leader);
    for i in 0..n {
        store
            .append(append(vec![message(&format!("m{i:02}"))]))
            .await
            .expect("the leader appends");
    }
    let mut got = Vec::new();
    while got.len() < n {
        let more = store.pop(pop(32, Duration::ZERO)).await.expect("receives");
        assert!(!more.is_empty(), "{} of {n} received", got.len());
        got.extend(more);
    }
    assert_eq!(got.len(), n);
    got
}

/// Acks every delivery through `remote`, all at once; each must land.
async fn ack_all(remote: &Arc<vela_proto::store_client::RemoteStore>, got: &[Delivery]) {
    let acks = got.iter().map(|d| {
        let (remote, ticket) = (remote.clone(), d.ticket.clone());
        tokio::spawn(async move { remote.ack(&ticket).await })
    });
    for ack in futures::future::join_all(acks).await {
        ack.expect("joins").expect("every ack lands");
    }
}

/// Past their invisibility, acknowledged messages do not come back.
async fn none_comes_back(cluster: &Cluster, leader: NodeId, clock: &ManualClock) {
    clock.advance(Duration::from_secs(31));
    let again = cluster
        .node(leader)
        .pop(pop(32, Duration::ZERO))
        .await
        .expect("receives");
    assert!(again.is_empty(), "acked messages came back: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_through_a_proxy_share_calls_and_entries() {
    let (clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 8, shared).await;
    // The leader's raise of the apply version is an entry too: it must not land in the count.
    cluster.current_apply_version().await;
    let leader = cluster.leader().await;
    let remote = cluster.remote_store();
    const ACKS: usize = 64;
    let got = delivered(&cluster, leader, ACKS).await;
    let entries_before = last_index(&cluster, leader);

    ack_all(&remote, &got).await;
    let calls = remote.ack_calls();
    let entries = last_index(&cluster, leader) - entries_before;
    assert!(
        calls < ACKS as u64 / 2,
        "{ACKS} concurrent acks took {calls} calls: they did not share"
    );
    assert!(entries <= calls, "{entries} entries for {calls} calls");
    // Acknowledged: none comes back, and a second ack is stale.
    none_comes_back(&cluster, leader, &clock).await;
    assert!(matches!(
        remote.ack(&got[0].ticket).await,
        Err(StoreError::StaleReceipt(_))
    ));
}

/// A cluster whose proxy lingers 500 ms on ack calls (so a burst is surely one call, even on a
/// loaded test machine, where the runtime turns a lone ack waits alone usually suffice), with
/// `n` messages delivered at its leader.
async fn lingering(
    seed: u64,
    n: usize,
) -> (
    Arc<ManualClock>,
    Cluster,
    NodeId,
    Arc<vela_proto::store_client::RemoteStore>,
    Vec<Delivery>,
) {
    let (clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], seed, shared).await;
    cluster.current_apply_version().await;
    let leader = cluster.leader().await;
    let remote = cluster.remote_store();
    remote.set_ack_linger(Duration::from_millis(500));
    let got = delivered(&cluster, leader, n).await;
    (clock, cluster, leader, remote, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_linger_takes_a_burst_in_one_call_and_a_lone_ack_still_lands() {
    const ACKS: usize = 32;
    let (clock, cluster, leader, remote, got) = lingering(12, ACKS + 1).await;
    let entries_before = last_index(&cluster, leader);

    ack_all(&remote, &got[..ACKS]).await;
    assert_eq!(
        remote.ack_calls(),
        1,
        "a burst of {ACKS} acks takes one call"
    );
    assert_eq!(
        last_index(&cluster, leader) - entries_before,
        1,
        "and one entry"
    );
    // A lone ack lingers too, then lands.
    remote
        .ack(&got[ACKS].ticket)
        .await
        .expect("a lone ack lands");
    assert_eq!(remote.ack_calls(), 2);
    none_comes_back(&cluster, leader, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_sent_to_a_deposed_leader_goes_again_as_one_call_to_the_new_one() {
    const ACKS: usize = 32;
    let (clock, cluster, leader, remote, got) = lingering(13, ACKS + 1).await;
    // The proxy learns the leader with one ack; then leadership moves.
    remote
        .ack(&got[ACKS].ticket)
        .await
        .expect("a lone ack lands");
    let calls = remote.ack_calls();
    let next = [1, 2, 3]
        .into_iter()
        .find(|&n| n != leader)
        .expect("another node");
    super::members::lead_on(&cluster, 0, next).await;

    // Every ack of the call comes back "not the leader" from the old one, which names the new.
    ack_all(&remote, &got[..ACKS]).await;
    assert_eq!(
        remote.ack_calls() - calls,
        1,
        "the burst went again as one call, not one call per ack"
    );
    none_comes_back(&cluster, next, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_many_answers_each_ticket_and_fails_only_the_bad_ones() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 9, shared).await;
    let leader = cluster.leader().await;
    let got = delivered(&cluster, leader, 2).await;
    let mut client = direct_client(&cluster, leader);
    let mut elsewhere = ticket_to_wire(&got[1].ticket);
    elsewhere.shard = 7;
    let mut no_group = ticket_to_wire(&got[1].ticket);
    no_group.group = String::new();
    let request = pb::AckManyRequest {
        shard: 0,
        tickets: vec![
            ticket_to_wire(&got[0].ticket),
            elsewhere,
            no_group,
            // The same delivery twice: the second finds it acknowledged.
            ticket_to_wire(&got[1].ticket),
            ticket_to_wire(&got[1].ticket),
        ],
    };
    let reply = client
        .ack_many(request)
        .await
        .expect("the call succeeds")
        .into_inner();
    let results: Vec<_> = reply
        .results
        .into_iter()
        .map(ack_result_from_wire)
        .collect();
    assert_eq!(results.len(), 5, "{results:?}");
    assert_eq!(results[0], Ok(()));
    assert!(
        matches!(&results[1], Err(StoreError::Invalid(m)) if m.contains("shard 7")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(StoreError::Invalid(_))),
        "{:?}",
        results[2]
    );
    let twice = [&results[3], &results[4]];
    assert!(
        twice.contains(&&Ok(()))
            && twice
                .iter()
                .any(|r| matches!(r, Err(StoreError::StaleReceipt(_)))),
        "one of the two acks of one delivery takes, the other is stale: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_ack_many_gets_one_ack_per_call() {
    let (clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 10, shared).await;
    let leader = cluster.leader().await;
    let (remote, stop, server) = older_leader(&cluster, leader, "AckMany").await;
    const ACKS: usize = 32;
    let got = delivered(&cluster, leader, ACKS).await;
    ack_all(&remote, &got).await;
    let calls = remote.ack_calls();
    assert!(
        calls > ACKS as u64,
        "{calls} calls: the refused AckMany calls and then one Ack per ack"
    );
    none_comes_back(&cluster, leader, &clock).await;
    stop.send(()).ok();
    server.await.expect("joins").expect("serves");
}
