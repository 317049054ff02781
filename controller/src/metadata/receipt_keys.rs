//! The receipt keyring in the metadata (ADR 0030): random keys that sign receipt handles,
//! sealed before they are proposed (context `receipt-key:<id>`), so the log and the snapshots
//! never hold them in clear. Deterministic transitions, like the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vela_proto::receipt_keys::MANAGED_KEY_BASE;

use super::Metadata;
use crate::command::{Applied, Rejected};
use crate::secrets::SealedSecret;

/// One key as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReceiptKey {
    pub key: SealedSecret,
    pub created_ms: i64,
}

/// Every managed key, and the one new handles are signed with (since when). Part of the JSON
/// snapshot, so fields added later need defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiptKeyring {
    pub keys: BTreeMap<u32, StoredReceiptKey>,
    pub signing: Option<u32>,
    pub signing_since_ms: i64,
}

impl ReceiptKeyring {
    /// The id the next key gets.
    pub fn next_id(&self) -> u32 {
        vela_proto::receipt_keys::next_managed_key_id(self.keys.keys().next_back().copied())
    }
}

impl Metadata {
    /// Adds key `id` and makes it the signing key. With `first`, only into an empty keyring
    /// (two proxies asking for the first key at once make one).
    pub(super) fn add_receipt_key(
        &mut self,
        id: u32,
        key: SealedSecret,
        created_ms: i64,
        first: bool,
    ) -> Result<Applied, Rejected> {
        let ring = &mut self.receipt_keys;
        if first && !ring.keys.is_empty() {
            return Err(Rejected::ReceiptKeys(
                "the keyring has its first key".into(),
            ));
        }
        if id < MANAGED_KEY_BASE || ring.keys.contains_key(&id) {
            return Err(Rejected::ReceiptKeys(format!(
                "receipt key id {id} is taken or not a managed id"
            )));
        }
        ring.keys.insert(id, StoredReceiptKey { key, created_ms });
        ring.signing = Some(id);
        ring.signing_since_ms = created_ms;
        Ok(Applied::ReceiptKeys)
    }

    /// Removes key `id`, which must not be the signing key.
    pub(super) fn retire_receipt_key(&mut self, id: u32) -> Result<Applied, Rejected> {
        let ring = &mut self.receipt_keys;
        if ring.signing == Some(id) {
            return Err(Rejected::ReceiptKeys(format!(
                "receipt key {id} signs new handles: rotate first"
            )));
        }
        match ring.keys.remove(&id) {
            Some(_) => Ok(Applied::Deleted),
            None => Err(Rejected::ReceiptKeyNotFound(id)),
        }
    }

    pub fn receipt_keyring(&self) -> &ReceiptKeyring {
        &self.receipt_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;

    fn sealed(b: u8) -> SealedSecret {
        SealedSecret {
            key_id: [b; 8],
            nonce: [b; 12],
            sealed: vec![b],
        }
    }

    #[test]
    fn keys_are_added_first_once_rotated_and_retired_but_never_the_signing_one() {
        let mut md = Metadata::default();
        let first = MANAGED_KEY_BASE;
        assert_eq!(md.receipt_keyring().next_id(), first);
        let add = |id, first| ControllerCommand::AddReceiptKey {
            id,
            key: sealed(1),
            created_ms: 10,
            first,
        };
        assert_eq!(md.apply(add(first, true)), Ok(Applied::ReceiptKeys));
        assert!(matches!(
            md.apply(add(first + 1, true)),
            Err(Rejected::ReceiptKeys(_))
        ));
        assert!(matches!(
            md.apply(add(first, false)),
            Err(Rejected::ReceiptKeys(_))
        ));
        assert!(matches!(
            md.apply(add(7, false)),
            Err(Rejected::ReceiptKeys(_))
        ));
        assert_eq!(md.apply(add(first + 1, false)), Ok(Applied::ReceiptKeys));
        assert_eq!(md.receipt_keyring().signing, Some(first + 1));
        assert!(matches!(
            md.apply(ControllerCommand::RetireReceiptKey { id: first + 1 }),
            Err(Rejected::ReceiptKeys(_))
        ));
        assert_eq!(
            md.apply(ControllerCommand::RetireReceiptKey { id: first }),
            Ok(Applied::Deleted)
        );
        assert_eq!(
            md.apply(ControllerCommand::RetireReceiptKey { id: first }),
            Err(Rejected::ReceiptKeyNotFound(first))
        );
        assert_eq!(md.receipt_keyring().next_id(), first + 2);
        // Snapshots round-trip, and older ones (no keyring) read as empty.
        let json = serde_json::to_string(&md).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Metadata>(&json).expect("decodes"),
            md
        );
        let old: Metadata = serde_json::from_str("{}").expect("decodes");
        assert!(old.receipt_keyring().keys.is_empty());
    }

    #[test]
    fn receipt_key_commands_golden_bytes() {
        // Variants 22 and 23 (ADR 0030), fields in order.
        let cases = [
            (
                ControllerCommand::AddReceiptKey {
                    id: MANAGED_KEY_BASE,
                    key: sealed(2),
                    created_ms: 5,
                    first: true,
                },
                "1680804002020202020202020202020202020202020202020102 0a01",
            ),
            (
                ControllerCommand::RetireReceiptKey {
                    id: MANAGED_KEY_BASE + 1,
                },
                "17818040",
            ),
        ];
        super::super::assert_golden(cases);
    }
}
