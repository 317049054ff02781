//! Users and access control lists: RocketMQ 5.3's ACL 2.0 model (RIP-68) as Vela keeps it
//! (ADR 0019). The controller stores these; the proxy authenticates a request's signature
//! against a [`User`] and decides with [`authorize`] whether its [`Acl`] lets it do what the
//! request needs.
//!
//! Decisions follow RocketMQ: SUPER users bypass policies; a NORMAL user may do only what a
//! policy entry allows; among the entries that match a request, the most specific decides
//! (a typed resource before `*`; a literal name before a prefix, a longer prefix before a
//! shorter one, a prefix before `Topic:*`), and at equal specificity DENY wins over ALLOW
//! (apache/rocketmq#9785). No matching entry means no.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest user name.
pub const MAX_USER_NAME: usize = 64;
/// Longest password (it is the HMAC key of the client's signature).
pub const MAX_PASSWORD: usize = 256;
/// Most entries one subject's ACL may have.
pub const MAX_ACL_ENTRIES: usize = 1024;

/// Why an auth value was refused (one readable line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthValueError(pub String);

fn invalid(message: impl Into<String>) -> AuthValueError {
    AuthValueError(message.into())
}

/// A user's name: the access key its clients sign with. 1–64 characters of
/// `[A-Za-z0-9_.@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    pub fn new(name: impl Into<String>) -> Result<Self, AuthValueError> {
        let name = name.into();
        if name.is_empty() {
            return Err(invalid("user name is empty"));
        }
        if name.len() > MAX_USER_NAME {
            return Err(invalid(format!(
                "user name is longer than {MAX_USER_NAME} characters"
            )));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
        {
            return Err(invalid(format!(
                "user name {name:?} has characters outside [A-Za-z0-9_.@-]"
            )));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        Self::new(s)
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> String {
        name.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's password (the secret key its clients sign with). Never printed: `Debug` shows
/// `***` and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Result<Self, AuthValueError> {
        let password = password.into();
        if password.is_empty() {
            return Err(invalid("password is empty"));
        }
        if password.len() > MAX_PASSWORD {
            return Err(invalid(format!(
                "password is longer than {MAX_PASSWORD} bytes"
            )));
        }
        if password.chars().any(char::is_control) {
            return Err(invalid("password has control characters"));
        }
        Ok(Self(password))
    }

    /// The secret itself, for signing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// SUPER users may do everything; NORMAL users what their ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserType {
    Super,
    Normal,
}

/// A disabled user cannot authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    Enabled,
    Disabled,
}

macro_rules! keyword_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),* $(,)? }) => {
        impl FromStr for $ty {
            type Err = AuthValueError;
            fn from_str(s: &str) -> Result<Self, AuthValueError> {
                $(if s.trim().eq_ignore_ascii_case($text) { return Ok($ty::$variant); })*
                Err(invalid(format!(
                    concat!("unknown ", $what, " {:?} (expected ", $($text, " "),* , ")"),
                    s
                )))
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $text),* })
            }
        }
    };
}

keyword_enum!(UserType, "user type", { Super => "Super", Normal => "Normal" });
keyword_enum!(UserStatus, "user status", { Enabled => "Enable", Disabled => "Disable" });

/// A user as the controller gives it to the proxy (password in clear, for verifying
/// signatures; only ever sent between Vela roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: UserName,
    pub password: Password,
    pub user_type: UserType,
    pub status: UserStatus,
}

impl User {
    /// What may be shown of the user (no password).
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            user_type: self.user_type,
            status: self.status,
        }
    }
}

/// A user as admin commands show it: never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: UserName,
    pub user_type: UserType,
    pub status: UserStatus,
}

/// Every user and ACL, as the controller hands them to proxies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthData {
    pub users: Vec<User>,
    pub acls: Vec<Acl>,
}

/// A change to an existing user: what is `Some` is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserUpdate {
    pub password: Option<Password>,
    pub user_type: Option<UserType>,
    pub status: Option<UserStatus>,
}

/// Who a policy is about: `User:<name>` (the only subject type RocketMQ 5.3 has).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject(pub UserName);

impl FromStr for Subject {
    type Err = AuthValueError;
    fn from_str(s: &str) -> Result<Self, AuthValueError> {
        let s = s.trim();
        match s.split_once(':') {
            Some((kind, name)) if kind.eq_ignore_ascii_case("User") => {
                Ok(Subject(UserName::new(name)?))
            }
            _ => Err(invalid(format!(
                "subject {s:?} is not of the form User:<name>"
            ))),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.0)
    }
}

/// The kinds of resources requests act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    /// The cluster itself (status, node drains).
    Cluster,
}

keyword_enum!(ResourceType, "resource type", {
    Topic => "Topic",
    Group => "Group",
    Cluster => "Cluster",
});

/// A concrete resource a request acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    pub kind: ResourceType,
    pub name: String,
}

