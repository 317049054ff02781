//! The identity a RocketMQ client sends in `x-mq-client-id`, validated once at the proxy. The
//! store keys send deduplication by (client id, message id): message ids alone can collide
//! (a Node client in a container with a zero MAC address and PID 1 generates the same ids as
//! its twin), a client's own retries of one message cannot.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest client id accepted, in bytes. The official clients send `host@pid#...` ids of a few
/// dozen bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// Why a client id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error("client id is empty")]
    Empty,
    #[error("client id is {len} bytes, longer than {MAX_CLIENT_ID_LEN}")]
    TooLong { len: usize },
    #[error("client id {0:?} holds control characters")]
    ControlChars(String),
}

/// A validated client id: 1 to [`MAX_CLIENT_ID_LEN`] bytes without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn new(id: impl AsRef<str>) -> Result<Self, ClientIdError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if id.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientIdError::TooLong { len: id.len() });
        }
        if id.chars().any(char::is_control) {
            return Err(ClientIdError::ControlChars(id.to_owned()));
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = ClientIdError;
    fn try_from(s: String) -> Result<Self, ClientIdError> {
        Self::new(s)
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_client_ids_are_accepted() {
        for id in [
            "vm-7@4242#1722#ab12cd",
            "LAPTOP@1#0",
            "10.0.0.7@1@0@3e8a",
            "höst@1",
        ] {
            assert_eq!(ClientId::new(id).map(|c| c.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn empty_long_and_control_ids_are_refused() {
        assert_eq!(ClientId::new(""), Err(ClientIdError::Empty));
        assert_eq!(
            ClientId::new("x".repeat(MAX_CLIENT_ID_LEN + 1)),
            Err(ClientIdError::TooLong {
                len: MAX_CLIENT_ID_LEN + 1
            })
        );
        assert!(ClientId::new("x".repeat(MAX_CLIENT_ID_LEN)).is_ok());
        assert!(matches!(
            ClientId::new("a\nb"),
            Err(ClientIdError::ControlChars(_))
        ));
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<ClientId>("\"\"").is_err());
        let id: ClientId = serde_json::from_str("\"a@1\"").expect("valid id");
        assert_eq!(id.as_str(), "a@1");
    }
}
