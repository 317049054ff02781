//! The controller's side of the tier credentials (issue 8): sealed before they are proposed,
//! opened for the store nodes that ask.

use vela_proto::ControllerError;
use vela_proto::tier_credentials::{ManagedTierCredentials, TierCredentials};

use crate::command::{Applied, ControllerCommand};
use crate::controller::{Controller, unexpected};
use crate::metadata::StoredTierCredentials;

/// What a sealed secret access key is bound to: its key id.
fn secret_context(access_key_id: &str) -> String {
    format!("tier-credentials:{access_key_id}")
}

impl Controller {
    /// The credentials with the secret opened; `None` while none are set.
    fn open_tier_credentials(&self) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        let Some(stored) = self.metadata.read().tier_credentials().cloned() else {
            return Ok(None);
        };
        let failed = |e: String| ControllerError::Internal(format!("tier credentials: {e}"));
        let secret = self
            .sealer
            .open(
                &secret_context(&stored.access_key_id),
                &stored.secret_access_key,
            )
            .map_err(|e| failed(e.to_string()))?;
        let credentials = TierCredentials::new(stored.access_key_id, secret)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Some(ManagedTierCredentials {
            credentials,
            updated_ms: stored.updated_ms,
        }))
    }

    pub(crate) async fn read_tier_credentials(
        &self,
    ) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        self.read_barrier().await?;
        self.open_tier_credentials()
    }

    pub(crate) async fn write_tier_credentials(
        &self,
        credentials: Option<TierCredentials>,
    ) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        let stored = credentials.map(|c| StoredTierCredentials {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: self
                .sealer
                .seal(&secret_context(c.access_key_id()), c.expose_secret()),
            updated_ms: self.clock.now_ms(),
        });
        let command = ControllerCommand::SetTierCredentials {
            credentials: stored,
        };
        match self.group.propose(command).await? {
            Ok(Applied::TierCredentials) => {}
            Err(rejected) => return Err(rejected.into()),
            other => return Err(unexpected("set-tier-credentials", &other)),
        }
        self.open_tier_credentials()
    }
}
