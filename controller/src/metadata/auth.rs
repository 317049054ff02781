//! Users and ACLs in the metadata (ADR 0019): deterministic transitions, like the rest.

use serde::{Deserialize, Serialize};
use vela_proto::auth::{
    Acl, PolicyEntry, ResourcePattern, Subject, UserInfo, UserName, UserStatus, UserType,
};

use super::Metadata;
use crate::command::{Applied, Rejected};
use crate::secrets::SealedSecret;

/// A user as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub password: SealedSecret,
    pub user_type: UserType,
    pub status: UserStatus,
}

impl Metadata {
    pub(super) fn create_user(
        &mut self,
        name: UserName,
        password: SealedSecret,
        user_type: UserType,
        status: UserStatus,
    ) -> Result<Applied, Rejected> {
        if self.users.contains_key(&name) {
            return Err(Rejected::UserExists(name));
        }
        let info = UserInfo {
            name: name.clone(),
            user_type,
            status,
        };
        self.users.insert(
            name,
            StoredUser {
                password,
                user_type,
                status,
            },
        );
        Ok(Applied::User(info))
    }

    pub(super) fn update_user(
        &mut self,
        name: UserName,
        password: Option<SealedSecret>,
        user_type: Option<UserType>,
        status: Option<UserStatus>,
    ) -> Result<Applied, Rejected> {
        let Some(user) = self.users.get_mut(&name) else {
            return Err(Rejected::UserNotFound(name));
        };
        if let Some(password) = password {
            user.password = password;
        }
        if let Some(user_type) = user_type {
            user.user_type = user_type;
        }
        if let Some(status) = status {
            user.status = status;
        }
        Ok(Applied::User(UserInfo {
            name,
            user_type: user.user_type,
            status: user.status,
        }))
    }

    pub(super) fn delete_user(&mut self, name: UserName) -> Result<Applied, Rejected> {
        if self.users.remove(&name).is_none() {
            return Err(Rejected::UserNotFound(name));
        }
        self.acls.remove(&name);
        Ok(Applied::Deleted)
    }

