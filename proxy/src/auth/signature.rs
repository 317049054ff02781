//! The `MQv2-HMAC-SHA1` request signature (protocol.md §5.2).
//!
//! A signed request carries two headers:
//!
//! ```text
//! authorization: MQv2-HMAC-SHA1 Credential=<AccessKey>, SignedHeaders=x-mq-date-time, Signature=<hex>
//! x-mq-date-time: <D>
//! ```
//!
//! where `<hex>` is the HMAC-SHA1 of `<D>` keyed with the user's secret key, in either hex case.
//! A signature only counts when `<D>` is close enough to the server's clock ([`check_freshness`]).

use chrono::{DateTime, NaiveDate};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The only signature algorithm accepted, the first word of the `authorization` header.
pub(crate) const ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// The only header a signature may cover.
const SIGNED_HEADER: &str = "x-mq-date-time";
/// The length of an HMAC-SHA1, in bytes.
const SIGNATURE_LEN: usize = 20;
/// No date format we accept is longer than this; longer values are refused unparsed.
const MAX_DATE_TIME_LEN: usize = 64;
/// How much of a refused date is quoted back in the error.
const QUOTED_DATE_TIME_CHARS: usize = 40;
/// Time zones are whole quarter hours away from UTC.
const ZONE_STEP_MS: i64 = 15 * 60 * 1000;
/// The farthest time zones are 14 hours (56 quarter hours) away from UTC.
const MAX_ZONE_STEPS: i64 = 56;

/// What a parsed `authorization` header names: who signed, and the signature to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    /// The access key (user name), the part of `Credential` before any `/`.
    pub access_key: String,
    /// The HMAC-SHA1 of the `x-mq-date-time` header value.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a signature cannot be accepted. The messages never quote a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// The header does not start with [`ALGORITHM`].
    #[error("the authorization header is not {ALGORITHM}: it must start with \"{ALGORITHM} \"")]
    UnsupportedAlgorithm,
    /// No `Credential`, or an empty one.
    #[error(
        "the authorization header has no access key (Credential=): configure the client with an access key and a secret key"
    )]
    MissingCredential,
    /// No `Signature`, or an empty one.
    #[error("the authorization header has no Signature=")]
    MissingSignature,
    /// `SignedHeaders` names something else than `x-mq-date-time`.
    #[error(
        "the authorization header may only sign {SIGNED_HEADER} (SignedHeaders={SIGNED_HEADER})"
    )]
    UnsupportedSignedHeaders,
    /// `Signature` is not the hex of 20 bytes.
    #[error("the authorization header's Signature is not 40 hex digits (an HMAC-SHA1)")]
    MalformedSignature,
    /// The `x-mq-date-time` value is in neither accepted format (holds the start of it).
    #[error(
        "x-mq-date-time {0:?} is neither yyyyMMdd'T'HHmmss'Z' (like 20261121T065523Z) nor RFC 3339"
    )]
    MalformedDateTime(String),
    /// The signed time is too far from the server's clock.
    #[error(
        "signed {} {} the server's clock; the window is ±{}{}",
        human_ms(*off_ms),
        if *ahead { "ahead of" } else { "behind" },
        human_ms(*window_ms),
        if *zone_skew { " around any time-zone offset up to ±14h" } else { "" }
    )]
    Stale {
        /// How far off the signed time is, in milliseconds.
        off_ms: u64,
        /// Whether the signed time is later than the server's.
        ahead: bool,
        /// The accepted distance, in milliseconds.
        window_ms: u64,
        /// Whether a whole time-zone offset was allowed for.
        zone_skew: bool,
    },
}

/// Parses an `authorization` header value the way the Java server does: the algorithm up to the
/// first space, then `,`-separated `key=value` items, trimmed. Unknown keys are ignored.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization, SignatureError> {
    let (algorithm, items) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(SignatureError::UnsupportedAlgorithm);
    }
    let mut credential = None;
    let mut signature = None;
    for (key, item) in items.split(',').filter_map(|item| item.split_once('=')) {
        match key.trim() {
            "Credential" => credential = Some(item.trim()),
            "Signature" => signature = Some(item.trim()),
            "SignedHeaders" if !item.trim().eq_ignore_ascii_case(SIGNED_HEADER) => {
                return Err(SignatureError::UnsupportedSignedHeaders);
            }
            _ => {}
        }
    }
    Ok(Authorization {
        access_key: access_key(credential)?,
        signature: decode_signature(signature)?,
    })
}

