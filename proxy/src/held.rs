//! The deliveries this proxy handed to each client that it has not seen settled, so that a
//! client leaving gives its messages back at once: each is made visible again after
//! [`RELEASE_AFTER`] instead of at the end of its invisibility, as RocketMQ does. A client
//! leaves by `NotifyClientTermination`, or by vanishing: its last Telemetry stream here ended
//! and no new one opened within `proxy.client_release_grace` (a crashed process; clients
//! re-open a broken stream within seconds). Memory only, and only a shortcut: what a proxy
//! restart forgets, or what a client settled through another proxy, is handled by the store as
//! always (the invisibility runs out; a release of an already settled delivery is refused as
//! stale).
//!
//! It is also what the proxy renews for push consumers that asked for `auto_renew`: a
//! delivery received that way is kept invisible ([`Held::due`], renewed by the store keeping
//! its delivery id, so the client's handle stays valid) until it is settled, the client changes
//! its invisibility itself (a push consumer's negative acknowledgement), the client leaves, or
//! `proxy.auto_renew_max` passed since it was received. A proxy restart forgets these too: the
//! message then comes back when its last renewal runs out.

use std::collections::{HashMap, VecDeque};
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

/// How the proxy keeps a delivery invisible on its client's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// Each renewal makes it invisible for this long.
    pub invisible: Duration,
    /// No renewal after this time (Unix ms).
    pub until_ms: i64,
}

/// A delivery held by a client.
#[derive(Debug, Clone)]
struct Delivered {
    ticket: ReceiptTicket,
    renewal: Option<Renewal>,
}

/// Receives remembered per client by their `attempt_id`, the most recent ones.
const RECENT_ATTEMPTS: usize = 64;

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
    clients: HashMap<String, HashMap<Key, Delivered>>,
    swept: Option<Instant>,
    /// Open Telemetry streams per client, and how many streams each client has opened so far
    /// (so a grace period can tell whether the client came back meanwhile).
    streams: HashMap<String, (usize, u64)>,
    /// Per client, its most recent receives that carried an `attempt_id`, oldest first, with
    /// what each delivered.
    attempts: HashMap<String, VecDeque<(String, Vec<Key>)>>,
}

#[derive(Default)]
pub(crate) struct Held {
    inner: Mutex<Inner>,
}

