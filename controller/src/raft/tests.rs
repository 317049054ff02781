//! openraft's storage suite against what the controller group really runs on: the segment log
//! store and the metadata state machine with its snapshot file, opened by `open_storage` exactly
//! as `ControllerGroup::start` opens them. The suite only applies blank and membership entries,
//! so a snapshot round trip with real commands (to another replica, and after a restart) follows.

use std::collections::BTreeSet;
use std::io::{self, Cursor};
use std::path::Path;

use futures::stream;
use openraft::alias::{EntryOf, LogIdOf};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{Membership, StorageError};
use tempfile::TempDir;
use vela_proto::{GroupName, TopicName, TopicSpec, TopicType};

use super::*;

type C = ControllerTypeConfig;

fn storage_error(err: &(impl std::error::Error + 'static)) -> StorageError<C> {
    StorageError::read(C::err_from_error(err))
}

/// A fresh (log, state machine) pair per suite case, laid out in its own tempdir.
struct ControllerStorageBuilder;

impl StoreBuilder<C, SegmentLogStore<C>, MetadataStateMachine, TempDir>
    for ControllerStorageBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, SegmentLogStore<C>, MetadataStateMachine), StorageError<C>> {
        let dir = tempfile::tempdir().map_err(|e| storage_error(&e))?;
        let metadata = Arc::new(RwLock::new(Metadata::default()));
        let (log, sm) = open_storage(
            dir.path().join("raft"),
            dir.path().join("snapshots"),
            dir.path().join("metadata.snapshot"),
            metadata,
        )
        .await
        .map_err(|e| storage_error(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite() -> Result<(), StorageError<C>> {
    Suite::test_all(ControllerStorageBuilder).await
}

fn log_id(term: u64, index: u64) -> LogIdOf<C> {
    openraft::testing::log_id::<C>(term, 1, index)
}

fn workload() -> Vec<EntryOf<C>> {
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1u64])], []);
    vec![
        EntryOf::<C>::new_membership(log_id(1, 1), membership),
        EntryOf::<C>::new_normal(
            log_id(1, 2),
            ControllerCommand::SetShards { shards: vec![0, 1] },
        ),
        EntryOf::<C>::new_normal(
            log_id(1, 3),
            ControllerCommand::CreateTopic {
                spec: TopicSpec {
                    name: TopicName::new("orders").expect("valid topic"),
                    topic_type: TopicType::Normal,
                    queue_count: 4,
                    auto_created: false,
                },
                now_ms: 1_000,
            },
        ),
        EntryOf::<C>::new_blank(log_id(2, 4)),
        EntryOf::<C>::new_normal(
            log_id(2, 5),
            ControllerCommand::CreateGroup {
                spec: crate::command::LoggedGroup {
                    name: GroupName::new("billing").expect("valid group"),
                    fifo: false,
                    max_attempts: 16,
                    auto_created: true,
                },
                now_ms: 2_000,
            },
        ),
    ]
}

async fn apply(sm: &mut MetadataStateMachine, entries: Vec<EntryOf<C>>) -> io::Result<()> {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
}

fn state_machine(dir: &Path) -> (Arc<RwLock<Metadata>>, MetadataStateMachine) {
    let metadata = Arc::new(RwLock::new(Metadata::default()));
    let generations = vela_raft::generations::Generations::open(
        vela_raft::vfs::StdVfs::shared(),
        dir.join("snapshots"),
    )
    .expect("snapshot directory");
    let keeper = vela_raft::generations::SnapshotKeeper::new(generations, None).expect("keeper");
    let sm = MetadataStateMachine::new(metadata.clone(), keeper, None);
    (metadata, sm)
}

