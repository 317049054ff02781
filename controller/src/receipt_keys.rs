//! The controller's side of managed receipt keys (ADR 0030): made random here, sealed before
//! they are proposed, opened for the proxies that ask. The first proxy to ask makes the first.

use std::collections::BTreeMap;

use vela_proto::ControllerError;
use vela_proto::receipt_keys::{ManagedKey, ManagedKeys, RETIRE_AFTER_MS};

use crate::command::{Applied, ControllerCommand, Rejected};
use crate::controller::{Controller, unexpected};

/// What a sealed receipt key is bound to: its id.
fn key_context(id: u32) -> String {
    format!("receipt-key:{id}")
}

/// Bytes of a new key.
const KEY_LEN: usize = 32;

impl Controller {
    /// The keyring with its keys opened; `None` while it has none.
    fn open_receipt_keys(&self) -> Result<Option<ManagedKeys>, ControllerError> {
        let ring = self.metadata.read().receipt_keyring().clone();
        let Some(signing) = ring.signing else {
            return Ok(None);
        };
        let mut keys = BTreeMap::new();
        for (id, stored) in ring.keys {
            let failed = |e: String| ControllerError::Internal(format!("receipt key {id}: {e}"));
            let text = self
                .sealer
                .open(&key_context(id), &stored.key)
                .map_err(|e| failed(e.to_string()))?;
            let secret = hex::decode(text).map_err(|e| failed(e.to_string()))?;
            keys.insert(
                id,
                ManagedKey {
                    secret,
                    created_ms: stored.created_ms,
                },
            );
        }
        Ok(Some(ManagedKeys {
            keys,
            signing,
            signing_since_ms: ring.signing_since_ms,
        }))
    }

    /// Proposes a new random key that signs from now on; `first`: only into an empty keyring
    /// (another caller's first key is as good).
    async fn propose_receipt_key(&self, first: bool) -> Result<(), ControllerError> {
        let id = self.metadata.read().receipt_keyring().next_id();
        let mut secret = [0u8; KEY_LEN];
        rand::fill(&mut secret[..]);
        let command = ControllerCommand::AddReceiptKey {
            id,
            key: self.sealer.seal(&key_context(id), &hex::encode(secret)),
            created_ms: self.clock.now_ms(),
            first,
        };
        match self.group.propose(command).await? {
            Ok(Applied::ReceiptKeys) => {
                tracing::info!(
                    key = id,
                    "new receipt key signs receipt handles from now on"
                );
                Ok(())
            }
            Err(Rejected::ReceiptKeys(_)) if first => Ok(()),
            Err(rejected) => Err(rejected.into()),
            other => Err(unexpected("add-receipt-key", &other)),
        }
    }

    pub(crate) async fn read_receipt_keys(&self) -> Result<ManagedKeys, ControllerError> {
        self.read_barrier().await?;
        if let Some(keys) = self.open_receipt_keys()? {
            return Ok(keys);
        }
        self.propose_receipt_key(true).await?;
        self.open_receipt_keys()?
            .ok_or_else(|| ControllerError::Internal("no receipt key after making one".into()))
    }

    pub(crate) async fn rotate_receipt_keys(&self) -> Result<ManagedKeys, ControllerError> {
        self.read_barrier().await?;
        self.propose_receipt_key(false).await?;
        self.open_receipt_keys()?
            .ok_or_else(|| ControllerError::Internal("no receipt key after a rotation".into()))
    }

    pub(crate) async fn retire_receipt_keys(
        &self,
        id: u32,
        force: bool,
    ) -> Result<(), ControllerError> {
        self.read_barrier().await?;
        let ring = self.metadata.read().receipt_keyring().clone();
        // A key stopped signing when the next one was made.
        let replaced_ms = ring
            .keys
            .range(id.saturating_add(1)..)
            .next()
            .map(|(_, k)| k.created_ms);
        if let Some(replaced_ms) = replaced_ms
            && ring.keys.contains_key(&id)
            && !force
            && self.clock.now_ms() < replaced_ms.saturating_add(RETIRE_AFTER_MS)
        {
            return Err(ControllerError::Invalid(format!(
                "receipt key {id} signed handles until {} h ago; handles of messages still in \
                 flight (invisible for up to 12 h) would fail to ack: wait, or --force",
                (self.clock.now_ms() - replaced_ms) / 3_600_000
            )));
        }
        match self
            .group
            .propose(ControllerCommand::RetireReceiptKey { id })
            .await?
        {
            Ok(Applied::Deleted) => Ok(()),
            Err(rejected) => Err(rejected.into()),
            other => Err(unexpected("retire-receipt-key", &other)),
        }
    }
}
