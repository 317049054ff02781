//! A topic's route (its message queues and their broker endpoints) and the queue choice made
//! from it: round-robin for normal sends and receives, a stable hash of the group for FIFO.

use std::sync::atomic::{AtomicUsize, Ordering};

use vela_proto::pb::rocketmq::{self as pb, Permission};

use crate::config::Endpoint;
use crate::error::{Error, Result};
use crate::message::MessageKind;

/// Broker id of a master (the only brokers the official clients send to or poll).
const MASTER_BROKER_ID: i32 = 0;

/// One queue of a route with its parsed endpoint.
#[derive(Debug, Clone)]
pub(crate) struct RouteQueue {
    /// The queue as the server described it; receives send it back verbatim.
    pub(crate) proto: pb::MessageQueue,
    pub(crate) endpoint: Endpoint,
}

impl RouteQueue {
    pub(crate) fn id(&self) -> i32 {
        self.proto.id
    }

    /// A queue the server described, with its broker's first endpoint; `None` for a queue of
    /// a slave broker (only masters are sent to or polled, as by the official clients).
    fn parse(rpc: &'static str, topic: &str, q: pb::MessageQueue) -> Result<Option<Self>> {
        let broker = q.broker.as_ref().ok_or_else(|| {
            Error::invalid_response(rpc, format!("queue {} of {topic} has no broker", q.id))
        })?;
        if broker.id != MASTER_BROKER_ID {
            return Ok(None);
        }
        let address = broker
            .endpoints
            .as_ref()
            .and_then(|e| e.addresses.first())
            .ok_or_else(|| {
                Error::invalid_response(
                    rpc,
                    format!("queue {} of {topic} has no broker endpoints", q.id),
                )
            })?;
        let endpoint = Endpoint::from_address(address)?;
        Ok(Some(RouteQueue { proto: q, endpoint }))
    }

    /// A queue a `QueryAssignment` reply assigned.
    pub(crate) fn from_assignment(topic: &str, q: pb::MessageQueue) -> Result<Self> {
        let id = q.id;
        RouteQueue::parse("QueryAssignment", topic, q)?.ok_or_else(|| {
            Error::invalid_response(
                "QueryAssignment",
                format!("queue {id} of {topic} is assigned on a slave broker"),
            )
        })
    }

    fn accepts(&self, kind: MessageKind) -> bool {
        // An empty list means the server did not restrict the types.
        self.proto.accept_message_types.is_empty()
            || self
                .proto
                .accept_message_types
                .contains(&(kind.to_proto() as i32))
    }
}

/// The queues of one topic, split by what a client may do with them.
#[derive(Debug)]
pub(crate) struct TopicRoute {
    topic: String,
    writable: Vec<RouteQueue>,
    readable: Vec<RouteQueue>,
    next_write: AtomicUsize,
    next_read: AtomicUsize,
}

impl TopicRoute {
    /// Builds the route from a `QueryRoute` reply's queues.
    pub(crate) fn from_proto(topic: &str, queues: Vec<pb::MessageQueue>) -> Result<Self> {
        let mut writable = Vec::new();
        let mut readable = Vec::new();
        for q in queues {
            let Some(queue) = RouteQueue::parse("QueryRoute", topic, q)? else {
                continue;
            };
            let permission =
                Permission::try_from(queue.proto.permission).unwrap_or(Permission::None);
            if matches!(permission, Permission::Write | Permission::ReadWrite) {
                writable.push(queue.clone());
            }
            if matches!(permission, Permission::Read | Permission::ReadWrite) {
                readable.push(queue);
            }
        }
        // Start the rotation at a random queue so that many clients spread out.
        let start: usize = rand::random::<u16>().into();
        Ok(TopicRoute {
            topic: topic.to_owned(),
            writable,
            readable,
            next_write: AtomicUsize::new(start),
            next_read: AtomicUsize::new(start),
        })
    }

    /// The queue for the next send: round-robin, or for FIFO the queue the group hashes to
    /// (so every message of a group lands on one queue). Checks the queue accepts `kind`.
    pub(crate) fn pick_writable(
        &self,
        kind: MessageKind,
        message_group: Option<&str>,
        validate_type: bool,
    ) -> Result<&RouteQueue> {
        if self.writable.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "topic {} has no writable queue",
                self.topic
            )));
        }
        let index = match message_group {
            Some(group) => fifo_queue_index(group, self.writable.len()),
            None => self.next_write.fetch_add(1, Ordering::Relaxed) % self.writable.len(),
        };
        let queue = &self.writable[index];
        if validate_type && !queue.accepts(kind) {
            return Err(Error::InvalidArgument(format!(
                "topic {} does not accept {kind:?} messages",
                self.topic
            )));
        }
        Ok(queue)
    }

    /// The queue for the next receive (round-robin).
    pub(crate) fn pick_readable(&self) -> Result<&RouteQueue> {
        if self.readable.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "topic {} has no readable queue",
                self.topic
            )));
        }
        let index = self.next_read.fetch_add(1, Ordering::Relaxed) % self.readable.len();
        Ok(&self.readable[index])
    }

    /// Every distinct endpoint the route names.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.writable
            .iter()
            .chain(&self.readable)
            .map(|q| &q.endpoint)
    }
}

