//! Broadcast groups' consumer instances (ADR 0029): each instance keeps its own positions in
//! the shard's state under `<group>%BCAST%<instance>`; an instance that stops receiving is
//! forgotten after `store.broadcast_instance_expiry`, so instances of restarted clients do not
//! pile up. The leader decides (a `DropGroup` of the instance's name, in the log); when the
//! leader changes, the new one counts idleness from when it first looks, so an instance is
//! never dropped earlier than the expiry after its last receive.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vela_proto::clock::SharedClock;
use vela_proto::domain::GroupName;

use super::Shard;
use crate::command::StoreCommand;
use crate::state::BROADCAST_APPLY_VERSION;

/// Longest pause between two looks at the instances (shorter when the expiry is short).
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Notes that this node served a receive of `group` (a broadcast instance) at `now_ms`.
pub(crate) fn note_receive(shard: &Shard, group: &GroupName, now_ms: i64) {
    if group.is_broadcast_instance() {
        shard
            .shared
            .broadcast_seen
            .lock()
            .insert(group.clone(), now_ms);
    }
}

/// The instances idle for `expiry` at `now_ms`, as this node saw them; instances it never saw
/// count from now (its first look), and instances gone from the state are forgotten.
pub(crate) fn idle_instances(shard: &Shard, expiry: Duration, now_ms: i64) -> Vec<GroupName> {
    let instances = {
        let applied = shard.shared.applied.read();
        if applied.state.apply_version() < BROADCAST_APPLY_VERSION {
            return Vec::new();
        }
        applied.state.broadcast_instances()
    };
    let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
    let mut seen = shard.shared.broadcast_seen.lock();
    seen.retain(|group, _| instances.binary_search(group).is_ok());
    instances
        .into_iter()
        .filter(|group| {
            let last = *seen.entry(group.clone()).or_insert(now_ms);
            now_ms.saturating_sub(last) >= expiry_ms
        })
        .collect()
}

/// Drops broadcast instances idle for `expiry` while this node leads the shard.
pub(crate) async fn forget_idle_instances(
    shard: Arc<Shard>,
    expiry: Duration,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let interval = (expiry / 4).clamp(Duration::from_millis(100), MAX_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if !shard.raft.is_leader() {
            // A new leader starts counting from its own first look.
            shard.shared.broadcast_seen.lock().clear();
            continue;
        }
        for group in idle_instances(&shard, expiry, clock.now_ms()) {
            let command = StoreCommand::DropGroup {
                group: group.clone(),
            };
            match shard.write(command).await {
                Ok(_) => {
                    shard.shared.broadcast_seen.lock().remove(&group);
                    info!(shard = shard.id, %group, idle = ?expiry, "forgot an idle broadcast instance");
                }
                Err(err) => {
                    warn!(shard = shard.id, %group, error = %err, "forgetting an idle broadcast instance failed");
                    break;
                }
            }
        }
    }
}
