//! Routes (issue 12, ADR 0025): a topic copied from one RocketMQ 5 gRPC endpoint to another by a
//! consumer group on the source, run inside Vela. What a route is ([`RouteSpec`], validated
//! here once), what the metadata keeps ([`RouteConfig`]) and what the node running it reports
//! ([`RouteStatus`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::auth::Password;
use crate::domain::{GroupName, GroupStart, RouteName, TagFilter, TopicName};
use crate::sql::SqlFilter;

/// User properties a route sets on every copy. A message that carries
/// [`ORIGIN_CLUSTER_PROPERTY`] was written by a route and is not copied again, so routes in
/// both directions between two clusters do not loop.
pub const ORIGIN_MESSAGE_ID_PROPERTY: &str = "VELA_ORIGIN_MSG_ID";
pub const ORIGIN_TOPIC_PROPERTY: &str = "VELA_ORIGIN_TOPIC";
pub const ORIGIN_CLUSTER_PROPERTY: &str = "VELA_ORIGIN_CLUSTER";
/// The name of the route that wrote the copy.
pub const ROUTE_PROPERTY: &str = "VELA_ROUTE";

/// Longest endpoint address.
const MAX_ADDRESS_LEN: usize = 256;
/// Longest access key.
const MAX_ACCESS_KEY_LEN: usize = 256;

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, RouteError> {
    Err(RouteError(message.into()))
}

/// An access key and its secret, for a side whose server checks signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteCredentials {
    pub access_key: String,
    pub secret_key: Password,
}

impl fmt::Debug for RouteCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteCredentials({}, ***)", self.access_key)
    }
}

impl RouteCredentials {
    pub fn new(access_key: &str, secret_key: &str) -> Result<Self, RouteError> {
        if access_key.is_empty() || access_key.len() > MAX_ACCESS_KEY_LEN {
            return invalid("an access key is 1 to 256 bytes");
        }
        if access_key
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return invalid("an access key has no spaces or control characters");
        }
        let secret_key =
            Password::new(secret_key).map_err(|e| RouteError(format!("secret key: {e}")))?;
        Ok(Self {
            access_key: access_key.to_owned(),
            secret_key,
        })
    }
}

/// One side of a route: a RocketMQ 5 gRPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEndpoint {
    /// `HOST:PORT`; `None` on the source: the Vela the route runs on.
    pub address: Option<String>,
    pub tls: bool,
    pub credentials: Option<RouteCredentials>,
}

impl RouteEndpoint {
    /// The Vela the route runs on, as its own clients reach it.
    pub fn local() -> Self {
        Self {
            address: None,
            tls: false,
            credentials: None,
        }
    }
}

/// Checks a `HOST:PORT` address: a host without spaces or control characters and a port.
pub fn validate_address(address: &str) -> Result<(), RouteError> {
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return invalid(format!(
            "endpoint {address:?} is not HOST:PORT (1 to 256 bytes)"
        ));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return invalid(format!("endpoint {address:?} is not HOST:PORT"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return invalid(format!("endpoint {address:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => invalid(format!("endpoint {address:?} has no valid port")),
    }
}

/// Which source messages a route copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteFilter {
    All,
    /// A tag expression (`A||B`), kept as written.
    Tag(String),
    /// An SQL92 expression over the message's properties, kept as written.
    Sql(String),
}

impl RouteFilter {
    /// Validates an expression the way the source will read it.
    pub fn tag(expression: &str) -> Result<Self, RouteError> {
        TagFilter::parse(expression).map_err(|e| RouteError(e.to_string()))?;
        Ok(RouteFilter::Tag(expression.trim().to_owned()))
    }

    pub fn sql(expression: &str) -> Result<Self, RouteError> {
        SqlFilter::parse(expression).map_err(|e| RouteError(e.to_string()))?;
        Ok(RouteFilter::Sql(expression.trim().to_owned()))
    }
}

impl fmt::Display for RouteFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteFilter::All => f.write_str("*"),
            RouteFilter::Tag(e) => write!(f, "tag {e}"),
            RouteFilter::Sql(e) => write!(f, "sql {e}"),
        }
    }
}

