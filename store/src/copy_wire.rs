//! A replica copy (`vela.store.v1.Store/CopyShard`, ADR 0014) on the wire: the chunks both ways
//! and [`GrpcReplicaSource`], how a store node asks another for one.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tonic::transport::Channel;
use vela_proto::pb::store as pb;
use vela_proto::pb::store::store_client::StoreClient;

use crate::index_db::history::{EVENT_KEY_LEN, EventRow, LOOKUP_KEY_LEN, LOOKUP_VALUE_LEN};
use crate::index_db::{ENTRY_LEN, IndexRows, KEY_LEN, TAG_KEY_LEN};
use crate::shard::ShardTypes;
use crate::{CopyRequest, ReplicaChunk, ReplicaSource};

/// Largest chunk either side accepts (a log batch is ~4 MiB plus at most one large entry).
pub(crate) const MAX_CHUNK_BYTES: usize = 256 * 1024 * 1024;
/// How long a copy waits for the next chunk before it gives up on the member.
const CHUNK_WAIT: Duration = Duration::from_secs(60);
/// How long a copy waits for the member to start answering.
const START_WAIT: Duration = Duration::from_secs(10);

const ROW_LEN: usize = KEY_LEN + ENTRY_LEN;
const LOOKUP_ROW_LEN: usize = LOOKUP_KEY_LEN + LOOKUP_VALUE_LEN;

fn events_to_wire(events: &[EventRow]) -> Vec<bytes::Bytes> {
    events
        .iter()
        .map(|(key, value)| [key.as_slice(), value].concat().into())
        .collect()
}

fn events_from_wire(events: Vec<bytes::Bytes>) -> Result<Vec<EventRow>, String> {
    events
        .into_iter()
        .map(|row| {
            if row.len() <= EVENT_KEY_LEN {
                return Err(format!("a message event row of {} bytes", row.len()));
            }
            let (key, value) = row.split_at(EVENT_KEY_LEN);
            Ok((
                key.try_into().map_err(|_| "a short event key")?,
                value.into(),
            ))
        })
        .collect()
}

pub(crate) fn request_to_wire(r: CopyRequest) -> pb::CopyShardRequest {
    pb::CopyShardRequest {
        shard: r.shard,
        snapshot_index: r.snapshot_index,
        log_from: r.log_from,
        index: r.index,
    }
}

pub(crate) fn request_from_wire(r: pb::CopyShardRequest) -> CopyRequest {
    CopyRequest {
        shard: r.shard,
        snapshot_index: r.snapshot_index,
        log_from: r.log_from,
        index: r.index,
    }
}

pub(crate) fn chunk_to_wire(chunk: &ReplicaChunk) -> Result<pb::CopyShardChunk, String> {
    use pb::copy_shard_chunk::Chunk;
    let chunk = match chunk {
        ReplicaChunk::Index(rows) => {
            let mut entries = Vec::with_capacity(rows.entries.len() * ROW_LEN);
            for (key, value) in &rows.entries {
                entries.extend_from_slice(key);
                entries.extend_from_slice(value);
            }
            let mut lookups = Vec::with_capacity(rows.history.lookups.len() * LOOKUP_ROW_LEN);
            for (key, value) in &rows.history.lookups {
                lookups.extend_from_slice(key);
                lookups.extend_from_slice(value);
            }
            Chunk::Index(pb::IndexRows {
                entries: entries.into(),
                tags: rows.tags.concat().into(),
                lookups: lookups.into(),
                record_events: events_to_wire(&rows.history.record_events),
                queue_events: events_to_wire(&rows.history.queue_events),
            })
        }
        ReplicaChunk::Log(entries) => {
            Chunk::Log(vela_raft::entry::encode_entries::<ShardTypes>(entries)?.into())
        }
    };
    Ok(pb::CopyShardChunk { chunk: Some(chunk) })
}

