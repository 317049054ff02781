//! Client configuration shared by producers and consumers: where the server is, the namespace,
//! the unary-call timeout and optional credentials.

use std::fmt;
use std::time::Duration;

use vela_proto::pb::rocketmq::{Address, AddressScheme, Endpoints};

use crate::error::{Error, Result};

/// Default deadline of one unary call (what all official clients use).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// An access key / secret key pair for `MQv2-HMAC-SHA1` request signing.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .finish()
    }
}

/// A validated `host:port` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    /// Parses `host:port` (`[v6]:port` for IPv6 literals); an `http://` or `https://` prefix
    /// is tolerated (whether to use TLS is the [`ClientConfig`]'s business).
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let bare = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .unwrap_or(trimmed);
        let (host, port) = bare.rsplit_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("endpoint {text:?} must be host:port"))
        })?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| {
            Error::InvalidArgument(format!("endpoint {text:?} has an invalid port {port:?}"))
        })?;
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !host_ok || port == 0 {
            return Err(Error::InvalidArgument(format!(
                "endpoint {text:?} is not a valid host:port"
            )));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    /// Builds the endpoint a route's `Address` names.
    pub(crate) fn from_address(address: &Address) -> Result<Self> {
        let port = u16::try_from(address.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Error::invalid_response("QueryRoute", format!("bad port in {address:?}"))
            })?;
        if address.host.is_empty() {
            return Err(Error::invalid_response("QueryRoute", "empty broker host"));
        }
        Ok(Endpoint {
            host: address.host.clone(),
            port,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URI tonic dials.
    pub(crate) fn uri(&self, tls: bool) -> String {
        if tls {
            format!("https://{self}")
        } else {
            format!("http://{self}")
        }
    }

    /// The protobuf form, with the scheme derived from the host.
    pub(crate) fn to_proto(&self) -> Endpoints {
        let scheme = match self.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => AddressScheme::IPv4,
            Ok(std::net::IpAddr::V6(_)) => AddressScheme::IPv6,
            Err(_) => AddressScheme::DomainName,
        };
        Endpoints {
            scheme: scheme as i32,
            addresses: vec![Address {
                host: self.host.clone(),
                port: i32::from(self.port),
            }],
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Settings shared by every client built from it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) namespace: String,
    pub(crate) request_timeout: Duration,
    pub(crate) credentials: Option<Credentials>,
    /// TLS to every endpoint (the access point was given as `https://…`).
    pub(crate) tls: Option<Tls>,
    /// How often the client's metrics go to the collector the server names (60 s).
    pub(crate) metrics_interval: Duration,
}

/// How the client speaks TLS.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// Trust this CA (PEM) instead of the system's roots.
    ca_pem: Option<Vec<u8>>,
    /// Present this certificate and key (PEM) for mutual TLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl Tls {
    /// tonic's client TLS settings.
    pub(crate) fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new();
        let config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

impl ClientConfig {
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }

    /// The access point every client starts from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// tonic's client TLS settings when the endpoint is `https://` (for other services of the
    /// same server, such as Vela's admin service).
    pub fn tls_config(&self) -> Option<tonic::transport::ClientTlsConfig> {
        self.tls.as_ref().map(Tls::client_config)
    }
}

/// Builds a [`ClientConfig`]; only the endpoint is required.
#[derive(Debug, Default, Clone)]
pub struct ClientConfigBuilder {
    endpoint: Option<String>,
    namespace: String,
    request_timeout: Option<Duration>,
    credentials: Option<Credentials>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    metrics_interval: Option<Duration>,
}

impl ClientConfigBuilder {
    /// How often the client exports its metrics (`rocketmq_send_cost_time`, …) when the
    /// server's Settings name a collector (default 60 s, as the official clients).
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = Some(interval);
        self
    }

    /// The server's `host:port` (for Vela: the proxy's gRPC address, e.g. `127.0.0.1:8081`);
    /// `https://host:port` speaks TLS to it and to every broker its routes name, trusting the
    /// system's roots unless [`ca_pem`](Self::ca_pem) names a CA.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// RocketMQ namespace (tenant); sent in every `Resource` and the `x-mq-namespace` header.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Deadline of unary calls (default 3 s); a receive waits this plus its long-polling time.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Signs every request with `MQv2-HMAC-SHA1` using these keys.
    pub fn credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        });
        self
    }

    /// Trust this CA certificate (PEM) for an `https://` endpoint.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate and private key (PEM) to a server that requires client
    /// certificates (mutual TLS).
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    pub fn build(self) -> Result<ClientConfig> {
        let text = self
            .endpoint
            .ok_or_else(|| Error::InvalidArgument("client config needs an endpoint".into()))?;
        let endpoint = Endpoint::parse(&text)?;
        let tls = if text.trim().starts_with("https://") {
            Some(Tls {
                ca_pem: self.ca_pem,
                identity: self.identity,
            })
        } else if self.ca_pem.is_some() || self.identity.is_some() {
            return Err(Error::InvalidArgument(format!(
                "a CA or client certificate is for TLS: write the endpoint as https://{endpoint}"
            )));
        } else {
            None
        };
        let metrics_interval = self.metrics_interval.unwrap_or(Duration::from_secs(60));
        if metrics_interval < Duration::from_millis(100) {
            return Err(Error::InvalidArgument(
                "metrics_interval must be at least 100 ms".into(),
            ));
        }
        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "request_timeout must be positive".into(),
            ));
        }
        if !self.namespace.is_empty() {
            vela_proto::TopicName::new(&self.namespace).map_err(|e| {
                Error::InvalidArgument(format!("namespace {:?}: {e}", self.namespace))
            })?;
        }
        if let Some(c) = &self.credentials {
            let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
            if c.access_key.is_empty() || !printable(&c.access_key) {
                return Err(Error::InvalidArgument(
                    "access key must be non-empty printable ASCII".into(),
                ));
            }
        }
        Ok(ClientConfig {
            endpoint,
            namespace: self.namespace,
            request_timeout,
            credentials: self.credentials,
            tls,
            metrics_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("127.0.0.1:8081").unwrap();
        assert_eq!((e.host(), e.port()), ("127.0.0.1", 8081));
        assert_eq!(e.to_proto().scheme, AddressScheme::IPv4 as i32);
        let e = Endpoint::parse("http://mq.example.com:80").unwrap();
        assert_eq!(e.to_string(), "mq.example.com:80");
        assert_eq!(e.to_proto().scheme, AddressScheme::DomainName as i32);
        let e = Endpoint::parse("[::1]:9876").unwrap();
        assert_eq!(e.host(), "::1");
        assert_eq!(e.uri(false), "http://[::1]:9876");
        assert_eq!(e.uri(true), "https://[::1]:9876");
        assert_eq!(e.to_proto().scheme, AddressScheme::IPv6 as i32);
        for bad in ["", "host", "host:", ":80", "host:0", "host:99999", "a b:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn https_endpoints_speak_tls() {
        let plain = ClientConfig::builder().endpoint("h:1").build().unwrap();
        assert!(plain.tls.is_none());
        let tls = ClientConfig::builder()
            .endpoint("https://h:1")
            .ca_pem("not checked until dialled")
            .build()
            .unwrap();
        assert!(tls.tls.is_some());
        assert_eq!(tls.endpoint().to_string(), "h:1");
        let err = ClientConfig::builder()
            .endpoint("h:1")
            .ca_pem("x")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("https://h:1"), "{err}");
    }

    #[test]
    fn builder_defaults_and_validation() {
        let c = ClientConfig::builder()
            .endpoint("127.0.0.1:8081")
            .build()
            .unwrap();
        assert_eq!(c.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert!(c.credentials().is_none());
        assert!(ClientConfig::builder().build().is_err());
        assert!(
            ClientConfig::builder()
                .endpoint("h:1")
                .namespace("bad ns")
                .build()
                .is_err()
        );
        assert!(
            ClientConfig::builder()
                .endpoint("h:1")
                .request_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        let c = ClientConfig::builder()
            .endpoint("h:1")
            .credentials("ak", "sk")
            .build()
            .unwrap();
        assert!(
            !format!("{c:?}").contains("sk\""),
            "secret must not be printed"
        );
    }

    proptest::proptest! {
        /// Parsing arbitrary text never panics, and what parses prints back to itself.
        #[test]
        fn endpoint_parse_round_trips(text in "\\PC{0,40}") {
            if let Ok(e) = Endpoint::parse(&text) {
                let again = Endpoint::parse(&e.to_string()).unwrap();
                proptest::prop_assert_eq!(again, e);
            }
        }

        #[test]
        fn host_port_pairs_parse(host in "[a-z0-9][a-z0-9.-]{0,20}", port in 1u16..) {
            let e = Endpoint::parse(&format!("{host}:{port}")).unwrap();
            proptest::prop_assert_eq!((e.host(), e.port()), (host.as_str(), port));
        }
    }
}
