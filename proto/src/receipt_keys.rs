//! Receipt keys the controller manages (ADR 0030): random keys kept sealed in its replicated
//! metadata, handed in clear only to proxies over the cluster's own channel, rotated with `vela
//! admin receipt-key rotate`. A proxy merges them with any keys its config names (which win
//! for signing when given, so clusters set up with key files keep working unchanged) and
//! refreshes them in the background.

use std::collections::BTreeMap;
use std::fmt;

use crate::receipt::ReceiptCodec;

/// Ids of managed keys start here, so they never meet the ids of key files (`cluster.secret_file`
/// is 0, `cluster.receipt_keys_dir` names its files below this).
pub const MANAGED_KEY_BASE: u32 = 1 << 20;

/// The id a new managed key gets, given the highest id the keyring has held: the next one,
/// never reused.
pub fn next_managed_key_id(highest: Option<u32>) -> u32 {
    highest.map_or(MANAGED_KEY_BASE, |id| id.saturating_add(1))
}

/// How long a key that no longer signs may still be named by handles in flight: the longest
/// invisibility a receive can ask for. Retiring a key sooner needs `--force`.
pub const RETIRE_AFTER_MS: i64 = 12 * 3600 * 1000;

/// One managed key: its secret (hidden from `Debug`) and when it was made.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagedKey {
    pub secret: Vec<u8>,
    pub created_ms: i64,
}

impl fmt::Debug for ManagedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagedKey(created {}, ***)", self.created_ms)
    }
}

/// The managed keyring: every key by id, the one new handles are signed with, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKeys {
    pub keys: BTreeMap<u32, ManagedKey>,
    pub signing: u32,
    pub signing_since_ms: i64,
}

/// Keys a proxy's config names (key files), and the one it pins for signing, if any.
#[derive(Clone, Default)]
pub struct ConfiguredKeys {
    pub keys: BTreeMap<u32, Vec<u8>>,
    pub signing: Option<u32>,
    /// The keys only verify: the managed signing key signs (moving a cluster off key files).
    pub verify_only: bool,
}

impl fmt::Debug for ConfiguredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredKeys")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("signing", &self.signing)
            .field("verify_only", &self.verify_only)
            .finish()
    }
}

impl ConfiguredKeys {
    /// The codec of the configured keys with `managed` added: verifies with every key; signs
    /// with the pinned key, else the highest configured one, else the managed signing key.
    /// `None` when there is no key at all yet.
    pub fn codec(&self, managed: Option<&ManagedKeys>) -> Result<Option<ReceiptCodec>, String> {
        let mut keys = self.keys.clone();
        if let Some(m) = managed {
            for (id, key) in &m.keys {
                keys.entry(*id).or_insert_with(|| key.secret.clone());
            }
        }
        let highest = self.keys.keys().next_back().filter(|_| !self.verify_only);
        let signing = match (self.signing, highest, managed) {
            (Some(pinned), _, _) => pinned,
            (None, Some(&highest), _) => highest,
            (None, None, Some(m)) => m.signing,
            (None, None, None) => return Ok(None),
        };
        ReceiptCodec::with_keys(keys, signing).map(Some)
    }
}

/// The keyring on the controller's wire (secrets in clear: between roles only).
pub fn keys_to_wire(k: &ManagedKeys) -> crate::pb::controller::ReceiptKeys {
    crate::pb::controller::ReceiptKeys {
        keys: k
            .keys
            .iter()
            .map(|(id, key)| crate::pb::controller::ReceiptKey {
                id: *id,
                secret: key.secret.clone().into(),
                created_ms: key.created_ms,
            })
            .collect(),
        signing: k.signing,
        signing_since_ms: k.signing_since_ms,
    }
}

