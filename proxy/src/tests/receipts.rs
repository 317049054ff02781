//! Receipt handles with managed keys (ADR 0030): nothing is signed before the keys are known;
//! after a rotation on one proxy, another verifies the new handles by fetching the keys at
//! once, and every proxy still verifies what the old key signed.

use std::collections::BTreeMap;

use super::*;
use crate::receipts::Receipts;
use vela_proto::receipt::ReceiptTicket;

fn ticket(offset: u64) -> ReceiptTicket {
    ReceiptTicket {
        shard: 0,
        group: GroupName::new("g").expect("group"),
        topic: TopicName::new("t").expect("topic"),
        queue_id: 0,
        offset,
        delivery_id: 1,
        visible_at_ms: 2,
    }
}

#[tokio::test]
async fn proxies_follow_rotations_of_the_managed_keys() {
    let controller = FakeController::default();
    let a = Receipts::new(ConfiguredKeys::default());
    let b = Receipts::new(ConfiguredKeys::default());
    assert!(a.encode(&ticket(1)).is_err(), "nothing to sign with yet");
    a.fetch(&controller, false).await.expect("fetch");
    let old = a.encode(&ticket(1)).expect("signed");
    // b has not fetched yet (an ack right after it started): it fetches to verify.
    assert_eq!(
        b.decode(&controller, &old).await.expect("verifies"),
        ticket(1)
    );

    // Proxy a learns of a rotation first; b fetches when it meets the new key.
    controller.rotate_receipt_key().await.expect("rotate");
    a.fetch(&controller, false).await.expect("fetch");
    let new = a.encode(&ticket(2)).expect("signed");
    assert_eq!(
        b.decode(&controller, &new).await.expect("verifies"),
        ticket(2)
    );
    assert_eq!(
        b.decode(&controller, &old).await.expect("still verifies"),
        ticket(1)
    );
    assert_eq!(
        b.encode(&ticket(3))
            .and_then(|h| { a.current_codec().decode(&h).map_err(Into::into) })
            .expect("b signs with the new key too"),
        ticket(3)
    );

    // A handle naming a key no one has is refused as an invalid handle, not an outage.
    let unknown = vela_proto::receipt::ReceiptCodec::with_keys(
        BTreeMap::from([(vela_proto::receipt_keys::MANAGED_KEY_BASE + 99, vec![7; 32])]),
        vela_proto::receipt_keys::MANAGED_KEY_BASE + 99,
    )
    .expect("codec")
    .encode(&ticket(4));
    let err = b
        .decode(&controller, &unknown)
        .await
        .expect_err("unknown key");
    assert_eq!(err.code, Code::InvalidReceiptHandle, "{err:?}");

    // Key files keep signing when a config gives them; managed handles still verify.
    let files = Receipts::new(ConfiguredKeys {
        keys: BTreeMap::from([(0, b"file-key-0123456789".to_vec())]),
        signing: None,
        verify_only: false,
    });
    let from_file = files.encode(&ticket(5)).expect("signs before any fetch");
    assert_eq!(
        files.decode(&controller, &new).await.expect("fetched"),
        ticket(2)
    );
    assert!(
        a.decode(&controller, &from_file).await.is_err(),
        "a has no key file"
    );
    assert_eq!(
        files.decode(&controller, &from_file).await.expect("own"),
        ticket(5)
    );
}
