//! Message lookup (`vela admin message show|find`, ADR 0028): what the proxy asks the store
//! and what it gets back, and their form on the store's wire.

use crate::domain::{MessageRecord, ShardId, TopicName};
use crate::pb::store as pb;
use crate::store_wire::{WireError, message_from_wire, message_to_wire};

/// Most messages one lookup answers.
pub const MAX_LOOKUP: u32 = 64;

/// What a lookup looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupBy {
    MessageId(String),
    Key(String),
}

/// A lookup: messages whose id (or one of whose keys) is the given text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    pub by: LookupBy,
    /// Only messages sent to this topic (and, where they were moved, its dead letters).
    pub topic: Option<TopicName>,
    /// The shards to ask; empty: every shard.
    pub shards: Vec<ShardId>,
    /// 1..=[`MAX_LOOKUP`].
    pub limit: u32,
}

/// Where a message is in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePosition {
    pub topic: TopicName,
    pub queue_id: u32,
    pub offset: u64,
    pub store_timestamp_ms: i64,
}

/// One step of a message's track. `kind` is a stable word (see the store proto's
/// `TrackEvent`); the other fields are set where the kind has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackEvent {
    pub kind: String,
    pub time_ms: i64,
    /// The consumer group (delivered, acked, invisibility_changed, dead_lettered).
    pub group: Option<String>,
    /// Where it went (stored).
    pub topic: Option<String>,
    pub queue_id: Option<u32>,
    pub offset: Option<u64>,
    /// Which delivery to the group this was (delivered).
    pub attempt: Option<u32>,
    /// Invisible to the group until (delivered, invisibility_changed), or due (delayed).
    pub until_ms: Option<i64>,
    /// The client a delivery went to, where the shard leader that served it recorded one.
    pub client: Option<String>,
}

/// A message a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    pub shard: ShardId,
    pub message: MessageRecord,
    /// When the store appended it (Unix ms).
    pub store_timestamp_ms: i64,
    pub positions: Vec<QueuePosition>,
    pub track: Vec<TrackEvent>,
}

pub fn lookup_to_wire(req: &LookupRequest, shard: ShardId) -> pb::LookupRequest {
    let (message_id, key) = match &req.by {
        LookupBy::MessageId(id) => (id.clone(), String::new()),
        LookupBy::Key(key) => (String::new(), key.clone()),
    };
    pb::LookupRequest {
        shard,
        message_id,
        key,
        topic: req
            .topic
            .as_ref()
            .map_or_else(String::new, |t| t.as_str().to_owned()),
        limit: req.limit,
    }
}

pub fn lookup_from_wire(req: pb::LookupRequest) -> Result<LookupRequest, WireError> {
    let by = match (req.message_id.is_empty(), req.key.is_empty()) {
        (false, true) => LookupBy::MessageId(req.message_id),
        (true, false) => LookupBy::Key(req.key),
        _ => {
            return Err(WireError(
                "a lookup names exactly one of a message id and a key".into(),
            ));
        }
    };
    if req.limit == 0 || req.limit > MAX_LOOKUP {
        return Err(WireError(format!(
            "a lookup limit of {} is outside 1..={MAX_LOOKUP}",
            req.limit
        )));
    }
    let topic = match req.topic.as_str() {
        "" => None,
        t => Some(TopicName::new(t).map_err(|e| WireError(e.to_string()))?),
    };
    Ok(LookupRequest {
        by,
        topic,
        shards: vec![req.shard],
        limit: req.limit,
    })
}

pub fn found_to_wire(found: &[FoundMessage]) -> pb::LookupReply {
    pb::LookupReply {
        messages: found
            .iter()
            .map(|f| pb::FoundMessage {
                message: Some(message_to_wire(&f.message)),
                shard: f.shard,
                store_timestamp_ms: f.store_timestamp_ms,
                positions: f
                    .positions
                    .iter()
                    .map(|p| pb::QueuePosition {
                        topic: p.topic.as_str().to_owned(),
                        queue_id: p.queue_id,
                        offset: p.offset,
                        store_timestamp_ms: p.store_timestamp_ms,
                    })
                    .collect(),
                track: f
                    .track
                    .iter()
                    .map(|e| pb::TrackEvent {
                        kind: e.kind.clone(),
                        time_ms: e.time_ms,
                        group: e.group.clone().unwrap_or_default(),
                        topic: e.topic.clone().unwrap_or_default(),
                        queue_id: e.queue_id,
                        offset: e.offset,
                        attempt: e.attempt,
                        until_ms: e.until_ms,
                        client: e.client.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn found_from_wire(reply: pb::LookupReply) -> Result<Vec<FoundMessage>, WireError> {
    reply
        .messages
        .into_iter()
        .map(|f| {
            let message = f
                .message
                .ok_or_else(|| WireError("a found message without its message".into()))?;
            let positions = f
                .positions
                .into_iter()
                .map(|p| {
                    Ok(QueuePosition {
                        topic: TopicName::new(&p.topic).map_err(|e| WireError(e.to_string()))?,
                        queue_id: p.queue_id,
                        offset: p.offset,
                        store_timestamp_ms: p.store_timestamp_ms,
                    })
                })
                .collect::<Result<_, WireError>>()?;
            Ok(FoundMessage {
                shard: f.shard,
                message: message_from_wire(message)?,
                store_timestamp_ms: f.store_timestamp_ms,
                positions,
                track: f
                    .track
                    .into_iter()
                    .map(|e| TrackEvent {
                        kind: e.kind,
                        time_ms: e.time_ms,
                        group: (!e.group.is_empty()).then_some(e.group),
                        topic: (!e.topic.is_empty()).then_some(e.topic),
                        queue_id: e.queue_id,
                        offset: e.offset,
                        attempt: e.attempt,
                        until_ms: e.until_ms,
                        client: (!e.client.is_empty()).then_some(e.client),
                    })
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_cross_the_wire_and_bad_ones_are_refused() {
        let req = LookupRequest {
            by: LookupBy::Key("order-1".into()),
            topic: Some(TopicName::new("orders").expect("name")),
            shards: vec![3],
            limit: 8,
        };
        assert_eq!(
            lookup_from_wire(lookup_to_wire(&req, 3)).expect("back"),
            req
        );
        let both = pb::LookupRequest {
            message_id: "m".into(),
            key: "k".into(),
            limit: 1,
            ..Default::default()
        };
        assert!(lookup_from_wire(both).is_err());
        let neither = pb::LookupRequest {
            limit: 1,
            ..Default::default()
        };
        assert!(lookup_from_wire(neither).is_err());
        let too_many = pb::LookupRequest {
            message_id: "m".into(),
            limit: MAX_LOOKUP + 1,
            ..Default::default()
        };
        assert!(lookup_from_wire(too_many).is_err());
    }
}
