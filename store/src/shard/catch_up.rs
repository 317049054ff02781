//! Catching a replica up from below the retention floor (ADR 0014). openraft sends a replica
//! that needs log the leader no longer has a snapshot: the shard's state, small. The state
//! refers to message bodies in the retained log (from the truncation floor to the snapshot) and
//! to queue index entries in the index file, which the snapshot does not carry. Before it
//! installs the state, the replica copies both from a member that holds that snapshot
//! generation ([`ReplicaSource`], the store service's `CopyShard` between nodes), in batches,
//! so memory stays bounded however much is retained.
//!
//! The source reads the index through one read view (a consistent copy, unaffected by writes
//! meanwhile) taken while the generation is still kept (so garbage collection has removed
//! nothing the generation needs), and the log entries through the store's reader (which sees
//! below openraft's logical purge point), pinned against retention until the copy ends.
//!
//! The receiver marks the replica `restoring` just before its first write (see `restoring`);
//! the transports hold appends to it while the install runs (`vela_raft::install_gate`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::alias::{EntryOf, LogIdOf};
use openraft::entry::RaftEntry;
use tokio::sync::mpsc;
use tracing::{info, warn};
use vela_proto::domain::ShardId;
use vela_proto::store_api::StoreError;
use vela_raft::SegmentLogStore;
use vela_raft::vfs::Vfs;

use super::{Shard, ShardTypes};
use crate::index_db::{IndexDb, IndexRows};

/// What a replica asks a member for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRequest {
    pub shard: ShardId,
    /// The snapshot generation the copy must be consistent with (the member must still keep it).
    pub snapshot_index: u64,
    /// Log entries from this index through `snapshot_index` (`None`: no log).
    pub log_from: Option<u64>,
    /// The whole index file.
    pub index: bool,
}

/// One batch of a copy.
#[derive(Debug)]
pub enum ReplicaChunk {
    /// Rows of the index file (all of them come before any log entries).
    Index(IndexRows),
    /// Consecutive log entries, oldest first.
    Log(Vec<EntryOf<ShardTypes>>),
}

/// How a replica reaches another member for a copy (gRPC between store nodes; the in-process
/// test cluster calls the other store directly).
#[async_trait]
pub trait ReplicaSource: Send + Sync + 'static {
    /// The copy `request` from member `node` (at `addr`), as a stream of batches.
    async fn fetch(
        &self,
        node: u64,
        addr: &str,
        request: CopyRequest,
    ) -> Result<BoxStream<'static, Result<ReplicaChunk, String>>, String>;

    /// How long an install keeps trying the members before it gives up.
    fn patience(&self) -> Duration {
        COPY_PATIENCE
    }
}

/// Index rows per batch (~56 bytes each).
const INDEX_BATCH: usize = 16_384;
/// Log bytes per batch, about (an entry is never split).
const LOG_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Log entries per batch at most.
const LOG_BATCH_ENTRIES: u64 = 1024;
/// Batches a copy reads ahead of the network.
const READ_AHEAD: usize = 4;
/// How long an install keeps trying the members before it gives up (the replica's Raft then
/// stops; the controller's next open reopens it, see `Store::open_shard`).
const COPY_PATIENCE: Duration = Duration::from_secs(120);

