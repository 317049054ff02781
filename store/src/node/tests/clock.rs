//! A store whose wall clock went back (NTP stepping it, or leadership passing to a node whose
//! clock is behind): time in the state never runs backwards, and the node plans receives at
//! the state's time, so what the state already counts as due is not held back.

use super::*;

#[tokio::test]
async fn a_clock_gone_back_still_redelivers_what_the_state_counts_as_expired() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    store
        .append(append(vec![message("a")]))
        .await
        .expect("appends");
    let first = store.pop(pop(1, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&first), vec!["a"]);
    // Past a's invisibility, a send carries the state's time on; then the clock steps back.
    clock.advance(Duration::from_secs(31));
    store
        .append(append(vec![message("b")]))
        .await
        .expect("appends");
    clock.rewind(Duration::from_secs(3600));
    let again = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(
        bodies(&again),
        vec!["a", "b"],
        "a is redelivered: its deadline passed in the state's time"
    );
    assert_eq!(again[0].attempt, 2);
    store.shutdown().await.expect("shuts down");
}
