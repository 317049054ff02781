//! The deliveries this proxy handed to each client that it has not seen settled, so that a
//! client leaving gives its messages back at once: each is made visible again after
//! [`RELEASE_AFTER`] instead of at the end of its invisibility, as RocketMQ does. A client
//! leaves by `NotifyClientTermination`, or by vanishing: its last Telemetry stream here ended
//! and no new one opened within `proxy.client_release_grace` (a crashed process; clients
//! re-open a broken stream within seconds). Memory only, and only a shortcut: what a proxy
//! restart forgets, or what a client settled through another proxy, is handled by the store as
//! always (the invisibility runs out; a release of an already settled delivery is refused as
//! stale).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vela_proto::receipt::ReceiptTicket;
use vela_proto::{GroupName, ShardId, TopicName};

/// How soon the messages of a departing client become visible again.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// Deliveries remembered per client at most; beyond, new ones are not remembered.
const MAX_PER_CLIENT: usize = 65_536;
/// How often expired deliveries of every client are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One delivered message, whatever its current delivery id.
type Key = (ShardId, GroupName, TopicName, u32, u64);

fn key(t: &ReceiptTicket) -> Key {
    (
        t.shard,
        t.group.clone(),
        t.topic.clone(),
        t.queue_id,
        t.offset,
    )
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, HashMap<Key, ReceiptTicket>>,
    swept: Option<Instant>,
    /// Open Telemetry streams per client, and how many streams each client has opened so far
    /// (so a grace period can tell whether the client came back meanwhile).
    streams: HashMap<String, (usize, u64)>,
}

#[derive(Default)]
pub(crate) struct Held {
    inner: Mutex<Inner>,
}

impl Held {
    /// `client` received these deliveries.
    pub fn delivered<'a>(
        &self,
        client: &str,
        tickets: impl IntoIterator<Item = &'a ReceiptTicket>,
        now_ms: i64,
    ) {
        let mut inner = self.inner.lock();
        if inner.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            inner.swept = Some(Instant::now());
            for held in inner.clients.values_mut() {
                held.retain(|_, t| t.visible_at_ms > now_ms);
            }
            inner.clients.retain(|_, held| !held.is_empty());
        }
        let held = inner.clients.entry(client.to_owned()).or_default();
        for ticket in tickets {
            if held.len() >= MAX_PER_CLIENT {
                held.retain(|_, t| t.visible_at_ms > now_ms);
                if held.len() >= MAX_PER_CLIENT {
                    return;
                }
            }
            held.insert(key(ticket), ticket.clone());
        }
    }

    /// The delivery was acknowledged or dead-lettered.
    pub fn settled(&self, client: &str, ticket: &ReceiptTicket) {
        let mut inner = self.inner.lock();
        if let Some(held) = inner.clients.get_mut(client) {
            held.remove(&key(ticket));
            if held.is_empty() {
                inner.clients.remove(client);
            }
        }
    }

    /// The delivery's invisibility changed: `renewed` is its new ticket.
    pub fn renewed(&self, client: &str, renewed: &ReceiptTicket) {
        if let Some(held) = self.inner.lock().clients.get_mut(client) {
            let k = key(renewed);
            if held.contains_key(&k) {
                held.insert(k, renewed.clone());
            }
        }
    }

    /// A Telemetry stream of `client` opened.
    pub fn stream_opened(&self, client: &str) {
        let mut inner = self.inner.lock();
        let (open, opened) = inner.streams.entry(client.to_owned()).or_default();
        *open += 1;
        *opened += 1;
    }

    /// A Telemetry stream of `client` ended. Returns a mark to pass to
    /// [`gone_since`](Self::gone_since) when it was the client's last one.
    pub fn stream_closed(&self, client: &str) -> Option<u64> {
        let mut inner = self.inner.lock();
        let (open, opened) = inner.streams.get_mut(client)?;
        *open = open.saturating_sub(1);
        (*open == 0).then_some(*opened)
    }

    /// Whether `client` opened no stream since its last one ended (`mark`); if so it is
    /// forgotten, and what it holds is taken.
    pub fn gone_since(&self, client: &str, mark: u64) -> Option<Vec<ReceiptTicket>> {
        {
            let mut inner = self.inner.lock();
            match inner.streams.get(client) {
                Some(&(0, opened)) if opened == mark => {
                    inner.streams.remove(client);
                }
                _ => return None,
            }
        }
        Some(self.take(client, None))
    }

    /// Forgets and returns what `client` holds of `group` (of every group when `None`).
    pub fn take(&self, client: &str, group: Option<&GroupName>) -> Vec<ReceiptTicket> {
        let mut inner = self.inner.lock();
        let Some(held) = inner.clients.get_mut(client) else {
            return Vec::new();
        };
        let taken: Vec<Key> = held
            .keys()
            .filter(|k| group.is_none_or(|g| &k.1 == g))
            .cloned()
            .collect();
        let tickets = taken.iter().filter_map(|k| held.remove(k)).collect();
        if held.is_empty() {
            inner.clients.remove(client);
        }
        tickets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(group: &str, offset: u64, delivery_id: u64, visible_at_ms: i64) -> ReceiptTicket {
        ReceiptTicket {
            shard: 0,
            group: GroupName::new(group).expect("valid"),
            topic: TopicName::new("orders").expect("valid"),
            queue_id: 0,
            offset,
            delivery_id,
            visible_at_ms,
        }
    }

    #[test]
    fn a_client_gives_back_what_it_holds_and_not_what_it_settled() {
        let held = Held::default();
        let (a0, a1, b0) = (
            ticket("a", 0, 1, 100),
            ticket("a", 1, 1, 100),
            ticket("b", 0, 2, 100),
        );
        held.delivered("c1", [&a0, &a1, &b0], 0);
        held.delivered("c2", [&ticket("a", 5, 3, 100)], 0);
        held.settled("c1", &a1);
        let renewed = ticket("a", 0, 9, 200);
        held.renewed("c1", &renewed);

        let a = GroupName::new("a").expect("valid");
        assert_eq!(
            held.take("c1", Some(&a)),
            vec![renewed],
            "the current ticket, not the acked"
        );
        assert_eq!(held.take("c1", None), vec![b0]);
        assert!(held.take("c1", None).is_empty(), "taken once");
        assert_eq!(held.take("c2", None).len(), 1, "other clients keep theirs");
        assert!(held.inner.lock().clients.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_client_is_gone_when_no_stream_reopened() {
        let held = Held::default();
        held.delivered("c", [&ticket("a", 0, 1, 100)], 0);
        held.stream_opened("c");
        held.stream_opened("c");
        assert_eq!(held.stream_closed("c"), None, "one still open");
        let mark = held.stream_closed("c").expect("the last one");
        // It came back within the grace: nothing is released.
        held.stream_opened("c");
        assert!(held.gone_since("c", mark).is_none());
        let mark = held.stream_closed("c").expect("the last one");
        assert_eq!(held.gone_since("c", mark).map(|t| t.len()), Some(1));
        assert!(held.gone_since("c", mark).is_none(), "once");
        assert!(held.inner.lock().streams.is_empty());
    }

    #[test]
    fn expired_deliveries_are_swept() {
        let held = Held::default();
        held.delivered("gone", [&ticket("a", 0, 1, 100)], 0);
        // The next sweep (the first call sweeps at once) forgets what expired.
        held.inner.lock().swept = None;
        held.delivered("other", [&ticket("a", 1, 2, 10_000)], 5_000);
        assert!(held.take("gone", None).is_empty());
        assert_eq!(held.take("other", None).len(), 1);
    }
}
