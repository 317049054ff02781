//! Producers must not starve consumers. On a saturated node every request's next step waits in
//! the same run queue, so each client is served in proportion to the requests it has in flight:
//! a producer with 256 sends in flight against a consumer with 32 acks gets ~8 of every 9 turns,
//! and the consumer falls ever further behind (measured: 2.5 k msg/s consumed against 31 k
//! produced, `benches/peers.sh`).
//!
//! [`Fairness`], one per shard, evens that out at the shard's door. One per shard, not per node,
//! so appends stuck on one shard (a slow disk, a leader without quorum) never hold up another
//! shard's. While consumer work on the shard is in progress (acks,
//! changes of invisibility, dead-lettering, and receives that are writing a pop: not receives
//! that are only long-polling), appends admitted at once are capped at half the number of
//! messages that consumer work covers (at least [`MIN_PRODUCE_SHARE`]); the rest wait here,
//! parked, in arrival order, instead of crowding the run queue. Half, because a consumer's
//! message costs about twice a producer's on this path (a receive share plus one ack request
//! against one send request); measured with `benches/peers.sh` (mixed phase, one producer with
//! 256 in flight, one consumer of 32): no cap 31 k in / 2.5 k out, a cap of the full share
//! 12.8 k / 5.7 k, half of it 8.0–8.5 k / 6.6–7.0 k. With no consumer work in progress nothing
//! is capped, so a producer alone keeps all of its concurrency (and its group commit), and a
//! consumer that is slow on its own side throttles nobody.
//!
//! The cap applies only while the node is saturated (`saturation`: its runtime runs timers
//! late), because only then do requests crowd each other out. On a node with room a consumer
//! that keeps up and a producer both get what they ask for: capped regardless, an open-loop
//! producer at 10,000 msg/s (20–35 sends in flight) beside a consumer receiving 32 at a time got
//! at most 16 appends in flight and queued the rest.
//!
//! The cap outlasts each piece of consumer work by [`LINGER`]: a consumer alternates a receive
//! and its acks with a short gap between them, and appends admitted in that gap without a cap
//! would crowd the run queue again before the acks arrive.
//!
//! The cap protects consumers that keep up with producers, not history being replayed. A group
//! whose last receive from the shard delivered only messages stored more than
//! [`CATCHING_UP_AFTER`] before is *catching up*: its receives and acks do not cap appends (they compete in the run
//! queue like any request), so a replay from the start of a deep backlog leaves live producers
//! their concurrency. Capped by it, an open-loop producer at half the single-message peak
//! (10,000 msg/s, 20–35 sends in flight) got 8,100 msg/s through a cap of 16 and its sends
//! queued for seconds; uncapped, it kept its rate and its sends took milliseconds
//! (`docs/benchmarks.md`, "A replay and live sends, open loop"). The group is live again as
//! soon as a receive delivers recent messages.
//!
//! Half the share keeps a live consumer from starving, not from falling behind: next to a
//! producer at full speed on one saturated core it got 60 % of the produce rate, so its backlog
//! and its messages' end-to-end latency grew for as long as the producer ran (p50 2.6–2.8 s
//! after 15 s). A live group whose receive came back full and delivered for the first time a
//! message stored more than [`BEHIND_AFTER`] before is *behind* ([`Pace`]: a receive that got
//! fewer than it asked for has caught up with what there is, unless the group is FIFO; a
//! redelivered message keeps its store time):
//! while any group is (judged again by each of its receives, forgotten [`BEHIND_FOR`] after the
//! last one that said so), the cap is [`BEHIND_CAP`] appends at a time, so the producers wait
//! while the consumer catches up, and get their share back as soon as its receives deliver
//! recent messages again. Measured with `benches/peers.sh` (mixed phase, one producer
//! with 256 in flight, one consumer of 32, broker on one core; `docs/benchmarks.md`): the
//! consumer got 93 % of the produce rate (60 % before) and 15–37 % more messages a second,
//! end-to-end p50 0.1–0.3 s (2.6–2.8 s), the producer 12–24 % fewer. A cap of 4 kept 90 %, a
//! threshold of 50 ms the same as 20. The backlog still grows, more slowly (end-to-end p99
//! 2.4–2.8 s over 15 s, 5.7 s over 40 s): two appends at a time still outpace this consumer
//! a little. Like the share, this applies only while the node is saturated: a consumer slow on
//! its own side leaves the node room, and room lifts every cap; but on a node saturated by
//! something else, a group behind narrows every producer on the shard, those of other topics
//! too (the cap is the shard's, not a topic's).
//! (Keeping the narrow cap for 500 ms after the node stops being saturated did worse: the
//! producers' sends queued for seconds at 5,000 msg/s.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use vela_proto::domain::GroupName;