/// The source side: streams `request` from this node's replica of `shard`. Refused while the
/// replica does not keep the generation or the log range (`Unavailable`: another member may).
pub(crate) fn export(
    shard: &Shard,
    request: CopyRequest,
) -> Result<mpsc::Receiver<Result<ReplicaChunk, StoreError>>, StoreError> {
    let unavailable = |why: String| {
        StoreError::Unavailable(format!(
            "shard {}: cannot copy snapshot {}: {why}",
            shard.id, request.snapshot_index
        ))
    };
    // The view first: if the generation is still kept afterwards, it was when the view was
    // taken, and garbage collection had kept everything it needs.
    let view = if request.index {
        Some(
            shard
                .shared
                .index
                .view()
                .map_err(|e| unavailable(e.to_string()))?,
        )
    } else {
        None
    };
    let kept = shard
        .keeper
        .generations()
        .indexes()
        .map_err(|e| unavailable(e.to_string()))?;
    if !kept.contains(&request.snapshot_index) {
        return Err(unavailable(format!(
            "this replica keeps generations {kept:?}"
        )));
    }
    // Retention must not remove what the copy is about to read (checked after pinning).
    let pin = request.log_from.map(|from| shard.log.pin_from(from));
    // Entries this replica evicted after tiering them are read back from the tier.
    let tiered = shard.tier.get().cloned().map(|tier| {
        let manifest = shard.shared.applied.read().state.tier().clone();
        (tier, manifest)
    });
    if let Some(from) = request.log_from {
        let (first, last) = (shard.reader.first_index(), shard.reader.last_index());
        let from_tier = tiered
            .as_ref()
            .is_some_and(|(_, m)| first.is_some_and(|f| f == 0 || m.covers(from, f - 1)));
        if (first.is_none_or(|f| f > from) && !from_tier)
            || last.is_none_or(|l| l < request.snapshot_index)
        {
            return Err(unavailable(format!(
                "this replica's log holds {first:?}..={last:?}, the copy needs \
                 {from}..={}",
                request.snapshot_index
            )));
        }
    }
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let reader = shard.reader.clone();
    let id = shard.id;
    tokio::task::spawn_blocking(move || {
        let _pinned = pin;
        let send = |chunk| tx.blocking_send(chunk).is_ok();
        if let Some(view) = view {
            for rows in view.export(INDEX_BATCH) {
                let chunk = rows
                    .map(ReplicaChunk::Index)
                    .map_err(|e| StoreError::Internal(format!("shard {id}: {e}")));
                let failed = chunk.is_err();
                if !send(chunk) || failed {
                    return;
                }
            }
        }
        let Some(mut next) = request.log_from else {
            return;
        };
        while next <= request.snapshot_index {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            while next <= request.snapshot_index
                && bytes < LOG_BATCH_BYTES
                && (batch.len() as u64) < LOG_BATCH_ENTRIES
            {
                let local = match reader.entry(next) {
                    Ok(None) => tiered_entry(tiered.as_ref(), next),
                    other => other.map_err(|e| e.to_string()),
                };
                match local {
                    Ok(Some(entry)) => {
                        bytes += entry_size(&entry);
                        batch.push(entry);
                        next += 1;
                    }
                    Ok(None) => {
                        send(Err(StoreError::Unavailable(format!(
                            "shard {id}: log index {next} is gone (retention moved on)"
                        ))));
                        return;
                    }
                    Err(err) => {
                        send(Err(StoreError::Unavailable(format!(
                            "shard {id}: reading log index {next} for a copy: {err}"
                        ))));
                        return;
                    }
                }
            }
            if !send(Ok(ReplicaChunk::Log(batch))) {
                return;
            }
        }
    });
    Ok(rx)
}

/// The entry at `index` from the tier, if the manifest names a segment holding it (from a
/// blocking thread).
fn tiered_entry(
    tiered: Option<&(Arc<vela_tier::Tier>, crate::state::TierManifest)>,
    index: u64,
) -> Result<Option<EntryOf<ShardTypes>>, String> {
    let Some((tier, manifest)) = tiered else {
        return Ok(None);
    };
    let Some(segment) = manifest.segment_for(index) else {
        return Ok(None);
    };
    let object = vela_tier::SegmentRef {
        key: &segment.key,
        bytes: segment.bytes,
        first_index: segment.first_index,
        last_index: segment.last_index,
    };
    let entries = tokio::runtime::Handle::current()
        .block_on(tier.read_entries::<ShardTypes>(object, index, index))
        .map_err(|e| e.to_string())?;
    Ok(entries.into_iter().next())
}

/// Rough bytes of an entry (for batching only).
fn entry_size(entry: &EntryOf<ShardTypes>) -> u64 {
    match &entry.payload {
        openraft::EntryPayload::Normal(command) => command.body_bytes() + 64,
        _ => 64,
    }
}

/// The receiving side: what a replica needs to install snapshot `snapshot` of `shard`.
pub(crate) struct Fill<'a> {
    pub shard: ShardId,
    pub snapshot: LogIdOf<ShardTypes>,
    /// Where the retained log starts in the snapshot's state.
    pub floor: u64,
    /// The state's index entries must be copied (the local file does not reach them).
    pub index: bool,
    /// Members to ask (node id → address), in the order to ask them.
    pub members: Vec<(u64, String)>,
    pub log: &'a SegmentLogStore<ShardTypes>,
    pub db: &'a Arc<IndexDb>,
    /// Marks the replica `restoring`, once, just before the copy first writes.
    pub restoring: Restoring,
}

