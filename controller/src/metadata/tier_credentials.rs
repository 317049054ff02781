//! The object-storage credentials store nodes use, in the metadata (issue 8): the secret is
//! sealed before it is proposed (context `tier-credentials:<access key id>`), so the log and
//! the snapshots never hold it in clear.

use serde::{Deserialize, Serialize};

use super::Metadata;
use crate::command::{Applied, Rejected};
use crate::secrets::SealedSecret;

/// The pair as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTierCredentials {
    pub access_key_id: String,
    pub secret_access_key: SealedSecret,
    pub updated_ms: i64,
}

impl Metadata {
    /// Replaces (or clears) the credentials. Always applies: the last one set wins.
    pub(super) fn set_tier_credentials(
        &mut self,
        credentials: Option<StoredTierCredentials>,
    ) -> Result<Applied, Rejected> {
        self.tier_credentials = credentials;
        Ok(Applied::TierCredentials)
    }

    pub fn tier_credentials(&self) -> Option<&StoredTierCredentials> {
        self.tier_credentials.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;

    fn stored(id: &str) -> StoredTierCredentials {
        StoredTierCredentials {
            access_key_id: id.to_owned(),
            secret_access_key: SealedSecret {
                key_id: [3; 8],
                nonce: [4; 12],
                sealed: vec![5],
            },
            updated_ms: 9,
        }
    }

    #[test]
    fn credentials_are_set_replaced_cleared_and_kept_in_snapshots() {
        let mut md = Metadata::default();
        assert_eq!(md.tier_credentials(), None);
        let set = |id: &str| ControllerCommand::SetTierCredentials {
            credentials: Some(stored(id)),
        };
        assert_eq!(md.apply(set("A")), Ok(Applied::TierCredentials));
        assert_eq!(md.apply(set("B")), Ok(Applied::TierCredentials));
        assert_eq!(md.tier_credentials(), Some(&stored("B")));
        let json = serde_json::to_string(&md).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Metadata>(&json).expect("decodes"),
            md
        );
        assert_eq!(
            md.apply(ControllerCommand::SetTierCredentials { credentials: None }),
            Ok(Applied::TierCredentials)
        );
        assert_eq!(md.tier_credentials(), None);
        // A snapshot from before them reads as none set.
        let old: Metadata = serde_json::from_str("{}").expect("decodes");
        assert_eq!(old.tier_credentials(), None);
    }

    #[test]
    fn tier_credential_commands_golden_bytes() {
        // Variant 24, fields in order.
        let cases = [
            (
                ControllerCommand::SetTierCredentials {
                    credentials: Some(stored("AK")),
                },
                "1801 02414b 0303030303030303 040404040404040404040404 0105 12",
            ),
            (
                ControllerCommand::SetTierCredentials { credentials: None },
                "1800",
            ),
        ];
        super::super::assert_golden(cases);
    }
}
