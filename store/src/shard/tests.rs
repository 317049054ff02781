//! openraft's storage suite against what a shard really runs on: the segment log store and the
//! shard state machine with its snapshot file, opened by `open_storage` exactly as `Shard::open`
//! opens them. The suite only applies blank and membership entries, so a snapshot round trip
//! with real commands (transfer to another replica, and restore after a restart) follows.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use openraft::alias::{EntryOf, LogIdOf};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{Membership, StorageError};
use tempfile::TempDir;
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TopicName};

use super::state_machine::SnapshotState;
use super::*;
use crate::command::{ClientAppend, PopCommand, QueueAppend, QueueChoice, TagSubscription};
use crate::index_db::IndexDb;

const SHARD: ShardId = 3;

fn storage_error(err: &(impl std::error::Error + 'static)) -> StorageError<ShardTypes> {
    StorageError::read(ShardTypes::err_from_error(err))
}

/// A fresh (log, state machine) pair of shard [`SHARD`] per suite case, each in its own tempdir,
/// every log on one writer thread (as a node's shards are: logs come and go on it).
struct ShardStorageBuilder {
    flush: FlushSetting,
    writer: LogWriter<ShardTypes>,
}

impl StoreBuilder<ShardTypes, SegmentLogStore<ShardTypes>, ShardStateMachine, TempDir>
    for ShardStorageBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, SegmentLogStore<ShardTypes>, ShardStateMachine), StorageError<ShardTypes>>
    {
        let dir = tempfile::tempdir().map_err(|e| storage_error(&e))?;
        let cfg = StoreConfig {
            data_dir: dir.path().to_path_buf(),
            flush: self.flush,
            ..StoreConfig::default()
        };
        let Storage { log, sm, .. } = open_storage(
            &cfg,
            SHARD,
            vela_raft::vfs::StdVfs::shared(),
            &self.writer,
            None,
        )
        .await
        .map_err(|e| storage_error(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_with_sync_flush() -> Result<(), StorageError<ShardTypes>> {
    Suite::test_all(ShardStorageBuilder {
        flush: FlushSetting::Sync,
        writer: LogWriter::spawn("suite-writer").expect("writer thread"),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_with_async_flush() -> Result<(), StorageError<ShardTypes>> {
    Suite::test_all(ShardStorageBuilder {
        flush: FlushSetting::Async {
            interval: Duration::from_millis(5),
        },
        writer: LogWriter::spawn("suite-writer").expect("writer thread"),
    })
    .await
}

fn log_id(term: u64, index: u64) -> LogIdOf<ShardTypes> {
    openraft::testing::log_id::<ShardTypes>(term, 1, index)
}

fn topic() -> TopicName {
    TopicName::new("orders").expect("valid topic")
}

fn message(id: &str, delivery_timestamp_ms: Option<i64>) -> MessageRecord {
    MessageRecord {
        message_id: id.into(),
        topic: topic(),
        kind: if delivery_timestamp_ms.is_some() {
            MessageKind::Delay
        } else {
            MessageKind::Normal
        },
        tag: Some("red".into()),
        keys: vec![],
        message_group: None,
        delivery_timestamp_ms,
        born_timestamp_ms: 0,
        born_host: "test".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from_static(b"body"),
    }
}

/// A membership entry, appends to two queues (one of them a delay message, so a timer is
/// parked), a blank entry and a POP that leaves a message in flight.
fn workload() -> Vec<EntryOf<ShardTypes>> {
    let now_ms = 1_700_000_000_000;
    let append = |queue_id, messages| StoreCommand::Append {
        topic: topic(),
        queue_id,
        now_ms,
        messages,
    };
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1u64])], []);
    vec![
        EntryOf::<ShardTypes>::new_membership(log_id(1, 1), membership),
        EntryOf::<ShardTypes>::new_normal(
            log_id(1, 2),
            append(0, vec![message("a", None), message("b", None)]),
        ),
        // The apply semantics raised (format 4 snapshots from here on, with the deduplication
        // window).
        EntryOf::<ShardTypes>::new_normal(
            log_id(1, 3),
            StoreCommand::SetApplyVersion {
                version: crate::state::APPLY_VERSION,
            },
        ),
        EntryOf::<ShardTypes>::new_normal(
            log_id(2, 4),
            // Sent by a named client: the deduplication window remembers it.
            StoreCommand::ClientAppends {
                now_ms,
                appends: vec![ClientAppend {
                    client_id: Some("c@1".into()),
                    append: QueueAppend {
                        topic: topic(),
                        queue_id: 1,
                        messages: vec![message("later", Some(now_ms + 3_600_000))],
                    },
                }],
            },
        ),
        EntryOf::<ShardTypes>::new_normal(
            log_id(2, 5),
            StoreCommand::Pop(PopCommand {
                group: GroupName::new("billing").expect("valid group"),
                topic: topic(),
                queues: QueueChoice::All,
                max: 1,
                invisible_ms: 30_000,
                filter: TagSubscription::All,
                fifo: false,
                max_attempts: 16,
                now_ms,
            }),
        ),
    ]
}

async fn apply(sm: &mut ShardStateMachine, entries: Vec<EntryOf<ShardTypes>>) -> io::Result<()> {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
}

/// Writes what `from` has indexed into `to`'s index file, as a snapshot transfer that ships the
/// index would.
fn ship_index(from: &ShardShared, to: &ShardShared, through: u64) {
    for part in from.applied.read().state.entries().unflushed() {
        to.index
            .write(&part.entries, &part.history, through)
            .expect("index write");
    }
    to.index.make_durable().expect("index sync");
}

/// A state machine alone, without a log (snapshot round trips only).
fn state_machine(dir: &std::path::Path, shard: ShardId) -> (Arc<ShardShared>, ShardStateMachine) {
    let index = IndexDb::open(&vela_raft::vfs::StdVfs::shared(), dir, 1 << 20).expect("index");
    let shared = ShardShared::new(shard, index, true).expect("shared");
    let generations = vela_raft::generations::Generations::open(
        vela_raft::vfs::StdVfs::shared(),
        dir.join("snapshots"),
    )
    .expect("snapshot directory");
    let keeper = vela_raft::generations::SnapshotKeeper::new(generations, None).expect("keeper");
    let sm = ShardStateMachine::new(shared.clone(), keeper, None, None);
    (shared, sm)
}

#[tokio::test]
async fn snapshot_with_real_commands_transfers_and_restores() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (leader, mut leader_sm) = state_machine(leader_dir.path(), SHARD);
    apply(&mut leader_sm, workload()).await.expect("apply");
    let applied_state = leader_sm.applied_state().await.expect("applied state");
    assert_eq!(applied_state.0, Some(log_id(2, 5)));
    assert_eq!(applied_state.1.log_id(), &Some(log_id(1, 1)));
    let expected_state = leader.applied.read().state.clone();
    assert!(expected_state.next_due_ms().is_some(), "a timer is parked");
    assert!(expected_state.lowest_parked_log_index().is_some());
    assert_eq!(
        expected_state.dedup().len(),
        1,
        "a sent message is remembered"
    );
    assert_ne!(
        expected_state,
        ShardState::new(SHARD),
        "the workload changed the state"
    );

    let built = leader_sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    assert_eq!(built.meta.last_log_id, Some(log_id(2, 5)));
    let current = leader_sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot file")
        .expect("a snapshot exists");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot, built.snapshot);

    // Another replica of the same shard cannot take the snapshot alone: the queues' entries
    // are in the index file, not in the snapshot.
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (follower, mut follower_sm) = state_machine(follower_dir.path(), SHARD);
    let err = follower_sm
        .install_snapshot(&current.meta, current.snapshot.clone())
        .await
        .expect_err("an index that does not cover the snapshot is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("queue index file"), "{err}");
    assert_eq!(follower.applied.read().last_applied, None);
    // With the index shipped along (as a cluster transfer will do), it can.
    ship_index(&leader, &follower, 5);
    follower_sm
        .install_snapshot(&current.meta, current.snapshot.clone())
        .await
        .expect("install snapshot");
    assert_eq!(follower.applied.read().state, expected_state);
    assert_eq!(
        follower_sm.applied_state().await.expect("applied state"),
        applied_state
    );
    let served = follower_sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot file")
        .expect("a snapshot exists");
    assert_eq!(served.meta, built.meta);

    // After a restart the leader restores from its own file, as openraft does at startup.
    drop(leader_sm);
    let (restarted, mut restarted_sm) = state_machine(leader_dir.path(), SHARD);
    assert_eq!(
        restarted_sm.applied_state().await.expect("applied state").0,
        None
    );
    let on_disk = restarted_sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot file")
        .expect("a snapshot exists");
    restarted_sm
        .install_snapshot(&on_disk.meta, on_disk.snapshot)
        .await
        .expect("install snapshot");
    assert_eq!(restarted.applied.read().state, expected_state);
    assert_eq!(
        restarted_sm.applied_state().await.expect("applied state"),
        applied_state
    );

    // Applying continues after the snapshot on both replicas alike.
    let more = vec![EntryOf::<ShardTypes>::new_normal(
        log_id(2, 6),
        StoreCommand::Truncate { below_log_index: 3 },
    )];
    apply(&mut restarted_sm, more.clone()).await.expect("apply");
    apply(&mut follower_sm, more).await.expect("apply");
    assert_eq!(restarted.applied.read().state.truncated_below(), 3);
    assert_eq!(
        follower.applied.read().state,
        restarted.applied.read().state
    );
    assert_eq!(
        follower_sm.applied_state().await.expect("applied state").0,
        Some(log_id(2, 6))
    );
}

#[tokio::test]
async fn snapshot_of_another_shard_or_mismatched_meta_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, mut sm) = state_machine(dir.path(), SHARD);
    apply(&mut sm, workload()).await.expect("apply");
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");

    let other_dir = tempfile::tempdir().expect("tempdir");
    let (other, mut other_sm) = state_machine(other_dir.path(), SHARD + 1);
    let err = other_sm
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .expect_err("the install must be refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("shard 3"), "{err}");
    assert_eq!(other.applied.read().last_applied, None);
    assert!(
        other_sm
            .get_current_snapshot()
            .await
            .expect("read the snapshot file")
            .is_none()
    );

    let (_, mut same_shard_sm) = state_machine(other_dir.path(), SHARD);
    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(9, 9));
    let err = same_shard_sm
        .install_snapshot(&wrong_meta, snapshot.snapshot)
        .await
        .expect_err("the install must be refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    let (_, mut garbage_sm) = state_machine(other_dir.path(), SHARD);
    let err = garbage_sm
        .install_snapshot(&snapshot.meta, vec![0xff; 7])
        .await
        .expect_err("the install must be refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

/// openraft runs a snapshot build in a task of its own while the state machine goes on, so a
/// snapshot from the leader can be installed while a build is writing. The file must end up as
/// the installed snapshot (openraft purges the log up to it; a restart from an older file would
/// miss the entries in between), and never as a mix of two writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_racing_an_install_leaves_the_installed_snapshot() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (leader, mut leader_sm) = state_machine(leader_dir.path(), SHARD);
    apply(&mut leader_sm, workload()).await.expect("apply");
    let newer = leader_sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");

    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, mut sm) = state_machine(dir.path(), SHARD);
        apply(&mut sm, workload()[..2].to_vec())
            .await
            .expect("apply");
        ship_index(&leader, &shared, 5);
        let mut builder = sm.get_snapshot_builder().await;
        let (built, installed) = tokio::join!(
            builder.build_snapshot(),
            sm.install_snapshot(&newer.meta, newer.snapshot.clone()),
        );
        built.expect("build snapshot");
        installed.expect("install snapshot");
        assert_eq!(shared.applied.read().last_applied, Some(log_id(2, 5)));

        let (restarted, mut restarted_sm) = state_machine(dir.path(), SHARD);
        let on_disk = restarted_sm
            .get_current_snapshot()
            .await
            .expect("read the snapshot file")
            .expect("a snapshot exists");
        assert_eq!(on_disk.meta, newer.meta, "round {round}");
        restarted_sm
            .install_snapshot(&on_disk.meta, on_disk.snapshot)
            .await
            .expect("install snapshot");
        assert_eq!(restarted.applied.read().state, shared.applied.read().state);
    }
}

