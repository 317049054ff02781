//! Secrets at rest in the metadata (ADR 0019): a user's password must be recoverable (it is
//! the HMAC key of its clients' signatures), so it is sealed with ChaCha20-Poly1305 under a key
//! from `auth.metadata_key_file` before it is proposed. The Raft log and the snapshots hold only
//! the sealed form; the leader opens it to hand users to proxies.

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A secret as the metadata stores it. `Debug` shows only the key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Which key sealed it (the first 8 bytes of a hash of the key), so a controller with
    /// another key says so instead of failing to decrypt.
    pub key_id: [u8; 8],
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret(key {})", hex::encode(self.key_id))
    }
}

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "sealed with metadata key {sealed_with}, but this controller has key {ours}: give every controller the same auth.metadata_key_file"
    )]
    OtherKey { sealed_with: String, ours: String },
    #[error("a sealed secret failed its integrity check")]
    Damaged,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    key_id: [u8; 8],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(key {})", hex::encode(self.key_id))
    }
}

impl Sealer {
    /// A sealer whose key is derived from `material` (the bytes of a key file, at least 16).
    pub fn from_material(material: &[u8]) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"vela metadata key v1\0")
            .chain_update(material)
            .finalize()
            .into();
        let id: [u8; 32] = Sha256::new()
            .chain_update(b"vela metadata key id\0")
            .chain_update(key)
            .finalize()
            .into();
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&id[..8]);
        Self {
            cipher: ChaCha20Poly1305::new(&key.into()),
            key_id,
        }
    }

    /// The sealer of the key file at `path`, created (random, mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        vela_proto::secret_file::load_or_create(path).map(|material| Self::from_material(&material))
    }

    /// Seals `secret`, bound to `context` (what it belongs to, such as `user:alice`): opening
    /// it under another context fails.
    pub fn seal(&self, context: &str, secret: &str) -> SealedSecret {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce[..]);
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            // Encryption fails only for messages of gigabytes; secrets are bounded far below.
            .unwrap_or_default();
        SealedSecret {
            key_id: self.key_id,
            nonce,
            sealed,
        }
    }

    /// Opens a secret sealed under `context`.
    pub fn open(&self, context: &str, secret: &SealedSecret) -> Result<String, OpenError> {
        if secret.key_id != self.key_id {
            return Err(OpenError::OtherKey {
                sealed_with: hex::encode(secret.key_id),
                ours: hex::encode(self.key_id),
            });
        }
        let payload = Payload {
            msg: &secret.sealed,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(&Nonce::from(secret.nonce), payload)
            .map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plain).map_err(|_| OpenError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let sealer = Sealer::from_material(b"0123456789abcdef0123456789abcdef");
        let sealed = sealer.seal("user:alice", "hunter2");
        assert!(!sealed.sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(sealer.open("user:alice", &sealed).as_deref(), Ok("hunter2"));
        assert_eq!(sealer.open("user:bob", &sealed), Err(OpenError::Damaged));
        let other = Sealer::from_material(b"another key, at least 16 bytes");
        assert!(matches!(
            other.open("user:alice", &sealed),
            Err(OpenError::OtherKey { .. })
        ));
        let mut flipped = sealed.clone();
        flipped.sealed[0] ^= 1;
        assert_eq!(sealer.open("user:alice", &flipped), Err(OpenError::Damaged));
        // Two seals of one secret differ (fresh nonces).
        assert_ne!(sealer.seal("user:alice", "hunter2"), sealed);
        assert!(!format!("{sealed:?}").contains("hunter2"));
    }

    #[test]
    fn the_key_is_derived_from_the_file_bytes() {
        // Pinned: the same key file must give the same key on every build.
        let sealer = Sealer::from_material(&[7u8; 32]);
        assert_eq!(
            format!("{sealer:?}"),
            format!("Sealer(key {})", hex::encode(sealer.key_id))
        );
        let again = Sealer::from_material(&[7u8; 32]);
        let sealed = sealer.seal("c", "s");
        assert_eq!(again.open("c", &sealed).as_deref(), Ok("s"));
    }
}
