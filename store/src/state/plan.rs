//! Planning a receive on the leader, outside apply (apply version 4). The leader reads the
//! applied state, finds per queue the first messages the group's filter accepts, and proposes a
//! `PopRanges` that tells apply exactly how far to skip and to look. A receive that would find
//! nothing proposes nothing: an empty receive writes nothing to the log. Where a scan got to
//! without a match is remembered in a [`ScanMemo`], so the next receive continues from there
//! instead of searching the same non-matching backlog again. Every few seconds at most (or
//! after a long gap) such a receive does propose, to move the group's cursor over what it
//! passed: the group's position and lag then leave out what its filter skips, on every replica
//! and after a leader change.

use std::collections::HashMap;

use vela_proto::domain::{GroupName, TopicName};

use super::{MAX_INFLIGHT, MAX_PARKED, PopProbe, ShardState, TagMatcher, live_entry, live_range};
use crate::command::{QueueChoice, RecordRef, ScanRange, TagSubscription};

/// Most expired deliveries one planned receive hands apply per queue.
const MAX_EXPIRIES: usize = 1024;
/// Entries kept in a memo before it starts over (it is only a hint).
const MEMO_ENTRIES: usize = 100_000;
/// A search that found nothing past a group's cursor moves the cursor there (a receive that
/// delivers nothing) once the memo has held the gap this long since the last such move...
pub(crate) const SCAN_COMMIT_MS: i64 = 5_000;
/// ...or at once when the gap is this many offsets. So the group's position, and every lag
/// read from it, passes over what its filter skips, for one small log entry per group and
/// queue every few seconds at most.
pub(crate) const SCAN_COMMIT_OFFSETS: u64 = 16_384;

/// What a receive can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PopPlan {
    /// Propose a `PopRanges` with these ranges: it delivers, redelivers, dead-letters or parks.
    Propose(Vec<ScanRange>),
    /// Nothing now; an in-flight message becomes visible again at this time (Unix ms).
    NotBefore(i64),
    Nothing,
    /// The scan budget ran out before every queue was searched; plan again.
    Continue,
}

/// Where a receive with an SQL92 filter stands on one queue: the leader read the messages up
/// to `to` (from where the search stood) and found these offsets matching, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlWindow {
    pub to: u64,
    pub matches: Vec<u64>,
}

/// An SQL92 receive's evaluated windows, per queue id; a queue without one offers only
/// redeliveries and parked messages.
#[derive(Debug, Clone, Copy)]
pub struct SqlProbe<'a> {
    pub expression: &'a str,
    pub windows: &'a HashMap<u32, SqlWindow>,
}

