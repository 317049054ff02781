//! The Settings answer on the Telemetry stream (protocol.md §4.2): the client's own settings
//! with the server's values merged in, in the only form all three official clients accept.

use std::time::Duration;

use vela_proto::pb::rocketmq::{
    self as pb, ClientType, CustomizedBackoff, ExponentialBackoff, RetryPolicy, retry_policy,
    settings::PubSub,
};
use vela_proto::retry::RetryBackoff;
use vela_proto::{DEFAULT_MAX_ATTEMPTS, GroupConfig};

use crate::config::ProxyConfig;
use crate::convert::duration_to_pb;

/// Producer send attempts advertised to clients (the Java proxy's default).
const PRODUCER_MAX_ATTEMPTS: i32 = 3;
const PRODUCER_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const PRODUCER_BACKOFF_MAX: Duration = Duration::from_secs(1);
const PRODUCER_BACKOFF_MULTIPLIER: f32 = 2.0;

/// The Node.js client's last version that reads a consumer back-off only when it is
/// exponential, and reads its durations' whole seconds as milliseconds.
const NODE_MS_BACKOFF_UNTIL: (u32, u32, u32) = (1, 0, 8);

/// What the proxy knows about a consumer's group when it answers Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupPolicy {
    pub fifo: bool,
    pub max_attempts: u32,
    pub retry: RetryBackoff,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self {
            fifo: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryBackoff::Standard,
        }
    }
}

impl From<&GroupConfig> for GroupPolicy {
    fn from(group: &GroupConfig) -> Self {
        Self {
            fifo: group.fifo,
            max_attempts: group.max_attempts,
            retry: group.retry.clone(),
        }
    }
}

/// Which form of a consumer back-off a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackoffReader {
    /// Either form (Java, Go, Rust, vela-sdk): the group's own.
    Any,
    /// Only a customized table: the Python client's push consumer (an exponential policy
    /// leaves it on its built-in defaults).
    TableOnly,
    /// Only an exponential policy, read in milliseconds: Node.js up to 1.0.8 (see
    /// [`reads_backoff_as_ms`]).
    NodeMs,
}

fn backoff_reader(settings: &pb::Settings) -> BackoffReader {
    if reads_backoff_as_ms(settings) {
        BackoffReader::NodeMs
    } else if settings
        .user_agent
        .as_ref()
        .is_some_and(|ua| ua.language == pb::Language::Python as i32)
    {
        BackoffReader::TableOnly
    } else {
        BackoffReader::Any
    }
}

/// Which side of the protocol a Settings message describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
    Unknown,
}

/// The role of `settings`: the `pub_sub` case if present, else the client type.
pub(crate) fn role_of(settings: &pb::Settings) -> Role {
    match &settings.pub_sub {
        Some(PubSub::Publishing(_)) => Role::Producer,
        Some(PubSub::Subscription(_)) => Role::Consumer,
        None => match settings.client_type.map(ClientType::try_from) {
            Some(Ok(ClientType::Producer)) => Role::Producer,
            Some(Ok(
                ClientType::PushConsumer
                | ClientType::SimpleConsumer
                | ClientType::PullConsumer
                | ClientType::LitePushConsumer
                | ClientType::LiteSimpleConsumer,
            )) => Role::Consumer,
            _ => Role::Unknown,
        },
    }
}

/// The consumer group a consumer's Settings name, as a wire resource.
pub(crate) fn subscription_group(settings: &pb::Settings) -> Option<&pb::Resource> {
    match &settings.pub_sub {
        Some(PubSub::Subscription(sub)) => sub.group.as_ref(),
        _ => None,
    }
}

/// The effective settings for a client: its own with the server's fields merged in.
/// `group` is used for consumers only.
pub(crate) fn effective_settings(
    mut settings: pb::Settings,
    group: GroupPolicy,
    config: &ProxyConfig,
) -> pb::Settings {
    match role_of(&settings) {
        Role::Producer => {
            let mut publishing = match settings.pub_sub.take() {
                Some(PubSub::Publishing(p)) => p,
                _ => pb::Publishing::default(),
            };
            publishing.max_body_size =
                i32::try_from(config.max_body_size.as_u64()).unwrap_or(i32::MAX);
            publishing.validate_message_type = true;
            settings.pub_sub = Some(PubSub::Publishing(publishing));
            settings.backoff_policy = Some(producer_backoff());
        }
        Role::Consumer => {
            let mut subscription = match settings.pub_sub.take() {
                Some(PubSub::Subscription(s)) => s,
                _ => pb::Subscription::default(),
            };
            subscription.receive_batch_size =
                Some(i32::try_from(config.receive_batch_size).unwrap_or(i32::MAX));
            subscription.long_polling_timeout = Some(duration_to_pb(config.max_long_polling));
            subscription.fifo = Some(group.fifo);
            settings.backoff_policy = Some(consumer_backoff(&group, backoff_reader(&settings)));
            settings.pub_sub = Some(PubSub::Subscription(subscription));
        }
        Role::Unknown => {}
    }
    // Where clients export their own metrics, when the operator named a collector.
    let collector = config
        .client_metrics_endpoint
        .as_deref()
        .and_then(|e| crate::route::parse_endpoint(e).ok());
    settings.metric = Some(pb::Metric {
        on: collector.is_some(),
        endpoints: collector,
    });
    settings
}

