//! `vela admin message show|find` on one shard (ADR 0028): the lookup rows of the index file
//! name candidate records, each is read and confirmed (its id or keys, its topic), and its
//! track is read from the event rows: where it was stored, parked, delivered, acknowledged,
//! dead-lettered. The leader answers, after a read barrier.

use std::collections::BTreeMap;

use vela_proto::ClientId;
use vela_proto::domain::{ShardId, TopicName};
use vela_proto::lookup::{FoundMessage, LookupBy, LookupRequest, QueuePosition, TrackEvent};
use vela_proto::store_api::StoreError;

use super::Store;
use crate::command::{PoppedMessage, RecordRef};
use crate::index_db::history::{Event, EventKind, LookupKind, Placed, bucket};
use crate::shard::Shard;

/// Records one lookup looks at (hash collisions and other topics' messages included) before it
/// answers with what it confirmed.
const CANDIDATES: usize = 1024;
/// Records read from the log at once.
const READ_BATCH: usize = 64;

impl Store {
    /// [`StoreApi::lookup`](vela_proto::StoreApi::lookup) on shard `id`, which this node must
    /// lead.
    pub async fn lookup_shard(
        &self,
        id: ShardId,
        req: &LookupRequest,
    ) -> Result<Vec<FoundMessage>, StoreError> {
        let shard = self.led(id)?;
        self.read_barrier(&shard).await?;
        lookup_on(&shard, id, req).await
    }
}