/// Most events one HTTP request of a route carries.
pub const MAX_HTTP_BATCH: u32 = 16;
/// Longest target URL.
const MAX_URL_LEN: usize = 2048;

/// Most headers an HTTP target takes.
pub const MAX_HTTP_HEADERS: usize = 16;
/// Longest header value (a bearer token, a signature).
const MAX_HEADER_VALUE: usize = 8192;
/// Headers the route sets itself or HTTP manages: not the user's to give.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A header every request to an HTTP target carries (`Authorization: Bearer …`, an API key).
/// Its value is treated as a secret: sealed in the metadata, never shown or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpHeader {
    name: String,
    value: String,
}

impl fmt::Debug for HttpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpHeader({}: ***)", self.name)
    }
}

impl HttpHeader {
    /// A header named `name` (an HTTP token, not one HTTP or the route manages) with `value`
    /// (1 to 8192 visible characters and spaces, no line breaks).
    pub fn new(name: &str, value: &str) -> Result<Self, RouteError> {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(token) {
            return invalid(format!(
                "header name {name:?} is not an HTTP token of 1 to 64 characters"
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return invalid(format!(
                "header {name} is set by the route or by HTTP itself"
            ));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty()
            || value.len() > MAX_HEADER_VALUE
            || value
                .chars()
                .any(|c| c != '\t' && (c.is_control() || !c.is_ascii()))
        {
            return invalid(format!(
                "the value of header {name} must be 1 to {MAX_HEADER_VALUE} printable ASCII \
                 characters"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    /// `NAME: VALUE`, as the command line gives it.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let Some((name, value)) = text.split_once(':') else {
            return invalid("a header is given as \"NAME: VALUE\"");
        };
        Self::new(name.trim(), value)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret value, for the request only.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

/// An HTTP endpoint that takes CloudEvents 1.0 in structured JSON (ADR 0025).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `http://…` or `https://…`; every request is a POST to it.
    pub url: String,
    /// Events per request: 1 sends `application/cloudevents+json`, more a
    /// `application/cloudevents-batch+json` array of up to this many.
    pub batch: u32,
    /// Sent with every request, in this order (names unique, case aside).
    pub headers: Vec<HttpHeader>,
}

impl HttpTarget {
    pub fn new(url: &str, batch: u32) -> Result<Self, RouteError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let Some(rest) = rest else {
            return invalid(format!("target URL {url:?} is not http:// or https://"));
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty()
            || url.len() > MAX_URL_LEN
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(format!(
                "target URL {url:?} needs a host and at most 2048 characters without spaces"
            ));
        }
        if !(1..=MAX_HTTP_BATCH).contains(&batch) {
            return invalid(format!("a batch of {batch} events is outside 1..=16"));
        }
        Ok(Self {
            url: url.to_owned(),
            batch,
            headers: Vec::new(),
        })
    }

    /// The target with `headers` on every request: at most 16, each name once (case aside).
    pub fn with_headers(mut self, headers: Vec<HttpHeader>) -> Result<Self, RouteError> {
        if headers.len() > MAX_HTTP_HEADERS {
            return invalid(format!(
                "{} headers: an HTTP target takes at most {MAX_HTTP_HEADERS}",
                headers.len()
            ));
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&h.name))
            {
                return invalid(format!("header {} is given twice", h.name));
            }
        }
        self.headers = headers;
        Ok(self)
    }
}

/// Where a route's copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A topic of a RocketMQ 5 gRPC endpoint.
    Topic {
        topic: TopicName,
        endpoint: RouteEndpoint,
    },
    /// CloudEvents over HTTP (webhooks).
    Http(HttpTarget),
}

/// A route as its creator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: RouteName,
    pub source_topic: TopicName,
    /// The route's consumer group on the source; its position is the route's checkpoint.
    pub group: GroupName,
    pub source: RouteEndpoint,
    pub target: RouteTarget,
    pub filter: RouteFilter,
    /// Where the group starts when the route creates it (`Auto`: the group's default).
    pub start: GroupStart,
    /// Each copy is sent under the source message's id.
    pub keep_message_id: bool,
}

impl RouteSpec {
    /// Checks what names and filters alone cannot: a target address; a start point only for a
    /// group this Vela can create (a local source); no route onto its own source.
    pub fn validate(&self) -> Result<(), RouteError> {
        if let Some(source) = &self.source.address {
            validate_address(source)?;
            if self.start != GroupStart::Auto {
                return invalid(
                    "a start point needs a route whose source is this Vela: another server's \
                     group starts where that server decides (create the group there first)",
                );
            }
        }
        match &self.target {
            RouteTarget::Topic { topic, endpoint } => {
                let Some(target) = &endpoint.address else {
                    return invalid(
                        "a route needs a target: --target-endpoint HOST:PORT with \
                         --target-topic, or --target-url",
                    );
                };
                validate_address(target)?;
                if self.source.address.as_ref() == Some(target) && self.source_topic == *topic {
                    return invalid("a route cannot copy a topic onto itself");
                }
                if self.source_topic.is_dead_letter() != topic.is_dead_letter() {
                    return invalid(
                        "a route copies a dead-letter topic only to a dead-letter topic",
                    );
                }
            }
            RouteTarget::Http(http) => {
                HttpTarget::new(&http.url, http.batch)?.with_headers(http.headers.clone())?;
                if self.keep_message_id {
                    return invalid(
                        "--keep-message-id is for topic targets (an HTTP target gets the \
                         original id as the event's id)",
                    );
                }
            }
        }
        Ok(())
    }
}

/// A route as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub spec: RouteSpec,
    pub paused: bool,
    pub created_at_ms: i64,
}

