//! The SDK's error type: business statuses from the server, transport failures, local
//! validation, timeouts and shutdown, each classified as retryable or not.

use std::time::Duration;

use vela_proto::pb::rocketmq::{Code, Status};

/// Everything a Vela/RocketMQ client call can fail with. New kinds may be added: match with a
/// wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a business status other than OK (gRPC itself succeeded).
    #[error("{rpc} rejected by the server: {code_name} ({code}): {message}")]
    Status {
        rpc: &'static str,
        code: i32,
        code_name: String,
        message: String,
    },
    /// The gRPC call itself failed (connection refused, reset, server-side gRPC error).
    #[error("{rpc} to {endpoint} failed: {source}")]
    Transport {
        rpc: &'static str,
        endpoint: String,
        #[source]
        source: Box<tonic::Status>,
    },
    /// A caller-supplied value is invalid; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call did not complete within its deadline.
    #[error("{rpc} to {endpoint} timed out after {timeout:?}")]
    Timeout {
        rpc: &'static str,
        endpoint: String,
        timeout: Duration,
    },
    /// The server's reply broke the protocol (missing status, missing entries, ...).
    #[error("malformed {rpc} response: {reason}")]
    InvalidResponse { rpc: &'static str, reason: String },
    /// The client was shut down.
    #[error("client is shut down")]
    Shutdown,
    /// A [`Requester::request`](crate::Requester::request) got no reply in time.
    #[error("no reply to request {correlation_id} within {timeout:?}")]
    NoReply {
        correlation_id: String,
        timeout: Duration,
    },
}

/// Shorthand used throughout the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error again, for each of several operations one failure ended (the error
    /// holds a `tonic::Status`, which is not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Status {
                rpc,
                code,
                code_name,
                message,
            } => Error::Status {
                rpc,
                code: *code,
                code_name: code_name.clone(),
                message: message.clone(),
            },
            Error::Transport {
                rpc,
                endpoint,
                source,
            } => Error::Transport {
                rpc,
                endpoint: endpoint.clone(),
                source: Box::new(tonic::Status::new(source.code(), source.message())),
            },
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::Timeout {
                rpc,
                endpoint,
                timeout,
            } => Error::Timeout {
                rpc,
                endpoint: endpoint.clone(),
                timeout: *timeout,
            },
            Error::InvalidResponse { rpc, reason } => Error::InvalidResponse {
                rpc,
                reason: reason.clone(),
            },
            Error::Shutdown => Error::Shutdown,
            Error::NoReply {
                correlation_id,
                timeout,
            } => Error::NoReply {
                correlation_id: correlation_id.clone(),
                timeout: *timeout,
            },
        }
    }

    /// Builds an [`Error::Status`] from a server status (its name resolved from the `Code` enum).
    pub(crate) fn from_status(rpc: &'static str, status: &Status) -> Self {
        Error::Status {
            rpc,
            code: status.code,
            code_name: code_name(status.code),
            message: status.message.clone(),
        }
    }

    /// Maps a gRPC failure; a gRPC `DEADLINE_EXCEEDED` becomes [`Error::Timeout`].
    pub(crate) fn from_grpc(
        rpc: &'static str,
        endpoint: &str,
        timeout: Duration,
        status: tonic::Status,
    ) -> Self {
        if status.code() == tonic::Code::DeadlineExceeded || is_local_timeout(&status) {
            return Error::Timeout {
                rpc,
                endpoint: endpoint.to_owned(),
                timeout,
            };
        }
        Error::Transport {
            rpc,
            endpoint: endpoint.to_owned(),
            source: Box::new(status),
        }
    }

    pub(crate) fn invalid_response(rpc: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidResponse {
            rpc,
            reason: reason.into(),
        }
    }

    /// The server's business code, if this is a [`Error::Status`].
    pub fn status_code(&self) -> Option<i32> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's business code as the protocol names it, if this is an [`Error::Status`]
    /// with a code this SDK knows (see [`status_code`](Self::status_code) for the raw value).
    ///
    /// ```
    /// # fn handle(err: vela_sdk::Error) {
    /// use vela_sdk::StatusCode;
    /// match err.code() {
    ///     Some(StatusCode::TopicNotFound) => eprintln!("create the topic first"),
    ///     Some(StatusCode::IllegalFilterExpression) => eprintln!("fix the filter: {err}"),
    ///     _ => eprintln!("{err}"),
    /// }
    /// # }
    /// ```
    pub fn code(&self) -> Option<Code> {
        self.status_code().and_then(|c| Code::try_from(c).ok())
    }

    fn has_code(&self, codes: &[Code]) -> bool {
        self.status_code()
            .is_some_and(|c| codes.iter().any(|k| *k as i32 == c))
    }

    /// `NOT_FOUND`, `MESSAGE_NOT_FOUND`, `TOPIC_NOT_FOUND` or `CONSUMER_GROUP_NOT_FOUND`.
    pub fn is_not_found(&self) -> bool {
        self.has_code(&[
            Code::NotFound,
            Code::MessageNotFound,
            Code::TopicNotFound,
            Code::ConsumerGroupNotFound,
        ])
    }

    /// The server is throttling (`TOO_MANY_REQUESTS`).
    pub fn is_too_many_requests(&self) -> bool {
        self.has_code(&[Code::TooManyRequests])
    }

    /// The credentials were missing or wrong, or the action is not allowed.
    pub fn is_unauthorized(&self) -> bool {
        self.has_code(&[Code::Unauthorized, Code::Forbidden])
    }

    /// The request was rejected as malformed (`BAD_REQUEST` family 40000-40020).
    pub fn is_bad_request(&self) -> bool {
        self.status_code()
            .is_some_and(|c| (40000..40100).contains(&c))
    }

    /// The receipt handle is unknown or expired (the message became visible again).
    pub fn is_invalid_receipt_handle(&self) -> bool {
        self.has_code(&[Code::InvalidReceiptHandle])
    }

    /// Whether repeating the same call may succeed: transport failures, timeouts, the server's
    /// internal-error and server-timeout families, and throttling (after a back-off).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { code, .. } => is_retryable_code(*code),
            Error::Transport { source, .. } => !matches!(
                source.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::Unimplemented
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::OutOfRange
            ),
            Error::Timeout { .. } => true,
            // The request was delivered; sending it again would make a second one.
            Error::InvalidArgument(_)
            | Error::InvalidResponse { .. }
            | Error::Shutdown
            | Error::NoReply { .. } => false,
        }
    }
}

