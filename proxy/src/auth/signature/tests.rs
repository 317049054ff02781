use proptest::prelude::*;

use super::*;

/// HMAC-SHA1(key = "mySecret", message = "20261121T065523Z"), computed once with Python's
/// `hmac` module.
const KNOWN_HEX: &str = "cd12d85ad818ed06ec0913462f0c1c32339fb750";
const KNOWN_DATE: &str = "20261121T065523Z";
/// 2026-11-21T06:55:23Z in Unix milliseconds, computed with Python's `datetime`.
const KNOWN_MS: i64 = 1_795_244_123_000;
/// 2026-11-21T06:59:01Z in Unix milliseconds.
const LATER_MS: i64 = 1_795_244_341_000;

const MINUTE: i64 = 60 * 1000;
const HOUR: i64 = 60 * MINUTE;
const WINDOW: i64 = 15 * MINUTE;
const NOW: i64 = KNOWN_MS;

fn header(credential: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={credential}, SignedHeaders=x-mq-date-time, Signature={signature}"
    )
}

fn known_signature() -> [u8; 20] {
    let mut bytes = [0; 20];
    hex::decode_to_slice(KNOWN_HEX, &mut bytes).expect("valid hex");
    bytes
}

/// The signature a client computes, independently of `signature_matches`.
fn sign(secret: &str, date_time: &str) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(date_time.as_bytes());
    mac.finalize().into_bytes().into()
}

// --- signature ---

#[test]
fn known_vector_verifies_in_either_hex_case() {
    for hex in [KNOWN_HEX.to_owned(), KNOWN_HEX.to_uppercase()] {
        let parsed = parse_authorization(&header("myAK", &hex)).expect("parses");
        assert!(signature_matches("mySecret", KNOWN_DATE, &parsed.signature));
    }
}

#[test]
fn known_vector_is_what_a_client_computes() {
    assert_eq!(sign("mySecret", KNOWN_DATE), known_signature());
}

#[test]
fn wrong_secret_fails() {
    assert!(!signature_matches(
        "mySecreT",
        KNOWN_DATE,
        &known_signature()
    ));
    assert!(!signature_matches("", KNOWN_DATE, &known_signature()));
}

#[test]
fn different_date_fails() {
    assert!(!signature_matches(
        "mySecret",
        "20261121T065524Z",
        &known_signature()
    ));
    assert!(!signature_matches("mySecret", "", &known_signature()));
}

// --- authorization header ---

#[test]
fn parses_the_python_header() {
    let parsed = parse_authorization(&header("myAK", KNOWN_HEX)).expect("parses");
    assert_eq!(parsed.access_key, "myAK");
    assert_eq!(parsed.signature, known_signature());
}

#[test]
fn parses_the_node_upper_case_header() {
    let parsed = parse_authorization(&header("myAK", &KNOWN_HEX.to_uppercase())).expect("parses");
    assert_eq!(parsed.signature, known_signature());
}

#[test]
fn credential_scope_after_a_slash_is_ignored() {
    let parsed = parse_authorization(&header("myAK/20261121/rocketmq", KNOWN_HEX)).expect("parses");
    assert_eq!(parsed.access_key, "myAK");
}

#[test]
fn tolerates_extra_spaces_and_any_item_order() {
    let value = format!(
        "  {ALGORITHM}   Signature = {KNOWN_HEX} ,Credential= myAK ,  SignedHeaders=X-MQ-Date-Time  "
    );
    let parsed = parse_authorization(&value).expect("parses");
    assert_eq!(parsed.access_key, "myAK");
    assert_eq!(parsed.signature, known_signature());
}

#[test]
fn signed_headers_may_be_left_out() {
    let value = format!("{ALGORITHM} Credential=myAK, Signature={KNOWN_HEX}");
    assert!(parse_authorization(&value).is_ok());
}

#[test]
fn other_signed_headers_are_refused() {
    let value = format!("{ALGORITHM} Credential=myAK, SignedHeaders=host, Signature={KNOWN_HEX}");
    assert_eq!(
        parse_authorization(&value),
        Err(SignatureError::UnsupportedSignedHeaders)
    );
}

#[test]
fn missing_or_empty_credential_is_refused() {
    // Python sends an empty Credential when no access key is configured.
    for value in [
        header("", KNOWN_HEX),
        header("/scope", KNOWN_HEX),
        format!("{ALGORITHM} SignedHeaders=x-mq-date-time, Signature={KNOWN_HEX}"),
    ] {
        assert_eq!(
            parse_authorization(&value),
            Err(SignatureError::MissingCredential),
            "{value}"
        );
    }
}