/// SipHash-2-4 (with the Java client's Guava default key) of the group, reduced like
/// `LongMath.mod`, so a Rust and a Java producer put one group on the same queue.
fn fifo_queue_index(message_group: &str, queue_count: usize) -> usize {
    let hash = siphash24_guava(message_group.as_bytes()) as i64;
    hash.rem_euclid(queue_count as i64) as usize
}

fn siphash24_guava(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    // std's SipHasher is SipHash-2-4; it is deprecated only in favour of faster hashers, and
    // the algorithm itself is fixed, which is what a persistent queue choice needs.
    #[allow(deprecated)]
    let mut hasher =
        std::hash::SipHasher::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn queue(id: i32, permission: Permission, broker_id: i32) -> pb::MessageQueue {
        pb::MessageQueue {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            id,
            permission: permission as i32,
            broker: Some(pb::Broker {
                name: "b".into(),
                id: broker_id,
                endpoints: Some(pb::Endpoints {
                    scheme: pb::AddressScheme::IPv4 as i32,
                    addresses: vec![pb::Address {
                        host: "127.0.0.1".into(),
                        port: 8081,
                    }],
                }),
            }),
            accept_message_types: vec![
                pb::MessageType::Normal as i32,
                pb::MessageType::Fifo as i32,
            ],
        }
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // SipHash-2-4 paper, key 00..0f, empty input.
        assert_eq!(siphash24_guava(b""), 0x726f_db47_dd0e_0e31);
        // 15-byte input 00..0e from the reference test vectors.
        let input: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24_guava(&input), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn splits_queues_by_permission_and_master() {
        let route = TopicRoute::from_proto(
            "t",
            vec![
                queue(0, Permission::ReadWrite, 0),
                queue(1, Permission::Read, 0),
                queue(2, Permission::Write, 0),
                queue(3, Permission::ReadWrite, 1),
                queue(4, Permission::None, 0),
            ],
        )
        .unwrap();
        let mut written: Vec<i32> = (0..4)
            .map(|_| {
                route
                    .pick_writable(MessageKind::Normal, None, true)
                    .unwrap()
                    .id()
            })
            .collect();
        written.sort();
        assert_eq!(written, [0, 0, 2, 2]);
        let mut read: Vec<i32> = (0..4)
            .map(|_| route.pick_readable().unwrap().id())
            .collect();
        read.sort();
        assert_eq!(read, [0, 0, 1, 1]);
    }

    #[test]
    fn fifo_groups_stick_to_one_queue() {
        let queues = (0..8).map(|i| queue(i, Permission::ReadWrite, 0)).collect();
        let route = TopicRoute::from_proto("t", queues).unwrap();
        let first = route
            .pick_writable(MessageKind::Fifo, Some("g1"), true)
            .unwrap()
            .id();
        for _ in 0..20 {
            assert_eq!(
                route
                    .pick_writable(MessageKind::Fifo, Some("g1"), true)
                    .unwrap()
                    .id(),
                first
            );
        }
        let distinct: std::collections::HashSet<usize> = (0..100)
            .map(|i| fifo_queue_index(&format!("group-{i}"), 8))
            .collect();
        assert!(distinct.len() > 4, "groups should spread over queues");
    }

    #[test]
    fn rejects_unaccepted_types_and_empty_routes() {
        let route = TopicRoute::from_proto("t", vec![queue(0, Permission::ReadWrite, 0)]).unwrap();
        assert!(route.pick_writable(MessageKind::Delay, None, true).is_err());
        assert!(route.pick_writable(MessageKind::Delay, None, false).is_ok());
        let empty = TopicRoute::from_proto("t", vec![]).unwrap();
        assert!(
            empty
                .pick_writable(MessageKind::Normal, None, true)
                .is_err()
        );
        assert!(empty.pick_readable().is_err());
        let mut broken = queue(0, Permission::ReadWrite, 0);
        broken.broker.as_mut().unwrap().endpoints = None;
        assert!(TopicRoute::from_proto("t", vec![broken]).is_err());
    }
}