    pub(super) fn put_acl(
        &mut self,
        subject: Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Applied, Rejected> {
        if !self.users.contains_key(&subject.0) {
            return Err(Rejected::UserNotFound(subject.0));
        }
        let mut acl = match self.acls.get(&subject.0) {
            Some(acl) => acl.clone(),
            None if create => Acl {
                subject: subject.clone(),
                entries: Vec::new(),
            },
            None => return Err(Rejected::AclNotFound(subject)),
        };
        acl.merge(entries).map_err(|e| Rejected::AclInvalid {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        self.acls.insert(subject.0, acl.clone());
        Ok(Applied::Acl(acl))
    }

    pub(super) fn delete_acl(
        &mut self,
        subject: Subject,
        resources: &[ResourcePattern],
    ) -> Result<Applied, Rejected> {
        let Some(acl) = self.acls.get_mut(&subject.0) else {
            return Err(Rejected::AclNotFound(subject));
        };
        if resources.is_empty() {
            self.acls.remove(&subject.0);
            return Ok(Applied::Deleted);
        }
        let before = acl.entries.len();
        acl.entries.retain(|e| !resources.contains(&e.resource));
        if acl.entries.len() == before {
            return Err(Rejected::AclInvalid {
                subject,
                reason: "it has no entry for the resources given".into(),
            });
        }
        if acl.entries.is_empty() {
            self.acls.remove(&subject.0);
        }
        Ok(Applied::Deleted)
    }

    /// Every user, passwords sealed.
    pub fn users(&self) -> impl Iterator<Item = (&UserName, &StoredUser)> {
        self.users.iter()
    }

    /// Every ACL.
    pub fn acls(&self) -> impl Iterator<Item = &Acl> {
        self.acls.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;
    use crate::secrets::Sealer;

    fn name(n: &str) -> UserName {
        UserName::new(n).expect("name")
    }

    fn create(n: &str) -> ControllerCommand {
        ControllerCommand::CreateUser {
            name: name(n),
            password: Sealer::from_material(&[1; 32]).seal(&format!("user:{n}"), "pw"),
            user_type: UserType::Normal,
            status: UserStatus::Enabled,
        }
    }

    fn entry(resource: &str) -> PolicyEntry {
        PolicyEntry {
            resource: resource.parse().expect("resource"),
            actions: vec![vela_proto::auth::Action::Pub],
            source_ips: vec![],
            decision: vela_proto::auth::Decision::Allow,
        }
    }

    fn put(subject: &str, resources: &[&str], create: bool) -> ControllerCommand {
        ControllerCommand::PutAcl {
            subject: subject.parse().expect("subject"),
            entries: resources.iter().map(|r| entry(r)).collect(),
            create,
        }
    }

    #[test]
    fn users_are_created_updated_and_deleted_with_their_acl() {
        let mut md = Metadata::default();
        assert!(matches!(md.apply(create("alice")), Ok(Applied::User(_))));
        assert_eq!(
            md.apply(create("alice")),
            Err(Rejected::UserExists(name("alice")))
        );
        let disable = ControllerCommand::UpdateUser {
            name: name("alice"),
            password: None,
            user_type: Some(UserType::Super),
            status: Some(UserStatus::Disabled),
        };
        assert_eq!(
            md.apply(disable),
            Ok(Applied::User(UserInfo {
                name: name("alice"),
                user_type: UserType::Super,
                status: UserStatus::Disabled
            }))
        );
        assert!(md.apply(put("User:alice", &["Topic:a"], true)).is_ok());
        assert_eq!(md.acls().count(), 1);
        assert_eq!(
            md.apply(ControllerCommand::DeleteUser {
                name: name("alice")
            }),
            Ok(Applied::Deleted)
        );
        assert_eq!(md.acls().count(), 0);
        assert_eq!(md.users().count(), 0);
        assert_eq!(
            md.apply(ControllerCommand::DeleteUser {
                name: name("alice")
            }),
            Err(Rejected::UserNotFound(name("alice")))
        );
    }

    #[test]
    fn auth_commands_golden_bytes() {
        // Variants 9 to 13 (ADR 0019), fields in order; resources, actions and networks as text.
        let sealed = SealedSecret {
            key_id: [1; 8],
            nonce: [2; 12],
            sealed: vec![0xab, 0xcd],
        };
        let cases = [
            (
                ControllerCommand::CreateUser {
                    name: name("al"),
                    password: sealed.clone(),
                    user_type: UserType::Super,
                    status: UserStatus::Enabled,
                },
                "0902616c010101010101010102020202020202020202020202abcd0000",
            ),
            (
                ControllerCommand::UpdateUser {
                    name: name("al"),
                    password: None,
                    user_type: Some(UserType::Normal),
                    status: Some(UserStatus::Disabled),
                },
                "0a02616c0001010101",
            ),
            (
                ControllerCommand::DeleteUser { name: name("al") },
                "0b02616c",
            ),
            (
                ControllerCommand::PutAcl {
                    subject: "User:al".parse().expect("subject"),
                    entries: vec![PolicyEntry {
                        resource: "Topic:o*".parse().expect("resource"),
                        actions: vec![vela_proto::auth::Action::Pub],
                        source_ips: vec!["10.0.0.0/8".parse().expect("net")],
                        decision: vela_proto::auth::Decision::Deny,
                    }],
                    create: true,
                },
                "0c02616c0108546f7069633a6f2a0103505542010a31302e302e302e302f380101",
            ),
            (
                ControllerCommand::DeleteAcl {
                    subject: "User:al".parse().expect("subject"),
                    resources: vec!["*".parse().expect("any")],
                },
                "0d02616c01012a",
            ),
        ];
        super::super::assert_golden(cases);
    }

    #[test]
    fn acls_need_their_user_merge_and_delete_by_resource() {
        let mut md = Metadata::default();
        assert_eq!(
            md.apply(put("User:bob", &["Topic:a"], true)),
            Err(Rejected::UserNotFound(name("bob")))
        );
        md.apply(create("bob")).expect("bob");
        assert!(matches!(
            md.apply(put("User:bob", &["Topic:a"], false)),
            Err(Rejected::AclNotFound(_))
        ));
        md.apply(put("User:bob", &["Topic:a", "Group:g"], true))
            .expect("create");
        let Ok(Applied::Acl(acl)) = md.apply(put("User:bob", &["Topic:a", "Topic:b*"], false))
        else {
            panic!("update failed")
        };
        assert_eq!(acl.entries.len(), 3);
        let delete = |resources: &[&str]| ControllerCommand::DeleteAcl {
            subject: "User:bob".parse().expect("subject"),
            resources: resources.iter().map(|r| r.parse().expect("r")).collect(),
        };
        assert!(matches!(
            md.apply(delete(&["Topic:zzz"])),
            Err(Rejected::AclInvalid { .. })
        ));
        assert_eq!(md.apply(delete(&["Topic:a"])), Ok(Applied::Deleted));
        assert_eq!(md.acls().next().map(|a| a.entries.len()), Some(2));
        assert_eq!(md.apply(delete(&[])), Ok(Applied::Deleted));
        assert!(matches!(
            md.apply(delete(&[])),
            Err(Rejected::AclNotFound(_))
        ));
    }
}