/// What a running route is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    /// Connecting to its source and target.
    Starting,
    Running,
    /// The last attempt failed; it backs off and tries again.
    Retrying,
    Paused,
    /// Not running on this node (deleted, or the node is stopping).
    Stopped,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Starting => "starting",
            RouteState::Running => "running",
            RouteState::Retrying => "retrying",
            RouteState::Paused => "paused",
            RouteState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for RouteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the node running a route reports about it (counters since that node started it).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    pub state: RouteState,
    pub copied: u64,
    pub skipped_routed: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub lag_messages: Option<u64>,
    pub lag_ms: Option<u64>,
    pub last_copied_ms: Option<i64>,
    /// Messages copied per second over the last minute.
    pub copy_rate: f64,
}

impl RouteStatus {
    pub fn new(state: RouteState) -> Self {
        Self {
            state,
            copied: 0,
            skipped_routed: 0,
            duplicates: 0,
            errors: 0,
            last_error: None,
            last_error_ms: None,
            lag_messages: None,
            lag_ms: None,
            last_copied_ms: None,
            copy_rate: 0.0,
        }
    }
}

/// Where routes run: the admin service asks it how they are doing.
pub trait RouteRuntime: Send + Sync + 'static {
    /// Every route this node runs, by name.
    fn statuses(&self) -> BTreeMap<RouteName, RouteStatus>;
    /// The routes changed (created, paused, resumed, deleted): look at them now rather than
    /// at the next periodic check.
    fn changed(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RouteSpec {
        RouteSpec {
            name: RouteName::new("dr").expect("name"),
            source_topic: TopicName::new("orders").expect("topic"),
            group: GroupName::new("route-dr").expect("group"),
            source: RouteEndpoint::local(),
            target: RouteTarget::Topic {
                topic: TopicName::new("orders").expect("topic"),
                endpoint: RouteEndpoint {
                    address: Some("127.0.0.1:9081".into()),
                    tls: false,
                    credentials: None,
                },
            },
            filter: RouteFilter::All,
            start: GroupStart::Latest,
            keep_message_id: false,
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:8081", "vela.example.com:443", "[::1]:8081"] {
            assert_eq!(validate_address(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            ":80",
            "a b:1",
            "h/x:1",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_are_checked_where_names_cannot_be() {
        assert_eq!(spec().validate(), Ok(()));
        let mut no_target = spec();
        if let RouteTarget::Topic { endpoint, .. } = &mut no_target.target {
            endpoint.address = None;
        }
        assert!(no_target.validate().is_err());
        let mut http = spec();
        http.target =
            RouteTarget::Http(HttpTarget::new("https://hooks.example.com/in", 4).expect("ok"));
        assert_eq!(http.validate(), Ok(()));
        http.keep_message_id = true;
        assert!(http.validate().is_err());
        let mut remote_start = spec();
        remote_start.source.address = Some("10.0.0.1:8081".into());
        let err = remote_start
            .validate()
            .expect_err("start on a remote source");
        assert!(err.0.contains("start point"), "{err}");
        remote_start.start = GroupStart::Auto;
        assert_eq!(remote_start.validate(), Ok(()));
        remote_start.source.address = Some("127.0.0.1:9081".into());
        assert!(remote_start.validate().is_err(), "onto itself");
        let mut dlq = spec();
        dlq.source_topic = TopicName::new("%DLQ%g").expect("dlq");
        assert!(dlq.validate().is_err());
    }

    #[test]
    fn http_targets_are_urls_with_a_bounded_batch() {
        assert!(HttpTarget::new("http://127.0.0.1:9000/events?x=1", 1).is_ok());
        for bad in [
            "ftp://h/x",
            "https://",
            "https:///x",
            "http://a b/",
            "hooks.example.com",
        ] {
            assert!(HttpTarget::new(bad, 1).is_err(), "{bad}");
        }
        assert!(HttpTarget::new("https://h/", 0).is_err());
        assert!(HttpTarget::new("https://h/", 17).is_err());
    }

    #[test]
    fn http_headers_are_tokens_with_secret_printable_values() {
        let h = HttpHeader::parse("Authorization: Bearer abc.def").expect("ok");
        assert_eq!((h.name(), h.expose()), ("Authorization", "Bearer abc.def"));
        assert_eq!(format!("{h:?}"), "HttpHeader(Authorization: ***)");
        assert!(HttpHeader::parse("X-Api-Key:k").is_ok());
        for bad in [
            "no colon",
            ": value",
            "Bad Name: v",
            "X-Empty:   ",
            "Content-Type: text/plain",
            "host: h",
            "X-Line: a\r\nInjected: b",
            "X-Utf8: é",
        ] {
            assert!(HttpHeader::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HttpHeader::new("X-Long", &"v".repeat(8193)).is_err());
        let target = HttpTarget::new("https://h/", 1).expect("url");
        let twice = vec![
            HttpHeader::parse("X-A: 1").expect("ok"),
            HttpHeader::parse("x-a: 2").expect("ok"),
        ];
        assert!(target.clone().with_headers(twice).is_err());
        let many = (0..17)
            .map(|i| HttpHeader::new(&format!("X-{i}"), "v").expect("ok"))
            .collect();
        assert!(target.with_headers(many).is_err());
    }

    #[test]
    fn filters_are_validated_and_debug_hides_secrets() {
        assert!(RouteFilter::tag("A||B").is_ok());
        assert!(RouteFilter::tag("A||").is_err());
        assert!(RouteFilter::sql("a > 1 AND b IS NOT NULL").is_ok());
        assert!(RouteFilter::sql("a >").is_err());
        assert!(RouteCredentials::new("", "s").is_err());
        assert!(RouteCredentials::new("ak", "").is_err());
        let creds = RouteCredentials::new("ak", "secret").expect("ok");
        let route = RouteConfig {
            spec: RouteSpec {
                source: RouteEndpoint {
                    credentials: Some(creds),
                    ..RouteEndpoint::local()
                },
                ..spec()
            },
            paused: false,
            created_at_ms: 1,
        };
        assert!(!format!("{route:?}").contains("secret\""));
    }
}