#[tokio::test]
async fn a_log_asking_for_unknown_apply_semantics_stops_the_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shared, mut sm) = state_machine(dir.path(), SHARD);
    let known = vec![EntryOf::<ShardTypes>::new_normal(
        log_id(1, 1),
        StoreCommand::SetApplyVersion {
            version: crate::state::APPLY_VERSION,
        },
    )];
    apply(&mut sm, known)
        .await
        .expect("a known version applies");
    assert_eq!(
        shared.applied.read().state.apply_version(),
        crate::state::APPLY_VERSION
    );
    let unknown = vec![
        EntryOf::<ShardTypes>::new_normal(
            log_id(1, 2),
            StoreCommand::SetApplyVersion {
                version: crate::state::APPLY_VERSION + 1,
            },
        ),
        EntryOf::<ShardTypes>::new_normal(
            log_id(1, 3),
            StoreCommand::Truncate { below_log_index: 1 },
        ),
    ];
    let err = apply(&mut sm, unknown).await.expect_err("refused");
    assert!(err.to_string().contains("apply version"), "{err}");
    assert_eq!(
        shared.applied.read().last_applied.map(|l| l.index),
        Some(1),
        "nothing after the refused entry is applied"
    );
}

#[tokio::test]
async fn older_snapshot_formats_still_restore_their_dedup_window_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shared, mut sm) = state_machine(dir.path(), SHARD);
    apply(&mut sm, workload()).await.expect("apply");
    // A deleted topic and a deleted group: their drop ids are saved after the state too.
    let drops = vec![
        EntryOf::<ShardTypes>::new_normal(
            log_id(2, 6),
            StoreCommand::DropTopicOnce {
                topic: TopicName::new("gone").expect("valid"),
                drop_id: 7,
            },
        ),
        EntryOf::<ShardTypes>::new_normal(
            log_id(2, 7),
            StoreCommand::DropGroupOnce {
                group: GroupName::new("gone").expect("valid"),
                drop_id: 9,
                floor: 3,
            },
        ),
    ];
    apply(&mut sm, drops).await.expect("apply");
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let current = decode_snapshot(7, &built.snapshot).expect("format 9 decodes");
    let SnapshotState::Current(state) = current.state else {
        panic!("the current format decodes as the current state");
    };
    assert_eq!(state.dedup().len(), 1);
    assert_eq!(
        state.dedup_clock_ms(),
        1_700_000_000_000,
        "the clock is saved"
    );
    assert_eq!(state, shared.applied.write().state.snapshot_copy());

    // The same state as format 4 wrote it: the window but not its clock after the state.
    let format4 =
        postcard::to_stdvec(&(4u32, &built.meta, &state, state.dedup())).expect("encodes");
    let SnapshotState::Current(from4) = decode_snapshot(7, &format4).expect("decodes").state else {
        panic!("format 4 decodes as the current state");
    };
    assert_eq!(from4.dedup(), state.dedup());
    assert_eq!(from4.dedup_clock_ms(), 0, "version 6 starts the clock");
    // Format 5 is format 4 with the clock (a zigzag varint) after the window.
    let mut format5 = format4.clone();
    format5[0] = 5;
    format5.extend(postcard::to_stdvec(&state.dedup_clock_ms()).expect("encodes"));
    let SnapshotState::Current(from5) = decode_snapshot(7, &format5).expect("decodes").state else {
        panic!("format 5 decodes as the current state");
    };
    assert_eq!(from5.dedup_clock_ms(), state.dedup_clock_ms());
    assert!(
        from5.tier().is_empty(),
        "nothing was tiered before version 9"
    );
    // Format 6 is format 5 with the tier manifest after the clock.
    let mut format6 = format5.clone();
    format6[0] = 6;
    format6.extend(postcard::to_stdvec(state.tier()).expect("encodes"));
    let SnapshotState::Current(from6) = decode_snapshot(7, &format6).expect("decodes").state else {
        panic!("format 6 decodes as the current state");
    };
    assert!(
        from6.topic_retention().is_empty(),
        "no topic had a retention of its own before version 15"
    );
    // Format 7 is format 6 with the topics' own retentions after the manifest.
    let mut format7 = format6.clone();
    format7[0] = 7;
    format7.extend(postcard::to_stdvec(state.topic_retention()).expect("encodes"));
    let SnapshotState::Current(from7) = decode_snapshot(7, &format7).expect("decodes").state else {
        panic!("format 7 decodes as the current state");
    };
    assert_eq!(from7.topic_retention(), state.topic_retention());
    assert!(
        from7.topic_revisions().is_empty(),
        "no drop was fenced before version 16"
    );
    // Format 8 is format 7 with the deleted topics' drop ids after the retentions.
    let mut format8 = format7.clone();
    format8[0] = 8;
    format8.extend(postcard::to_stdvec(state.topic_revisions()).expect("encodes"));
    let SnapshotState::Current(from8) = decode_snapshot(7, &format8).expect("decodes").state else {
        panic!("format 8 decodes as the current state");
    };
    assert_eq!(from8.topic_revisions().len(), 1);
    assert_eq!(from8.topic_revisions(), state.topic_revisions());
    assert!(
        from8.group_fence().is_empty(),
        "no group's drop was fenced before version 18"
    );
    // Format 9 is format 8 with the deleted groups' drop ids after the topics'.
    let mut layout = format8.clone();
    layout[0] = 9;
    layout.extend(postcard::to_stdvec(state.group_fence()).expect("encodes"));
    assert_eq!(built.snapshot, layout);
    let SnapshotState::Current(from9) = decode_snapshot(7, &layout).expect("decodes").state else {
        panic!("format 9 decodes as the current state");
    };
    assert_eq!(from9.group_fence().ids().len(), 1);
    assert_eq!(from9.group_fence().floor(), 3);
    assert_eq!(from9.group_fence(), state.group_fence());

    // As format 3 wrote it: no window after the state.
    let format3 = postcard::to_stdvec(&(3u32, &built.meta, &state)).expect("encodes");
    let old = decode_snapshot(7, &format3).expect("format 3 decodes");
    let SnapshotState::Current(old_state) = old.state else {
        panic!("format 3 decodes as the current state");
    };
    assert!(old_state.dedup().is_empty());
    let mut expected = shared.applied.write().state.snapshot_copy();
    expected.set_dedup(Default::default());
    assert_eq!(
        postcard::to_stdvec(&old_state).expect("encodes"),
        postcard::to_stdvec(&expected).expect("encodes")
    );
    let unknown = postcard::to_stdvec(&(10u32, &built.meta, &state)).expect("encodes");
    let err = decode_snapshot(7, &unknown)
        .err()
        .expect("a newer format is refused");
    assert!(err.contains("snapshot format 10 is not supported"), "{err}");
}

