//! Test fixtures shared by the unit tests: a Raft type config, a minimal in-memory state machine
//! with snapshots, and helpers to build entries and await appends.

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, IOFlushed, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend, SnapshotMeta, StoredMembership};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{FlushMode, LogStoreConfig, SegmentLogStore};

openraft::declare_raft_types!(
    pub TestConfig:
        D = String,
        R = String,
);

pub type TestEntry = <TestConfig as openraft::RaftTypeConfig>::Entry;
pub type TestWriteResult = Result<
    openraft::raft::ClientWriteResponse<TestConfig>,
    openraft::error::RaftError<TestConfig, openraft::error::ClientWriteError<TestConfig>>,
>;
pub type TestStore = SegmentLogStore<TestConfig>;

pub fn log_id(term: u64, index: u64) -> LogIdOf<TestConfig> {
    openraft::testing::log_id::<TestConfig>(term, 0, index)
}

/// A normal entry carrying `body`.
pub fn entry(term: u64, index: u64, body: &str) -> TestEntry {
    TestEntry::new_normal(log_id(term, index), body.to_string())
}

/// Entries `range` in `term`, each with a body of `body_len` bytes naming its index.
pub fn entries(term: u64, range: std::ops::Range<u64>, body_len: usize) -> Vec<TestEntry> {
    range
        .map(|i| {
            let mut body = format!("entry-{i}-");
            while body.len() < body_len {
                body.push((b'a' + (i % 26) as u8) as char);
            }
            entry(term, i, &body)
        })
        .collect()
}

pub fn config(dir: &Path, segment_bytes: u64, cache_bytes: usize) -> LogStoreConfig {
    LogStoreConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        flush: FlushMode::Sync,
        cache_bytes,
        compact_on_purge: false,
        preallocate_bytes: crate::store::DEFAULT_PREALLOCATE_BYTES,
        vfs: crate::vfs::StdVfs::shared(),
    }
}

/// Appends and waits for the flush callback.
pub async fn append(store: &TestStore, batch: Vec<TestEntry>) -> io::Result<()> {
    let (tx, rx) = TestConfig::oneshot();
    store.append_entries(batch, Some(IOFlushed::signal(tx)))?;
    rx.await
        .map_err(|_| io::Error::other("flush callback dropped"))?
}

/// The state machine's whole state, which is also its snapshot format.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TestState {
    pub last_applied: Option<LogIdOf<TestConfig>>,
    pub last_membership: StoredMembershipOf<TestConfig>,
    pub values: Vec<String>,
}

#[derive(Default)]
struct TestShared {
    state: TestState,
    snapshot: Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>,
}

/// In-memory state machine: keeps every applied body, answers each write with `ok:{body}`.
#[derive(Clone, Default)]
pub struct TestStateMachine {
    shared: Arc<Mutex<TestShared>>,
}

impl TestStateMachine {
    pub fn values(&self) -> Vec<String> {
        self.shared.lock().state.values.clone()
    }
}

impl RaftSnapshotBuilder<TestConfig> for TestStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Vec<u8>>, io::Error> {
        let mut shared = self.shared.lock();
        let data = postcard::to_allocvec(&shared.state).map_err(io::Error::other)?;
        let meta = SnapshotMeta {
            last_log_id: shared.state.last_applied,
            last_membership: shared.state.last_membership.clone(),
        };
        shared.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TestConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TestConfig> for TestStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = TestStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let shared = self.shared.lock();
        Ok((
            shared.state.last_applied,
            shared.state.last_membership.clone(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TestConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut shared = self.shared.lock();
                shared.state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => String::new(),
                    EntryPayload::Normal(body) => {
                        let response = format!("ok:{body}");
                        shared.state.values.push(body);
                        response
                    }
                    EntryPayload::Membership(membership) => {
                        shared.state.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        String::new()
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let state: TestState = postcard::from_bytes(&snapshot).map_err(io::Error::other)?;
        let mut shared = self.shared.lock();
        shared.state = state;
        shared.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TestConfig, Vec<u8>>>, io::Error> {
        Ok(self
            .shared
            .lock()
            .snapshot
            .clone()
            .map(|(meta, snapshot)| SnapshotOf::<TestConfig, Vec<u8>> { meta, snapshot }))
    }
}

/// Writes `body` through `raft`, waiting out a lapsed leader lease. A leader refuses writes
/// while it has not heard from a quorum within its lease (right after an election on a loaded
/// machine, say), and it refuses them before appending, so a retry cannot store a value twice.
/// Every other outcome, including losing leadership, is the caller's.
pub async fn write_leased(
    raft: &openraft::Raft<TestConfig, TestStateMachine>,
    body: &str,
) -> TestWriteResult {
    use openraft::error::{ClientWriteError, ForwardReason, RaftError};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match raft.client_write(body.to_string()).await {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == ForwardReason::LeaseExpired
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}
