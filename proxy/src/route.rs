//! Routes as clients need them (protocol.md §4.1): which endpoints we advertise, the queue
//! list of a topic, and which queue a produced message goes to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vela_proto::pb::rocketmq::{self as pb, AddressScheme, MessageType, Permission};
use vela_proto::{MessageKind, TopicConfig, TopicName};

/// Name of the single logical broker the proxy presents.
pub(crate) const BROKER_NAME: &str = "vela";

/// Why an advertised endpoint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {0:?} is not host:port")]
pub(crate) struct EndpointError(String);

/// Parses `host:port` (`[v6]:port` for IPv6) into wire endpoints.
pub(crate) fn parse_endpoint(text: &str) -> Result<pb::Endpoints, EndpointError> {
    let bad = || EndpointError(text.to_owned());
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ']) {
        return Err(bad());
    }
    Ok(endpoints_of(host, port))
}

/// One-address endpoints with the scheme matching the host string.
pub(crate) fn endpoints_of(host: &str, port: u16) -> pb::Endpoints {
    pb::Endpoints {
        scheme: scheme_of(host) as i32,
        addresses: vec![pb::Address {
            host: host.to_owned(),
            port: i32::from(port),
        }],
    }
}

fn scheme_of(host: &str) -> AddressScheme {
    if host.parse::<Ipv4Addr>().is_ok() {
        AddressScheme::IPv4
    } else if host.parse::<Ipv6Addr>().is_ok() {
        AddressScheme::IPv6
    } else {
        AddressScheme::DomainName
    }
}

/// Endpoints for the listen address; an unspecified IP (0.0.0.0) becomes loopback, since it
/// is not something a client can dial.
pub(crate) fn listen_endpoints(addr: SocketAddr) -> pb::Endpoints {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    endpoints_of(&ip.to_string(), addr.port())
}

/// The endpoints to put into routes: the configured ones, else the ones the client used (as
/// the Java proxy does, keeping the client's view of the access point), else `fallback`.
pub(crate) fn route_endpoints(
    advertised: Option<&pb::Endpoints>,
    requested: Option<&pb::Endpoints>,
    fallback: &pb::Endpoints,
) -> pb::Endpoints {
    if let Some(advertised) = advertised {
        return advertised.clone();
    }
    let usable = |a: &pb::Address| !a.host.trim().is_empty() && (1..=65535).contains(&a.port);
    match requested {
        Some(req) if !req.addresses.is_empty() && req.addresses.iter().all(usable) => {
            let mut out = req.clone();
            if out.scheme == AddressScheme::Unspecified as i32 {
                out.scheme = scheme_of(&out.addresses[0].host) as i32;
            }
            out
        }
        _ => fallback.clone(),
    }
}

/// The wire message type of a kind.
pub(crate) fn message_type_of(kind: MessageKind) -> MessageType {
    match kind {
        MessageKind::Normal => MessageType::Normal,
        MessageKind::Fifo => MessageType::Fifo,
        MessageKind::Delay => MessageType::Delay,
        MessageKind::Transaction => MessageType::Transaction,
        MessageKind::Priority => MessageType::Priority,
    }
}