/// Parses the keyring: managed ids, secrets of at least 16 bytes, the signing key among them.
pub fn keys_from_wire(
    w: crate::pb::controller::ReceiptKeys,
) -> Result<ManagedKeys, crate::store_wire::WireError> {
    let bad = |m: String| crate::store_wire::WireError(format!("receipt keys: {m}"));
    let mut keys = BTreeMap::new();
    for k in w.keys {
        if k.id < MANAGED_KEY_BASE || k.secret.len() < 16 {
            return Err(bad(format!("key {} is not a managed key", k.id)));
        }
        keys.insert(
            k.id,
            ManagedKey {
                secret: k.secret.to_vec(),
                created_ms: k.created_ms,
            },
        );
    }
    if !keys.contains_key(&w.signing) {
        return Err(bad(format!(
            "the signing key {} is not among them",
            w.signing
        )));
    }
    Ok(ManagedKeys {
        keys,
        signing: w.signing,
        signing_since_ms: w.signing_since_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GroupName, TopicName};
    use crate::receipt::ReceiptTicket;

    fn ticket() -> ReceiptTicket {
        ReceiptTicket {
            shard: 1,
            group: GroupName::new("g").expect("group"),
            topic: TopicName::new("t").expect("topic"),
            queue_id: 2,
            offset: 3,
            delivery_id: 4,
            visible_at_ms: 5,
        }
    }

    fn managed(ids: &[u32], signing: u32) -> ManagedKeys {
        ManagedKeys {
            keys: ids
                .iter()
                .map(|&id| {
                    (
                        id,
                        ManagedKey {
                            secret: vec![id as u8; 32],
                            created_ms: 0,
                        },
                    )
                })
                .collect(),
            signing,
            signing_since_ms: 0,
        }
    }

    #[test]
    fn configured_keys_sign_when_given_and_managed_keys_otherwise() {
        let first = MANAGED_KEY_BASE;
        let second = MANAGED_KEY_BASE + 1;
        let none = ConfiguredKeys::default();
        assert!(none.codec(None).expect("ok").is_none(), "no key yet");
        let old = none
            .codec(Some(&managed(&[first], first)))
            .expect("ok")
            .expect("codec");
        let handle = old.encode(&ticket());
        // After a rotation, handles the old key signed still verify; new ones use the new key.
        let rotated = none
            .codec(Some(&managed(&[first, second], second)))
            .expect("ok")
            .expect("codec");
        assert_eq!(rotated.decode(&handle), Ok(ticket()));
        assert!(old.decode(&rotated.encode(&ticket())).is_err());

        // A config with key files keeps signing with them, and verifies managed handles.
        let files = ConfiguredKeys {
            keys: BTreeMap::from([(0, vec![9; 32])]),
            signing: None,
            verify_only: false,
        };
        let both = files
            .codec(Some(&managed(&[first], first)))
            .expect("ok")
            .expect("codec");
        assert_eq!(both.decode(&handle), Ok(ticket()));
        let file_only = files.codec(None).expect("ok").expect("codec");
        assert_eq!(file_only.decode(&both.encode(&ticket())), Ok(ticket()));
        // Verify-only key files: the managed key signs, the files still verify.
        let moving = ConfiguredKeys {
            verify_only: true,
            ..files.clone()
        };
        assert!(
            moving.codec(None).expect("ok").is_none(),
            "nothing signs yet"
        );
        let moved = moving
            .codec(Some(&managed(&[first], first)))
            .expect("ok")
            .expect("codec");
        assert_eq!(moved.decode(&file_only.encode(&ticket())), Ok(ticket()));
        assert_eq!(old.decode(&moved.encode(&ticket())), Ok(ticket()));
        // A pinned signing key that no one has is an error.
        let pinned = ConfiguredKeys {
            signing: Some(7),
            ..files
        };
        assert!(pinned.codec(None).is_err());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let key = ManagedKey {
            secret: b"topsecret".to_vec(),
            created_ms: 1,
        };
        assert!(!format!("{key:?}").contains("topsecret"));
    }
}
