//! Raising a shard's apply semantics (`state::APPLY_VERSION`) safely. A `SetApplyVersion` entry
//! makes every replica apply later entries by the new rules, and a replica whose build does not
//! know the version stops the shard rather than apply them differently. So in a cluster the
//! leader raises a shard only as far as every member's build goes: during a rolling upgrade the
//! shards keep the old semantics until the last node runs the new build, then move up on their
//! own. A single voter raises at once (its build is the only one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info};
use vela_proto::pb::store as pb;
use vela_proto::pb::store::store_client::StoreClient;

use crate::command::{CommandResponse, StoreCommand};
use crate::error::StoreOpenError;
use crate::shard::{Shard, unexpected};
use crate::state::APPLY_VERSION;

/// The newest apply version of the builds before store nodes reported theirs (a node that
/// answers `NodeStatus` without the field runs one of them).
pub const UNREPORTED_APPLY_VERSION: u32 = 4;

/// How a shard leader learns which apply semantics its peers' builds know.
#[async_trait]
pub trait PeerBuilds: Send + Sync + 'static {
    /// The newest apply version store node `node`'s build knows, asked at `addr` (its address
    /// in the shard's membership); `None` when it cannot be asked now (down, unreachable, or a
    /// build too old to say).
    async fn max_apply_version(&self, node: u64, addr: &str) -> Option<u32>;

    /// The newest apply version this node's own build (node `me`) knows: the one it was built
    /// with (a test harness that plays an older build on a node says so here).
    fn own_apply_version(&self, _me: u64) -> u32 {
        APPLY_VERSION
    }
}

/// Asks peers over the store service they serve on their Raft address (`NodeStatus`).
#[derive(Default)]
pub struct GrpcPeerBuilds {
    /// A channel per peer and the address it was made for (a member that moved gets a new one).
    channels: Mutex<BTreeMap<u64, (String, Channel)>>,
}

impl GrpcPeerBuilds {
    /// Peers are asked at the addresses the shards' memberships give them (a store node that
    /// joined at runtime included).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn channel(&self, node: u64, addr: &str) -> Option<Channel> {
        if let Some((known, channel)) = self.channels.lock().get(&node)
            && known == addr
        {
            return Some(channel.clone());
        }
        let channel = vela_proto::cluster_tls::endpoint(addr)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect_lazy();
        self.channels
            .lock()
            .insert(node, (addr.to_owned(), channel.clone()));
        Some(channel)
    }
}

#[async_trait]
impl PeerBuilds for GrpcPeerBuilds {
    async fn max_apply_version(&self, node: u64, addr: &str) -> Option<u32> {
        let mut client = StoreClient::new(self.channel(node, addr)?);
        match client.node_status(pb::Empty {}).await {
            Ok(reply) => Some(match reply.into_inner().max_apply_version {
                0 => UNREPORTED_APPLY_VERSION,
                v => v,
            }),
            Err(status) => {
                debug!(node, error = %status, "asking a peer for its build's apply version");
                None
            }
        }
    }
}

/// The version the leader may raise `shard` to now: the lowest that this build and every other
/// member's build know. `Err(node)` names a member that could not be asked.
pub(crate) async fn agreed_version(
    shard: &Shard,
    me: u64,
    builds: &dyn PeerBuilds,
) -> Result<u32, u64> {
    let members: Vec<(u64, String)> = {
        let metrics = shard.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    };
    let mut version = builds.own_apply_version(me).min(APPLY_VERSION);
    for (node, addr) in members.into_iter().filter(|(n, _)| *n != me) {
        let theirs = builds.max_apply_version(node, &addr).await.ok_or(node)?;
        version = version.min(theirs);
    }
    Ok(version)
}

/// While this replica leads `shard`, raises its apply version as far as every member's build
/// goes, until it reaches this build's. Asks again every [`RECHECK`] while a member is behind or
/// unreachable (a rolling upgrade in progress).
pub(crate) async fn raise_when_leading(
    shard: Arc<Shard>,
    me: u64,
    builds: Arc<dyn PeerBuilds>,
    cancel: CancellationToken,
) {
    /// How often a leader asks again while a peer's build is behind or not answering.
    const RECHECK: Duration = Duration::from_secs(5);
    /// Pause after a failed raise (leadership moving).
    const RETRY: Duration = Duration::from_millis(500);
    let mut waiting_for = None;
    loop {
        let current = shard.shared.applied.read().state.apply_version();
        if current >= APPLY_VERSION {
            return;
        }
        let wait = shard.raft.wait(None);
        let leading = wait.metrics(
            |m| m.state == openraft::ServerState::Leader,
            "this replica leads the shard",
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            led = leading => if led.is_err() { return },
        }
        let pause = match agreed_version(&shard, me, builds.as_ref()).await {
            Ok(target) if target > current => match raise_to(&shard, target).await {
                Ok(()) => continue,
                Err(err) => {
                    debug!(shard = shard.id, error = %err, "raising the apply version; retrying");
                    RETRY
                }
            },
            Ok(target) => {
                if waiting_for != Some(target) {
                    info!(
                        shard = shard.id,
                        current,
                        build = APPLY_VERSION,
                        "a member's build knows apply version {target} only; keeping the \
                         shard's semantics until every member is upgraded"
                    );
                    waiting_for = Some(target);
                }
                RECHECK
            }
            Err(node) => {
                debug!(
                    shard = shard.id,
                    node,
                    "a member's build is unknown (unreachable); not raising the apply version"
                );
                RECHECK
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Raises `shard`'s apply semantics to `target` with a `SetApplyVersion` entry; replaying the
/// entries before it keeps their old semantics.
pub(crate) async fn raise_to(shard: &Shard, target: u32) -> Result<(), StoreOpenError> {
    let current = shard.shared.applied.read().state.apply_version();
    if current >= target {
        return Ok(());
    }
    let failed = |reason: String| StoreOpenError::ApplyVersion {
        shard: shard.id,
        reason,
    };
    match shard
        .write(StoreCommand::SetApplyVersion { version: target })
        .await
    {
        Ok(CommandResponse::ApplyVersionSet { version }) => {
            info!(
                shard = shard.id,
                from = current,
                to = version,
                "raised apply version"
            );
            Ok(())
        }
        Ok(other) => Err(failed(unexpected("set_apply_version", &other).to_string())),
        Err(err) => Err(failed(err.to_string())),
    }
}
