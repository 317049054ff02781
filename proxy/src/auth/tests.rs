//! The guard's cache of verified signatures: a repeated header costs no HMAC, and nothing it
//! remembers lets through what a full check would refuse.

use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use vela_proto::ControllerApi;
use vela_proto::auth::{Password, User, UserName, UserStatus, UserType, UserUpdate};
use vela_proto::clock::Clock;

use super::*;
use crate::tests::fakes::FakeController;

/// 2026-11-21T06:55:23Z and its compact form, as the Python and Node clients send it.
const NOW_MS: i64 = 1_795_244_123_000;
const DATE: &str = "20261121T065523Z";
const LATER_DATE: &str = "20261121T065524Z";

#[derive(Debug)]
struct Fixed;

impl Clock for Fixed {
    fn now_ms(&self) -> i64 {
        NOW_MS
    }
}

fn signed(user: &str, secret: &str, date: &str) -> RequestMeta {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(date.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    RequestMeta {
        authorization: Some(format!(
            "MQv2-HMAC-SHA1 Credential={user}, SignedHeaders=x-mq-date-time, Signature={signature}"
        )),
        date_time: Some(date.to_owned()),
        ..RequestMeta::default()
    }
}

async fn guard_with_alice() -> (Guard, Arc<FakeController>) {
    let controller = Arc::new(FakeController::default());
    controller
        .create_user(User {
            name: UserName::new("alice").expect("name"),
            password: Password::new("first-secret").expect("password"),
            user_type: UserType::Super,
            status: UserStatus::Enabled,
        })
        .await
        .expect("user");
    let config = AuthConfig {
        enabled: true,
        ..AuthConfig::default()
    };
    let guard = Guard::new(
        &config,
        controller.clone(),
        Arc::new(Fixed),
        Arc::new(crate::metrics::AuthDecisions::default()),
    );
    (guard, controller)
}

#[tokio::test]
async fn a_repeated_header_is_verified_once_and_nothing_else_rides_on_it() {
    let (guard, controller) = guard_with_alice().await;
    let meta = signed("alice", "first-secret", DATE);
    for _ in 0..3 {
        guard.check(&meta, &[]).await.expect("allowed");
    }
    assert_eq!(guard.verified.computed(), 1, "one HMAC for three requests");

    // The same header with another date (a replay of a captured header) is checked in full.
    let mut replayed = meta.clone();
    replayed.date_time = Some(LATER_DATE.to_owned());
    assert!(matches!(
        guard.check(&replayed, &[]).await,
        Err(AuthFailure::Unauthenticated(_))
    ));
    assert_eq!(guard.verified.computed(), 2);
    // A wrong secret is never remembered.
    let wrong = signed("alice", "not-the-secret", DATE);
    for _ in 0..2 {
        assert!(guard.check(&wrong, &[]).await.is_err());
    }
    assert_eq!(guard.verified.computed(), 4);

    // A new password: the header verified with the old one no longer passes.
    controller
        .update_user(
            &UserName::new("alice").expect("name"),
            UserUpdate {
                password: Some(Password::new("second-secret").expect("password")),
                user_type: None,
                status: None,
            },
        )
        .await
        .expect("updated");
    guard.invalidate();
    assert!(matches!(
        guard.check(&meta, &[]).await,
        Err(AuthFailure::Unauthenticated(_))
    ));
    guard
        .check(&signed("alice", "second-secret", DATE), &[])
        .await
        .expect("the new secret");

    // A disabled user is refused even with a header verified before.
    let fresh = signed("alice", "second-secret", DATE);
    controller
        .update_user(
            &UserName::new("alice").expect("name"),
            UserUpdate {
                password: None,
                user_type: None,
                status: Some(UserStatus::Disabled),
            },
        )
        .await
        .expect("disabled");
    guard.invalidate();
    assert!(matches!(
        guard.check(&fresh, &[]).await,
        Err(AuthFailure::Unauthenticated(m)) if m.contains("disabled")
    ));
}

/// `cargo nextest run -p vela-proxy --release --run-ignored only signature_check_cost
/// --no-capture`: the cost of one check with the header verified before, against one HMAC.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn signature_check_cost() {
    let (guard, _) = guard_with_alice().await;
    let meta = signed("alice", "first-secret", DATE);
    const N: u32 = 200_000;
    let started = Instant::now();
    for _ in 0..N {
        guard.check(&meta, &[]).await.expect("allowed");
    }
    let hit = started.elapsed() / N;
    let signature = {
        let parsed = signature::parse_authorization(meta.authorization.as_deref().expect("set"))
            .expect("parses");
        parsed.signature
    };
    let started = Instant::now();
    for _ in 0..N {
        assert!(signature::signature_matches(
            "first-secret",
            std::hint::black_box(DATE),
            &signature
        ));
    }
    let hmac = started.elapsed() / N;
    eprintln!("check with a verified header: {hit:?}; one HMAC-SHA1 verification: {hmac:?}");
}