use super::saturation::Saturation;

/// Appends admitted at once while consumer work is in progress, however little that work is.
pub(crate) const MIN_PRODUCE_SHARE: usize = 8;
/// How long the cap stays after consumer work ends.
pub(crate) const LINGER: Duration = Duration::from_millis(10);
/// A group receiving messages stored longer ago than this is catching up, and its consumer
/// work does not cap appends. Well above how far a consumer that keeps up falls behind in a
/// burst, well below the age of the history a replay reads.
pub(crate) const CATCHING_UP_AFTER: Duration = Duration::from_secs(30);
/// A live group whose full receive delivered for the first time a message stored longer ago
/// than this is behind its producers (see the module docs, [`Pace`]): about what the issue allows a consumer that keeps up in
/// end-to-end latency (p99 50 ms), less one receive-and-ack cycle.
pub(crate) const BEHIND_AFTER: Duration = Duration::from_millis(20);
/// How long a group stays behind after the last receive that said so, unless a receive says
/// it caught up: a consumer that keeps receiving says so again well within it, one that went
/// away stops holding the producers back.
pub(crate) const BEHIND_FOR: Duration = Duration::from_millis(500);
/// Appends admitted at once while a live group is behind: enough that producers go on (and a
/// batch still commits with the next one), few enough that a consumer outpaces them.
pub(crate) const BEHIND_CAP: usize = 2;
/// Groups remembered as catching up at most; past it the set starts afresh (each group is
/// classified again by its next receive).
const MAX_CATCHING_UP: usize = 4096;

#[derive(Debug, Default)]
struct State {
    /// Appends admitted and not yet answered.
    producing: usize,
    /// Messages covered by consumer work in progress.
    consuming: usize,
    /// The most `consuming` reached since consumer work last started from none: the cap that
    /// lingers.
    share: usize,
    /// When consumer work last ended (`consuming` fell to 0).
    idle_since: Option<Instant>,
    /// Appends waiting for admission, oldest first. The sender's `send` hands the waiter an
    /// admission already counted in `producing`.
    waiting: VecDeque<oneshot::Sender<()>>,
    /// Groups whose last receive delivered history (see the module docs).
    catching_up: HashSet<GroupName>,
    /// Live groups whose last receive found them behind, with when it did.
    behind: HashMap<GroupName, Instant>,
}

impl State {
    /// The appends admitted at once; without consumer work in progress, or on a node that is
    /// not `saturated`, no limit.
    fn produce_cap(&self, saturated: bool) -> usize {
        let lingering = self.idle_since.is_some_and(|at| at.elapsed() < LINGER);
        if !saturated || (self.consuming == 0 && !lingering) {
            usize::MAX
        } else if self.behind.values().any(|at| at.elapsed() < BEHIND_FOR) {
            BEHIND_CAP
        } else {
            (self.share / 2).max(MIN_PRODUCE_SHARE)
        }
    }