pub(crate) fn chunk_from_wire(chunk: pb::CopyShardChunk) -> Result<ReplicaChunk, String> {
    use pb::copy_shard_chunk::Chunk;
    match chunk.chunk {
        Some(Chunk::Index(rows)) => {
            if rows.entries.len() % ROW_LEN != 0
                || rows.tags.len() % TAG_KEY_LEN != 0
                || rows.lookups.len() % LOOKUP_ROW_LEN != 0
            {
                return Err(format!(
                    "index rows of {} and {} bytes are not whole rows",
                    rows.entries.len(),
                    rows.tags.len()
                ));
            }
            let mut out = IndexRows::default();
            for row in rows.entries.chunks_exact(ROW_LEN) {
                let (key, value) = row.split_at(KEY_LEN);
                out.entries.push((
                    key.try_into().map_err(|_| "a short index key")?,
                    value.try_into().map_err(|_| "a short index entry")?,
                ));
            }
            for tag in rows.tags.chunks_exact(TAG_KEY_LEN) {
                out.tags
                    .push(tag.try_into().map_err(|_| "a short tag key")?);
            }
            for row in rows.lookups.chunks_exact(LOOKUP_ROW_LEN) {
                let (key, value) = row.split_at(LOOKUP_KEY_LEN);
                out.history.lookups.push((
                    key.try_into().map_err(|_| "a short lookup key")?,
                    value.try_into().map_err(|_| "a short lookup value")?,
                ));
            }
            out.history.record_events = events_from_wire(rows.record_events)?;
            out.history.queue_events = events_from_wire(rows.queue_events)?;
            Ok(ReplicaChunk::Index(out))
        }
        Some(Chunk::Log(bytes)) => Ok(ReplicaChunk::Log(vela_raft::entry::decode_entries::<
            ShardTypes,
        >(&bytes)?)),
        None => Err("an empty copy chunk".into()),
    }
}

/// Copies over the store service of the member (one lazily connected channel per address).
#[derive(Default)]
pub struct GrpcReplicaSource {
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcReplicaSource {
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, addr: &str) -> Result<StoreClient<Channel>, String> {
        let mut channels = self.channels.lock();
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = vela_proto::store_client::lazy_channel(addr)?;
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(StoreClient::new(channel).max_decoding_message_size(MAX_CHUNK_BYTES))
    }
}

#[async_trait]
impl ReplicaSource for GrpcReplicaSource {
    async fn fetch(
        &self,
        node: u64,
        addr: &str,
        request: CopyRequest,
    ) -> Result<BoxStream<'static, Result<ReplicaChunk, String>>, String> {
        let mut client = self.client(addr)?;
        let started = tokio::time::timeout(START_WAIT, client.copy_shard(request_to_wire(request)))
            .await
            .map_err(|_| format!("store node {node} did not answer within {START_WAIT:?}"))?
            .map_err(|status| format!("store node {node}: {}", status.message()))?;
        let chunks =
            tokio_stream::StreamExt::timeout(started.into_inner(), CHUNK_WAIT).map(move |item| {
                match item {
                    Ok(Ok(chunk)) => chunk_from_wire(chunk),
                    Ok(Err(status)) => Err(format!("store node {node}: {}", status.message())),
                    Err(_) => Err(format!("store node {node} sent nothing for {CHUNK_WAIT:?}")),
                }
            });
        Ok(chunks.boxed())
    }
}

#[cfg(test)]
mod tests {
    use openraft::alias::EntryOf;
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::command::StoreCommand;

    /// Chunks survive the wire both ways, and partial rows are refused.
    #[test]
    fn copy_chunks_round_trip_and_bad_rows_are_refused() {
        let rows = IndexRows {
            entries: vec![
                ([1; KEY_LEN], [2; ENTRY_LEN]),
                ([3; KEY_LEN], [4; ENTRY_LEN]),
            ],
            tags: vec![[5; TAG_KEY_LEN]],
            history: crate::index_db::history::HistoryRows {
                lookups: vec![([6; LOOKUP_KEY_LEN], [7; LOOKUP_VALUE_LEN])],
                record_events: vec![([8; EVENT_KEY_LEN], vec![9, 10].into())],
                queue_events: vec![([11; EVENT_KEY_LEN], vec![12].into())],
            },
        };
        let back =
            chunk_from_wire(chunk_to_wire(&ReplicaChunk::Index(rows.clone())).expect("encodes"));
        assert!(matches!(back, Ok(ReplicaChunk::Index(r)) if r == rows));

        let entries: Vec<EntryOf<ShardTypes>> = (7..10)
            .map(|i| {
                EntryOf::<ShardTypes>::new_normal(
                    openraft::testing::log_id::<ShardTypes>(3, 1, i),
                    StoreCommand::Truncate { below_log_index: i },
                )
            })
            .collect();
        match chunk_from_wire(chunk_to_wire(&ReplicaChunk::Log(entries.clone())).expect("encodes"))
        {
            Ok(ReplicaChunk::Log(back)) => assert_eq!(back, entries),
            other => panic!("log chunk came back as {other:?}"),
        }

        let mut bad = chunk_to_wire(&ReplicaChunk::Index(rows)).expect("encodes");
        if let Some(pb::copy_shard_chunk::Chunk::Index(r)) = &mut bad.chunk {
            r.entries = r.entries.slice(1..);
        }
        assert!(chunk_from_wire(bad).is_err());
        assert!(chunk_from_wire(pb::CopyShardChunk { chunk: None }).is_err());
    }
}
