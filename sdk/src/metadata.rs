//! Request metadata: the `x-mq-*` headers every call carries and the optional
//! `MQv2-HMAC-SHA1` signature, attached by a tonic interceptor.

use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;

use crate::config::{ClientConfig, Credentials};
use crate::error::{Error, Result};

/// Language reported in `x-mq-language`.
pub(crate) const LANGUAGE: &str = "RUST";
/// This crate's version, reported in `x-mq-client-version` and the Settings user agent.
pub(crate) const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");
const PROTOCOL: &str = "v2";

/// Adds the RocketMQ headers (and, with credentials, the `MQv2-HMAC-SHA1` signature) to every
/// outgoing call: a tonic interceptor, also for other services of the same server (Vela's
/// admin service).
#[derive(Clone, Debug)]
pub struct RequestSigner {
    client_id: AsciiMetadataValue,
    namespace: Option<AsciiMetadataValue>,
    credentials: Option<Credentials>,
}

impl RequestSigner {
    /// Headers for `config` (namespace, credentials), identifying the caller as `client_id`.
    pub fn new(config: &ClientConfig, client_id: &str) -> Result<Self> {
        let ascii = |what: &str, value: &str| {
            value.parse::<AsciiMetadataValue>().map_err(|_| {
                Error::InvalidArgument(format!("{what} {value:?} is not a valid header value"))
            })
        };
        Ok(RequestSigner {
            client_id: ascii("client id", client_id)?,
            namespace: if config.namespace.is_empty() {
                None
            } else {
                Some(ascii("namespace", &config.namespace)?)
            },
            credentials: config.credentials.clone(),
        })
    }

    fn fill(&self, metadata: &mut MetadataMap, now: SystemTime) -> Result<(), tonic::Status> {
        let value = |s: &str| {
            s.parse::<AsciiMetadataValue>()
                .map_err(|_| tonic::Status::internal(format!("bad header value {s:?}")))
        };
        let date_time = format_date_time(now);
        metadata.insert("x-mq-client-id", self.client_id.clone());
        metadata.insert("x-mq-language", AsciiMetadataValue::from_static(LANGUAGE));
        metadata.insert(
            "x-mq-client-version",
            AsciiMetadataValue::from_static(CLIENT_VERSION),
        );
        metadata.insert("x-mq-protocol", AsciiMetadataValue::from_static(PROTOCOL));
        metadata.insert("x-mq-request-id", value(&random_request_id())?);
        if let Some(ns) = &self.namespace {
            metadata.insert("x-mq-namespace", ns.clone());
        }
        if let Some(c) = &self.credentials {
            metadata.insert("authorization", value(&authorization(c, &date_time))?);
        }
        metadata.insert("x-mq-date-time", value(&date_time)?);
        Ok(())
    }
}

impl Interceptor for RequestSigner {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.fill(request.metadata_mut(), SystemTime::now())?;
        Ok(request)
    }
}

/// `yyyyMMddTHHmmssZ` in UTC, the format the Java and Node clients sign.
pub(crate) fn format_date_time(now: SystemTime) -> String {
    // RFC 3339 `2026-11-21T06:55:23Z` minus its separators.
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// The `authorization` header value: HMAC-SHA1 of the date string, lower-case hex.
pub(crate) fn authorization(credentials: &Credentials, date_time: &str) -> String {
    format!(
        "MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature={}",
        credentials.access_key,
        sign(&credentials.secret_key, date_time)
    )
}

fn sign(secret_key: &str, date_time: &str) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(date_time.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A random UUID-v4-shaped request id.
fn random_request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn date_time_is_compact_utc() {
        // 2026-11-21T06:55:23Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_244_123);
        assert_eq!(format_date_time(t), "20261121T065523Z");
    }

    #[test]
    fn signature_is_lower_hex_hmac_sha1_of_the_date() {
        // RFC 2202 test case 2: HMAC-SHA1(key "Jefe", "what do ya want for nothing?").
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let c = Credentials {
            access_key: "myAK".into(),
            secret_key: "Jefe".into(),
        };
        assert_eq!(
            authorization(&c, "what do ya want for nothing?"),
            "MQv2-HMAC-SHA1 Credential=myAK, SignedHeaders=x-mq-date-time, \
             Signature=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn headers_are_complete_and_signed() {
        let config = ClientConfig::builder()
            .endpoint("127.0.0.1:1")
            .namespace("tenant")
            .credentials("myAK", "mySecret")
            .build()
            .unwrap();
        let signer = RequestSigner::new(&config, "host@1#0").unwrap();
        let mut md = MetadataMap::new();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_244_123);
        signer.fill(&mut md, now).unwrap();
        let get = |k: &str| md.get(k).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("x-mq-client-id"), "host@1#0");
        assert_eq!(get("x-mq-language"), "RUST");
        assert_eq!(get("x-mq-protocol"), "v2");
        assert_eq!(get("x-mq-client-version"), CLIENT_VERSION);
        assert_eq!(get("x-mq-namespace"), "tenant");
        assert_eq!(get("x-mq-date-time"), "20261121T065523Z");
        assert_eq!(get("x-mq-request-id").len(), 36);
        let expected_sig = sign("mySecret", "20261121T065523Z");
        assert_eq!(
            get("authorization"),
            format!(
                "MQv2-HMAC-SHA1 Credential=myAK, SignedHeaders=x-mq-date-time, Signature={expected_sig}"
            )
        );
        assert!(
            expected_sig
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn no_namespace_or_authorization_unless_configured() {
        let config = ClientConfig::builder()
            .endpoint("127.0.0.1:1")
            .build()
            .unwrap();
        let signer = RequestSigner::new(&config, "host@1#0").unwrap();
        let mut md = MetadataMap::new();
        signer.fill(&mut md, SystemTime::now()).unwrap();
        assert!(md.get("x-mq-namespace").is_none());
        assert!(md.get("authorization").is_none());
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(random_request_id(), random_request_id());
    }
}
