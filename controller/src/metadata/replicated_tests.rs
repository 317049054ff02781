//! Topics with a replication factor (ADR 0013): the configured shards when every store holds
//! them, else shards placed for the factor, created once and shared by later topics.

use vela_proto::{ControllerError, GroupName, TopicSpec, TopicType};

use super::*;

fn spec(name: &str, queue_count: u32) -> TopicSpec {
    TopicSpec {
        name: TopicName::new(name).expect("valid topic name"),
        topic_type: TopicType::Normal,
        queue_count,
        auto_created: false,
    }
}

fn create(name: &str, queues: u32, replicas: u32, stores: &[u64]) -> ControllerCommand {
    ControllerCommand::CreateTopicReplicated {
        spec: spec(name, queues),
        replicas,
        stores: stores.to_vec(),
        now_ms: 7,
    }
}

fn cluster() -> Metadata {
    let mut md = Metadata::default();
    assert!(
        md.apply(ControllerCommand::SetShards {
            shards: vec![0, 1, 2]
        })
        .is_ok()
    );
    md
}

fn queue_shards(response: ControllerResponse) -> Vec<ShardId> {
    match response {
        Ok(Applied::Topic(config)) => config.queue_shards,
        other => panic!("topic not created: {other:?}"),
    }
}

#[test]
fn every_store_means_the_configured_shards() {
    let mut md = cluster();
    assert_eq!(
        queue_shards(md.apply(create("t", 3, 3, &[1, 2, 3]))),
        vec![0, 1, 2]
    );
    assert!(md.placed().is_empty());
}

#[test]
fn one_replica_places_one_shard_per_store_once() {
    let mut md = cluster();
    assert_eq!(
        queue_shards(md.apply(create("a", 4, 1, &[3, 1, 2]))),
        vec![3, 4, 5, 3]
    );
    let placed: Vec<(ShardId, Vec<u64>, bool)> = md
        .placed()
        .iter()
        .map(|(&id, p)| (id, p.replicas.clone(), p.created))
        .collect();
    assert_eq!(
        placed,
        vec![
            (3, vec![1], false),
            (4, vec![2], false),
            (5, vec![3], false)
        ]
    );
    // A second topic of the factor shares them, least loaded first.
    assert_eq!(
        queue_shards(md.apply(create("b", 2, 1, &[1, 2, 3]))),
        vec![4, 5]
    );
    assert_eq!(md.placed().len(), 3);
    // Another factor gets shards of its own, numbered after every shard known.
    assert_eq!(
        queue_shards(md.apply(create("c", 1, 2, &[1, 2, 3]))),
        vec![6]
    );
    assert_eq!(md.placed()[&6].replicas, vec![1, 2]);
    assert_eq!(md.placed()[&8].replicas, vec![3, 1]);
}

#[test]
fn a_factor_above_the_store_count_is_refused_and_changes_nothing() {
    let mut md = cluster();
    let before = md.clone();
    match md.apply(create("t", 2, 5, &[1, 2, 3])) {
        Err(Rejected::Replicas { reason, .. }) => {
            assert!(
                reason.contains("needs 5 store nodes; the cluster has 3"),
                "{reason}"
            )
        }
        other => panic!("accepted: {other:?}"),
    }
    assert!(md.apply(create("t", 2, 0, &[1, 2, 3])).is_err());
    assert_eq!(md, before);
    assert_eq!(
        ControllerError::from(Rejected::Replicas {
            topic: TopicName::new("t").expect("valid"),
            reason: "r".into()
        }),
        ControllerError::Invalid("topic t: r".into())
    );
}

#[test]
fn standalone_takes_one_replica_only() {
    let mut md = Metadata::default();
    assert!(
        md.apply(ControllerCommand::SetShards { shards: vec![0] })
            .is_ok()
    );
    assert_eq!(queue_shards(md.apply(create("t", 2, 1, &[]))), vec![0, 0]);
    assert!(matches!(
        md.apply(create("u", 2, 3, &[])),
        Err(Rejected::Replicas { .. })
    ));
}

#[test]
fn an_existing_topic_is_refused_before_anything_is_placed() {
    let mut md = cluster();
    assert!(md.apply(create("t", 1, 3, &[1, 2, 3])).is_ok());
    assert_eq!(
        md.apply(create("t", 1, 1, &[1, 2, 3])),
        Err(Rejected::TopicExists(TopicName::new("t").expect("valid")))
    );
    assert!(md.placed().is_empty());
}

