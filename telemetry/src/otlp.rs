//! `[telemetry.otlp]`: pushing the hub's metrics to an OpenTelemetry collector, over gRPC
//! (port 4317 by convention) or HTTP/protobuf (4318), with TLS when the endpoint is
//! `https://` (the system's roots, plus `ca_file`). Export runs on the process's tokio runtime
//! every `interval`, once more
//! at shutdown; a failed export is logged and the next one carries the cumulative totals, so a
//! collector that was down misses points, never counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_otlp::{MetricExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::MetricsHub;

/// The wire an OTLP exporter speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, to `<endpoint>/v1/metrics`.
    Http,
}

/// `[telemetry.otlp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector, e.g. `http://otel-collector:4317`; unset means no OTLP export.
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Time between exports.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Longest one export may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. an `authorization` token.
    pub headers: BTreeMap<String, String>,
    /// Export spans too (the proxy's spans of messages whose producer traced them).
    pub traces: bool,
    /// A CA certificate (PEM) to trust for an `https://` endpoint besides the system's roots:
    /// a collector with a certificate of an internal CA.
    pub ca_file: Option<PathBuf>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            traces: true,
            ca_file: None,
        }
    }
}

impl OtlpConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) {
            return Err("telemetry.otlp.interval must be at least 1s".to_owned());
        }
        if self.timeout.is_zero() {
            return Err("telemetry.otlp.timeout must be more than 0".to_owned());
        }
        let Some(endpoint) = &self.endpoint else {
            return Ok(());
        };
        let uri: tonic::codegen::http::Uri = endpoint
            .parse()
            .map_err(|e| format!("telemetry.otlp.endpoint {endpoint:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "telemetry.otlp.endpoint {endpoint:?} must start with http:// or https://"
                ));
            }
        }
        if uri.host().is_none() {
            return Err(format!("telemetry.otlp.endpoint {endpoint:?} has no host"));
        }
        self.metadata()?;
        self.ca_pem()?;
        Ok(())
    }

    /// The PEM of `ca_file`, read and checked (it must hold a certificate).
    fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| format!("telemetry.otlp.ca_file {}: {e}", path.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "telemetry.otlp.ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
        Ok(Some(pem))
    }

    /// TLS for an `https://` OTLP/gRPC endpoint: the system's roots plus `ca_file`.
    pub(crate) fn grpc_tls(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = self.ca_pem()? {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        Ok(tls)
    }

    /// The HTTP client of an OTLP/HTTP exporter: reqwest, with rustls on the process's ring
    /// provider (as everywhere in Vela) for an `https://` endpoint, trusting the system's
    /// roots plus `ca_file`.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(self.timeout);
        if let Some(pem) = self.ca_pem()? {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("telemetry.otlp.ca_file: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map_err(|e| format!("telemetry.otlp: cannot build the HTTPS client: {e}"))
    }

    /// The URL an HTTP exporter posts metrics to: the endpoint itself when it has a path,
    /// else `<endpoint>/v1/metrics`.
    fn http_url(endpoint: &str) -> String {
        Self::http_url_for(endpoint, "/v1/metrics")
    }

    /// The URL an HTTP exporter posts one signal to: `<endpoint><signal_path>` when the
    /// endpoint has no path of its own (a collector's base address), else the endpoint with
    /// its last path segment replaced by the signal's (`…/v1/metrics` → `…/v1/traces`).
    pub(crate) fn http_url_for(endpoint: &str, signal_path: &str) -> String {
        let trimmed = endpoint.trim_end_matches('/');
        let path_start = trimmed
            .split_once("://")
            .and_then(|(scheme, rest)| rest.find('/').map(|i| scheme.len() + 3 + i));
        match path_start {
            None => format!("{trimmed}{signal_path}"),
            Some(_) if trimmed.ends_with(signal_path) => trimmed.to_owned(),
            Some(start) => {
                let path = &trimmed[start..];
                for known in ["/v1/metrics", "/v1/traces"] {
                    if let Some(base) = path.strip_suffix(known) {
                        return format!("{}{base}{signal_path}", &trimmed[..start]);
                    }
                }
                trimmed.to_owned()
            }
        }
    }

    /// The headers as gRPC metadata.
    pub(crate) fn metadata(&self) -> Result<tonic::metadata::MetadataMap, String> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (key, value) in &self.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("telemetry.otlp.headers: {key:?} is not a header name"))?;
            let value = value
                .parse()
                .map_err(|_| format!("telemetry.otlp.headers.{key}: not a valid value"))?;
            metadata.insert(key, value);
        }
        Ok(metadata)
    }

    fn exporter(&self, endpoint: &str) -> Result<MetricExporter, String> {
        let built = match self.protocol {
            OtlpProtocol::Grpc => {
                let metadata = self.metadata()?;
                let mut builder = MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(self.timeout)
                    .with_metadata(metadata)
                    .with_temporality(Temporality::Cumulative);
                if endpoint.starts_with("https://") {
                    builder = builder.with_tls_config(self.grpc_tls()?);
                }
                builder.build()
            }
            OtlpProtocol::Http => {
                let builder = MetricExporter::builder()
                    .with_http()
                    .with_endpoint(Self::http_url(endpoint))
                    .with_timeout(self.timeout)
                    .with_headers(self.headers.clone().into_iter().collect())
                    .with_temporality(Temporality::Cumulative)
                    .with_http_client(self.http_client()?);
                builder.build()
            }
        };
        built.map_err(|e| format!("telemetry.otlp: cannot build the exporter: {e}"))
    }
}