impl Resource {
    pub fn topic(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceType::Topic,
            name: name.into(),
        }
    }

    pub fn group(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceType::Group,
            name: name.into(),
        }
    }

    pub fn cluster() -> Self {
        Self {
            kind: ResourceType::Cluster,
            name: String::new(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// Which names of a resource type a policy entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// Exactly this name.
    Literal(String),
    /// Every name starting with this (written `order*`).
    Prefixed(String),
    /// Every name (written `*`).
    Any,
}

/// The resources a policy entry covers: `*`, `Topic:*`, `Topic:order*`, `Topic:orders`,
/// `Group:…`, `Cluster:*`. Kept as its text in stored forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourcePattern {
    /// `None`: any type (`*`).
    pub kind: Option<ResourceType>,
    pub name: NamePattern,
}

impl ResourcePattern {
    /// Whether `resource` is covered.
    pub fn matches(&self, resource: &Resource) -> bool {
        if self.kind.is_some_and(|kind| kind != resource.kind) {
            return false;
        }
        match &self.name {
            NamePattern::Any => true,
            NamePattern::Literal(name) => *name == resource.name,
            NamePattern::Prefixed(prefix) => resource.name.starts_with(prefix.as_str()),
        }
    }

    /// Orders patterns most specific first: a typed resource before `*`, then a literal name,
    /// then prefixes (longer first), then any name.
    fn specificity(&self) -> (u8, u8, usize) {
        let typed = u8::from(self.kind.is_none());
        match &self.name {
            NamePattern::Literal(_) => (typed, 0, 0),
            NamePattern::Prefixed(prefix) => (typed, 1, usize::MAX - prefix.len()),
            NamePattern::Any => (typed, 2, 0),
        }
    }
}

fn valid_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'_' | b'-'))
}

impl FromStr for ResourcePattern {
    type Err = AuthValueError;
    fn from_str(s: &str) -> Result<Self, AuthValueError> {
        let text = s.trim();
        if text == "*" {
            return Ok(Self {
                kind: None,
                name: NamePattern::Any,
            });
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(invalid(format!(
                "resource {text:?} is not `*` or of the form Type:name (Topic:orders, Topic:order*, Group:*)"
            )));
        };
        let kind: ResourceType = kind.parse()?;
        let name = if name == "*" {
            NamePattern::Any
        } else if let Some(prefix) = name.strip_suffix('*') {
            if !valid_resource_name(prefix) {
                return Err(invalid(format!("resource {text:?} has a bad name prefix")));
            }
            NamePattern::Prefixed(prefix.to_owned())
        } else if valid_resource_name(name) {
            NamePattern::Literal(name.to_owned())
        } else {
            return Err(invalid(format!(
                "resource {text:?}: a name is [%a-zA-Z0-9_-]+, optionally ending in *"
            )));
        };
        if kind == ResourceType::Cluster && name != NamePattern::Any {
            return Err(invalid("the cluster resource is written Cluster:*"));
        }
        Ok(Self {
            kind: Some(kind),
            name,
        })
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        s.parse()
    }
}

impl From<ResourcePattern> for String {
    fn from(pattern: ResourcePattern) -> String {
        pattern.to_string()
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(kind) = self.kind else {
            return f.write_str("*");
        };
        match &self.name {
            NamePattern::Any => write!(f, "{kind}:*"),
            NamePattern::Literal(name) => write!(f, "{kind}:{name}"),
            NamePattern::Prefixed(prefix) => write!(f, "{kind}:{prefix}*"),
        }
    }
}

/// What a request does to a resource. Stored by name, so variants may be added anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Action {
    /// In a policy: every action.
    All,
    Pub,
    Sub,
    Create,
    Update,
    Delete,
    Get,
    List,
}

keyword_enum!(Action, "action", {
    All => "ALL",
    Pub => "PUB",
    Sub => "SUB",
    Create => "CREATE",
    Update => "UPDATE",
    Delete => "DELETE",
    Get => "GET",
    List => "LIST",
});

impl TryFrom<String> for Action {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        s.parse()
    }
}

impl From<Action> for String {
    fn from(action: Action) -> String {
        action.to_string()
    }
}

/// Parses `PUB,SUB` (case-insensitive, spaces allowed) into a sorted, deduplicated list.
pub fn parse_actions(text: &str) -> Result<Vec<Action>, AuthValueError> {
    let mut actions = text
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Action>, _>>()?;
    if actions.is_empty() {
        return Err(invalid("no actions given (e.g. PUB,SUB)"));
    }
    actions.sort_unstable();
    actions.dedup();
    Ok(actions)
}

/// Whether a matching entry lets the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Allow,
    Deny,
}

keyword_enum!(Decision, "decision", { Allow => "Allow", Deny => "Deny" });

/// A source network (`10.0.0.0/8`, or one address), kept as its text in stored forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceNet(ipnet::IpNet);

impl SourceNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket is `::ffff:a.b.c.d`.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl FromStr for SourceNet {
    type Err = AuthValueError;
    fn from_str(s: &str) -> Result<Self, AuthValueError> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(ipnet::IpNet::from(ip)))
            .map_err(|_| invalid(format!("source ip {s:?} is not an address or a CIDR block")))
    }
}