#[test]
fn missing_or_empty_signature_is_refused() {
    for value in [
        header("myAK", ""),
        format!("{ALGORITHM} Credential=myAK, SignedHeaders=x-mq-date-time"),
        format!("{ALGORITHM} Credential=myAK"),
    ] {
        assert_eq!(
            parse_authorization(&value),
            Err(SignatureError::MissingSignature),
            "{value}"
        );
    }
}

#[test]
fn nothing_after_the_algorithm_is_refused() {
    assert_eq!(
        parse_authorization(ALGORITHM),
        Err(SignatureError::MissingCredential)
    );
}

#[test]
fn other_algorithms_are_refused() {
    for value in [
        "".to_owned(),
        "Bearer abc".to_owned(),
        header("myAK", KNOWN_HEX).replace(ALGORITHM, "MQv2-HMAC-SHA256"),
        header("myAK", KNOWN_HEX).to_lowercase(),
        format!("{ALGORITHM}Credential=myAK, Signature={KNOWN_HEX}"),
    ] {
        assert_eq!(
            parse_authorization(&value),
            Err(SignatureError::UnsupportedAlgorithm),
            "{value}"
        );
    }
}

#[test]
fn bad_hex_or_length_is_refused() {
    let nineteen = &KNOWN_HEX[..38];
    let twenty_one = format!("{KNOWN_HEX}00");
    let odd = &KNOWN_HEX[..39];
    let not_hex = KNOWN_HEX.replace('c', "g");
    for signature in [nineteen, &twenty_one, odd, &not_hex, "zz"] {
        assert_eq!(
            parse_authorization(&header("myAK", signature)),
            Err(SignatureError::MalformedSignature),
            "{signature}"
        );
    }
}

#[test]
fn error_messages_do_not_quote_the_signature() {
    let message = parse_authorization(&header("myAK", &KNOWN_HEX[..38]))
        .expect_err("too short")
        .to_string();
    assert!(!message.contains(&KNOWN_HEX[..38]), "{message}");
}

// --- x-mq-date-time ---

#[test]
fn parses_the_compact_form() {
    assert_eq!(parse_date_time(KNOWN_DATE), Ok(KNOWN_MS));
}

#[test]
fn parses_rfc3339_with_z_and_nanoseconds() {
    assert_eq!(parse_date_time("2026-11-21T06:55:23Z"), Ok(KNOWN_MS));
    assert_eq!(
        parse_date_time("2026-11-21T06:59:01.123456789Z"),
        Ok(LATER_MS + 123)
    );
}

#[test]
fn rfc3339_offsets_name_the_same_instant() {
    for value in [
        "2026-11-21T06:59:01.123456789Z",
        "2026-11-21T14:59:01.123456789+08:00",
        "2026-11-20T23:59:01.123456789-07:00",
        "2026-11-21T12:44:01.123456789+05:45",
    ] {
        assert_eq!(parse_date_time(value), Ok(LATER_MS + 123), "{value}");
    }
}

#[test]
fn invalid_dates_are_refused() {
    let long = "2".repeat(10_000);
    let long_rfc3339 = format!("2026-11-21T06:59:01.{}Z", "1".repeat(100));
    for value in [
        "",
        "garbage",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21",
        "2026-11-21T06:59:01",
        "20261321T065523Z",
        "20261121T065523",
        "20261121 065523Z",
        "2026112lT065523Z",
        "+2026121T065523Z",
        "20261121T0655é3Z",
        &long,
        &long_rfc3339,
    ] {
        assert!(
            matches!(
                parse_date_time(value),
                Err(SignatureError::MalformedDateTime(_))
            ),
            "{value}"
        );
    }
}

#[test]
fn a_refused_date_is_quoted_short() {
    let long = "x".repeat(10_000);
    let message = parse_date_time(&long).expect_err("garbage").to_string();
    assert!(message.len() < 200, "{message}");
}

// --- freshness ---

#[test]
fn inside_the_window_either_way_is_fresh() {
    for off in [0, 14 * MINUTE, -14 * MINUTE, WINDOW, -WINDOW] {
        for zone_skew in [false, true] {
            assert_eq!(
                check_freshness(NOW + off, NOW, WINDOW, zone_skew),
                Ok(()),
                "{off}"
            );
        }
    }
}