/// The `restoring` mark of the replica a [`Fill`] writes to (see `restoring`), made once.
pub(crate) struct Restoring {
    pub vfs: Arc<dyn Vfs>,
    pub dir: PathBuf,
    pub marked: AtomicBool,
}

impl Restoring {
    /// Makes the mark durable unless it already is: from here on a stop leaves a replica that
    /// matches no snapshot generation. Nothing is marked while the copy has written nothing (a
    /// copy that cannot start leaves an intact replica as it was).
    async fn before_writing(&self) -> Result<(), String> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let (vfs, dir) = (self.vfs.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || super::restoring::mark(vfs.as_ref(), &dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("marking the replica restoring: {e}"))?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }
}

impl Fill<'_> {
    /// Whether the local log already holds the snapshot's retained history.
    pub fn log_present(&self) -> bool {
        let reader = self.log.reader();
        reader.first_index().is_some_and(|f| f <= self.floor)
            && reader
                .entry(self.snapshot.index)
                .ok()
                .flatten()
                .is_some_and(|e| e.log_id() == self.snapshot)
    }

    /// What must be copied (`None`: the replica has all the snapshot needs).
    pub fn request(&self) -> Option<CopyRequest> {
        // A floor past the snapshot: the state refers to nothing in the log.
        let needs_log = self.floor <= self.snapshot.index && !self.log_present();
        let request = CopyRequest {
            shard: self.shard,
            snapshot_index: self.snapshot.index,
            log_from: needs_log.then_some(self.floor),
            index: self.index,
        };
        (request.log_from.is_some() || request.index).then_some(request)
    }

    /// Copies `request` from the first member that has it, trying each in turn until the
    /// source's patience ([`COPY_PATIENCE`]) runs out.
    pub async fn run(
        &self,
        source: &dyn ReplicaSource,
        request: CopyRequest,
    ) -> Result<(), io::Error> {
        let deadline = tokio::time::Instant::now() + source.patience();
        let mut failures = Vec::new();
        loop {
            for (node, addr) in &self.members {
                match self.copy_from(source, *node, addr, request).await {
                    Ok(()) => {
                        info!(
                            shard = self.shard,
                            from = node,
                            snapshot = self.snapshot.index,
                            log_from = ?request.log_from,
                            index = request.index,
                            "copied a replica's retained log and index from a member"
                        );
                        return Ok(());
                    }
                    Err(err) => {
                        warn!(shard = self.shard, from = node, error = %err, "copying a replica");
                        failures.push(format!("node {node}: {err}"));
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "shard {}: no member could provide what snapshot {} needs: {}",
                    self.shard,
                    self.snapshot.index,
                    failures.join("; ")
                )));
            }
            failures.clear();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn copy_from(
        &self,
        source: &dyn ReplicaSource,
        node: u64,
        addr: &str,
        request: CopyRequest,
    ) -> Result<(), String> {
        let mut stream = source.fetch(node, addr, request).await?;
        let mut restored = false;
        let mut next = request.log_from;
        while let Some(chunk) = stream.next().await {
            match chunk? {
                ReplicaChunk::Index(rows) => {
                    self.restoring.before_writing().await?;
                    let db = self.db.clone();
                    tokio::task::spawn_blocking(move || db.import(&rows))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                }
                ReplicaChunk::Log(entries) => {
                    let (Some(expected), Some(first)) = (next, entries.first()) else {
                        return Err("the member sent log entries that were not asked for".into());
                    };
                    if first.index() != expected {
                        return Err(format!(
                            "the member sent log index {} where {expected} was next",
                            first.index()
                        ));
                    }
                    next = entries.last().map(|e| e.index() + 1);
                    self.restoring.before_writing().await?;
                    let written = if restored {
                        self.log.restore_more_history(entries).await
                    } else {
                        restored = true;
                        self.log.restore_history(entries).await
                    };
                    written.map_err(|e| format!("writing the copied log: {e}"))?;
                }
            }
        }
        if let Some(from) = request.log_from {
            let reader = self.log.reader();
            let complete = reader.first_index() == Some(from)
                && reader
                    .entry(self.snapshot.index)
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.log_id() == self.snapshot)
                && next == Some(self.snapshot.index + 1);
            if !complete {
                return Err(format!(
                    "the copy ended before the log reached {} (next {next:?})",
                    self.snapshot.index
                ));
            }
        }
        if request.index {
            self.restoring.before_writing().await?;
            let (db, through) = (self.db.clone(), self.snapshot.index);
            tokio::task::spawn_blocking(move || db.finish_import(through))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