/// Until a shard applies version 5 its snapshots keep format 3, until version 6 format 4,
/// until version 9 format 5, until version 15 format 6, until version 16 format 7 and until
/// version 18 format 8, so a node
/// rolled back to a build that reads no newer format still opens what was written
/// during the upgrade.
#[tokio::test]
async fn snapshots_keep_the_format_older_builds_read_until_the_version_is_raised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_shared, mut sm) = state_machine(dir.path(), SHARD);
    let mut entries = workload();
    let mut rest = entries.split_off(2);
    apply(&mut sm, entries).await.expect("apply");
    let mut built = Vec::new();
    built.push(format_byte(&mut sm).await);
    // The workload's SetApplyVersion, first to 5, then (a later entry) to this build's.
    rest[0] = EntryOf::<ShardTypes>::new_normal(
        log_id(1, 3),
        StoreCommand::SetApplyVersion { version: 5 },
    );
    let last = rest.pop().expect("entries");
    apply(&mut sm, rest).await.expect("apply");
    built.push(format_byte(&mut sm).await);
    let raise = EntryOf::<ShardTypes>::new_normal(
        log_id(2, last.log_id.index),
        StoreCommand::SetApplyVersion {
            version: crate::state::TOPIC_RETENTION_APPLY_VERSION - 1,
        },
    );
    apply(&mut sm, vec![raise]).await.expect("apply");
    built.push(format_byte(&mut sm).await);
    let raise = EntryOf::<ShardTypes>::new_normal(
        log_id(2, last.log_id.index + 1),
        StoreCommand::SetApplyVersion {
            version: crate::state::DROP_FENCE_APPLY_VERSION - 1,
        },
    );
    apply(&mut sm, vec![raise]).await.expect("apply");
    built.push(format_byte(&mut sm).await);
    let raise = EntryOf::<ShardTypes>::new_normal(
        log_id(2, last.log_id.index + 2),
        StoreCommand::SetApplyVersion {
            version: crate::state::GROUP_DROP_FENCE_APPLY_VERSION - 1,
        },
    );
    apply(&mut sm, vec![raise]).await.expect("apply");
    built.push(format_byte(&mut sm).await);
    let raise = EntryOf::<ShardTypes>::new_normal(
        log_id(2, last.log_id.index + 3),
        StoreCommand::SetApplyVersion {
            version: crate::state::APPLY_VERSION,
        },
    );
    apply(&mut sm, vec![raise]).await.expect("apply");
    built.push(format_byte(&mut sm).await);
    assert_eq!(
        built,
        [3, 4, 6, 7, 8, 9],
        "format 3 below version 5, 4 below 6, 6 below 15 (5 below 9), 7 below 16, 8 below 18, \
         then 9"
    );
}

/// The format byte a snapshot built now leads with.
async fn format_byte(sm: &mut ShardStateMachine) -> u8 {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot")
        .snapshot[0]
}

/// A member that led before it restarted stands for election like any other: resuming its term
/// could reuse log ids of entries it lost in a power cut and its followers hold durably (ADR
/// 0010; the replica-moves fault schedule found the divergence this caused).
#[test]
fn a_restarted_member_never_resumes_its_term_as_leader() {
    let config = super::member_config(&StoreConfig::default(), 3);
    assert_eq!(config.enable_leader_restore, Some(false));
}