    /// Admits waiting appends while the cap allows.
    fn admit_waiting(&mut self, saturated: bool) {
        while self.producing < self.produce_cap(saturated) {
            let Some(next) = self.waiting.pop_front() else {
                return;
            };
            self.producing += 1;
            if next.send(()).is_err() {
                // The waiter went away before its turn.
                self.producing -= 1;
            }
        }
    }
}

/// The admission policy between appends and consumer work (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Fairness {
    state: Mutex<State>,
    /// The node's saturation signal, once the store attached it; until then the node counts
    /// as saturated (the cap applies whenever consumer work is in progress).
    saturation: std::sync::OnceLock<Arc<Saturation>>,
}

impl Fairness {
    /// Caps appends only while `saturation` says the node is saturated. The first call wins.
    pub fn attach(&self, saturation: Arc<Saturation>) {
        let _ = self.saturation.set(saturation);
    }

    /// Whether the cap applies now (whenever consumer work is in progress).
    pub(crate) fn saturated(&self) -> bool {
        self.saturation.get().is_none_or(|s| s.saturated())
    }

    /// Waits until an append may go on; the admission lasts as long as the guard.
    pub async fn produce(self: &Arc<Self>) -> ProduceGuard {
        let waiter = {
            let saturated = self.saturated();
            let mut state = self.state.lock();
            if state.waiting.is_empty() && state.producing < state.produce_cap(saturated) {
                state.producing += 1;
                return ProduceGuard(self.clone());
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back(tx);
            Waiter {
                fairness: self.clone(),
                rx: Some(rx),
            }
        };
        waiter.admitted().await
    }

    /// Marks consumer work covering `messages` as in progress until the guard is dropped.
    #[cfg(test)]
    pub fn consume(self: &Arc<Self>, messages: usize) -> ConsumeGuard {
        let mut state = self.state.lock();
        self.consume_locked(&mut state, messages)
    }

    fn consume_locked(self: &Arc<Self>, state: &mut State, messages: usize) -> ConsumeGuard {
        let messages = messages.max(1);
        if state.consuming == 0 && state.idle_since.is_none_or(|at| at.elapsed() >= LINGER) {
            state.share = 0;
        }
        state.consuming += messages;
        state.share = state.share.max(state.consuming);
        ConsumeGuard {
            fairness: self.clone(),
            messages,
        }
    }

    /// Marks `group`'s consumer work covering `messages` as in progress until the guard is
    /// dropped, unless the group is catching up: its work caps nothing. One lock per call (it
    /// runs for every ack).
    pub fn consume_for(
        self: &Arc<Self>,
        group: &GroupName,
        messages: usize,
    ) -> Option<ConsumeGuard> {
        let mut state = self.state.lock();
        if state.catching_up.contains(group) {
            return None;
        }
        Some(self.consume_locked(&mut state, messages))
    }

    /// Classifies `group` by what a receive just delivered to it: its newest message stored
    /// `age` ago (catching up or live), and how it keeps pace ([`Pace`]: behind, or not).
    pub fn note_delivered(&self, group: &GroupName, age: Duration, pace: Pace) {
        let saturated = self.saturated();
        let mut state = self.state.lock();
        let was_behind = if age > CATCHING_UP_AFTER {
            if state.catching_up.len() >= MAX_CATCHING_UP {
                state.catching_up.clear();
            }
            state.catching_up.insert(group.clone());
            state.behind.remove(group).is_some()
        } else {
            if !state.catching_up.is_empty() {
                state.catching_up.remove(group);
            }
            match pace {
                Pace::Full(age) if age > BEHIND_AFTER => {
                    // Lapsed marks go first, so the map holds only groups behind now.
                    state.behind.retain(|_, at| at.elapsed() < BEHIND_FOR);
                    if state.behind.len() >= MAX_CATCHING_UP {
                        state.behind.clear();
                    }
                    state.behind.insert(group.clone(), Instant::now());
                    false
                }
                Pace::Full(_) | Pace::Short => state.behind.remove(group).is_some(),
                Pace::Unknown => false,
            }
        };
        if was_behind {
            // No longer behind: the producers waiting get the share back now.
            state.admit_waiting(saturated);
        }
    }

    /// Whether some live group is behind now (tests).
    #[cfg(test)]
    pub(crate) fn behind(&self) -> bool {
        let state = self.state.lock();
        state.behind.values().any(|at| at.elapsed() < BEHIND_FOR)
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let s = self.state.lock();
        (s.producing, s.consuming, s.waiting.len())
    }
}

/// How a live group's receive says it keeps pace with its producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// It came back full, and the newest message it delivered for the first time was stored
    /// this long ago: behind past [`BEHIND_AFTER`], keeping up otherwise.
    Full(Duration),
    /// It got fewer messages than it asked for: it caught up with what there is.
    Short,
    /// It says nothing either way: full of redeliveries only (they keep their store times),
    /// or short for a FIFO group (blocked message groups cap a receive, however far behind).
    Unknown,
}