async fn lookup_on(
    shard: &Shard,
    id: ShardId,
    req: &LookupRequest,
) -> Result<Vec<FoundMessage>, StoreError> {
    let (kind, text) = match &req.by {
        LookupBy::MessageId(text) => (LookupKind::MessageId, text.as_str()),
        LookupBy::Key(text) => (LookupKind::Key, text.as_str()),
    };
    let (mut candidates, file, floor, buckets) = {
        let applied = shard.shared.applied.read();
        let state = &applied.state;
        let floor = state.truncated_below();
        let last = applied.last_applied.map_or(0, |l| l.index);
        (
            state.entries().lookup_in_memory(kind, text),
            state.entries().file().cloned(),
            floor,
            (bucket(floor), bucket(last)),
        )
    };
    if let Some(file) = &file {
        let hash = crate::index_db::history::lookup_hash(text);
        let rows = file
            .lookup(kind, hash, buckets.0, buckets.1, CANDIDATES)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        candidates.extend(
            rows.into_iter()
                .map(|(log_index, slot, at)| (RecordRef { log_index, slot }, at)),
        );
    }
    // One per record, oldest first; gone ones (below the retention floor) left out.
    let candidates: BTreeMap<RecordRef, Option<Placed>> = candidates
        .into_iter()
        .filter(|(r, _)| r.log_index >= floor)
        .take(CANDIDATES)
        .collect();
    let mut found = Vec::new();
    let candidates: Vec<_> = candidates.into_iter().collect();
    for chunk in candidates.chunks(READ_BATCH) {
        let refs: Vec<RecordRef> = chunk.iter().map(|(r, _)| *r).collect();
        let records = shard.read_stored(&refs).await.map_err(StoreError::from)?;
        for ((record, at_append), stored) in chunk.iter().zip(records) {
            let Some((message, store_timestamp_ms)) = stored else {
                continue;
            };
            let matches = match &req.by {
                LookupBy::MessageId(id) => &message.message_id == id,
                LookupBy::Key(key) => message.keys.iter().any(|k| k == key),
            };
            if !matches || req.topic.as_ref().is_some_and(|t| t != &message.topic) {
                continue;
            }
            let (positions, track) = track_of(shard, *record, &message.topic, *at_append);
            found.push(FoundMessage {
                shard: id,
                message,
                store_timestamp_ms,
                positions,
                track,
            });
            if found.len() >= req.limit as usize {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

/// Records which client the receive at log index `delivery_id` delivered `messages` to: a
/// leader-local note beside the `Delivered` events apply wrote (a receive's log command does
/// not carry the client), shown with them.
pub(super) fn note_receiver(
    shard: &Shard,
    client: &ClientId,
    delivery_id: u64,
    now_ms: i64,
    messages: &[PoppedMessage],
) {
    let mut applied = shard.shared.applied.write();
    let state = &mut applied.state;
    for m in messages {
        if let Some(queue) = state.queue_index(&m.topic, m.queue_id) {
            state.entries_mut().put_queue_event(
                queue.key(),
                m.offset,
                crate::state::TrackEvent {
                    at: delivery_id,
                    kind: EventKind::DeliveredTo,
                    time_ms: now_ms,
                    a: 0,
                    b: 0,
                    name: client.as_str(),
                },
            );
        }
    }
}

/// Where the record at `record` is in queues and what happened to it.
fn track_of(
    shard: &Shard,
    record: RecordRef,
    topic: &TopicName,
    at_append: Option<Placed>,
) -> (Vec<QueuePosition>, Vec<TrackEvent>) {
    // The record's own events say where it went after its append (released, committed,
    // dead-lettered); the lookup row says where it went at its append.
    let (record_events, file) = {
        let applied = shard.shared.applied.read();
        (
            applied.state.entries().events_in_memory(record, &[]),
            applied.state.entries().file().cloned(),
        )
    };
    let mut events = record_events;
    if let Some(file) = &file {
        match file.record_events(record.log_index, record.slot) {
            Ok(more) => events.extend(more),
            Err(e) => tracing::warn!(error = %e, "reading a message's track failed"),
        }
    }
    let mut places: Vec<(TopicName, u32, u64)> = Vec::new();
    let mut keyed: Vec<(u32, u64)> = Vec::new();
    let mut positions = Vec::new();
    let mut synthetic = Vec::new();
    {
        let applied = shard.shared.applied.read();
        let state = &applied.state;
        if let Some(p) = at_append {
            places.push((topic.clone(), p.queue_id, p.offset));
        }
        for e in &events {
            if e.kind == EventKind::Stored
                && let Ok(topic) = TopicName::new(&e.name)
            {
                places.push((topic, u32::try_from(e.a).unwrap_or(u32::MAX), e.b));
            }
        }
        for (topic, queue_id, offset) in places {
            let Some(queue) = state.queue_index(&topic, queue_id) else {
                continue;
            };
            // Only where the queue still holds this very record.
            let Some(entry) = state
                .retained_entry(&queue, offset)
                .filter(|e| e.record() == record)
            else {
                continue;
            };
            keyed.push((queue.key(), offset));
            if at_append.is_some_and(|p| (p.key, p.offset) == (queue.key(), offset)) {
                synthetic.push(Event {
                    kind: EventKind::Stored,
                    at: record.log_index,
                    time_ms: entry.store_ts_ms,
                    a: u64::from(queue_id),
                    b: offset,
                    name: topic.as_str().to_owned(),
                });
            }
            positions.push(QueuePosition {
                topic,
                queue_id,
                offset,
                store_timestamp_ms: entry.store_ts_ms,
            });
        }
        events.extend(
            state
                .entries()
                .events_in_memory(record, &keyed)
                .into_iter()
                .filter(|e| e.kind >= EventKind::Delivered),
        );
    }
    if let Some(file) = &file {
        for (key, offset) in &keyed {
            match file.queue_events(*key, *offset) {
                Ok(more) => events.extend(more),
                Err(e) => tracing::warn!(error = %e, "reading a message's track failed"),
            }
        }
    }
    events.extend(synthetic);
    // In log order; within one command what ended the last step (a commit, a move to the
    // dead letters) before where the message went; the same event read from memory and from
    // the file counts once. A delivery's client joins its delivery.
    let mut ordered: BTreeMap<(u64, bool, EventKind, String), Event> = BTreeMap::new();
    let mut clients: BTreeMap<u64, String> = BTreeMap::new();
    for e in events {
        if e.kind == EventKind::DeliveredTo {
            clients.insert(e.at, e.name);
        } else {
            ordered.insert(
                (e.at, e.kind == EventKind::Stored, e.kind, e.name.clone()),
                e,
            );
        }
    }
    let track = ordered
        .into_values()
        .map(|e| {
            let client = (e.kind == EventKind::Delivered)
                .then(|| clients.get(&e.at).cloned())
                .flatten();
            TrackEvent {
                client,
                ..to_track(e)
            }
        })
        .collect();
    (positions, track)
}

fn to_track(e: Event) -> TrackEvent {
    let signed = |v: u64| i64::try_from(v).ok();
    let base = TrackEvent {
        kind: e.kind.as_str().to_owned(),
        time_ms: e.time_ms,
        ..TrackEvent::default()
    };
    match e.kind {
        EventKind::Stored => TrackEvent {
            topic: Some(e.name),
            queue_id: u32::try_from(e.a).ok(),
            offset: Some(e.b),
            ..base
        },
        EventKind::Delayed => TrackEvent {
            until_ms: signed(e.b),
            ..base
        },
        EventKind::Delivered => TrackEvent {
            group: Some(e.name),
            attempt: u32::try_from(e.a).ok(),
            until_ms: signed(e.b),
            ..base
        },
        EventKind::InvisibilityChanged => TrackEvent {
            group: Some(e.name),
            until_ms: signed(e.b),
            ..base
        },
        EventKind::Acked | EventKind::DeadLettered => TrackEvent {
            group: Some(e.name),
            ..base
        },
        EventKind::Prepared
        | EventKind::Committed
        | EventKind::RolledBack
        | EventKind::Recalled
        | EventKind::DeliveredTo => base,
    }
}