impl Held {
    /// `client` received these deliveries, by a receive with `attempt` as its `attempt_id`;
    /// with `renewal`, the proxy keeps them invisible.
    pub fn delivered<'a>(
        &self,
        client: &str,
        tickets: impl IntoIterator<Item = &'a ReceiptTicket>,
        now_ms: i64,
        renewal: Option<Renewal>,
        attempt: Option<&str>,
    ) {
        let mut inner = self.inner.lock();
        if inner.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            inner.swept = Some(Instant::now());
            for held in inner.clients.values_mut() {
                held.retain(|_, d| d.ticket.visible_at_ms > now_ms);
            }
            inner.clients.retain(|_, held| !held.is_empty());
            let Inner {
                clients, attempts, ..
            } = &mut *inner;
            attempts.retain(|client, _| clients.contains_key(client));
        }
        let attempt = attempt.filter(|a| !a.is_empty());
        let mut keys = Vec::new();
        let held = inner.clients.entry(client.to_owned()).or_default();
        for ticket in tickets {
            if held.len() >= MAX_PER_CLIENT {
                held.retain(|_, d| d.ticket.visible_at_ms > now_ms);
                if held.len() >= MAX_PER_CLIENT {
                    break;
                }
            }
            let k = key(ticket);
            if attempt.is_some() {
                keys.push(k.clone());
            }
            held.insert(
                k,
                Delivered {
                    ticket: ticket.clone(),
                    renewal,
                },
            );
        }
        if let Some(attempt) = attempt
            && !keys.is_empty()
        {
            let recent = inner.attempts.entry(client.to_owned()).or_default();
            if recent.len() >= RECENT_ATTEMPTS {
                recent.pop_front();
            }
            recent.push_back((attempt.to_owned(), keys));
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

    /// The client changed the delivery's invisibility: `renewed` is its new ticket. From now
    /// on the client decides when it comes back (a push consumer's negative acknowledgement),
    /// so the proxy no longer renews it.
    pub fn renewed(&self, client: &str, renewed: &ReceiptTicket) {
        if let Some(held) = self.inner.lock().clients.get_mut(client)
            && let Some(d) = held.get_mut(&key(renewed))
        {
            d.ticket = renewed.clone();
            d.renewal = None;
        }
    }

    /// The deliveries the proxy renews that become visible within `ahead` of `now_ms`, with
    /// their client and how long to renew them for. Those whose renewals ran out
    /// (`until_ms`) are no longer renewed: they come back when their invisibility ends.
    pub fn due(&self, now_ms: i64, ahead: Duration) -> Vec<(String, ReceiptTicket, Duration)> {
        let ahead_ms = i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX);
        let mut due = Vec::new();
        let mut inner = self.inner.lock();
        for (client, held) in inner.clients.iter_mut() {
            for d in held.values_mut() {
                let Some(renewal) = d.renewal else { continue };
                if now_ms >= renewal.until_ms {
                    d.renewal = None;
                } else if d.ticket.visible_at_ms.saturating_sub(now_ms) <= ahead_ms
                    && d.ticket.visible_at_ms > now_ms
                {
                    due.push((client.clone(), d.ticket.clone(), renewal.invisible));
                }
            }
        }
        due
    }

    /// The proxy renewed a delivery of `client`: `renewed` is the same delivery, visible later.
    /// Ignored when the delivery meanwhile was settled or changed by the client.
    pub fn renewed_here(&self, client: &str, renewed: &ReceiptTicket) {
        if let Some(held) = self.inner.lock().clients.get_mut(client)
            && let Some(d) = held.get_mut(&key(renewed))
            && d.ticket.delivery_id == renewed.delivery_id
            && d.renewal.is_some()
        {
            d.ticket.visible_at_ms = d.ticket.visible_at_ms.max(renewed.visible_at_ms);
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

    /// Forgets and returns what `client` received by a receive with `attempt_id` `attempt`:
    /// the client asks again with the same id, so that answer never reached it.
    /// Only the client's [`RECENT_ATTEMPTS`] latest receives are remembered this way.
    pub fn take_attempt(&self, client: &str, attempt: &str) -> Vec<ReceiptTicket> {
        let mut inner = self.inner.lock();
        let Some(recent) = inner.attempts.get_mut(client) else {
            return Vec::new();
        };
        let Some(at) = recent.iter().position(|(a, _)| a == attempt) else {
            return Vec::new();
        };
        let keys = recent.remove(at).map(|(_, keys)| keys).unwrap_or_default();
        let Some(held) = inner.clients.get_mut(client) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| held.remove(k))
            .map(|d| d.ticket)
            .collect()
    }

    /// Forgets and returns what `client` holds of `group` (of every group when `None`).
    pub fn take(&self, client: &str, group: Option<&GroupName>) -> Vec<ReceiptTicket> {
        let mut inner = self.inner.lock();
        let Some(held) = inner.clients.get_mut(client) else {
            return Vec::new();
        };
        let taken: Vec<Key> = held
            .keys()
            .filter(|k| group.is_none_or(|g| g.owns(&k.1)))
            .cloned()
            .collect();
        let tickets = taken
            .iter()
            .filter_map(|k| held.remove(k))
            .map(|d| d.ticket)
            .collect();
        if held.is_empty() {
            inner.clients.remove(client);
            inner.attempts.remove(client);
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
        held.delivered("c1", [&a0, &a1, &b0], 0, None, None);
        held.delivered("c2", [&ticket("a", 5, 3, 100)], 0, None, None);
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
        held.delivered("c", [&ticket("a", 0, 1, 100)], 0, None, None);
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
        held.delivered("gone", [&ticket("a", 0, 1, 100)], 0, None, None);
        // The next sweep (the first call sweeps at once) forgets what expired.
        held.inner.lock().swept = None;
        held.delivered("other", [&ticket("a", 1, 2, 10_000)], 5_000, None, None);
        assert!(held.take("gone", None).is_empty());
        assert_eq!(held.take("other", None).len(), 1);
    }

    #[test]
    fn renewed_deliveries_come_due_until_the_client_takes_over_or_time_runs_out() {
        let held = Held::default();
        let renewal = Renewal {
            invisible: Duration::from_secs(60),
            until_ms: 100_000,
        };
        let (a, b, c) = (
            ticket("g", 0, 1, 60_000),
            ticket("g", 1, 1, 60_000),
            ticket("g", 2, 1, 60_000),
        );
        held.delivered("push", [&a, &b, &c], 0, Some(renewal), None);
        held.delivered("simple", [&ticket("g", 3, 2, 60_000)], 0, None, None);
        assert!(
            held.due(30_000, Duration::from_secs(20)).is_empty(),
            "not yet"
        );
        let due = held.due(45_000, Duration::from_secs(20));
        assert_eq!(due.len(), 3, "only what asked for renewal: {due:?}");
        assert!(
            due.iter()
                .all(|(client, _, d)| client == "push" && *d == renewal.invisible)
        );

        // Renewed here: the same delivery id, visible later; not due again soon.
        held.renewed_here(
            "push",
            &ReceiptTicket {
                visible_at_ms: 105_000,
                ..a.clone()
            },
        );
        // A stale answer for a delivery the client meanwhile changed is ignored.
        let nacked = ReceiptTicket {
            delivery_id: 7,
            visible_at_ms: 50_000,
            ..b.clone()
        };
        held.renewed("push", &nacked);
        held.renewed_here(
            "push",
            &ReceiptTicket {
                visible_at_ms: 105_000,
                ..b.clone()
            },
        );
        held.settled("push", &c);
        let due = held.due(45_000, Duration::from_secs(20));
        assert!(
            due.is_empty(),
            "renewed, nacked by the client, settled: {due:?}"
        );
        let taken = held.take("push", None);
        assert!(
            taken.contains(&nacked),
            "the client's own change is what it holds"
        );

        // Renewals stop at `until_ms`.
        held.delivered("push", [&a], 0, Some(renewal), None);
        assert_eq!(held.due(45_000, Duration::from_secs(20)).len(), 1);
        assert!(held.due(100_000, Duration::from_secs(20)).is_empty());
        assert!(
            held.due(45_000, Duration::from_secs(20)).is_empty(),
            "for good"
        );
    }

    #[test]
    fn a_repeated_attempt_takes_back_what_its_first_answer_delivered() {
        let held = Held::default();
        held.delivered(
            "c",
            [&ticket("g", 0, 1, 100), &ticket("g", 1, 1, 100)],
            0,
            None,
            Some("a1"),
        );
        held.delivered("c", [&ticket("g", 2, 2, 100)], 0, None, Some("a2"));
        held.delivered("c", [&ticket("g", 3, 3, 100)], 0, None, None);
        held.delivered("c", [&ticket("g", 4, 4, 100)], 0, None, Some(""));
        let mut first: Vec<u64> = held
            .take_attempt("c", "a1")
            .iter()
            .map(|t| t.offset)
            .collect();
        first.sort();
        assert_eq!(first, [0, 1]);
        assert!(held.take_attempt("c", "a1").is_empty(), "once");
        assert!(
            held.take_attempt("c", "").is_empty(),
            "an empty id names no attempt"
        );
        assert!(held.take_attempt("other", "a2").is_empty(), "per client");
        assert_eq!(held.take("c", None).len(), 3);
    }
}
