//! The one place errors become protocol codes: [`RpcError`] (a `Code` plus a readable message)
//! for the RocketMQ service, `tonic::Status` for the admin service, and the downgrade of codes
//! an old client cannot decode.

use tonic::Code as GrpcCode;
use vela_proto::pb::rocketmq::{self as pb, Code};
use vela_proto::receipt::ReceiptError;
use vela_proto::{ControllerError, FilterError, NameError, StoreError};

/// A business failure of one RPC (or one entry of it), sent to the client inside the
/// response `Status` with gRPC OK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub(crate) struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// The wire `Status` for this error, with the code downgraded for legacy clients.
    pub fn to_status(&self, legacy_codes: bool) -> pb::Status {
        pb::Status {
            code: wire_code(self.code, legacy_codes) as i32,
            message: self.message.clone(),
        }
    }
}

/// `Status{OK, "OK"}`.
pub(crate) fn ok_status() -> pb::Status {
    pb::Status {
        code: Code::Ok as i32,
        message: "OK".to_owned(),
    }
}

/// Rust client 5.0.0 decodes `Status.code` with `Code::from_i32(..).unwrap()` and panics on
/// the codes added after it was generated (protocol.md §8 item 1); send it the nearest older
/// code instead.
pub(crate) fn wire_code(code: Code, legacy_codes: bool) -> Code {
    if !legacy_codes {
        return code;
    }
    match code {
        Code::IllegalOffset | Code::IllegalLiteTopic | Code::MessageBodyEmpty => Code::BadRequest,
        Code::OffsetNotFound => Code::NotFound,
        Code::LiteTopicQuotaExceeded | Code::LiteSubscriptionQuotaExceeded => Code::TooManyRequests,
        other => other,
    }
}

/// The top-level code of a multi-entry response: OK if every entry is OK, the shared code if
/// all entries agree, else `MULTIPLE_RESULTS`.
pub(crate) fn aggregate_code(codes: impl IntoIterator<Item = Code>) -> Code {
    let mut codes = codes.into_iter();
    let Some(first) = codes.next() else {
        return Code::Ok;
    };
    if codes.all(|c| c == first) {
        first
    } else {
        Code::MultipleResults
    }
}

impl From<StoreError> for RpcError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::StaleReceipt(_) => Code::InvalidReceiptHandle,
            StoreError::TransactionNotFound(_) => Code::InvalidTransactionId,
            StoreError::QueueNotFound { .. } => Code::NotFound,
            // NOT_FOUND, not MESSAGE_NOT_FOUND: the official clients read that one as "nothing
            // to receive" and report success.
            StoreError::MessageNotFound(_) => Code::NotFound,
            StoreError::NotLeader { .. } | StoreError::Unavailable(_) => Code::HaNotAvailable,
            StoreError::Invalid(_) => Code::BadRequest,
            // A lost replica answers only the controller's opens; a client never sees it.
            StoreError::Internal(_) | StoreError::ReplicaLost(_) => Code::InternalServerError,
        };
        Self::new(code, err.to_string())
    }
}

impl From<ControllerError> for RpcError {
    fn from(err: ControllerError) -> Self {
        let code = match &err {
            ControllerError::AlreadyExists(_) | ControllerError::Invalid(_) => Code::BadRequest,
            ControllerError::NotFound(_) => Code::NotFound,
            ControllerError::Unavailable(_) | ControllerError::NotLeader { .. } => {
                Code::HaNotAvailable
            }
            ControllerError::Internal(_) => Code::InternalServerError,
            ControllerError::BeingDeleted(_) => Code::NotFound,
        };
        Self::new(code, err.to_string())
    }
}

impl From<ReceiptError> for RpcError {
    fn from(err: ReceiptError) -> Self {
        Self::new(Code::InvalidReceiptHandle, err.to_string())
    }
}

impl From<NameError> for RpcError {
    fn from(err: NameError) -> Self {
        let kind = match &err {
            NameError::Empty { kind }
            | NameError::TooLong { kind, .. }
            | NameError::BadChars { kind, .. } => *kind,
        };
        let code = if kind == "topic" {
            Code::IllegalTopic
        } else {
            Code::IllegalConsumerGroup
        };
        Self::new(code, err.to_string())
    }
}

impl From<FilterError> for RpcError {
    fn from(err: FilterError) -> Self {
        Self::new(Code::IllegalFilterExpression, err.to_string())
    }
}

