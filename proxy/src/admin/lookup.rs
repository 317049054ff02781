//! `LookupMessages` (`vela admin message show|find`, ADR 0028): messages by id or key from the
//! store's lookup index, with where they are and their track.

use std::collections::BTreeMap;

use tonic::Status;
use vela_proto::TopicName;
use vela_proto::lookup::{FoundMessage, LookupBy, LookupRequest, MAX_LOOKUP};
use vela_proto::pb::admin as api;

use super::{AdminServer, topic_name};
use crate::convert::kind_name;
use crate::status::{controller_to_grpc, store_to_grpc};

/// Messages one lookup answers unless asked for fewer or more.
const DEFAULT_LIMIT: u32 = 16;
/// Longest id or key looked up (RocketMQ's keys and ids are far shorter).
const MAX_TEXT: usize = 1024;

impl AdminServer {
    pub(super) async fn lookup(
        &self,
        req: api::LookupMessagesRequest,
    ) -> Result<api::LookupMessagesResponse, Status> {
        let id = req.message_id.trim();
        let key = req.key.trim();
        let by = match (id.is_empty(), key.is_empty()) {
            (false, true) => LookupBy::MessageId(id.to_owned()),
            (true, false) => LookupBy::Key(key.to_owned()),
            _ => {
                return Err(Status::invalid_argument(
                    "name exactly one of a message id and a key",
                ));
            }
        };
        if id.len().max(key.len()) > MAX_TEXT {
            return Err(Status::invalid_argument(format!(
                "a message id or key is at most {MAX_TEXT} bytes"
            )));
        }
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LOOKUP => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "a limit of {n} is outside 1..={MAX_LOOKUP}"
                )));
            }
        };
        let (topic, shards) = match req.topic.trim() {
            "" if matches!(by, LookupBy::Key(_)) => {
                return Err(Status::invalid_argument(
                    "a lookup by key needs a topic (--topic)",
                ));
            }
            "" => (None, Vec::new()),
            name => {
                let topic = topic_name(name)?;
                let config = self.existing_topic(&topic).await?;
                (Some(topic), self.shared.shards_of(&config).await)
            }
        };
        let found = self
            .shared
            .ctx
            .store
            .lookup(&LookupRequest {
                by,
                topic,
                shards,
                limit,
            })
            .await
            .map_err(store_to_grpc)?;
        // A deleted topic's messages stay in the log until retention removes them, but they
        // are gone for users: "delete topic" deletes every message in it.
        let mut kept = Vec::with_capacity(found.len());
        let mut exists: BTreeMap<TopicName, bool> = BTreeMap::new();
        for f in found {
            let topic = f.message.topic.clone();
            let alive = match exists.get(&topic) {
                Some(alive) => *alive,
                None => {
                    let alive = self
                        .shared
                        .ctx
                        .controller
                        .get_topic(&topic)
                        .await
                        .map_err(controller_to_grpc)?
                        .is_some();
                    exists.insert(topic, alive);
                    alive
                }
            };
            if alive {
                kept.push(f);
            }
        }
        Ok(api::LookupMessagesResponse {
            messages: kept.into_iter().map(found_to_api).collect(),
        })
    }
}

fn found_to_api(f: FoundMessage) -> api::FoundMessage {
    let m = f.message;
    api::FoundMessage {
        message_id: m.message_id,
        topic: m.topic.as_str().to_owned(),
        kind: kind_name(m.kind).to_owned(),
        tag: m.tag,
        keys: m.keys,
        message_group: m.message_group,
        delivery_timestamp_ms: m.delivery_timestamp_ms,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        properties: m.properties.into_iter().collect(),
        body: m.body,
        store_timestamp_ms: f.store_timestamp_ms,
        shard: f.shard,
        positions: f
            .positions
            .into_iter()
            .map(|p| api::MessagePosition {
                topic: p.topic.as_str().to_owned(),
                queue_id: p.queue_id,
                offset: p.offset,
                store_timestamp_ms: p.store_timestamp_ms,
            })
            .collect(),
        track: f
            .track
            .into_iter()
            .map(|e| api::TrackEvent {
                kind: e.kind,
                time_ms: e.time_ms,
                group: e.group.unwrap_or_default(),
                topic: e.topic.unwrap_or_default(),
                queue_id: e.queue_id,
                offset: e.offset,
                attempt: e.attempt,
                until_ms: e.until_ms,
                client: e.client.unwrap_or_default(),
            })
            .collect(),
    }
}