fn producer_backoff() -> RetryPolicy {
    RetryPolicy {
        max_attempts: PRODUCER_MAX_ATTEMPTS,
        strategy: Some(retry_policy::Strategy::ExponentialBackoff(
            ExponentialBackoff {
                initial: Some(duration_to_pb(PRODUCER_BACKOFF_INITIAL)),
                max: Some(duration_to_pb(PRODUCER_BACKOFF_MAX)),
                multiplier: PRODUCER_BACKOFF_MULTIPLIER,
            },
        )),
    }
}

/// The group's retry policy in the form `reader` can use.
fn consumer_backoff(group: &GroupPolicy, reader: BackoffReader) -> RetryPolicy {
    let table = |delays: Vec<Duration>| {
        retry_policy::Strategy::CustomizedBackoff(CustomizedBackoff {
            next: delays.into_iter().map(duration_to_pb).collect(),
        })
    };
    let strategy = match (&group.retry, reader) {
        (RetryBackoff::Exponential { .. }, BackoffReader::TableOnly) => {
            table(expanded(&group.retry))
        }
        (
            RetryBackoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            },
            BackoffReader::Any,
        ) => retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
            initial: Some(duration_to_pb(Duration::from_millis(*initial_ms))),
            max: Some(duration_to_pb(Duration::from_millis(*max_ms))),
            multiplier: *multiplier as f32,
        }),
        (retry, BackoffReader::NodeMs) => node_backoff(retry),
        (retry @ (RetryBackoff::Standard | RetryBackoff::Delays { .. }), _) => {
            table(expanded(retry))
        }
    };
    RetryPolicy {
        max_attempts: i32::try_from(group.max_attempts).unwrap_or(i32::MAX),
        strategy: Some(strategy),
    }
}

/// The waits after each delivery in turn, until they stop changing (the last one repeats).
fn expanded(retry: &RetryBackoff) -> Vec<Duration> {
    match retry {
        RetryBackoff::Delays { delays_ms } => delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        _ => {
            let longest = retry.bounds().1;
            let mut delays = Vec::new();
            for attempt in 1..=vela_proto::retry::MAX_DELAYS as u32 {
                let delay = retry.delay(attempt);
                delays.push(delay);
                if delay >= longest {
                    break;
                }
            }
            delays
        }
    }
}

/// Whether the client is a Node.js client up to 1.0.8. Its push consumer ignores a customized
/// back-off (it then retries at once, and a FIFO consumer allows one attempt only), and reads
/// an exponential one's `seconds` as milliseconds (its `ExponentialBackoffRetryPolicy`).
fn reads_backoff_as_ms(settings: &pb::Settings) -> bool {
    let Some(ua) = &settings.user_agent else {
        return false;
    };
    if ua.language != pb::Language::NodeJs as i32 {
        return false;
    }
    let mut parts = ua.version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) => {
            (major, minor, patch) <= NODE_MS_BACKOFF_UNTIL
        }
        _ => false,
    }
}