/// Admin service: controller failures as gRPC statuses.
pub(crate) fn controller_to_grpc(err: ControllerError) -> tonic::Status {
    let code = match &err {
        ControllerError::AlreadyExists(_) => GrpcCode::AlreadyExists,
        ControllerError::NotFound(_) => GrpcCode::NotFound,
        ControllerError::Invalid(_) => GrpcCode::InvalidArgument,
        ControllerError::Unavailable(_) | ControllerError::NotLeader { .. } => {
            GrpcCode::Unavailable
        }
        ControllerError::Internal(_) => GrpcCode::Internal,
        ControllerError::BeingDeleted(_) => GrpcCode::FailedPrecondition,
    };
    tonic::Status::new(code, err.to_string())
}

/// Admin service: store failures as gRPC statuses.
pub(crate) fn store_to_grpc(err: StoreError) -> tonic::Status {
    let code = match &err {
        StoreError::QueueNotFound { .. }
        | StoreError::TransactionNotFound(_)
        | StoreError::MessageNotFound(_) => GrpcCode::NotFound,
        StoreError::NotLeader { .. } | StoreError::Unavailable(_) => GrpcCode::Unavailable,
        StoreError::Invalid(_) | StoreError::StaleReceipt(_) => GrpcCode::InvalidArgument,
        StoreError::Internal(_) => GrpcCode::Internal,
        StoreError::ReplicaLost(_) => GrpcCode::FailedPrecondition,
    };
    tonic::Status::new(code, err.to_string())
}

/// Admin service: a rejected name as `INVALID_ARGUMENT`.
pub(crate) fn name_to_grpc(err: NameError) -> tonic::Status {
    tonic::Status::invalid_argument(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_proto::{GroupName, TopicName};

    /// Every code the Rust 5.0.0 client knows (protocol.md §3.1, rows marked "yes").
    fn known_to_rust_5_0_0(code: Code) -> bool {
        !matches!(code as i32, 40019 | 40020 | 40404 | 41302 | 42901 | 42902)
    }

    #[test]
    fn legacy_clients_never_get_newer_codes() {
        for raw in 0..70_000 {
            let Ok(code) = Code::try_from(raw) else {
                continue;
            };
            let sent = wire_code(code, true);
            assert!(
                known_to_rust_5_0_0(sent),
                "{code:?} reaches a rust client as {sent:?}"
            );
            assert_eq!(
                wire_code(code, false),
                code,
                "modern clients get codes unchanged"
            );
        }
        assert_eq!(wire_code(Code::MessageBodyEmpty, true), Code::BadRequest);
        assert_eq!(wire_code(Code::OffsetNotFound, true), Code::NotFound);
        assert_eq!(
            wire_code(Code::LiteTopicQuotaExceeded, true),
            Code::TooManyRequests
        );
        assert_eq!(
            wire_code(Code::IllegalPollingTime, true),
            Code::IllegalPollingTime
        );
    }

    #[test]
    fn aggregation() {
        assert_eq!(aggregate_code([]), Code::Ok);
        assert_eq!(aggregate_code([Code::Ok, Code::Ok]), Code::Ok);
        assert_eq!(
            aggregate_code([Code::InvalidReceiptHandle, Code::InvalidReceiptHandle]),
            Code::InvalidReceiptHandle
        );
        assert_eq!(
            aggregate_code([Code::Ok, Code::BadRequest]),
            Code::MultipleResults
        );
    }

    #[test]
    fn errors_map_to_codes() {
        let stale: RpcError = StoreError::StaleReceipt("acked".into()).into();
        assert_eq!(stale.code, Code::InvalidReceiptHandle);
        let txn: RpcError = StoreError::TransactionNotFound("t1".into()).into();
        assert_eq!(txn.code, Code::InvalidTransactionId);
        let forged: RpcError = ReceiptError::Signature.into();
        assert_eq!(forged.code, Code::InvalidReceiptHandle);
        let topic: RpcError = TopicName::new("a b").expect_err("invalid").into();
        assert_eq!(topic.code, Code::IllegalTopic);
        let group: RpcError = GroupName::new("").expect_err("invalid").into();
        assert_eq!(group.code, Code::IllegalConsumerGroup);
        let down: RpcError = ControllerError::Unavailable("no leader".into()).into();
        assert_eq!(down.code, Code::HaNotAvailable);
        assert_eq!(
            controller_to_grpc(ControllerError::AlreadyExists("topic t".into())).code(),
            GrpcCode::AlreadyExists
        );
        assert_eq!(
            store_to_grpc(StoreError::Unavailable("x".into())).code(),
            GrpcCode::Unavailable
        );
    }

    #[test]
    fn status_carries_the_downgraded_code_and_message() {
        let err = RpcError::new(Code::MessageBodyEmpty, "message body is empty");
        assert_eq!(err.to_status(true).code, Code::BadRequest as i32);
        assert_eq!(err.to_status(false).code, Code::MessageBodyEmpty as i32);
        assert_eq!(err.to_status(false).message, "message body is empty");
    }
}
