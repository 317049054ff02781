//! The controller's side of users and ACLs (ADR 0019): passwords are sealed before they are
//! proposed, so the log and the snapshots never hold one in clear, and opened when proxies ask
//! for what they authenticate with.

use vela_proto::ControllerError;
use vela_proto::auth::{
    Acl, AuthData, PolicyEntry, ResourcePattern, Subject, User, UserInfo, UserName, UserUpdate,
};

use crate::command::{Applied, ControllerCommand};
use crate::controller::{Controller, unexpected};

/// What a user's sealed password is bound to: it cannot be moved to another user.
fn password_context(name: &UserName) -> String {
    format!("user-password:{name}")
}

impl Controller {
    pub(crate) async fn propose_create_user(
        &self,
        user: User,
    ) -> Result<UserInfo, ControllerError> {
        let command = ControllerCommand::CreateUser {
            password: self
                .sealer
                .seal(&password_context(&user.name), user.password.expose()),
            name: user.name,
            user_type: user.user_type,
            status: user.status,
        };
        match self.group.propose(command).await? {
            Ok(Applied::User(info)) => Ok(info),
            other => Err(unexpected("create-user", &other)),
        }
    }

    pub(crate) async fn propose_update_user(
        &self,
        name: &UserName,
        update: UserUpdate,
    ) -> Result<UserInfo, ControllerError> {
        let command = ControllerCommand::UpdateUser {
            name: name.clone(),
            password: update
                .password
                .map(|p| self.sealer.seal(&password_context(name), p.expose())),
            user_type: update.user_type,
            status: update.status,
        };
        match self.group.propose(command).await? {
            Ok(Applied::User(info)) => Ok(info),
            other => Err(unexpected("update-user", &other)),
        }
    }

    pub(crate) async fn propose_delete_user(&self, name: &UserName) -> Result<(), ControllerError> {
        let command = ControllerCommand::DeleteUser { name: name.clone() };
        match self.group.propose(command).await? {
            Ok(Applied::Deleted) => Ok(()),
            other => Err(unexpected("delete-user", &other)),
        }
    }

    pub(crate) async fn propose_put_acl(
        &self,
        subject: &Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Acl, ControllerError> {
        if entries.is_empty() {
            return Err(ControllerError::Invalid(
                "an ACL change needs entries".into(),
            ));
        }
        let command = ControllerCommand::PutAcl {
            subject: subject.clone(),
            entries,
            create,
        };
        match self.group.propose(command).await? {
            Ok(Applied::Acl(acl)) => Ok(acl),
            other => Err(unexpected("put-acl", &other)),
        }
    }

    pub(crate) async fn propose_delete_acl(
        &self,
        subject: &Subject,
        resources: &[ResourcePattern],
    ) -> Result<(), ControllerError> {
        let command = ControllerCommand::DeleteAcl {
            subject: subject.clone(),
            resources: resources.to_vec(),
        };
        match self.group.propose(command).await? {
            Ok(Applied::Deleted) => Ok(()),
            other => Err(unexpected("delete-acl", &other)),
        }
    }

    /// Every user with its password opened, and every ACL. A password that cannot be opened
    /// (another key, damage) fails the call with a message that names the user, not the secret.
    pub(crate) async fn read_auth_data(&self) -> Result<AuthData, ControllerError> {
        self.read_barrier().await?;
        let md = self.metadata.read();
        let users = md
            .users()
            .map(|(name, stored)| {
                let password = self
                    .sealer
                    .open(&password_context(name), &stored.password)
                    .map_err(|e| {
                        ControllerError::Internal(format!("password of user {name}: {e}"))
                    })?;
                Ok(User {
                    name: name.clone(),
                    password: vela_proto::auth::Password::new(password).map_err(|e| {
                        ControllerError::Internal(format!("password of user {name}: {e}"))
                    })?,
                    user_type: stored.user_type,
                    status: stored.status,
                })
            })
            .collect::<Result<Vec<_>, ControllerError>>()?;
        Ok(AuthData {
            users,
            acls: md.acls().cloned().collect(),
        })
    }

    /// Creates `user` (the configured initial user) when the metadata has no user at all: a
    /// first start. Once any user exists it does nothing, so deleting or renaming the initial
    /// user sticks across restarts and leader changes.
    pub async fn ensure_user(&self, user: User) -> Result<(), ControllerError> {
        if self.metadata.read().users().next().is_some() {
            return Ok(());
        }
        match self.propose_create_user(user.clone()).await {
            Ok(_) => {
                tracing::info!(user = %user.name, "created the initial user");
                Ok(())
            }
            Err(ControllerError::AlreadyExists(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// [`ensure_user`](Self::ensure_user) as soon as this node leads the metadata group;
    /// retried until done or the controller stops.
    pub fn ensure_user_when_leading(self: &std::sync::Arc<Self>, user: User) {
        let controller = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
            loop {
                let Some(c) = controller.upgrade() else {
                    return;
                };
                if c.is_stopped().await {
                    return;
                }
                if c.group.wait_leading(WAIT).await {
                    match c.ensure_user(user.clone()).await {
                        Ok(()) => return,
                        Err(err) => {
                            tracing::debug!(error = %err, "creating the initial user; retrying");
                        }
                    }
                }
                drop(c);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
    }
}