/// The access key of a `Credential` value: the part before the first `/`, not empty.
fn access_key(credential: Option<&str>) -> Result<String, SignatureError> {
    let credential = credential.unwrap_or_default();
    let key = credential.split('/').next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(SignatureError::MissingCredential);
    }
    Ok(key.to_owned())
}

/// The bytes of a `Signature` value: 40 hex digits of either case.
fn decode_signature(signature: Option<&str>) -> Result<[u8; SIGNATURE_LEN], SignatureError> {
    let hex = signature
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::MissingSignature)?;
    let mut bytes = [0; SIGNATURE_LEN];
    hex::decode_to_slice(hex, &mut bytes).map_err(|_| SignatureError::MalformedSignature)?;
    Ok(bytes)
}

/// Parses an `x-mq-date-time` value into Unix milliseconds. Accepts the compact UTC form the
/// Python and Node clients send (`20261121T065523Z`) and RFC 3339 with any fraction and offset,
/// as the Rust client sends (`2026-11-21T14:59:01.123456789+08:00`).
pub(crate) fn parse_date_time(value: &str) -> Result<i64, SignatureError> {
    let parsed = if value.len() > MAX_DATE_TIME_LEN {
        None
    } else {
        parse_compact(value).or_else(|| {
            DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| t.timestamp_millis())
        })
    };
    parsed.ok_or_else(|| {
        SignatureError::MalformedDateTime(value.chars().take(QUOTED_DATE_TIME_CHARS).collect())
    })
}

/// Parses `yyyyMMdd'T'HHmmss'Z'` into Unix milliseconds, `None` when it is not that.
fn parse_compact(value: &str) -> Option<i64> {
    let bytes = value.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let field = |range: std::ops::Range<usize>| digits(bytes.get(range)?);
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(field(0..4)?).ok()?,
        field(4..6)?,
        field(6..8)?,
    )?;
    let time = date.and_hms_opt(field(9..11)?, field(11..13)?, field(13..15)?)?;
    Some(time.and_utc().timestamp_millis())
}

/// The value of a few ASCII decimal digits, `None` if any byte is not one.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// Whether `signature` is the HMAC-SHA1 of `date_time` keyed with `secret`, compared in
/// constant time.
pub(crate) fn signature_matches(
    secret: &str,
    date_time: &str,
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    // HMAC takes keys of any length, so this never fails.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(date_time.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// Accepts a signed time within `window_ms` of the server's `now_ms`, either way. With
/// `zone_skew` (clients that sign their local time as if it were UTC), within `window_ms` of
/// `now_ms` shifted by any whole quarter-hour time-zone offset up to ±14 hours.
pub(crate) fn check_freshness(
    signed_ms: i64,
    now_ms: i64,
    window_ms: i64,
    zone_skew: bool,
) -> Result<(), SignatureError> {
    let off = signed_ms.saturating_sub(now_ms);
    let residual = if zone_skew {
        off.saturating_sub(nearest_zone_steps(off) * ZONE_STEP_MS)
    } else {
        off
    };
    let window = window_ms.max(0).unsigned_abs();
    if residual.unsigned_abs() <= window {
        return Ok(());
    }
    Err(SignatureError::Stale {
        off_ms: off.unsigned_abs(),
        ahead: off > 0,
        window_ms: window,
        zone_skew,
    })
}

/// The whole number of quarter hours nearest to `off_ms`, at most ±14 hours' worth.
fn nearest_zone_steps(off_ms: i64) -> i64 {
    off_ms
        .saturating_add(ZONE_STEP_MS / 2)
        .div_euclid(ZONE_STEP_MS)
        .clamp(-MAX_ZONE_STEPS, MAX_ZONE_STEPS)
}

/// A duration for people: `250ms`, `15m`, `8h20m5s`.
fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let parts = [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A verified-fresh request signature: who it claims to be and what to check it against.
pub(crate) struct Signed {
    pub access_key: String,
    pub signature: [u8; 20],
    /// The signed `x-mq-date-time` value.
    pub date: String,
}

/// Who a request claims to be, and whether a secret key proves it.
pub(crate) trait Claim {
    fn access_key(&self) -> &str;
    fn matches(&self, secret: &str) -> bool;
}

/// A user authenticated earlier (on the same stream): nothing more to prove.
impl Claim for str {
    fn access_key(&self) -> &str {
        self
    }

    fn matches(&self, _secret: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
