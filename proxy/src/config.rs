//! The proxy's configuration: limits and switches, with RocketMQ's proxy defaults
//! (`rocketmq-facts.md` §1.9 and §5). Durations are human strings ("20s"), sizes human sizes
//! ("4MiB").

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// How the proxy behaves towards clients. Every field has a default, so an empty table is a
/// valid configuration.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// `host:port` put into routes as the broker endpoints. Default: the address the client
    /// used to reach us (`QueryRouteRequest.endpoints`), else the listen address.
    pub advertised_endpoint: Option<String>,
    /// Largest message body accepted (and advertised to producers in Settings).
    pub max_body_size: ByteSize,
    /// How far in the future a delay message may be scheduled.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Create unknown topics on first use (as `mixed`, so every client type works).
    pub auto_create_topics: bool,
    /// Create unknown consumer groups on first use (not FIFO, default max attempts).
    pub auto_create_groups: bool,
    /// Queues of an auto-created topic.
    pub default_queue_count: u32,
    /// A receive that cannot wait at least this long is rejected (`ILLEGAL_POLLING_TIME`).
    #[serde(with = "humantime_serde")]
    pub min_long_polling: Duration,
    /// Longest a receive is held when nothing is visible; also advertised to push consumers.
    #[serde(with = "humantime_serde")]
    pub max_long_polling: Duration,
    /// Batch size advertised to push consumers in Settings.
    pub receive_batch_size: u32,
    /// Total bytes of a message's user properties (keys plus values).
    pub max_property_bytes: ByteSize,
    /// Number of user properties per message.
    pub max_properties: usize,
    /// Longest FIFO message group.
    pub max_message_group_len: usize,
    /// How long after a client's last Telemetry stream to this proxy ended, with no new one,
    /// the messages it received here and did not settle are given back (visible again a second
    /// later) instead of waiting out their invisibility.
    #[serde(with = "humantime_serde")]
    pub client_release_grace: Duration,
    /// How long after a push consumer received a message (with `auto_renew`, as the official
    /// push consumers do) the proxy keeps renewing its invisibility while the client holds it;
    /// "0s" turns renewal off (the message then comes back after 60 s unless settled).
    #[serde(with = "humantime_serde")]
    pub auto_renew_max: Duration,
    /// In a cluster: how long sends to a shard that gathered while the proxy's call to it was
    /// busy wait for more before they go as one call (one Raft entry, written and replicated
    /// once). A send that finds its shard idle goes at once, so this adds latency only under
    /// load, where it saves CPU per message on the proxy and every replica; "0s" turns it off.
    #[serde(with = "humantime_serde")]
    pub send_linger: Duration,
    /// In a cluster: how long an ack call to a shard waits for more acks before it goes, the
    /// first of a burst too. "0s" (the default): no timer; a lone ack still lets the rest of
    /// its burst (a consumer acks each message of a receive at once) queue behind it, so the
    /// burst is one call and one Raft entry. A timer saves CPU per ack on a busy cluster and
    /// costs its length in ack latency.
    #[serde(with = "humantime_serde")]
    pub ack_linger: Duration,
    /// An OpenTelemetry collector (`host:port`, OTLP/gRPC) the proxy tells clients to export
    /// their own metrics to (Settings `metric`); unset: clients export none.
    pub client_metrics_endpoint: Option<String>,
    /// Reported by `ClusterInfo` ("standalone" or "cluster"); set by the binary, not by the
    /// configuration file.
    #[serde(skip)]
    pub cluster_mode: String,
    /// The `[auth]` section; set by the binary, not a key of this section.
    #[serde(skip)]
    pub auth: crate::AuthConfig,
}

/// Longest `proxy.send_linger` and `proxy.ack_linger`: beyond this a request waits longer than a
/// commit takes.
const MAX_LINGER: Duration = Duration::from_secs(1);

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            advertised_endpoint: None,
            client_metrics_endpoint: None,
            max_body_size: ByteSize::mib(4),
            max_delay: Duration::from_secs(24 * 3600),
            auto_create_topics: false,
            auto_create_groups: false,
            default_queue_count: 8,
            min_long_polling: Duration::from_secs(5),
            max_long_polling: Duration::from_secs(20),
            receive_batch_size: 32,
            max_property_bytes: ByteSize::kib(16),
            max_properties: 128,
            max_message_group_len: 64,
            client_release_grace: Duration::from_secs(10),
            auto_renew_max: Duration::from_secs(3 * 3600),
            send_linger: Duration::from_millis(2),
            ack_linger: Duration::ZERO,
            cluster_mode: "standalone".to_owned(),
            auth: crate::AuthConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, linger) in [
            ("proxy.send_linger", self.send_linger),
            ("proxy.ack_linger", self.ack_linger),
        ] {
            if linger > MAX_LINGER {
                return Err(format!(
                    "{key}: {linger:?} is more than the {MAX_LINGER:?} it may be"
                ));
            }
        }
        for (key, value) in [
            ("proxy.advertised_endpoint", &self.advertised_endpoint),
            (
                "proxy.client_metrics_endpoint",
                &self.client_metrics_endpoint,
            ),
        ] {
            if let Some(text) = value {
                crate::route::parse_endpoint(text).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        Ok(())
    }

    /// `max_body_size` in bytes, as the protocol's `int32` wants it.
    pub(crate) fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body_size.as_u64()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_the_defaults() {
        let parsed: ProxyConfig = toml::from_str("").expect("empty config parses");
        assert_eq!(parsed, ProxyConfig::default());
        assert_eq!(parsed.max_body_bytes(), 4 * 1024 * 1024);
    }

    #[test]
    fn human_values_parse() {
        let parsed: ProxyConfig = toml::from_str(
            r#"
            advertised_endpoint = "mq.example.com:8081"
            max_body_size = "1MiB"
            max_delay = "2h"
            auto_create_topics = true
            max_long_polling = "15s"
            max_property_bytes = "8KiB"
            "#,
        )
        .expect("config parses");
        assert_eq!(
            parsed.advertised_endpoint.as_deref(),
            Some("mq.example.com:8081")
        );
        assert_eq!(parsed.max_body_size, ByteSize::mib(1));
        assert_eq!(parsed.max_delay, Duration::from_secs(7200));
        assert!(parsed.auto_create_topics);
        assert_eq!(parsed.max_long_polling, Duration::from_secs(15));
        assert_eq!(parsed.max_property_bytes, ByteSize::kib(8));
    }

    #[test]
    fn lingers_are_bounded() {
        for key in ["send_linger", "ack_linger"] {
            let linger = |c: &ProxyConfig| match key {
                "send_linger" => c.send_linger,
                _ => c.ack_linger,
            };
            let parsed: ProxyConfig = toml::from_str(&format!(r#"{key} = "5ms""#)).expect("parses");
            assert_eq!(linger(&parsed), Duration::from_millis(5));
            assert!(parsed.validate().is_ok());
            let off: ProxyConfig = toml::from_str(&format!(r#"{key} = "0s""#)).expect("parses");
            assert!(linger(&off).is_zero() && off.validate().is_ok());
            let long: ProxyConfig = toml::from_str(&format!(r#"{key} = "2s""#)).expect("parses");
            let err = long.validate().expect_err("2s is refused");
            assert!(err.contains(&format!("proxy.{key}")), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<ProxyConfig>("max_body = 1").is_err());
        assert!(toml::from_str::<ProxyConfig>("cluster_mode = \"x\"").is_err());
    }
}
