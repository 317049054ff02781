//! A proxy renewing a push consumer's delivery through the store RPC (`RenewInvisible`): the
//! delivery keeps its id, so the handle the consumer holds still acks it; what was not renewed
//! comes back at the end of its invisibility, and a renewal of a delivery that is no longer
//! current is refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_through_a_proxy_keeps_the_handle_and_the_message_invisible() {
    let (clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 1, shared).await;
    cluster.current_apply_version().await;
    let leader = cluster.leader().await;
    let store = cluster.node(leader);
    for body in ["renewed", "left"] {
        store
            .append(append(vec![message(body)]))
            .await
            .expect("the leader appends");
    }
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("receives");
    assert_eq!(got.len(), 2);
    let (renewed, left) = (&got[0].ticket, &got[1].ticket);

    let remote = cluster.remote_store();
    clock.advance(Duration::from_secs(20));
    let after = remote
        .renew_invisible(renewed, Duration::from_secs(60))
        .await
        .expect("renews");
    assert_eq!(
        after.delivery_id, renewed.delivery_id,
        "the handle stays valid"
    );
    assert!(
        after.visible_at_ms >= renewed.visible_at_ms + 50_000,
        "{after:?}"
    );

    // Past the first 30 s: only the message that was not renewed comes back.
    clock.advance(Duration::from_secs(15));
    let again = store.pop(pop(32, Duration::ZERO)).await.expect("receives");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].ticket.offset, left.offset);
    // Its old delivery is no longer current: neither renewed nor acked.
    assert!(matches!(
        remote.renew_invisible(left, Duration::from_secs(60)).await,
        Err(StoreError::StaleReceipt(_))
    ));
    // The renewed one is acked with the handle it was first delivered with.
    remote.ack(renewed).await.expect("the original ticket acks");
    remote.ack(&again[0].ticket).await.expect("acks");
    clock.advance(Duration::from_secs(120));
    assert!(
        store
            .pop(pop(32, Duration::ZERO))
            .await
            .expect("receives")
            .is_empty()
    );
}