impl Pace {
    /// How a receive that asked for `max` messages and got `got`, the newest first delivery
    /// among them stored `newest_first` ago, keeps pace; `fifo` for a FIFO group's.
    pub fn of(max: usize, got: usize, newest_first: Option<Duration>, fifo: bool) -> Pace {
        match newest_first {
            _ if got < max && !fifo => Pace::Short,
            Some(age) if got >= max => Pace::Full(age),
            _ => Pace::Unknown,
        }
    }
}

/// An admitted append.
#[derive(Debug)]
pub(crate) struct ProduceGuard(Arc<Fairness>);

impl Drop for ProduceGuard {
    fn drop(&mut self) {
        let saturated = self.0.saturated();
        let mut state = self.0.state.lock();
        state.producing -= 1;
        state.admit_waiting(saturated);
    }
}

/// Consumer work in progress.
#[derive(Debug)]
pub(crate) struct ConsumeGuard {
    fairness: Arc<Fairness>,
    messages: usize,
}

impl Drop for ConsumeGuard {
    fn drop(&mut self) {
        let saturated = self.fairness.saturated();
        let mut state = self.fairness.state.lock();
        state.consuming -= self.messages;
        if state.consuming == 0 {
            state.idle_since = Some(Instant::now());
        }
        state.admit_waiting(saturated);
    }
}