impl TryFrom<String> for SourceNet {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        s.parse()
    }
}

impl From<SourceNet> for String {
    fn from(net: SourceNet) -> String {
        net.to_string()
    }
}

impl fmt::Display for SourceNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One rule of a subject's ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub resource: ResourcePattern,
    /// Sorted, deduplicated, never empty.
    pub actions: Vec<Action>,
    /// Empty: from anywhere.
    pub source_ips: Vec<SourceNet>,
    pub decision: Decision,
}

impl PolicyEntry {
    fn applies(&self, resource: &Resource, action: Action, source: Option<IpAddr>) -> bool {
        self.resource.matches(resource)
            && self
                .actions
                .iter()
                .any(|&a| a == Action::All || a == action)
            && (self.source_ips.is_empty()
                || match source {
                    Some(ip) => self.source_ips.iter().any(|net| net.contains(ip)),
                    // Unknown source: a DENY for some networks still applies (fail closed);
                    // an ALLOW for some networks does not.
                    None => self.decision == Decision::Deny,
                })
    }
}

/// A subject's access control list: at most one entry per resource pattern and source
/// networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub subject: Subject,
    pub entries: Vec<PolicyEntry>,
}

impl Acl {
    /// Adds `entries`, each replacing the entry of the same resource pattern and source
    /// networks (RocketMQ's create and update both merge this way). Entries of one resource
    /// with different source networks live side by side: an ALLOW from anywhere and a DENY
    /// from `10.0.0.0/8` are equally specific, and for a client in that network the DENY wins.
    pub fn merge(&mut self, entries: Vec<PolicyEntry>) -> Result<(), AuthValueError> {
        for mut entry in entries {
            // One order for the same networks, so they name the same entry.
            entry.source_ips.sort_by_key(ToString::to_string);
            entry.source_ips.dedup();
            match self
                .entries
                .iter_mut()
                .find(|e| e.resource == entry.resource && e.source_ips == entry.source_ips)
            {
                Some(existing) => *existing = entry,
                None => self.entries.push(entry),
            }
        }
        if self.entries.len() > MAX_ACL_ENTRIES {
            return Err(invalid(format!(
                "an ACL holds at most {MAX_ACL_ENTRIES} entries"
            )));
        }
        self.entries.sort_by(|a, b| {
            a.resource
                .cmp(&b.resource)
                .then_with(|| a.source_ips.len().cmp(&b.source_ips.len()))
        });
        Ok(())
    }
}

/// One thing a request needs: `action` on `resource`, or, when several actions are listed,
/// any one of them (a route query needs PUB or SUB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub resource: Resource,
    pub actions: Vec<Action>,
}

impl Access {
    pub fn new(resource: Resource, action: Action) -> Self {
        Self {
            resource,
            actions: vec![action],
        }
    }

    pub fn any_of(resource: Resource, actions: &[Action]) -> Self {
        Self {
            resource,
            actions: actions.to_vec(),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<String> = self.actions.iter().map(Action::to_string).collect();
        write!(f, "{} on {}", actions.join("|"), self.resource)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("user {user} has no policy that allows {access}")]
    NoPolicy { user: UserName, access: String },
    #[error("user {user} is denied {access} by its policy on {pattern}")]
    DeniedBy {
        user: UserName,
        access: String,
        pattern: String,
    },
}

/// Decides whether `user` (with its ACL, if it has one) may do every access in `needs`, from
/// `source` (the client's address, when known).
pub fn authorize(
    user: &User,
    acl: Option<&Acl>,
    needs: &[Access],
    source: Option<IpAddr>,
) -> Result<(), Denied> {
    if user.user_type == UserType::Super {
        return Ok(());
    }
    for need in needs {
        let allowed = need.actions.iter().any(|&action| {
            decide(acl, &need.resource, action, source)
                .is_some_and(|entry| entry.decision == Decision::Allow)
        });
        if allowed {
            continue;
        }
        let deciding = need
            .actions
            .iter()
            .find_map(|&action| decide(acl, &need.resource, action, source));
        return Err(match deciding {
            Some(entry) => Denied::DeniedBy {
                user: user.name.clone(),
                access: need.to_string(),
                pattern: entry.resource.to_string(),
            },
            None => Denied::NoPolicy {
                user: user.name.clone(),
                access: need.to_string(),
            },
        });
    }
    Ok(())
}

/// The entry that decides `action` on `resource`: the most specific matching one, DENY first
/// among equals.
fn decide<'a>(
    acl: Option<&'a Acl>,
    resource: &Resource,
    action: Action,
    source: Option<IpAddr>,
) -> Option<&'a PolicyEntry> {
    acl?.entries
        .iter()
        .filter(|entry| entry.applies(resource, action, source))
        .min_by_key(|entry| {
            (
                entry.resource.specificity(),
                u8::from(entry.decision == Decision::Allow),
            )
        })
}

#[cfg(test)]
mod tests;