/// One collector's exporter: collects a hub and pushes it, bounded by the timeout. Used by the
/// processes' export task and by `vela-sdk`'s client metrics.
pub struct Pusher {
    exporter: MetricExporter,
    timeout: Duration,
}

impl Pusher {
    /// An exporter to `config.endpoint` as `config` says; call on the tokio runtime.
    pub fn new(config: &OtlpConfig) -> Result<Self, String> {
        let endpoint = config
            .endpoint
            .as_deref()
            .ok_or_else(|| "telemetry.otlp.endpoint is not set".to_owned())?;
        config.validate()?;
        Ok(Self {
            exporter: config.exporter(endpoint)?,
            timeout: config.timeout,
        })
    }

    /// Collects `hub` (off the async workers: collection runs the gauges' callbacks, which
    /// may read state and files) and exports it.
    pub async fn push(&self, hub: &MetricsHub) -> Result<(), String> {
        let collecting = hub.clone();
        let rm = tokio::task::spawn_blocking(move || collecting.collect())
            .await
            .unwrap_or_else(|e| Err(format!("collecting metrics failed: {e}")))?;
        match tokio::time::timeout(self.timeout, self.exporter.export(&rm)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer in {:?}", self.timeout)),
        }
    }

    /// Ends the exporter (after a last push).
    pub fn shutdown(&self) {
        let _ = self.exporter.shutdown();
    }
}

/// Starts pushing `hub` to the configured collector, if any; call on the tokio runtime. The
/// task exports once more when `shutdown` fires, then ends.
pub fn spawn_exporter(
    hub: MetricsHub,
    config: &OtlpConfig,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, String> {
    let Some(endpoint) = config.endpoint.clone() else {
        return Ok(None);
    };
    let pusher = Pusher::new(config)?;
    let interval = config.interval;
    tracing::info!(%endpoint, protocol = ?config.protocol, ?interval, "exporting metrics over OTLP");
    Ok(Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            let last = tokio::select! {
                _ = ticker.tick() => false,
                () = shutdown.cancelled() => true,
            };
            let result = pusher.push(&hub).await;
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(%endpoint, "OTLP metric export works again");
                }
                Ok(()) => {}
                Err(error) => {
                    // One warning per outage; the rest at debug.
                    if failing {
                        tracing::debug!(%endpoint, %error, "OTLP metric export failed");
                    } else {
                        tracing::warn!(%endpoint, %error, "OTLP metric export failed; retrying every interval");
                    }
                    failing = true;
                }
            }
            if last {
                pusher.shutdown();
                break;
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        let mut c = OtlpConfig::default();
        assert!(c.validate().is_ok());
        c.endpoint = Some("http://127.0.0.1:4317".into());
        assert!(c.validate().is_ok());
        c.endpoint = Some("https://collector.example:4317".into());
        assert!(c.validate().is_ok());
        c.protocol = OtlpProtocol::Http;
        assert!(c.validate().is_ok(), "OTLP/HTTP over TLS");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(c.validate().expect_err("refused").contains("ca_file"));
        let dir = std::env::temp_dir().join(format!("vela-otlp-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").expect("writes");
        c.ca_file = Some(dir.clone());
        assert!(
            c.validate()
                .expect_err("refused")
                .contains("no PEM certificate")
        );
        let _ = std::fs::remove_file(&dir);
        c.ca_file = None;
        c.endpoint = Some("collector:4318".into());
        assert!(c.validate().is_err());
        c.endpoint = Some("http://127.0.0.1:4318".into());
        c.headers.insert("bad header".into(), "x".into());
        assert!(c.validate().expect_err("refused").contains("header name"));
        c.headers.clear();
        c.interval = Duration::from_millis(10);
        assert!(c.validate().expect_err("refused").contains("interval"));
    }

    #[test]
    fn http_urls_get_the_metrics_path_only_when_they_have_none() {
        assert_eq!(
            OtlpConfig::http_url("http://c:4318"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            OtlpConfig::http_url("http://c:4318/"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            OtlpConfig::http_url("http://c:4318/otlp/v1/metrics"),
            "http://c:4318/otlp/v1/metrics"
        );
        assert_eq!(
            OtlpConfig::http_url_for("http://c:4318/otlp/v1/metrics", "/v1/traces"),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(
            OtlpConfig::http_url_for("http://c:4318", "/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn parses_from_toml() {
        let c: OtlpConfig = toml::from_str(
            r#"
            endpoint = "http://127.0.0.1:4318"
            protocol = "http"
            interval = "5s"
            headers = { authorization = "Bearer x" }
            "#,
        )
        .expect("parses");
        assert_eq!(c.protocol, OtlpProtocol::Http);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.headers["authorization"], "Bearer x");
    }
}