/// An append waiting for admission. Dropped after it was admitted but before it saw so (a
/// cancelled request), it gives the admission back.
struct Waiter {
    fairness: Arc<Fairness>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Waiter {
    async fn admitted(mut self) -> ProduceGuard {
        if let Some(rx) = self.rx.as_mut() {
            // The sender is only dropped after a successful send or with the whole `Fairness`
            // (which this waiter keeps alive), so this cannot fail.
            let sent = rx.await;
            debug_assert!(sent.is_ok(), "a waiter's sender went away unsent");
        }
        self.rx = None;
        ProduceGuard(self.fairness.clone())
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Closed first, so no admission can arrive between the look and the drop.
            rx.close();
            if rx.try_recv().is_err() {
                return;
            }
            // Admitted, but nobody will use it.
            let saturated = self.fairness.saturated();
            let mut state = self.fairness.state.lock();
            state.producing -= 1;
            state.admit_waiting(saturated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Waiters given up at every moment (as timed-out requests are) on two threads, while
    /// consumer work comes and goes: every admission is given back, none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admissions_all_come_back_however_waiters_give_up() {
        let f = Arc::new(Fairness::default());
        let mut tasks = Vec::new();
        for i in 0..400u64 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..20u64 {
                    if (i + j) % 7 == 0 {
                        let _consuming = f.consume(((i + j) % 40) as usize);
                        tokio::task::yield_now().await;
                    } else {
                        let patience = std::time::Duration::from_micros((i * 13 + j * 7) % 300);
                        if let Ok(_admitted) = tokio::time::timeout(patience, f.produce()).await {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let (producing, consuming, _) = f.counts();
        assert_eq!((producing, consuming), (0, 0), "every admission came back");
    }

    #[tokio::test]
    async fn appends_are_not_capped_without_consumer_work() {
        let f = Arc::new(Fairness::default());
        let guards: Vec<_> = (0..1000)
            .map(|_| f.produce().now_or_never().expect("admitted at once"))
            .collect();
        assert_eq!(f.counts(), (1000, 0, 0));
        drop(guards);
        assert_eq!(f.counts(), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_node_with_room_caps_nothing_and_a_saturated_one_does() {
        let f = Arc::new(Fairness::default());
        let saturation = Arc::new(Saturation::fixed(false));
        f.attach(saturation.clone());
        let consuming = f.consume(32);
        let guards: Vec<_> = (0..100)
            .map(|_| f.produce().now_or_never().expect("admitted at once"))
            .collect();
        assert_eq!(f.counts(), (100, 32, 0), "room for both sides: no cap");
        drop(guards);

        let saturated = Arc::new(Fairness::default());
        saturated.attach(Arc::new(Saturation::fixed(true)));
        let _consuming = saturated.consume(32);
        let within: Vec<_> = (0..16)
            .map(|_| {
                saturated
                    .produce()
                    .now_or_never()
                    .expect("within the share")
            })
            .collect();
        assert!(
            saturated.produce().now_or_never().is_none(),
            "saturated: half the consumer's 32"
        );
        drop(within);
        drop(consuming);
    }

    #[tokio::test]
    async fn consumer_work_caps_new_appends_and_its_end_admits_them_in_order() {
        let f = Arc::new(Fairness::default());
        // Half of the 64 messages the consumer work covers.
        let consuming = f.consume(64);
        let admitted: Vec<_> = (0..32)
            .map(|_| f.produce().now_or_never().expect("within the share"))
            .collect();
        let mut first = Box::pin(f.produce());
        let mut second = Box::pin(f.produce());
        assert!(first.as_mut().now_or_never().is_none(), "over the share");
        assert!(second.as_mut().now_or_never().is_none());
        assert_eq!(f.counts(), (32, 64, 2));
        // One append finishing admits the oldest waiter.
        drop(admitted);
        let a = first.await;
        let b = second.await;
        assert_eq!(f.counts(), (2, 64, 0));
        drop((a, b));
        drop(consuming);
        assert_eq!(f.counts(), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_lingers_after_consumer_work_then_lifts() {
        let f = Arc::new(Fairness::default());
        drop(f.consume(32));
        let admitted: Vec<_> = (0..16)
            .map(|_| f.produce().now_or_never().expect("within the share"))
            .collect();
        let mut waiting = Box::pin(f.produce());
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "capped in the linger"
        );
        tokio::time::advance(LINGER).await;
        assert!(
            f.produce().now_or_never().is_none(),
            "the oldest waiter goes first"
        );
        drop(admitted);
        let _first = waiting.await;
        let more: Vec<_> = (0..100)
            .map(|_| f.produce().now_or_never().expect("no cap after the linger"))
            .collect();
        assert_eq!(more.len(), 100);
    }

    #[tokio::test]
    async fn a_small_consumer_still_leaves_producers_their_minimum_share() {
        let f = Arc::new(Fairness::default());
        let _consuming = f.consume(1);
        let admitted: Vec<_> = (0..MIN_PRODUCE_SHARE)
            .map(|_| f.produce().now_or_never().expect("minimum share"))
            .collect();
        assert!(f.produce().now_or_never().is_none());
        assert_eq!(admitted.len(), MIN_PRODUCE_SHARE);
    }

    #[tokio::test]
    async fn a_group_catching_up_caps_nothing_until_it_reaches_recent_messages() {
        let f = Arc::new(Fairness::default());
        let (replay, live) = (
            GroupName::new("replay").expect("name"),
            GroupName::new("live").expect("name"),
        );
        let old = CATCHING_UP_AFTER + Duration::from_secs(1);
        f.note_delivered(&replay, old, Pace::Short);
        let replaying = f.consume_for(&replay, 32);
        assert!(replaying.is_none(), "history does not cap appends");
        let admitted: Vec<_> = (0..100)
            .map(|_| f.produce().now_or_never().expect("not capped"))
            .collect();
        // Another group's live work on the same shard still caps them.
        f.note_delivered(&live, Duration::from_millis(5), Pace::Short);
        let live_work = f.consume_for(&live, 32);
        assert!(live_work.is_some());
        assert!(
            f.produce().now_or_never().is_none(),
            "capped by the live group"
        );
        drop((admitted, live_work));
        // Caught up: the replaying group's work caps appends again.
        f.note_delivered(&replay, Duration::from_secs(2), Pace::Short);
        assert!(f.consume_for(&replay, 32).is_some());
    }

    #[test]
    fn the_groups_remembered_are_bounded() {
        let f = Fairness::default();
        let old = CATCHING_UP_AFTER * 2;
        for i in 0..MAX_CATCHING_UP + 10 {
            f.note_delivered(
                &GroupName::new(format!("g{i}")).expect("name"),
                old,
                Pace::Short,
            );
        }
        assert!(f.state.lock().catching_up.len() <= MAX_CATCHING_UP);
    }

    /// A full receive of messages delivered for the first time, stored `age` ago.
    fn full(f: &Fairness, group: &GroupName, age: Duration) {
        f.note_delivered(group, age, Pace::Full(age));
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_group_behind_narrows_the_cap_until_it_catches_up_or_stops_saying_so() {
        let f = Arc::new(Fairness::default());
        let live = GroupName::new("live").expect("name");
        let _consuming = f.consume_for(&live, 32).expect("a live group");
        full(&f, &live, BEHIND_AFTER + Duration::from_millis(1));
        let admitted: Vec<_> = (0..BEHIND_CAP)
            .map(|_| f.produce().now_or_never().expect("within the narrow cap"))
            .collect();
        let mut waiting = Box::pin(f.produce());
        assert!(waiting.as_mut().now_or_never().is_none(), "behind: capped");
        assert_eq!(f.counts(), (BEHIND_CAP, 32, 1));

        // A receive that delivers recent messages lifts it and admits the waiter at once.
        full(&f, &live, BEHIND_AFTER);
        let third = waiting.now_or_never().expect("caught up: admitted");
        let more: Vec<_> = (0..13)
            .map(|_| f.produce().now_or_never().expect("half the share again"))
            .collect();
        assert!(f.produce().now_or_never().is_none(), "16 of the 32");
        drop((admitted, third, more));

        // Behind again, then silent: the mark lapses, and the append waiting gets in when the
        // next admitted one finishes.
        full(&f, &live, Duration::from_secs(5));
        assert!(f.behind());
        let narrow: Vec<_> = (0..BEHIND_CAP)
            .map(|_| f.produce().now_or_never().expect("within the narrow cap"))
            .collect();
        let mut waiting = Box::pin(f.produce());
        assert!(waiting.as_mut().now_or_never().is_none(), "behind: capped");
        tokio::time::advance(BEHIND_FOR).await;
        assert!(!f.behind(), "lapsed");
        drop(narrow);
        let admitted = waiting.now_or_never().expect("admitted by the wide cap");
        let wide: Vec<_> = (0..15)
            .map(|_| f.produce().now_or_never().expect("the mark lapsed"))
            .collect();
        drop((admitted, wide));

        // History is not behind: a group catching up caps nothing at all, and the appends
        // waiting behind its mark get in at once.
        full(&f, &live, Duration::from_secs(1));
        let narrow: Vec<_> = (0..BEHIND_CAP)
            .map(|_| f.produce().now_or_never().expect("within the narrow cap"))
            .collect();
        let mut waiting = Box::pin(f.produce());
        assert!(waiting.as_mut().now_or_never().is_none(), "behind: capped");
        full(&f, &live, CATCHING_UP_AFTER * 2);
        assert!(f.state.lock().behind.is_empty());
        let admitted = waiting.now_or_never().expect("catching up: admitted");
        drop((narrow, admitted));
    }

    #[test]
    fn only_a_full_receive_of_first_deliveries_says_a_group_is_behind() {
        let f = Fairness::default();
        let live = GroupName::new("live").expect("name");
        let old = Duration::from_secs(5);
        let pace = |got, newest_first, fifo| Pace::of(32, got, newest_first, fifo);
        f.note_delivered(&live, old, pace(31, Some(old), false));
        assert!(!f.behind(), "fewer than asked for: caught up");
        f.note_delivered(&live, old, pace(32, None, false));
        assert!(!f.behind(), "only redeliveries: says nothing");
        f.note_delivered(&live, old, pace(32, Some(BEHIND_AFTER), false));
        assert!(!f.behind(), "its newest first delivery is recent");
        f.note_delivered(&live, old, pace(32, Some(old), false));
        assert!(f.behind());
        f.note_delivered(&live, old, pace(32, None, false));
        assert!(f.behind(), "only redeliveries leave the mark");
        f.note_delivered(&live, old, pace(3, Some(old), true));
        assert!(
            f.behind(),
            "a FIFO receive is short while groups are blocked"
        );
        f.note_delivered(&live, old, pace(3, Some(old), false));
        assert!(!f.behind(), "the next receive came back short");
    }

    #[test]
    fn lapsed_marks_are_pruned_as_new_ones_come() {
        let f = Fairness::default();
        for i in 0..10 {
            full(
                &f,
                &GroupName::new(format!("g{i}")).expect("name"),
                Duration::from_secs(1),
            );
        }
        for at in f.state.lock().behind.values_mut() {
            *at = at
                .checked_sub(BEHIND_FOR)
                .expect("an instant long after boot");
        }
        full(
            &f,
            &GroupName::new("now").expect("name"),
            Duration::from_secs(1),
        );
        assert_eq!(f.state.lock().behind.len(), 1);
    }

    #[tokio::test]
    async fn a_group_behind_caps_nothing_on_a_node_with_room() {
        let f = Arc::new(Fairness::default());
        f.attach(Arc::new(Saturation::fixed(false)));
        let live = GroupName::new("live").expect("name");
        let _consuming = f.consume_for(&live, 32).expect("a live group");
        full(&f, &live, Duration::from_secs(5));
        let admitted: Vec<_> = (0..100)
            .map(|_| f.produce().now_or_never().expect("room: no cap"))
            .collect();
        assert_eq!(admitted.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_gives_back_its_place_or_its_admission() {
        let f = Arc::new(Fairness::default());
        let consuming = f.consume(1);
        let mut full: Vec<_> = (0..MIN_PRODUCE_SHARE)
            .map(|_| f.produce().now_or_never().expect("minimum share"))
            .collect();
        // Gone while waiting: its place is skipped.
        let mut gone = Box::pin(f.produce());
        assert!(gone.as_mut().now_or_never().is_none());
        drop(gone);
        // Admitted, then gone before it looked: the admission comes back.
        let mut late = Box::pin(f.produce());
        assert!(late.as_mut().now_or_never().is_none());
        drop(consuming);
        assert_eq!(
            f.counts().0,
            MIN_PRODUCE_SHARE,
            "still capped in the linger"
        );
        tokio::time::advance(LINGER).await;
        full.pop();
        assert_eq!(
            f.counts().0,
            MIN_PRODUCE_SHARE,
            "late was admitted in its place"
        );
        drop(late);
        assert_eq!(f.counts(), (MIN_PRODUCE_SHARE - 1, 0, 0));
        drop(full);
        assert_eq!(f.counts(), (0, 0, 0));
    }
}
