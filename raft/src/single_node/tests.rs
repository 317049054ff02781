//! start_single_voter: a fresh directory becomes leader and takes writes; a restart on the same
//! directory becomes leader again without re-initializing and still has the earlier entries.

use openraft::EntryPayload;

use super::*;
use crate::test_support::*;

fn bodies_in_log(store: &TestStore) -> Vec<String> {
    store
        .reader()
        .entries(..)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(body) => Some(body),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_start_then_restart_on_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4096, 1 << 20);

    let store = TestStore::open(cfg.clone()).await.unwrap();
    let sm = TestStateMachine::default();
    let raft = start_single_voter(7, default_config("test"), store.clone(), sm.clone())
        .await
        .unwrap();
    for body in ["a", "b", "c"] {
        let resp = raft.client_write(body.to_string()).await.unwrap();
        assert_eq!(resp.data, format!("ok:{body}"));
    }
    assert_eq!(sm.values(), ["a", "b", "c"]);
    assert_eq!(bodies_in_log(&store), ["a", "b", "c"]);
    let last_before_restart = store.reader().last_index().unwrap();
    raft.shutdown().await.unwrap();
    drop(raft);
    store.shutdown().await.unwrap();
    drop(store);

    let store = TestStore::open(cfg).await.unwrap();
    assert_eq!(store.reader().last_index(), Some(last_before_restart));
    assert_eq!(bodies_in_log(&store), ["a", "b", "c"]);
    let sm = TestStateMachine::default();
    let raft = start_single_voter(7, default_config("test"), store.clone(), sm.clone())
        .await
        .unwrap();
    // No second membership entry: the group was not initialized again.
    let memberships = store
        .reader()
        .entries(..)
        .unwrap()
        .iter()
        .filter(|e| matches!(e.payload, EntryPayload::Membership(_)))
        .count();
    assert_eq!(memberships, 1);
    let resp = raft.client_write("d".to_string()).await.unwrap();
    assert_eq!(resp.data, "ok:d");
    assert_eq!(bodies_in_log(&store), ["a", "b", "c", "d"]);
    // The fresh in-memory state machine was rebuilt from the log.
    assert_eq!(sm.values(), ["a", "b", "c", "d"]);
    raft.shutdown().await.unwrap();
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_peers_refuses_every_rpc() {
    use openraft::network::RPCOption;
    use std::time::Duration;

    let mut factory = NoPeers::<Vec<u8>>::new();
    let mut conn = RaftNetworkFactory::<TestConfig>::new_client(
        &mut factory,
        2,
        &openraft::impls::BasicNode::default(),
    )
    .await;
    let vote = openraft::Vote::new(1, 1);
    let rpc = VoteRequest::<TestConfig>::new(vote, None);
    let err =
        RaftNetworkV2::<TestConfig>::vote(&mut conn, rpc, RPCOption::new(Duration::from_secs(1)))
            .await
            .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    assert!(err.to_string().contains("node 2"));
}