#[test]
fn marking_created_is_recorded_for_placed_shards_only() {
    let mut md = cluster();
    assert!(md.apply(create("t", 1, 1, &[1, 2, 3])).is_ok());
    assert_eq!(
        md.apply(ControllerCommand::MarkShardCreated { shard: 4 }),
        Ok(Applied::ShardCreated)
    );
    assert!(md.placed()[&4].created);
    assert!(!md.placed()[&3].created);
    assert_eq!(
        md.apply(ControllerCommand::MarkShardCreated { shard: 0 }),
        Err(Rejected::ShardNotPlaced(0))
    );
    // The snapshot (JSON) keeps them; one written before placement existed still reads.
    let json = serde_json::to_vec(&md).expect("encodes");
    assert_eq!(
        serde_json::from_slice::<Metadata>(&json).expect("decodes"),
        md
    );
    let old: Metadata =
        serde_json::from_str(r#"{"shards":[0],"topics":{},"groups":{}}"#).expect("decodes");
    assert!(old.placed().is_empty());
}

#[test]
fn new_commands_golden_bytes() {
    // In every controller's log: variants 5 and 6, fields in order.
    let bytes = postcard::to_stdvec(&create("t", 2, 1, &[1, 2])).expect("encodes");
    assert_eq!(hex::encode(&bytes), "050174000200010201020e");
    let bytes =
        postcard::to_stdvec(&ControllerCommand::MarkShardCreated { shard: 300 }).expect("encodes");
    assert_eq!(hex::encode(&bytes), "06ac02");
    // Variant 7 (ADR 0014).
    let bytes = postcard::to_stdvec(&ControllerCommand::DrainStore {
        store: 2,
        stores: vec![1, 2, 300],
    })
    .expect("encodes");
    assert_eq!(hex::encode(&bytes), "0702030102ac02");
    // Variant 2 as first written, and variant 8: a group with its start.
    let group = crate::command::LoggedGroup {
        name: GroupName::new("g").expect("valid"),
        fifo: true,
        max_attempts: 17,
        auto_created: false,
    };
    let bytes = postcard::to_stdvec(&ControllerCommand::CreateGroup {
        spec: group.clone(),
        now_ms: 1,
    })
    .expect("encodes");
    assert_eq!(hex::encode(&bytes), "02016701110002");
    let bytes = postcard::to_stdvec(&ControllerCommand::CreateGroupStarting {
        spec: group.clone(),
        start: vela_proto::GroupStart::At(-1),
        now_ms: 1,
    })
    .expect("encodes");
    assert_eq!(hex::encode(&bytes), "080167011100030102");
    // Variant 18: a group with its start and a retry back-off (`RetryBackoff` is logged with
    // postcard too: its variants are only ever appended).
    for (retry, golden) in [
        (
            vela_proto::retry::RetryBackoff::parse_exponential("1s,2h,2").expect("valid"),
            "1201670111000001e80780bab7030202",
        ),
        (
            vela_proto::retry::RetryBackoff::parse_delays("1s,1m").expect("valid"),
            "120167011100000202e807e0d40302",
        ),
    ] {
        let command = ControllerCommand::CreateGroupWithRetry {
            spec: group.clone(),
            start: vela_proto::GroupStart::Auto,
            retry,
            now_ms: 1,
        };
        let bytes = postcard::to_stdvec(&command).expect("encodes");
        assert_eq!(hex::encode(&bytes), golden);
        assert_eq!(
            postcard::from_bytes::<ControllerCommand>(&bytes).expect("decodes"),
            command
        );
    }
    // Variant 19: an update of a group's attempts and back-off.
    let update = ControllerCommand::UpdateGroup {
        name: GroupName::new("g").expect("valid"),
        max_attempts: Some(3),
        retry: Some(vela_proto::retry::RetryBackoff::Standard),
    };
    let bytes = postcard::to_stdvec(&update).expect("encodes");
    assert_eq!(hex::encode(&bytes), "13016701030100");
    // Variant 20: a broadcast group (ADR 0029), with its start and back-off.
    let broadcast = ControllerCommand::CreateBroadcastGroup {
        spec: group.clone(),
        start: vela_proto::GroupStart::Latest,
        retry: vela_proto::retry::RetryBackoff::Standard,
        now_ms: 1,
    };
    let bytes = postcard::to_stdvec(&broadcast).expect("encodes");
    assert_eq!(hex::encode(&bytes), "140167011100020002");
    assert_eq!(
        postcard::from_bytes::<ControllerCommand>(&bytes).expect("decodes"),
        broadcast
    );
    let Ok(Applied::Group(made)) = Metadata::default().apply(broadcast) else {
        panic!("created")
    };
    assert!(made.broadcast && made.start == vela_proto::GroupStart::Latest);
    let mut md = Metadata::default();
    assert_eq!(
        md.apply(update.clone()),
        Err(Rejected::GroupNotFound(GroupName::new("g").expect("valid")))
    );
    let Ok(Applied::Group(created)) = md.apply(ControllerCommand::CreateGroupWithRetry {
        spec: group.clone(),
        start: vela_proto::GroupStart::Auto,
        retry: vela_proto::retry::RetryBackoff::parse_delays("1s").expect("valid"),
        now_ms: 1,
    }) else {
        panic!("created")
    };
    let Ok(Applied::Group(updated)) = md.apply(update.clone()) else {
        panic!("updated")
    };
    assert_eq!(updated.max_attempts, 3);
    assert_eq!(updated.retry, vela_proto::retry::RetryBackoff::Standard);
    assert_eq!(
        (updated.fifo, updated.created_at_ms),
        (created.fifo, created.created_at_ms)
    );
    for command in [
        create("t", 2, 1, &[1, 2]),
        ControllerCommand::MarkShardCreated { shard: 3 },
        ControllerCommand::DrainStore {
            store: 1,
            stores: vec![1, 2],
        },
    ] {
        let bytes = postcard::to_stdvec(&command).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<ControllerCommand>(&bytes).expect("decodes"),
            command
        );
    }
}