#[test]
fn outside_the_window_either_way_is_stale() {
    for off in [WINDOW + 1, -WINDOW - 1, 20 * MINUTE, -HOUR] {
        assert!(
            check_freshness(NOW + off, NOW, WINDOW, false).is_err(),
            "{off}"
        );
    }
}

#[test]
fn stale_error_says_how_far_off() {
    let ahead = check_freshness(NOW + 20 * MINUTE, NOW, WINDOW, false).expect_err("stale");
    assert_eq!(
        ahead.to_string(),
        "signed 20m ahead of the server's clock; the window is ±15m"
    );
    let behind = check_freshness(NOW - HOUR - 5_500, NOW, WINDOW, false).expect_err("stale");
    assert_eq!(
        behind.to_string(),
        "signed 1h5s behind the server's clock; the window is ±15m"
    );
}

#[test]
fn python_zone_offsets_are_fresh_only_with_zone_skew() {
    // Asia/Shanghai, America/Los_Angeles (winter and summer), and a little clock drift.
    for off in [
        8 * HOUR,
        -8 * HOUR,
        -7 * HOUR,
        8 * HOUR + 3 * MINUTE,
        -7 * HOUR - 2 * MINUTE,
    ] {
        assert_eq!(
            check_freshness(NOW + off, NOW, WINDOW, true),
            Ok(()),
            "{off}"
        );
        assert!(
            check_freshness(NOW + off, NOW, WINDOW, false).is_err(),
            "{off}"
        );
    }
}

#[test]
fn quarter_hour_zones_are_fresh_with_zone_skew() {
    // Asia/Kathmandu is UTC+5:45; a one-minute window shows the offset itself is allowed.
    let nepal = 5 * HOUR + 45 * MINUTE;
    assert_eq!(check_freshness(NOW + nepal, NOW, MINUTE, true), Ok(()));
    assert_eq!(
        check_freshness(NOW + nepal + 30_000, NOW, MINUTE, true),
        Ok(())
    );
    assert!(check_freshness(NOW + nepal + 5 * MINUTE, NOW, MINUTE, true).is_err());
}

#[test]
fn beyond_fourteen_hours_is_stale_even_with_zone_skew() {
    for off in [15 * HOUR, -15 * HOUR, 14 * HOUR + 16 * MINUTE] {
        let err = check_freshness(NOW + off, NOW, WINDOW, true).expect_err("stale");
        assert!(err.to_string().contains("time-zone offset"), "{err}");
    }
    assert_eq!(check_freshness(NOW + 14 * HOUR, NOW, WINDOW, true), Ok(()));
    assert_eq!(check_freshness(NOW - 14 * HOUR, NOW, WINDOW, true), Ok(()));
}

#[test]
fn extremes_do_not_panic() {
    let values = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    for signed in values {
        for now in values {
            for window in values {
                for zone_skew in [false, true] {
                    let result = check_freshness(signed, now, window, zone_skew);
                    if let Err(err) = result {
                        let _ = err.to_string();
                    }
                }
            }
        }
    }
    assert!(check_freshness(i64::MAX, i64::MIN, WINDOW, true).is_err());
    assert!(check_freshness(i64::MIN, i64::MAX, WINDOW, true).is_err());
    assert!(check_freshness(i64::MIN, i64::MAX, i64::MAX, false).is_err());
    assert!(check_freshness(1, 0, -5, false).is_err());
}

proptest! {
    #[test]
    fn parse_authorization_never_panics(value in any::<String>()) {
        let _ = parse_authorization(&value);
    }

    #[test]
    fn parse_authorization_of_header_like_strings_never_panics(
        value in "MQv2-HMAC-SHA1 [ ,=/a-zA-Z0-9é]{0,80}"
    ) {
        let _ = parse_authorization(&value);
    }

    #[test]
    fn parse_date_time_never_panics(value in any::<String>()) {
        let _ = parse_date_time(&value);
    }

    #[test]
    fn parse_date_time_of_date_like_strings_never_panics(value in "[0-9T:Z+.é-]{0,40}") {
        let _ = parse_date_time(&value);
    }

    #[test]
    fn a_fresh_signature_verifies(secret in any::<String>(), date in any::<String>()) {
        let signature = sign(&secret, &date);
        for hex in [hex::encode(signature), hex::encode_upper(signature)] {
            let parsed = parse_authorization(&header("ak", &hex)).expect("parses");
            prop_assert!(signature_matches(&secret, &date, &parsed.signature));
        }
    }
}
