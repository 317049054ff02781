//! Which credentials an S3 tier signs with: those its configuration gives (`tier.access_key_id`
//! and `tier.secret_access_key`, the `AWS_…` variables, or the provider chain object_store
//! builds from them), or, while set, the pair the controller keeps (issue 8). Switching takes
//! effect at the next request; nothing is rebuilt and no request in flight is disturbed.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::CredentialProvider;
use object_store::aws::{AwsCredential, AwsCredentialProvider};
use parking_lot::RwLock;

/// A credential provider that answers the managed pair while one is set, else the configured
/// provider's answer.
#[derive(Debug)]
pub(crate) struct SwitchCredentials {
    configured: AwsCredentialProvider,
    managed: RwLock<Option<Arc<AwsCredential>>>,
}

impl SwitchCredentials {
    pub(crate) fn new(configured: AwsCredentialProvider) -> Self {
        Self {
            configured,
            managed: RwLock::new(None),
        }
    }

    /// Uses `pair` (access key id, secret) from now on, or the configured credentials again
    /// (`None`). Answers whether that changed anything.
    pub(crate) fn set(&self, pair: Option<(&str, &str)>) -> bool {
        let mut managed = self.managed.write();
        let same = match (managed.as_deref(), pair) {
            (None, None) => true,
            (Some(now), Some((id, secret))) => now.key_id == id && now.secret_key == secret,
            _ => false,
        };
        if !same {
            *managed = pair.map(|(id, secret)| {
                Arc::new(AwsCredential {
                    key_id: id.to_owned(),
                    secret_key: secret.to_owned(),
                    token: None,
                })
            });
        }
        !same
    }

    /// The access key id of the managed pair in use, if one is.
    pub(crate) fn managed_key_id(&self) -> Option<String> {
        self.managed.read().as_ref().map(|c| c.key_id.clone())
    }
}

#[async_trait]
impl CredentialProvider for SwitchCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let managed = self.managed.read().clone();
        match managed {
            Some(credential) => Ok(credential),
            None => self.configured.get_credential().await,
        }
    }
}