#[test]
fn a_configured_shard_set_may_not_take_a_placed_shards_id() {
    let mut md = cluster();
    assert!(md.apply(create("t", 1, 1, &[1, 2, 3])).is_ok());
    assert_eq!(
        md.apply(ControllerCommand::SetShards {
            shards: vec![0, 1, 2, 3]
        }),
        Err(Rejected::ShardIdTaken(3))
    );
    assert_eq!(md.shards(), &[0, 1, 2]);
}

fn drain(store: u64, stores: &[u64]) -> ControllerCommand {
    ControllerCommand::DrainStore {
        store,
        stores: stores.to_vec(),
    }
}

/// Draining a store moves every placed replica off it (all or nothing), keeps new shards off
/// it, survives a snapshot, and leaves the configured shards alone.
#[test]
fn draining_a_store_moves_its_placed_replicas_and_keeps_new_ones_off() {
    let stores = [1, 2, 3, 4];
    let mut md = cluster();
    queue_shards(md.apply(create("r2", 4, 2, &stores)));
    let before = md.placed().clone();
    assert_eq!(md.apply(drain(9, &stores)), Err(Rejected::UnknownStore(9)));
    let moved = match md.apply(drain(2, &stores)) {
        Ok(Applied::Drained(moved)) => moved,
        other => panic!("not drained: {other:?}"),
    };
    let held_before: Vec<ShardId> = before
        .iter()
        .filter(|(_, p)| p.replicas.contains(&2))
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(moved, held_before);
    assert!(md.placed().values().all(|p| !p.replicas.contains(&2)));
    assert!(md.placed().values().all(|p| p.replicas.len() == 2));
    assert_eq!(md.shards(), &[0, 1, 2], "configured shards stay");
    assert_eq!(md.draining(), &BTreeSet::from([2]));
    // Idempotent.
    assert_eq!(md.apply(drain(2, &stores)), Ok(Applied::Drained(vec![])));
    // New shards of another factor avoid it.
    queue_shards(md.apply(create("r3", 3, 3, &stores)));
    assert!(md.placed().values().all(|p| !p.replicas.contains(&2)));
    // Three of four drained: factor 3 no longer fits, and nothing changes.
    assert!(
        md.apply(drain(3, &stores)).is_err(),
        "r3 shards need 3 of 3 usable stores"
    );
    assert_eq!(md.draining(), &BTreeSet::from([2]));
    let json = serde_json::to_vec(&md).expect("encodes");
    assert_eq!(
        serde_json::from_slice::<Metadata>(&json).expect("decodes"),
        md
    );
}
