//! Users and ACLs over the wire (`vela.auth.v1`): domain values to text fields and back.
//! Parsing is the boundary check: whatever arrives is validated into [`crate::auth`] types.

use crate::auth::{
    Acl, AuthData, AuthValueError, Password, PolicyEntry, ResourcePattern, SourceNet, Subject,
    User, UserInfo, UserName, UserUpdate, parse_actions,
};
use crate::pb::auth as pb;
use crate::store_wire::WireError;

impl From<AuthValueError> for WireError {
    fn from(e: AuthValueError) -> Self {
        WireError(e.0)
    }
}

/// A user with its password (between roles, and create requests).
pub fn user_to_wire(u: &User) -> pb::User {
    pb::User {
        name: u.name.to_string(),
        password: u.password.expose().to_owned(),
        user_type: u.user_type.to_string(),
        status: u.status.to_string(),
    }
}

/// A user as shown to admin tools: no password.
pub fn user_info_to_wire(u: &UserInfo) -> pb::User {
    pb::User {
        name: u.name.to_string(),
        password: String::new(),
        user_type: u.user_type.to_string(),
        status: u.status.to_string(),
    }
}

pub fn user_from_wire(u: pb::User) -> Result<User, WireError> {
    Ok(User {
        name: UserName::new(u.name)?,
        password: Password::new(u.password)?,
        user_type: u.user_type.parse()?,
        status: if u.status.is_empty() {
            crate::auth::UserStatus::Enabled
        } else {
            u.status.parse()?
        },
    })
}

pub fn user_info_from_wire(u: pb::User) -> Result<UserInfo, WireError> {
    Ok(UserInfo {
        name: UserName::new(u.name)?,
        user_type: u.user_type.parse()?,
        status: u.status.parse()?,
    })
}

pub fn user_update_to_wire(name: &UserName, u: &UserUpdate) -> pb::UserUpdate {
    pb::UserUpdate {
        name: name.to_string(),
        password: u.password.as_ref().map(|p| p.expose().to_owned()),
        user_type: u.user_type.map(|t| t.to_string()),
        status: u.status.map(|s| s.to_string()),
    }
}

pub fn user_update_from_wire(u: pb::UserUpdate) -> Result<(UserName, UserUpdate), WireError> {
    let update = UserUpdate {
        password: u.password.map(Password::new).transpose()?,
        user_type: u.user_type.map(|t| t.parse()).transpose()?,
        status: u.status.map(|s| s.parse()).transpose()?,
    };
    if update == UserUpdate::default() {
        return Err(WireError(
            "nothing to update: give a password, a type or a status".into(),
        ));
    }
    Ok((UserName::new(u.name)?, update))
}

pub fn entry_to_wire(e: &PolicyEntry) -> pb::PolicyEntry {
    pb::PolicyEntry {
        resource: e.resource.to_string(),
        actions: e.actions.iter().map(ToString::to_string).collect(),
        source_ips: e.source_ips.iter().map(ToString::to_string).collect(),
        decision: e.decision.to_string(),
    }
}

pub fn entry_from_wire(e: pb::PolicyEntry) -> Result<PolicyEntry, WireError> {
    Ok(PolicyEntry {
        resource: e.resource.parse()?,
        actions: parse_actions(&e.actions.join(","))?,
        source_ips: e
            .source_ips
            .iter()
            .map(|ip| ip.parse::<SourceNet>())
            .collect::<Result<_, _>>()?,
        decision: e.decision.parse()?,
    })
}

pub fn acl_to_wire(a: &Acl) -> pb::Acl {
    pb::Acl {
        subject: a.subject.to_string(),
        entries: a.entries.iter().map(entry_to_wire).collect(),
    }
}

pub fn acl_from_wire(a: pb::Acl) -> Result<Acl, WireError> {
    Ok(Acl {
        subject: a.subject.parse()?,
        entries: a
            .entries
            .into_iter()
            .map(entry_from_wire)
            .collect::<Result<_, _>>()?,
    })
}

pub fn subject_from_wire(subject: &str) -> Result<Subject, WireError> {
    Ok(subject.parse()?)
}

pub fn resources_from_wire(resources: &[String]) -> Result<Vec<ResourcePattern>, WireError> {
    Ok(resources
        .iter()
        .map(|r| r.parse())
        .collect::<Result<_, _>>()?)
}

pub fn auth_data_to_wire(d: &AuthData) -> pb::AuthData {
    pb::AuthData {
        users: d.users.iter().map(user_to_wire).collect(),
        acls: d.acls.iter().map(acl_to_wire).collect(),
    }
}

pub fn auth_data_from_wire(d: pb::AuthData) -> Result<AuthData, WireError> {
    Ok(AuthData {
        users: d
            .users
            .into_iter()
            .map(user_from_wire)
            .collect::<Result<_, _>>()?,
        acls: d
            .acls
            .into_iter()
            .map(acl_from_wire)
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_acls_survive_the_wire() {
        let user = User {
            name: UserName::new("alice").expect("name"),
            password: Password::new("pw").expect("pw"),
            user_type: crate::auth::UserType::Normal,
            status: crate::auth::UserStatus::Disabled,
        };
        assert_eq!(user_from_wire(user_to_wire(&user)), Ok(user.clone()));
        assert!(user_info_to_wire(&user.info()).password.is_empty());
        assert_eq!(
            user_info_from_wire(user_info_to_wire(&user.info())),
            Ok(user.info())
        );
        let acl = Acl {
            subject: "User:alice".parse().expect("subject"),
            entries: vec![PolicyEntry {
                resource: "Topic:o*".parse().expect("resource"),
                actions: vec![crate::auth::Action::Pub, crate::auth::Action::Sub],
                source_ips: vec!["10.0.0.0/8".parse().expect("net")],
                decision: crate::auth::Decision::Deny,
            }],
        };
        assert_eq!(acl_from_wire(acl_to_wire(&acl)), Ok(acl.clone()));
        let data = AuthData {
            users: vec![user],
            acls: vec![acl],
        };
        assert_eq!(auth_data_from_wire(auth_data_to_wire(&data)), Ok(data));
        let mut bad = pb::PolicyEntry {
            resource: "Queue:x".into(),
            actions: vec!["PUB".into()],
            source_ips: vec![],
            decision: "Allow".into(),
        };
        assert!(entry_from_wire(bad.clone()).is_err());
        bad.resource = "Topic:x".into();
        bad.actions = vec![];
        assert!(entry_from_wire(bad).is_err());
        let nothing = pb::UserUpdate {
            name: "alice".into(),
            ..Default::default()
        };
        assert!(user_update_from_wire(nothing).is_err());
    }
}
