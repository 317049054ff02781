//! Authentication and authorization of client and admin requests (ADR 0019).
//!
//! With `auth.enabled`, every request must carry an `MQv2-HMAC-SHA1` signature of a user the
//! controller knows ([`signature`]), made within `auth.signature_window` of the proxy's clock,
//! and the user's ACL must allow what the request needs ([`needs`], decided by
//! [`vela_proto::auth::authorize`]). Users and ACLs come from the controller ([`directory`]):
//! a change reaches every proxy within about two seconds.

mod directory;
pub(crate) mod needs;
pub(crate) mod signature;
mod verified;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use vela_proto::ControllerApi;
use vela_proto::auth::{Access, UserName, UserStatus, authorize};
use vela_proto::clock::SharedClock;
use vela_proto::pb::rocketmq::Code;

use crate::headers::RequestMeta;
use crate::status::RpcError;

/// The `[auth]` section (`VELA_AUTH__…`).
#[derive(Deserialize, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Authenticate and authorize every client and admin request.
    pub enabled: bool,
    /// A SUPER user created at start when it does not exist yet (with `init_password`).
    pub init_user: Option<String>,
    /// The initial user's password. Never logged.
    pub init_password: Option<String>,
    /// How far a request's signed time may be from the proxy's clock, either way.
    #[serde(with = "humantime_serde")]
    pub signature_window: Duration,
    /// Accept the Python client's signatures of its local time labelled as UTC (any whole
    /// quarter-hour zone offset up to ±14 h, plus the window). The language header is not
    /// signed, so this widens the replay window of every captured compact-date header to
    /// about a day (ADR 0019). Turn it off where no Python client runs outside UTC.
    pub python_local_time: bool,
    /// The key that seals user passwords in the controller's metadata. Default:
    /// `<data_dir>/controller/metadata.key`, created on first start. Every controller of a
    /// cluster needs the same file.
    pub metadata_key_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            init_user: None,
            init_password: None,
            signature_window: Duration::from_secs(15 * 60),
            python_local_time: true,
            metadata_key_file: None,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("init_user", &self.init_user)
            .field("init_password", &self.init_password.as_ref().map(|_| "***"))
            .field("signature_window", &self.signature_window)
            .field("python_local_time", &self.python_local_time)
            .field("metadata_key_file", &self.metadata_key_file)
            .finish()
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No valid signature of a known, enabled user (40100, `UNAUTHENTICATED`).
    Unauthenticated(String),
    /// A known user whose ACL does not allow it (40300, `PERMISSION_DENIED`).
    Forbidden(String),
    /// Users could not be fetched from the controller.
    Unavailable(String),
}

impl From<AuthFailure> for RpcError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Unauthenticated(m) => RpcError::new(Code::Unauthorized, m),
            AuthFailure::Forbidden(m) => RpcError::new(Code::Forbidden, m),
            AuthFailure::Unavailable(m) => RpcError::new(Code::HaNotAvailable, m),
        }
    }
}

impl From<AuthFailure> for tonic::Status {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            AuthFailure::Forbidden(m) => tonic::Status::permission_denied(m),
            AuthFailure::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

/// Checks requests against the users and ACLs of the controller.
pub(crate) struct Guard {
    enabled: bool,
    window_ms: i64,
    python_local_time: bool,
    clock: SharedClock,
    directory: directory::Directory,
    /// Signatures verified before, so a repeated header costs no HMAC.
    verified: verified::VerifiedSignatures,
    /// Counts each decision for `vela_auth_decisions_total`.
    decisions: Arc<crate::metrics::AuthDecisions>,
}

impl Guard {
    pub fn new(
        config: &AuthConfig,
        controller: Arc<dyn ControllerApi>,
        clock: SharedClock,
        decisions: Arc<crate::metrics::AuthDecisions>,
    ) -> Self {
        Self {
            decisions,
            enabled: config.enabled,
            window_ms: i64::try_from(config.signature_window.as_millis()).unwrap_or(i64::MAX),
            python_local_time: config.python_local_time,
            clock,
            directory: directory::Directory::new(controller),
            verified: verified::VerifiedSignatures::default(),
        }
    }

    /// Whether requests are checked at all (callers skip working out what they need when not).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Lets the request through when auth is off, or when it is signed by an enabled user
    /// whose ACL allows every access in `needs`. Answers the user's name (`None` with auth off).
    pub async fn check(
        &self,
        meta: &RequestMeta,
        needs: &[Access],
    ) -> Result<Option<UserName>, AuthFailure> {
        self.check_as(meta, needs, false).await
    }

    /// As [`check`](Self::check), for what only SUPER users may do.
    pub async fn check_super(&self, meta: &RequestMeta) -> Result<Option<UserName>, AuthFailure> {
        self.check_as(meta, &[], true).await
    }

    async fn check_as(
        &self,
        meta: &RequestMeta,
        needs: &[Access],
        super_only: bool,
    ) -> Result<Option<UserName>, AuthFailure> {
        if !self.enabled {
            return Ok(None);
        }
        let decided = match self.verified_signature(meta) {
            Ok(signed) => {
                let claim = SignedClaim {
                    signed,
                    header: meta.authorization.as_deref().unwrap_or_default(),
                    verified: &self.verified,
                };
                self.decide(&claim, meta, needs, super_only).await
            }
            Err(failure) => Err(failure),
        };
        self.decisions.count(&decided);
        decided
    }

