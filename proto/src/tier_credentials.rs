//! Object-storage credentials the controller keeps (issue 8): an S3 access key pair sealed in
//! its replicated metadata, handed in clear only to store nodes over the cluster's own channel,
//! set, replaced and cleared with `vela admin tier credentials`. A store uses them instead of
//! `tier.access_key_id` / `tier.secret_access_key` (and the `AWS_…` variables) while they are
//! set, and follows a change within seconds, without a restart.

use std::fmt;

use crate::pb::controller as pb;
use crate::store_wire::WireError;

/// Longest access key id accepted (AWS: 128; OSS: about 30).
const MAX_KEY_ID: usize = 128;
/// Longest secret accepted.
const MAX_SECRET: usize = 1024;

/// A validated access key pair. `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TierCredentials {
    access_key_id: String,
    secret_access_key: String,
}

impl fmt::Debug for TierCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TierCredentials({}, ***)", self.access_key_id)
    }
}

/// Why a key pair was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCredentials(String);

fn printable(what: &str, value: &str, max: usize) -> Result<(), InvalidCredentials> {
    if value.is_empty() || value.len() > max {
        return Err(InvalidCredentials(format!(
            "the {what} must be 1 to {max} characters (got {})",
            value.len()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidCredentials(format!(
            "the {what} must be printable ASCII without spaces"
        )));
    }
    Ok(())
}

impl TierCredentials {
    /// Checks both halves: printable ASCII without spaces, the id at most 128 characters.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Result<Self, InvalidCredentials> {
        let access_key_id = access_key_id.into();
        let secret_access_key = secret_access_key.into();
        printable("access key id", &access_key_id, MAX_KEY_ID)?;
        printable("secret access key", &secret_access_key, MAX_SECRET)?;
        Ok(Self {
            access_key_id,
            secret_access_key,
        })
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret, for the one place that signs requests with it.
    pub fn expose_secret(&self) -> &str {
        &self.secret_access_key
    }
}

/// What the controller holds: the pair and when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedTierCredentials {
    pub credentials: TierCredentials,
    pub updated_ms: i64,
}

/// The pair as the controller hands it to store nodes (`None`: none set).
pub fn to_wire(c: Option<&ManagedTierCredentials>) -> pb::TierCredentialsReply {
    pb::TierCredentialsReply {
        credentials: c.map(|c| pb::TierCredentials {
            access_key_id: c.credentials.access_key_id.clone(),
            secret_access_key: c.credentials.secret_access_key.clone(),
            updated_ms: c.updated_ms,
        }),
    }
}

/// Parses what the controller answered.
pub fn from_wire(w: pb::TierCredentialsReply) -> Result<Option<ManagedTierCredentials>, WireError> {
    w.credentials
        .map(|c| {
            Ok(ManagedTierCredentials {
                credentials: TierCredentials::new(c.access_key_id, c.secret_access_key)
                    .map_err(|e| WireError(format!("tier credentials: {e}")))?,
                updated_ms: c.updated_ms,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_checked_and_the_secret_never_printed() {
        let ok = TierCredentials::new("AKIDEXAMPLE", "wJalr/XUtnFEMI+K7MDENG").expect("valid");
        assert_eq!(ok.access_key_id(), "AKIDEXAMPLE");
        assert!(!format!("{ok:?}").contains("wJalr"));
        for (id, secret) in [
            ("", "s"),
            ("id", ""),
            ("with space", "s"),
            ("id", "tab\there"),
            ("ключ", "s"),
        ] {
            assert!(
                TierCredentials::new(id, secret).is_err(),
                "{id:?} {secret:?}"
            );
        }
        assert!(TierCredentials::new("a".repeat(129), "s").is_err());
        let managed = ManagedTierCredentials {
            credentials: ok,
            updated_ms: 7,
        };
        assert_eq!(
            from_wire(to_wire(Some(&managed))).expect("parses"),
            Some(managed)
        );
        assert_eq!(from_wire(to_wire(None)).expect("parses"), None);
        let mut bad = to_wire(None);
        bad.credentials = Some(pb::TierCredentials {
            access_key_id: String::new(),
            secret_access_key: "x".into(),
            updated_ms: 0,
        });
        assert!(from_wire(bad).is_err());
    }
}