/// Messages an SQL92 receive should evaluate on one queue: live entries from where its
/// search stands, up to (not including) `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlCandidates {
    pub queue_id: u32,
    pub entries: Vec<(u64, RecordRef)>,
    pub to: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MemoFilter {
    Tags(Vec<String>),
    Sql(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    group: GroupName,
    topic: TopicName,
    queue_id: u32,
    filter: MemoFilter,
}

/// Leader-local memory of scans: for a (group, topic, queue, filter), the offset up to which
/// every message failed the filter, with the log index of the entry just before it so a
/// re-created queue (new entries at the same offsets) is not mistaken for the old one. Never
/// replicated; losing it only costs a rescan.
#[derive(Debug, Default)]
pub struct ScanMemo {
    scanned: HashMap<MemoKey, Scanned>,
}

#[derive(Debug, Clone, Copy)]
struct Scanned {
    to: u64,
    witness: u64,
    /// When the entry was first made, or its gap last proposed as the group's cursor (state
    /// time, ms).
    since_ms: i64,
}

impl ScanMemo {
    fn key(probe: &PopProbe<'_>, queue_id: u32) -> MemoKey {
        MemoKey {
            group: probe.group.clone(),
            topic: probe.topic.clone(),
            queue_id,
            filter: match (probe.sql, probe.filter) {
                (Some(sql), _) => MemoFilter::Sql(sql.expression.to_owned()),
                (None, TagSubscription::All) => MemoFilter::Tags(Vec::new()),
                (None, TagSubscription::Tags(tags)) => MemoFilter::Tags(tags.clone()),
            },
        }
    }

    fn record(&mut self, key: MemoKey, scanned_to: u64, witness: u64, now_ms: i64) {
        if self.scanned.len() >= MEMO_ENTRIES && !self.scanned.contains_key(&key) {
            self.scanned.clear();
        }
        let since_ms = self.scanned.get(&key).map_or(now_ms, |s| s.since_ms);
        self.scanned.insert(
            key,
            Scanned {
                to: scanned_to,
                witness,
                since_ms,
            },
        );
    }

    /// Whether a search that found nothing between `cursor` and `scanned_to` should move the
    /// group's cursor there now (see [`SCAN_COMMIT_MS`]); if so, the clock starts again.
    fn commit_due(&mut self, key: &MemoKey, cursor: u64, scanned_to: u64, now_ms: i64) -> bool {
        let Some(entry) = self.scanned.get_mut(key) else {
            return false;
        };
        let due = entry.to == scanned_to
            && scanned_to > cursor
            && (scanned_to - cursor >= SCAN_COMMIT_OFFSETS
                || now_ms.saturating_sub(entry.since_ms) >= SCAN_COMMIT_MS);
        if due {
            entry.since_ms = now_ms;
        }
        due
    }
}

impl ShardState {
    /// Plans a receive of up to `max` messages for `probe` at `now_ms`, examining at most
    /// `*budget` index entries (what is left is written back). A queue where the group has
    /// [`MAX_INFLIGHT`] messages in flight offers only its expired ones and, for FIFO groups,
    /// parked messages whose message group is free.
    pub fn plan_pop(
        &self,
        probe: PopProbe<'_>,
        max: u32,
        now_ms: i64,
        memo: &mut ScanMemo,
        budget: &mut u64,
    ) -> PopPlan {
        self.plan_pop_bounded(probe, max, now_ms, memo, budget, MAX_INFLIGHT)
    }

    /// [`plan_pop`](Self::plan_pop) with the in-flight bound as a parameter (tests use small
    /// ones).
    pub(crate) fn plan_pop_bounded(
        &self,
        probe: PopProbe<'_>,
        max: u32,
        now_ms: i64,
        memo: &mut ScanMemo,
        budget: &mut u64,
        max_inflight: usize,
    ) -> PopPlan {
        let matcher = self.matcher(probe.filter);
        let queue_ids = self.selected_queues(probe.topic, probe.queues);
        let start =
            if probe.queues == QueueChoice::All && !queue_ids.is_empty() && !probe.highest_first {
                let turn = self
                    .rotation
                    .get(&(probe.group.clone(), probe.topic.clone()))
                    .copied()
                    .unwrap_or(0);
                turn as usize % queue_ids.len()
            } else {
                0
            };
        let mut ranges = Vec::new();
        let mut wanted = max as usize;
        let mut earliest: Option<i64> = None;
        let mut out_of_budget = false;
        let mut unevaluated = false;
        for i in 0..queue_ids.len() {
            if wanted == 0 {
                break;
            }
            let queue_id = if probe.highest_first {
                queue_ids[queue_ids.len() - 1 - i]
            } else {
                queue_ids[(start + i) % queue_ids.len()]
            };
            let Some(index) = self.queues.get(&(probe.topic.clone(), queue_id)) else {
                continue;
            };
            let consumer =
                self.consumers
                    .get(&(probe.group.clone(), probe.topic.clone(), queue_id));
            let expiries = consumer.map_or(0, |c| c.expired_count(now_ms, MAX_EXPIRIES));
            if let Some(at) = consumer.and_then(|c| c.first_deadline())
                && at > now_ms
            {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            let ready = consumer.is_some_and(|c| c.has_ready());
            let inflight_full = consumer.is_some_and(|c| c.inflight_count() >= max_inflight);
            let parking_full =
                self.apply_version >= 3 && consumer.is_some_and(|c| c.parked() >= MAX_PARKED);
            let key = ScanMemo::key(&probe, queue_id);
            let live = |offset: u64| live_entry(&self.entries, self.truncated_below, index, offset);
            let (cursor, from) = self.search_start(consumer, index, memo, &key);
            // An SQL92 receive searches only what the leader evaluated.
            let window = probe.sql.map(|sql| sql.windows.get(&queue_id));
            let max_offset = match window {
                None => index.max_offset(),
                Some(Some(w)) => index.max_offset().min(w.to).max(from),
                Some(None) => from,
            };
            let mut pos = from;
            let mut first_match = None;
            let mut last_match = None;
            let mut found = 0usize;
            // A tag filter jumps from one tagged entry to the next through the index's tag keys;
            // no filter walks every entry. Either way, offsets passed over cost budget like any
            // other, so a scan's reach does not depend on how it found its way.
            let tag_ids = match &matcher {
                TagMatcher::Ids(ids) => Some(ids.as_slice()),
                TagMatcher::All => None,
            };
            let mut walk = tag_ids.is_none().then(|| {
                live_range(&self.entries, self.truncated_below, index, from, max_offset).peekable()
            });
            let mut next_tagged: Option<u64> = None;
            while !inflight_full && pos < max_offset && found < wanted {
                if *budget == 0 {
                    out_of_budget = true;
                    break;
                }
                let next = match (&mut walk, tag_ids) {
                    (Some(walk), _) => walk.peek().map_or(max_offset, |(o, _)| *o),
                    (None, Some(ids)) => {
                        if next_tagged.is_none_or(|n| n < pos) {
                            next_tagged = Some(
                                self.entries
                                    .first_tagged(index.key(), ids, pos, max_offset)
                                    .unwrap_or(max_offset),
                            );
                        }
                        next_tagged.unwrap_or(max_offset)
                    }
                    (None, None) => max_offset,
                };
                if next > pos {
                    let skip = (next - pos).min(*budget);
                    *budget -= skip;
                    pos += skip;
                    continue;
                }
                *budget -= 1;
                let entry = match &mut walk {
                    Some(walk) => walk.next().map(|(_, e)| e),
                    None => live(pos),
                };
                let matched = |tag| match window {
                    Some(Some(w)) => w.matches.binary_search(&pos).is_ok(),
                    _ => matcher.matches(tag),
                };
                if let Some(entry) = entry
                    && matched(entry.tag)
                {
                    let lane = if probe.fifo { entry.message_group } else { 0 };
                    let blocked = lane != 0 && consumer.is_some_and(|c| c.lane_blocked(lane));
                    if blocked && parking_full {
                        // The cursor cannot move past this message until parking frees up.
                        break;
                    }
                    first_match.get_or_insert(pos);
                    last_match = Some(pos);
                    if !blocked {
                        found += 1;
                    }
                }
                pos += 1;
            }
            drop(walk);
            if window.is_some_and(|w| w.is_some())
                && pos == max_offset
                && max_offset < index.max_offset()
                && found < wanted
                && !inflight_full
            {
                // The evaluated window ended before the queue: evaluate the next one.
                unevaluated = true;
            }
            // With a tag filter, apply walks only up to the last match (what lies between the
            // matches it reads one by one); the next receive seeks past the rest again, which
            // costs a seek per tag. The memo records only searches that found nothing: after a
            // match, apply may stop short of it (expired deliveries or parking fill the
            // receive, or the proposal is never applied), and a memo past it would skip it.
            let scan_to = match (tag_ids, last_match) {
                (Some(_), Some(last)) => last + 1,
                _ => pos,
            };
            // Everything from the cursor up to `pos` failed the filter when nothing matched.
            let mut commit = false;
            if first_match.is_none()
                && pos > cursor
                && let Some(entry) = live(pos - 1)
            {
                memo.record(key.clone(), pos, entry.log_index, now_ms);
                commit = memo.commit_due(&key, cursor, pos, now_ms);
            }
            if first_match.is_some() || expiries > 0 || ready || commit {
                ranges.push(ScanRange {
                    queue_id,
                    skip_to: first_match.unwrap_or(pos),
                    scan_to: if first_match.is_some() { scan_to } else { pos },
                    expiries: u32::try_from(expiries).unwrap_or(u32::MAX),
                });
                wanted = wanted.saturating_sub(found + expiries);
            }
            if out_of_budget {
                break;
            }
        }
        if !ranges.is_empty() {
            PopPlan::Propose(ranges)
        } else if out_of_budget || unevaluated {
            PopPlan::Continue
        } else {
            earliest.map_or(PopPlan::Nothing, PopPlan::NotBefore)
        }
    }
}

impl ShardState {
    /// Where a group's search of a queue starts: its cursor, or past it where a memo says
    /// everything up to there failed the filter. Returns `(cursor, start)`.
    fn search_start(
        &self,
        consumer: Option<&super::ConsumerQueue>,
        index: &super::QueueIndex,
        memo: &ScanMemo,
        key: &MemoKey,
    ) -> (u64, u64) {
        let cursor = consumer
            .map_or(index.min_offset(), |c| c.cursor())
            .max(index.min_offset());
        let from = match memo.scanned.get(key) {
            Some(&Scanned { to, witness, .. })
                if to > cursor
                    && to <= index.max_offset()
                    && live_entry(&self.entries, self.truncated_below, index, to - 1)
                        .is_some_and(|e| e.log_index == witness) =>
            {
                to
            }
            _ => cursor,
        };
        (cursor, from)
    }

    /// The messages an SQL92 receive of `expression` should read and evaluate next: per
    /// queue, up to `per_queue` live entries from where its search stands. Queues where the
    /// group already holds `max_inflight` messages get none (nothing new is planned there).
    pub fn sql_candidates(
        &self,
        probe: PopProbe<'_>,
        expression: &str,
        memo: &ScanMemo,
        per_queue: usize,
        max_inflight: usize,
    ) -> Vec<SqlCandidates> {
        let mut out = Vec::new();
        for queue_id in self.selected_queues(probe.topic, probe.queues) {
            let Some(index) = self.queues.get(&(probe.topic.clone(), queue_id)) else {
                continue;
            };
            let consumer =
                self.consumers
                    .get(&(probe.group.clone(), probe.topic.clone(), queue_id));
            if consumer.is_some_and(|c| c.inflight_count() >= max_inflight) {
                continue;
            }
            let key = MemoKey {
                group: probe.group.clone(),
                topic: probe.topic.clone(),
                queue_id,
                filter: MemoFilter::Sql(expression.to_owned()),
            };
            let (_, from) = self.search_start(consumer, index, memo, &key);
            if from >= index.max_offset() {
                continue;
            }
            let entries: Vec<(u64, RecordRef)> = live_range(
                &self.entries,
                self.truncated_below,
                index,
                from,
                index.max_offset(),
            )
            .take(per_queue)
            .map(|(offset, entry)| (offset, entry.record()))
            .collect();
            let to = match entries.last() {
                Some(&(last, _)) if entries.len() == per_queue => last + 1,
                _ => index.max_offset(),
            };
            out.push(SqlCandidates {
                queue_id,
                entries,
                to,
            });
        }
        out
    }
}