    /// Re-authorizes a user authenticated earlier on the same stream (a Telemetry stream's
    /// Settings): the user must still exist and be enabled and its ACL must allow `needs`; the
    /// signature's age is not looked at again.
    pub async fn check_user(
        &self,
        user: &UserName,
        meta: &RequestMeta,
        needs: &[Access],
    ) -> Result<(), AuthFailure> {
        if !self.enabled {
            return Ok(());
        }
        let decided = self.decide(user.as_str(), meta, needs, false).await;
        self.decisions.count(&decided);
        decided.map(|_| ())
    }

    /// The access key of a well-formed, fresh signature (checked against the user's secret
    /// in [`decide`](Self::decide)).
    fn verified_signature(&self, meta: &RequestMeta) -> Result<signature::Signed, AuthFailure> {
        let unauthenticated = |m: String| AuthFailure::Unauthenticated(m);
        let header = meta.authorization.as_deref().ok_or_else(|| {
            unauthenticated(
                "no authorization header: configure the client with an access key and a secret key"
                    .into(),
            )
        })?;
        let parsed =
            signature::parse_authorization(header).map_err(|e| unauthenticated(e.to_string()))?;
        let date = meta.date_time.as_deref().ok_or_else(|| {
            unauthenticated("no x-mq-date-time header to verify the signature of".into())
        })?;
        let signed_ms =
            signature::parse_date_time(date).map_err(|e| unauthenticated(e.to_string()))?;
        // Python's local time labelled as UTC: only in Python's own (compact) date format, and
        // only while `auth.python_local_time` allows it (ADR 0019).
        let zone_skew = self.python_local_time && meta.signs_local_time && is_compact(date);
        signature::check_freshness(signed_ms, self.clock.now_ms(), self.window_ms, zone_skew)
            .map_err(|e| unauthenticated(e.to_string()))?;
        Ok(signature::Signed {
            access_key: parsed.access_key,
            signature: parsed.signature,
            date: date.to_owned(),
        })
    }

    /// Looks the user up, checks the signature (when there is one) and its status, then its
    /// rights. Unknown users and wrong secrets get the same answer, so user names cannot be
    /// probed; the log says which.
    async fn decide(
        &self,
        access_key: &(impl signature::Claim + ?Sized),
        meta: &RequestMeta,
        needs: &[Access],
        super_only: bool,
    ) -> Result<Option<UserName>, AuthFailure> {
        let name = access_key.access_key();
        let loaded = self.directory.knowing(name).await?;
        let not_valid = || {
            AuthFailure::Unauthenticated(format!(
                "access key {name:?}: the signature does not match a known user's secret key"
            ))
        };
        let Some(user) = loaded.users.get(name) else {
            tracing::debug!(access_key = name, "unknown access key");
            return Err(not_valid());
        };
        if !access_key.matches(user.password.expose()) {
            tracing::debug!(access_key = name, "signature does not match");
            return Err(not_valid());
        }
        if user.status == UserStatus::Disabled {
            return Err(AuthFailure::Unauthenticated(format!(
                "user {} is disabled",
                user.name
            )));
        }
        if super_only && user.user_type != vela_proto::auth::UserType::Super {
            return Err(AuthFailure::Forbidden(format!(
                "only SUPER users manage users and ACLs; {} is a NORMAL user",
                user.name
            )));
        }
        authorize(user, loaded.acls.get(&user.name), needs, meta.peer)
            .map_err(|denied| AuthFailure::Forbidden(denied.to_string()))?;
        Ok(Some(user.name.clone()))
    }

    /// Drops what was fetched, so the next request fetches again: called after this proxy
    /// changed users or ACLs, so its own answers never lag its own changes.
    pub fn invalidate(&self) {
        self.directory.invalidate();
    }
}

/// A fresh signature and the header it came in, checked through the cache of verified ones.
struct SignedClaim<'a> {
    signed: signature::Signed,
    header: &'a str,
    verified: &'a verified::VerifiedSignatures,
}

impl signature::Claim for SignedClaim<'_> {
    fn access_key(&self) -> &str {
        &self.signed.access_key
    }

    fn matches(&self, secret: &str) -> bool {
        self.verified.matches(self.header, &self.signed, secret)
    }
}

/// Whether `date` is in the compact `yyyyMMddTHHmmssZ` form Python (and Node) send.
fn is_compact(date: &str) -> bool {
    date.len() == 16 && date.as_bytes().get(8) == Some(&b'T') && date.ends_with('Z')
}

/// Who asks for a topic or group that may be auto-created: with auth on, creating it needs
/// CREATE on it (checked only when it is about to be created, so lookups of existing ones
/// cost nothing).
#[derive(Clone, Copy)]
pub(crate) struct Creator<'a> {
    asker: Option<(&'a Guard, &'a RequestMeta)>,
}

impl<'a> Creator<'a> {
    /// The client behind `meta`.
    pub fn new(guard: &'a Guard, meta: &'a RequestMeta) -> Self {
        Self {
            asker: Some((guard, meta)),
        }
    }

    /// Internal work that creates nothing on a client's behalf (and tests).
    #[cfg(test)]
    pub fn internal() -> Self {
        Self { asker: None }
    }

    /// `FORBIDDEN` unless the asker may create `resource`.
    pub async fn may_create(&self, resource: vela_proto::auth::Resource) -> Result<(), RpcError> {
        let Some((guard, meta)) = self.asker else {
            return Ok(());
        };
        let need = Access::new(resource, vela_proto::auth::Action::Create);
        guard
            .check(meta, std::slice::from_ref(&need))
            .await
            .map(|_| ())
            .map_err(|denied| match denied {
                AuthFailure::Forbidden(m) => RpcError::new(
                    Code::Forbidden,
                    format!("{m} (auto-creation needs CREATE on it)"),
                ),
                other => other.into(),
            })
    }
}