/// What a Node.js client (see [`reads_backoff_as_ms`]) can use of the group's back-off: an
/// exponential one as it is, a table as an exponential one from its shortest to its longest
/// wait, doubling; written in the unit it reads (each "second" is one of its milliseconds).
fn node_backoff(retry: &RetryBackoff) -> retry_policy::Strategy {
    let as_node_reads = |d: Duration| prost_types::Duration {
        seconds: i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        nanos: 0,
    };
    let (first, last) = retry.bounds();
    let multiplier = match retry {
        RetryBackoff::Exponential { multiplier, .. } => *multiplier as f32,
        _ => 2.0,
    };
    retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
        initial: Some(as_node_reads(first)),
        max: Some(as_node_reads(last)),
        multiplier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str) -> pb::Resource {
        pb::Resource {
            resource_namespace: String::new(),
            name: name.into(),
        }
    }

    fn secs(s: i64) -> prost_types::Duration {
        prost_types::Duration {
            seconds: s,
            nanos: 0,
        }
    }

    #[test]
    fn producer_settings_carry_backoff_and_body_size() {
        // What Node 1.0.8 sends: no max_body_size (0), no backoff.
        let client = pb::Settings {
            client_type: Some(ClientType::Producer as i32),
            request_timeout: Some(secs(3)),
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: vec![resource("orders")],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..Default::default()
        };
        let out = effective_settings(client, GroupPolicy::default(), &ProxyConfig::default());
        let Some(PubSub::Publishing(p)) = &out.pub_sub else {
            panic!("publishing kept")
        };
        assert_eq!(p.topics, vec![resource("orders")], "client fields are kept");
        assert_eq!(p.max_body_size, 4 * 1024 * 1024);
        assert!(p.validate_message_type);
        let policy = out.backoff_policy.expect("backoff set");
        assert_eq!(policy.max_attempts, 3);
        let Some(retry_policy::Strategy::ExponentialBackoff(exp)) = policy.strategy else {
            panic!("producers get an exponential policy")
        };
        assert_eq!(
            exp.initial,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 10_000_000
            })
        );
        assert_eq!(exp.max, Some(secs(1)));
        assert_eq!(exp.multiplier, 2.0);
        assert_eq!(out.request_timeout, Some(secs(3)));
        assert_eq!(
            out.metric,
            Some(pb::Metric {
                on: false,
                endpoints: None
            })
        );
    }

    #[test]
    fn clients_are_told_where_to_export_their_metrics_when_a_collector_is_configured() {
        let config = ProxyConfig {
            client_metrics_endpoint: Some("otel-collector:4317".into()),
            ..ProxyConfig::default()
        };
        assert!(config.validate().is_ok());
        let out = effective_settings(pb::Settings::default(), GroupPolicy::default(), &config);
        let metric = out.metric.expect("metric set");
        assert!(metric.on);
        let endpoints = metric.endpoints.expect("endpoints");
        assert_eq!(endpoints.scheme, pb::AddressScheme::DomainName as i32);
        assert_eq!(endpoints.addresses[0].host, "otel-collector");
        assert_eq!(endpoints.addresses[0].port, 4317);
        let bad = ProxyConfig {
            client_metrics_endpoint: Some("no port".into()),
            ..ProxyConfig::default()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .contains("proxy.client_metrics_endpoint")
        );
    }

    #[test]
    fn consumer_settings_carry_the_group_policy() {
        let client = pb::Settings {
            client_type: Some(ClientType::PushConsumer as i32),
            pub_sub: Some(PubSub::Subscription(pb::Subscription {
                group: Some(resource("billing")),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(subscription_group(&client), Some(&resource("billing")));
        let out = effective_settings(
            client,
            GroupPolicy {
                fifo: true,
                max_attempts: 5,
                retry: RetryBackoff::Standard,
            },
            &ProxyConfig::default(),
        );
        let Some(PubSub::Subscription(s)) = &out.pub_sub else {
            panic!("subscription kept")
        };
        assert_eq!(s.group, Some(resource("billing")));
        assert_eq!(s.receive_batch_size, Some(32));
        assert_eq!(s.long_polling_timeout, Some(secs(20)));
        assert_eq!(s.fifo, Some(true));
        let policy = out.backoff_policy.expect("backoff set");
        assert_eq!(policy.max_attempts, 5);
        let Some(retry_policy::Strategy::CustomizedBackoff(table)) = policy.strategy else {
            panic!("consumers get the customized table")
        };
        assert_eq!(table.next.len(), 18);
        assert_eq!(table.next[0], secs(1));
        assert_eq!(table.next[17], secs(7200));
    }

    #[test]
    fn node_push_consumers_up_to_1_0_8_get_an_exponential_policy_in_milliseconds() {
        let node = |version: &str| pb::Settings {
            client_type: Some(ClientType::PushConsumer as i32),
            user_agent: Some(pb::Ua {
                language: pb::Language::NodeJs as i32,
                version: version.into(),
                platform: "linux".into(),
                hostname: "h".into(),
            }),
            ..Default::default()
        };
        let policy = |settings: pb::Settings| {
            let group = GroupPolicy {
                fifo: true,
                max_attempts: 4,
                retry: RetryBackoff::Standard,
            };
            effective_settings(settings, group, &ProxyConfig::default())
                .backoff_policy
                .expect("backoff set")
        };
        for version in ["1.0.8", "1.0.0", "0.9.12"] {
            let p = policy(node(version));
            assert_eq!(p.max_attempts, 4, "{version}");
            let Some(retry_policy::Strategy::ExponentialBackoff(exp)) = p.strategy else {
                panic!("{version}: exponential")
            };
            // 1 s and 2 h, in the milliseconds Node reads from `seconds`.
            assert_eq!(exp.initial, Some(secs(1000)));
            assert_eq!(exp.max, Some(secs(7_200_000)));
            assert_eq!(exp.multiplier, 2.0);
        }
        for version in ["1.0.9", "2.0.0", "next"] {
            let p = policy(node(version));
            assert!(
                matches!(
                    p.strategy,
                    Some(retry_policy::Strategy::CustomizedBackoff(_))
                ),
                "{version}: the truthful table"
            );
        }
        let mut python = node("1.0.8");
        if let Some(ua) = python.user_agent.as_mut() {
            ua.language = pb::Language::Python as i32;
        }
        assert!(matches!(
            policy(python).strategy,
            Some(retry_policy::Strategy::CustomizedBackoff(_))
        ));
    }

    #[test]
    fn each_client_gets_the_group_back_off_in_a_form_it_reads() {
        let client = |language: pb::Language, version: &str| pb::Settings {
            client_type: Some(ClientType::PushConsumer as i32),
            user_agent: Some(pb::Ua {
                language: language as i32,
                version: version.into(),
                platform: "linux".into(),
                hostname: "h".into(),
            }),
            ..Default::default()
        };
        let strategy = |settings: pb::Settings, retry: &RetryBackoff| {
            let group = GroupPolicy {
                fifo: false,
                max_attempts: 6,
                retry: retry.clone(),
            };
            let policy = effective_settings(settings, group, &ProxyConfig::default())
                .backoff_policy
                .expect("backoff set");
            assert_eq!(policy.max_attempts, 6);
            policy.strategy.expect("a strategy")
        };
        let ms = |ms: i64| prost_types::Duration {
            seconds: ms / 1000,
            nanos: i32::try_from(ms % 1000).expect("fits") * 1_000_000,
        };
        let exponential = RetryBackoff::parse_exponential("500ms,5s,3").expect("valid");
        let delays = RetryBackoff::parse_delays("2s,1m").expect("valid");

        // Java, Go, Rust: the group's own form.
        let java = || client(pb::Language::Java, "5.0.7");
        let Some(retry_policy::Strategy::ExponentialBackoff(e)) =
            Some(strategy(java(), &exponential))
        else {
            panic!("exponential as it is")
        };
        assert_eq!(
            (e.initial, e.max, e.multiplier),
            (Some(ms(500)), Some(secs(5)), 3.0)
        );
        let retry_policy::Strategy::CustomizedBackoff(t) = strategy(java(), &delays) else {
            panic!("a table as it is")
        };
        assert_eq!(t.next, vec![secs(2), secs(60)]);

        // Python reads only a table: the exponential one, written out until it stops growing.
        let python = || client(pb::Language::Python, "5.1.2");
        let retry_policy::Strategy::CustomizedBackoff(t) = strategy(python(), &exponential) else {
            panic!("python gets a table")
        };
        assert_eq!(t.next, vec![ms(500), ms(1500), ms(4500), secs(5)]);
        let retry_policy::Strategy::CustomizedBackoff(t) = strategy(python(), &delays) else {
            panic!("python gets a table")
        };
        assert_eq!(t.next, vec![secs(2), secs(60)]);

        // Node 1.0.8 reads only an exponential one, in milliseconds.
        let node = || client(pb::Language::NodeJs, "1.0.8");
        let retry_policy::Strategy::ExponentialBackoff(e) = strategy(node(), &exponential) else {
            panic!("node gets exponential")
        };
        assert_eq!(
            (e.initial, e.max, e.multiplier),
            (Some(secs(500)), Some(secs(5000)), 3.0)
        );
        let retry_policy::Strategy::ExponentialBackoff(e) = strategy(node(), &delays) else {
            panic!("node gets exponential")
        };
        assert_eq!(
            (e.initial, e.max, e.multiplier),
            (Some(secs(2000)), Some(secs(60_000)), 2.0)
        );
    }

    #[test]
    fn roles_come_from_pub_sub_then_client_type() {
        let simple = pb::Settings {
            client_type: Some(ClientType::SimpleConsumer as i32),
            ..Default::default()
        };
        assert_eq!(role_of(&simple), Role::Consumer);
        // A consumer without a subscription still gets every field the clients need.
        let out = effective_settings(simple, GroupPolicy::default(), &ProxyConfig::default());
        let Some(PubSub::Subscription(s)) = &out.pub_sub else {
            panic!("subscription added")
        };
        assert_eq!(s.receive_batch_size, Some(32));
        assert_eq!(out.backoff_policy.map(|p| p.max_attempts), Some(17));

        let odd = pb::Settings {
            client_type: Some(99),
            ..Default::default()
        };
        assert_eq!(role_of(&odd), Role::Unknown);
        let out = effective_settings(odd, GroupPolicy::default(), &ProxyConfig::default());
        assert!(out.pub_sub.is_none() && out.backoff_policy.is_none());
        assert_eq!(
            out.metric,
            Some(pb::Metric {
                on: false,
                endpoints: None
            })
        );
    }
}
