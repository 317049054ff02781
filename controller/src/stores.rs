//! The cluster's store nodes as the controller keeps them (ADR 0031, 0032): the configured
//! `[[cluster.stores]]` and those registered at runtime; registering, draining, undraining and
//! removing one. The `ControllerApi` methods of the same names delegate here.

use std::collections::BTreeMap;

use vela_proto::controller_api::{StoreDrain, StoreNodeEntry};
use vela_proto::{ControllerError, ShardId};

use crate::Controller;
use crate::command::{Applied, ControllerCommand};
use crate::controller::unexpected;

impl Controller {
    /// The store nodes placed shards go on (id → address): the configured ones and those
    /// registered at runtime (a configured node's address is the configured one).
    pub fn stores(&self) -> BTreeMap<u64, String> {
        let mut stores: BTreeMap<u64, String> = self
            .metadata
            .read()
            .registered_stores()
            .iter()
            .map(|(&id, r)| (id, r.addr.clone()))
            .collect();
        stores.extend(self.configured_stores.clone());
        stores
    }

    /// The store nodes being drained, as applied here.
    pub fn draining(&self) -> std::collections::BTreeSet<u64> {
        self.metadata.read().draining().clone()
    }

    pub(crate) async fn drain_store_now(&self, store: u64) -> Result<StoreDrain, ControllerError> {
        if self.configured_stores.is_empty() {
            return Err(ControllerError::Invalid(
                "a standalone node has no store nodes to drain".into(),
            ));
        }
        let command = ControllerCommand::DrainStore {
            store,
            stores: self.stores().into_keys().collect(),
        };
        let moving = match self.group.propose(command).await? {
            Ok(Applied::Drained(moving)) => moving,
            other => return Err(unexpected("drain-store", &other)),
        };
        if !moving.is_empty() {
            self.placed_changed.notify_one();
        }
        // The configured shards whose replica stays on it: not adopted yet, or adopted with no
        // other node free to take it (ADR 0032).
        let configured = self
            .metadata
            .read()
            .configured_on(store, self.configured_stores.contains_key(&store));
        Ok(StoreDrain {
            store,
            moving,
            configured,
        })
    }

    pub(crate) async fn register_store_now(
        &self,
        id: u64,
        addr: &str,
    ) -> Result<(), ControllerError> {
        if self.configured_stores.is_empty() {
            return Err(ControllerError::Invalid(
                "a standalone node takes no store nodes".into(),
            ));
        }
        if id == 0 {
            return Err(ControllerError::Invalid(
                "store node id 0 is reserved".into(),
            ));
        }
        let port = addr
            .rsplit_once(':')
            .map(|(host, p)| (host, p.parse::<u16>()));
        if !matches!(port, Some((host, Ok(p))) if p > 0 && !host.is_empty()) {
            return Err(ControllerError::Invalid(format!(
                "store node {id} has address {addr:?}, not host:port"
            )));
        }
        if let Some(configured) = self.configured_stores.get(&id) {
            if configured == addr {
                return Ok(());
            }
            return Err(ControllerError::Invalid(format!(
                "store node {id} is configured at {configured}, not {addr}"
            )));
        }
        let known = self.metadata.read().registered_stores().get(&id).cloned();
        if known.as_ref().is_some_and(|r| r.addr == addr) {
            return Ok(());
        }
        // Registering again at another address while its replicas move away would strand
        // the moves.
        if self.metadata.read().draining().contains(&id) && known.is_some() {
            return Err(ControllerError::Invalid(format!(
                "store node {id} is draining: remove it (vela admin store remove {id}) before it \
                 registers at another address"
            )));
        }
        let command = ControllerCommand::RegisterStore {
            id,
            addr: addr.to_owned(),
            now_ms: self.clock.now_ms(),
        };
        match self.group.propose(command).await? {
            Ok(Applied::StoreRegistered) => {
                tracing::info!(store = id, addr, "store node registered");
                // Placed shards with a member there can now be opened on it.
                self.placed_changed.notify_one();
                Ok(())
            }
            other => Err(unexpected("register-store", &other)),
        }
    }

    pub(crate) async fn remove_store_now(&self, id: u64) -> Result<(), ControllerError> {
        if self.configured_stores.contains_key(&id) {
            return Err(ControllerError::Invalid(format!(
                "store node {id} is in [[cluster.stores]]: a configured node is removed from \
                 every process's configuration, not here"
            )));
        }
        match self
            .group
            .propose(ControllerCommand::UnregisterStore { id })
            .await?
        {
            Ok(Applied::StoreUnregistered) => {
                tracing::info!(store = id, "store node removed");
                Ok(())
            }
            other => Err(unexpected("unregister-store", &other)),
        }
    }

    pub(crate) async fn undrain_store_now(&self, id: u64) -> Result<(), ControllerError> {
        let known = self.configured_stores.contains_key(&id)
            || self.metadata.read().registered_stores().contains_key(&id);
        if !known {
            return Err(ControllerError::NotFound(format!("store node {id}")));
        }
        if self.scaled_away.lock().contains(&id) {
            return Err(ControllerError::Invalid(format!(
                "store node {id} is beyond the store StatefulSet's replicas: scale the \
                 StatefulSet up to include it first"
            )));
        }
        if let Some(target) = self.metadata.read().store_scale_in()
            && id > u64::from(target)
        {
            return Err(ControllerError::Invalid(format!(
                "store node {id} leaves in the scale-in to {target} store nodes under way: \
                 vela admin store scale {id} (or more) first"
            )));
        }
        match self
            .group
            .propose(ControllerCommand::UndrainStore { store: id })
            .await?
        {
            Ok(Applied::StoreUndrained) => {
                tracing::info!(
                    store = id,
                    "store node undrained: replicas may go there again"
                );
                Ok(())
            }
            other => Err(unexpected("undrain-store", &other)),
        }
    }

    pub(crate) async fn store_nodes_now(&self) -> Result<Vec<StoreNodeEntry>, ControllerError> {
        let scaled_away = self.scaled_away.lock().clone();
        let md = self.metadata.read();
        // A draining node's replicas of configured shards the drain could not move (ADR 0032).
        let staying = |id: u64| -> Vec<ShardId> {
            if md.draining().contains(&id) {
                md.configured_on(id, self.configured_stores.contains_key(&id))
            } else {
                Vec::new()
            }
        };
        let mut nodes: BTreeMap<u64, StoreNodeEntry> = md
            .registered_stores()
            .iter()
            .map(|(&id, r)| {
                let entry = StoreNodeEntry {
                    id,
                    addr: r.addr.clone(),
                    configured: false,
                    registered_ms: r.registered_ms,
                    draining: md.draining().contains(&id),
                    scaled_away: scaled_away.contains(&id),
                    staying: staying(id),
                };
                (id, entry)
            })
            .collect();
        for (&id, addr) in &self.configured_stores {
            let entry = StoreNodeEntry {
                id,
                addr: addr.clone(),
                configured: true,
                registered_ms: 0,
                draining: md.draining().contains(&id),
                scaled_away: scaled_away.contains(&id),
                staying: staying(id),
            };
            nodes.insert(id, entry);
        }
        Ok(nodes.into_values().collect())
    }
}