/// tonic enforces the request's deadline itself and reports it as CANCELLED caused by
/// `TimeoutExpired`.
fn is_local_timeout(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn is_retryable_code(code: i32) -> bool {
    [
        Code::TooManyRequests,
        Code::InternalError,
        Code::InternalServerError,
        Code::HaNotAvailable,
        Code::ProxyTimeout,
        Code::MasterPersistenceTimeout,
        Code::SlavePersistenceTimeout,
        Code::RequestTimeout,
    ]
    .iter()
    .any(|k| *k as i32 == code)
}

/// The `Code` enum name of `code`, or `UNKNOWN(<code>)` for values this proto revision lacks.
pub(crate) fn code_name(code: i32) -> String {
    Code::try_from(code)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({code})"))
}

/// Checks a unary response's top-level status: OK passes; `also_ok` lists extra codes the
/// caller treats as success (e.g. `MULTIPLE_RESULTS`); a missing status is a protocol error.
pub(crate) fn check_status(
    rpc: &'static str,
    status: Option<&Status>,
    also_ok: &[Code],
) -> Result<()> {
    let status = status.ok_or_else(|| Error::invalid_response(rpc, "no status in the reply"))?;
    if status.code == Code::Ok as i32 || also_ok.iter().any(|c| *c as i32 == status.code) {
        Ok(())
    } else {
        Err(Error::from_status(rpc, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> Error {
        Error::from_status(
            "SendMessage",
            &Status {
                code: code as i32,
                message: "m".into(),
            },
        )
    }

    #[test]
    fn classifies_business_statuses() {
        assert!(status(Code::TooManyRequests).is_retryable());
        assert!(status(Code::InternalError).is_retryable());
        assert!(!status(Code::BadRequest).is_retryable());
        assert!(status(Code::IllegalTopic).is_bad_request());
        assert!(status(Code::TopicNotFound).is_not_found());
        assert!(!status(Code::TopicNotFound).is_retryable());
        assert!(status(Code::Unauthorized).is_unauthorized());
        assert_eq!(
            status(Code::IllegalFilterExpression).code(),
            Some(Code::IllegalFilterExpression)
        );
        let unknown = Error::from_status(
            "SendMessage",
            &Status {
                code: 12345,
                message: "m".into(),
            },
        );
        assert_eq!((unknown.code(), unknown.status_code()), (None, Some(12345)));
        assert_eq!(Error::Shutdown.code(), None);
    }

    #[test]
    fn message_names_the_code() {
        let e = status(Code::MessageBodyTooLarge);
        assert_eq!(
            e.to_string(),
            "SendMessage rejected by the server: MESSAGE_BODY_TOO_LARGE (41301): m"
        );
        assert_eq!(code_name(12345), "UNKNOWN(12345)");
    }

    #[test]
    fn grpc_deadline_is_a_timeout() {
        let e = Error::from_grpc(
            "AckMessage",
            "h:1",
            Duration::from_secs(3),
            tonic::Status::deadline_exceeded("late"),
        );
        assert!(matches!(e, Error::Timeout { .. }));
        assert!(e.is_retryable());
        let e = Error::from_grpc(
            "AckMessage",
            "h:1",
            Duration::from_secs(3),
            tonic::Status::unimplemented("no"),
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn missing_status_is_a_protocol_error() {
        assert!(matches!(
            check_status("Heartbeat", None, &[]),
            Err(Error::InvalidResponse { .. })
        ));
        let multi = Status {
            code: Code::MultipleResults as i32,
            message: String::new(),
        };
        assert!(check_status("SendMessage", Some(&multi), &[Code::MultipleResults]).is_ok());
        assert!(check_status("SendMessage", Some(&multi), &[]).is_err());
    }
}
