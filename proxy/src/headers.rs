//! What the proxy reads from request headers (protocol.md §5.1): the client id, whether the
//! client only knows the Rust 5.0.0 code set, the namespace fallback and the gRPC deadline.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use vela_proto::pb::rocketmq::Code;

use crate::status::RpcError;

pub(crate) const CLIENT_ID: &str = "x-mq-client-id";
pub(crate) const LANGUAGE: &str = "x-mq-language";
pub(crate) const NAMESPACE: &str = "x-mq-namespace";
pub(crate) const AUTHORIZATION: &str = "authorization";
pub(crate) const DATE_TIME: &str = "x-mq-date-time";
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The per-request facts taken from headers, once.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestMeta {
    pub client_id: Option<String>,
    /// The client decodes `Status.code` with the Rust 5.0.0 enum (panics on newer codes).
    pub legacy_codes: bool,
    /// Used when a `Resource` carries no namespace (Node only sends it in the header).
    pub namespace: String,
    /// When the client gives up on this call, if it said.
    pub deadline: Option<Instant>,
    /// The `authorization` header (protocol.md §5.2), if sent.
    pub authorization: Option<String>,
    /// The signed `x-mq-date-time` header, if sent.
    pub date_time: Option<String>,
    /// The client is Python's, which signs its local time labelled as UTC (ADR 0019).
    pub signs_local_time: bool,
    /// The address the request came from, when the transport knows it.
    pub peer: Option<std::net::IpAddr>,
}

impl RequestMeta {
    /// The facts of `request`, its peer address included.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Self {
        Self {
            peer: request.remote_addr().map(|a| a.ip()),
            ..Self::from_metadata(request.metadata())
        }
    }

    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let client_id = text(CLIENT_ID)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let legacy_codes = text(LANGUAGE).is_some_and(|lang| lang.eq_ignore_ascii_case("RUST"));
        let signs_local_time =
            text(LANGUAGE).is_some_and(|lang| lang.eq_ignore_ascii_case("PYTHON"));
        let authorization = text(AUTHORIZATION).map(str::to_owned);
        let date_time = text(DATE_TIME).map(str::to_owned);
        let namespace = text(NAMESPACE).unwrap_or_default().to_owned();
        let deadline = text(GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        Self {
            client_id,
            legacy_codes,
            namespace,
            deadline,
            authorization,
            date_time,
            signs_local_time,
            peer: None,
        }
    }

    /// `CLIENT_ID_REQUIRED` when the client did not identify itself.
    pub fn require_client_id(&self) -> Result<&str, RpcError> {
        self.client_id.as_deref().ok_or_else(|| {
            RpcError::new(
                Code::ClientIdRequired,
                format!("header {CLIENT_ID} is required"),
            )
        })
    }

    /// Time left before the client's deadline (`None`: the client set no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let split = value.len() - 1;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("40S"), Some(Duration::from_secs(40)));
        assert_eq!(
            parse_grpc_timeout("7999m"),
            Some(Duration::from_millis(7999))
        );
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "S",
            "10",
            "10x",
            "-1S",
            "123456789S",
            "1.5S",
            "९S",
            "1९",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn metadata_is_read_once() {
        let mut md = MetadataMap::new();
        md.insert(CLIENT_ID, "vm@42#0".parse().expect("ascii"));
        md.insert(LANGUAGE, "RUST".parse().expect("ascii"));
        md.insert(NAMESPACE, "tenant".parse().expect("ascii"));
        md.insert(GRPC_TIMEOUT, "40S".parse().expect("ascii"));
        let meta = RequestMeta::from_metadata(&md);
        assert_eq!(meta.require_client_id(), Ok("vm@42#0"));
        assert!(meta.legacy_codes);
        assert_eq!(meta.namespace, "tenant");
        let left = meta.remaining().expect("deadline set");
        assert!(left > Duration::from_secs(39) && left <= Duration::from_secs(40));

        let bare = RequestMeta::from_metadata(&MetadataMap::new());
        assert_eq!(
            bare.require_client_id().map_err(|e| e.code),
            Err(Code::ClientIdRequired)
        );
        assert!(!bare.legacy_codes && bare.deadline.is_none() && bare.namespace.is_empty());
    }

    #[test]
    fn node_and_python_are_not_legacy() {
        for lang in ["HTTP", "PYTHON", "JAVA"] {
            let mut md = MetadataMap::new();
            md.insert(LANGUAGE, lang.parse().expect("ascii"));
            assert!(!RequestMeta::from_metadata(&md).legacy_codes, "{lang}");
        }
    }
}