#[tokio::test]
async fn snapshot_with_real_commands_transfers_and_restores() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (leader, mut leader_sm) = state_machine(leader_dir.path());
    apply(&mut leader_sm, workload()).await.expect("apply");
    let applied_state = leader_sm.applied_state().await.expect("applied state");
    assert_eq!(applied_state.0, Some(log_id(2, 5)));
    assert_eq!(applied_state.1.log_id(), &Some(log_id(1, 1)));
    let expected = leader.read().clone();
    assert_eq!(expected.topics().count(), 1);
    assert_ne!(expected, Metadata::default());

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
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());

    // Another replica takes it over the wire.
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (follower, mut follower_sm) = state_machine(follower_dir.path());
    follower_sm
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .expect("install snapshot");
    assert_eq!(*follower.read(), expected);
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
    let (restarted, mut restarted_sm) = state_machine(leader_dir.path());
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
    assert_eq!(*restarted.read(), expected);
    assert_eq!(
        restarted_sm.applied_state().await.expect("applied state"),
        applied_state
    );

    // Applying continues after the snapshot on both replicas alike.
    let more = vec![EntryOf::<C>::new_normal(
        log_id(2, 6),
        ControllerCommand::DeleteTopic {
            name: TopicName::new("orders").expect("valid topic"),
        },
    )];
    apply(&mut restarted_sm, more.clone()).await.expect("apply");
    apply(&mut follower_sm, more).await.expect("apply");
    assert_eq!(restarted.read().topics().count(), 0);
    assert_eq!(*follower.read(), *restarted.read());
}

#[tokio::test]
async fn undecodable_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (metadata, mut sm) = state_machine(dir.path());
    apply(&mut sm, workload()).await.expect("apply");
    let before = metadata.read().clone();
    let meta = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot")
        .meta;

    let other_dir = tempfile::tempdir().expect("tempdir");
    let (other, mut other_sm) = state_machine(other_dir.path());
    let err = other_sm
        .install_snapshot(&meta, Cursor::new(b"{not json".to_vec()))
        .await
        .expect_err("the install must be refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(*other.read(), Metadata::default());
    assert_eq!(
        other_sm.applied_state().await.expect("applied state").0,
        None
    );
    assert!(
        other_sm
            .get_current_snapshot()
            .await
            .expect("read the snapshot file")
            .is_none()
    );
    assert_eq!(*metadata.read(), before);
}

/// openraft runs a snapshot build in its own task while the state machine goes on, so a
/// snapshot from the leader can be installed between the builder's creation and its run. The
/// builder's older copy must not replace the installed snapshot: openraft purges the log up to
/// the installed one, and a restart from the older file would miss the entries in between.
#[tokio::test]
async fn a_slow_build_does_not_replace_a_newer_installed_snapshot() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (_, mut leader_sm) = state_machine(leader_dir.path());
    apply(&mut leader_sm, workload()).await.expect("apply");
    let newer = leader_sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");

    let dir = tempfile::tempdir().expect("tempdir");
    let (metadata, mut sm) = state_machine(dir.path());
    apply(&mut sm, workload()[..2].to_vec())
        .await
        .expect("apply");
    let mut slow_builder = sm.get_snapshot_builder().await;
    sm.install_snapshot(&newer.meta, newer.snapshot)
        .await
        .expect("install snapshot");
    let older = slow_builder.build_snapshot().await.expect("build snapshot");
    assert_eq!(older.meta.last_log_id, Some(log_id(1, 2)));

    let current = sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot file")
        .expect("a snapshot exists");
    assert_eq!(current.meta, newer.meta);
    let (restarted, mut restarted_sm) = state_machine(dir.path());
    let on_disk = restarted_sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot file")
        .expect("a snapshot exists");
    restarted_sm
        .install_snapshot(&on_disk.meta, on_disk.snapshot)
        .await
        .expect("install snapshot");
    assert_eq!(*restarted.read(), *metadata.read());
}

/// The same race with both writes in flight at once: they must not share the temporary file,
/// and the installed snapshot must be what stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_racing_an_install_leaves_the_installed_snapshot() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (_, mut leader_sm) = state_machine(leader_dir.path());
    apply(&mut leader_sm, workload()).await.expect("apply");
    let newer = leader_sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");

    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (metadata, mut sm) = state_machine(dir.path());
        apply(&mut sm, workload()[..2].to_vec())
            .await
            .expect("apply");
        let mut builder = sm.get_snapshot_builder().await;
        let (built, installed) = tokio::join!(
            builder.build_snapshot(),
            sm.install_snapshot(&newer.meta, newer.snapshot.clone()),
        );
        built.expect("build snapshot");
        installed.expect("install snapshot");

        let (restarted, mut restarted_sm) = state_machine(dir.path());
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
        assert_eq!(*restarted.read(), *metadata.read());
    }
}