/// The wire topic resource of a topic: its namespace split back out.
pub(crate) fn topic_resource(topic: &TopicName) -> pb::Resource {
    let (namespace, name) = topic.split_namespace();
    pb::Resource {
        resource_namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// One `MessageQueue` per queue, ids `0..n` (Node 1.0.8 only uses queue 0, so it is always
/// there), on the one broker at `endpoints`: readable and writable, except a dead-letter
/// topic's, which producers may not write (sends to it are refused).
pub(crate) fn message_queues(
    topic: &TopicConfig,
    endpoints: &pb::Endpoints,
) -> Vec<pb::MessageQueue> {
    let accept: Vec<i32> = topic
        .topic_type
        .accepted_kinds()
        .iter()
        .map(|k| message_type_of(*k) as i32)
        .collect();
    let resource = topic_resource(&topic.name);
    let permission = if topic.name.as_str().starts_with(vela_proto::DLQ_PREFIX) {
        Permission::Read
    } else {
        Permission::ReadWrite
    };
    // A topic always has at least one queue on the wire: Rust 5.0.0 takes a modulo by the count.
    let count = topic.queue_count.max(1);
    (0..count)
        .map(|id| pb::MessageQueue {
            topic: Some(resource.clone()),
            id: i32::try_from(id).unwrap_or(i32::MAX),
            permission: permission as i32,
            broker: Some(pb::Broker {
                name: BROKER_NAME.to_owned(),
                id: 0,
                endpoints: Some(endpoints.clone()),
            }),
            accept_message_types: accept.clone(),
        })
        .collect()
}

/// The queue a FIFO message group maps to: a stable hash (FNV-1a), so every producer of the
/// group lands on the same queue whatever client library hashed it on its side.
pub(crate) fn fifo_queue(message_group: &str, queue_count: u32) -> u32 {
    (vela_proto::message_group_hash(message_group) % u64::from(queue_count.max(1))) as u32
}

/// The queue a producer asked for, if it is usable. Queue 0 counts as "not asked": it is the
/// proto3 default, Python never fills the field and Node always picks 0 (its queue-0 bug), so
/// honouring it would pile every message onto one queue.
pub(crate) fn requested_queue(queue_id: i32, queue_count: u32) -> Option<u32> {
    u32::try_from(queue_id)
        .ok()
        .filter(|q| *q > 0 && *q < queue_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_proto::TopicType;

    fn topic(topic_type: TopicType, queue_count: u32) -> TopicConfig {
        TopicConfig {
            name: TopicName::from_resource("tenant", "orders").expect("valid"),
            topic_type,
            queue_count,
            queue_shards: vec![0; queue_count as usize],
            created_at_ms: 0,
            auto_created: false,
            retention_ms: None,
            retention_revision: 0,
        }
    }

    #[test]
    fn endpoints_parse() {
        let ep = parse_endpoint("10.0.0.1:8081").expect("valid");
        assert_eq!(ep.scheme, AddressScheme::IPv4 as i32);
        assert_eq!(
            ep.addresses,
            vec![pb::Address {
                host: "10.0.0.1".into(),
                port: 8081
            }]
        );
        assert_eq!(
            parse_endpoint("[::1]:9").expect("valid").scheme,
            AddressScheme::IPv6 as i32
        );
        assert_eq!(
            parse_endpoint("mq.example.com:8081").expect("valid").scheme,
            AddressScheme::DomainName as i32
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:99999",
            "http://x:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn route_endpoints_prefer_config_then_request() {
        let fallback = listen_endpoints("0.0.0.0:8081".parse().expect("addr"));
        assert_eq!(fallback.addresses[0].host, "127.0.0.1");
        let configured = parse_endpoint("mq:1").expect("valid");
        let requested = endpoints_of("192.168.1.2", 8081);
        assert_eq!(
            route_endpoints(Some(&configured), Some(&requested), &fallback),
            configured
        );
        assert_eq!(
            route_endpoints(None, Some(&requested), &fallback),
            requested
        );
        let empty = pb::Endpoints::default();
        assert_eq!(route_endpoints(None, Some(&empty), &fallback), fallback);
        assert_eq!(route_endpoints(None, None, &fallback), fallback);
        let mut unspecified = requested.clone();
        unspecified.scheme = 0;
        assert_eq!(
            route_endpoints(None, Some(&unspecified), &fallback),
            requested
        );
    }

    #[test]
    fn queues_cover_every_id_with_the_topic_types() {
        let ep = endpoints_of("127.0.0.1", 8081);
        let queues = message_queues(&topic(TopicType::Fifo, 4), &ep);
        assert_eq!(
            queues.iter().map(|q| q.id).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        for q in &queues {
            let res = q.topic.as_ref().expect("topic set");
            assert_eq!(
                (res.resource_namespace.as_str(), res.name.as_str()),
                ("tenant", "orders")
            );
            assert_eq!(q.permission, Permission::ReadWrite as i32);
            let broker = q.broker.as_ref().expect("broker set");
            assert_eq!((broker.name.as_str(), broker.id), (BROKER_NAME, 0));
            assert_eq!(broker.endpoints.as_ref(), Some(&ep));
            assert_eq!(q.accept_message_types, vec![MessageType::Fifo as i32]);
        }
        let mixed = message_queues(&topic(TopicType::Mixed, 0), &ep);
        assert_eq!(mixed.len(), 1, "never an empty route");
        let dead_letters = TopicConfig {
            name: TopicName::new("%DLQ%billing").expect("valid"),
            ..topic(TopicType::Normal, 1)
        };
        assert_eq!(
            message_queues(&dead_letters, &ep)[0].permission,
            Permission::Read as i32,
            "producers may not write a dead-letter topic"
        );
        assert_eq!(mixed[0].accept_message_types, vec![1, 2, 3, 4]);
    }

    #[test]
    fn queue_choice() {
        assert_eq!(fifo_queue("g1", 8), fifo_queue("g1", 8));
        assert!(fifo_queue("anything", 8) < 8);
        assert_eq!(fifo_queue("g", 0), 0);
        let spread: std::collections::HashSet<u32> = (0..64)
            .map(|i| fifo_queue(&format!("group-{i}"), 8))
            .collect();
        assert!(spread.len() > 4, "groups spread over queues: {spread:?}");
        assert_eq!(requested_queue(3, 8), Some(3));
        assert_eq!(requested_queue(0, 8), None);
        assert_eq!(requested_queue(8, 8), None);
        assert_eq!(requested_queue(-1, 8), None);
    }
}
