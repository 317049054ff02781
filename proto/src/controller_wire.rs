//! `ControllerApi` values on the wire (`vela.controller.v1`): conversions between the domain
//! types and the generated messages (validated here, once), and between `ControllerError` and a
//! gRPC status whose details carry a `ControllerFailure`.

use prost::Message as _;
use tonic::{Code, Status};

use crate::controller_api::ControllerError;
#[cfg(test)]
use crate::domain::GroupStart;
use crate::domain::{GroupConfig, GroupSpec, TopicConfig, TopicSpec, TopicType};
use crate::pb::controller as pb;
use crate::store_wire::WireError;

fn type_to_wire(t: TopicType) -> pb::TopicType {
    match t {
        TopicType::Normal => pb::TopicType::Normal,
        TopicType::Fifo => pb::TopicType::Fifo,
        TopicType::Delay => pb::TopicType::Delay,
        TopicType::Transaction => pb::TopicType::Transaction,
        TopicType::Mixed => pb::TopicType::Mixed,
        TopicType::Priority => pb::TopicType::Priority,
    }
}

fn type_from_wire(t: i32) -> Result<TopicType, WireError> {
    match pb::TopicType::try_from(t) {
        Ok(pb::TopicType::Normal) => Ok(TopicType::Normal),
        Ok(pb::TopicType::Fifo) => Ok(TopicType::Fifo),
        Ok(pb::TopicType::Delay) => Ok(TopicType::Delay),
        Ok(pb::TopicType::Transaction) => Ok(TopicType::Transaction),
        Ok(pb::TopicType::Mixed) => Ok(TopicType::Mixed),
        Ok(pb::TopicType::Priority) => Ok(TopicType::Priority),
        _ => Err(WireError(format!("unknown topic type {t}"))),
    }
}

pub use crate::store_wire::{
    group_from_wire as group_name, group_start_from_wire, group_start_to_wire,
    topic_from_wire as topic_name,
};

pub fn topic_spec_to_wire(s: &TopicSpec) -> pb::TopicSpec {
    pb::TopicSpec {
        name: s.name.as_str().to_owned(),
        topic_type: type_to_wire(s.topic_type) as i32,
        queue_count: s.queue_count,
        auto_created: s.auto_created,
        replicas: None,
    }
}

pub fn topic_spec_from_wire(s: pb::TopicSpec) -> Result<TopicSpec, WireError> {
    Ok(TopicSpec {
        name: topic_name(&s.name)?,
        topic_type: type_from_wire(s.topic_type)?,
        queue_count: s.queue_count,
        auto_created: s.auto_created,
    })
}

pub fn topic_to_wire(t: &TopicConfig) -> pb::Topic {
    pb::Topic {
        name: t.name.as_str().to_owned(),
        topic_type: type_to_wire(t.topic_type) as i32,
        queue_count: t.queue_count,
        queue_shards: t.queue_shards.clone(),
        created_at_ms: t.created_at_ms,
        auto_created: t.auto_created,
        retention_ms: t.retention_ms,
        retention_revision: t.retention_revision,
    }
}

pub fn topic_from_wire(t: pb::Topic) -> Result<TopicConfig, WireError> {
    if t.queue_shards.len() != t.queue_count as usize {
        return Err(WireError(format!(
            "topic {} has {} queues but places {}",
            t.name,
            t.queue_count,
            t.queue_shards.len()
        )));
    }
    Ok(TopicConfig {
        name: topic_name(&t.name)?,
        topic_type: type_from_wire(t.topic_type)?,
        queue_count: t.queue_count,
        queue_shards: t.queue_shards,
        created_at_ms: t.created_at_ms,
        auto_created: t.auto_created,
        retention_ms: t.retention_ms,
        retention_revision: t.retention_revision,
    })
}

pub fn group_spec_to_wire(s: &GroupSpec) -> pb::GroupSpec {
    let (start, start_at_ms) = group_start_to_wire(s.start);
    pb::GroupSpec {
        name: s.name.as_str().to_owned(),
        fifo: s.fifo,
        max_attempts: s.max_attempts,
        auto_created: s.auto_created,
        start,
        start_at_ms,
        retry_backoff: crate::retry::to_wire(&s.retry),
        broadcast: s.broadcast,
    }
}

pub fn group_spec_from_wire(s: pb::GroupSpec) -> Result<GroupSpec, WireError> {
    Ok(GroupSpec {
        name: group_name(&s.name)?,
        fifo: s.fifo,
        max_attempts: s.max_attempts,
        auto_created: s.auto_created,
        start: group_start_from_wire(s.start, s.start_at_ms)?,
        retry: retry_from_wire(s.retry_backoff.as_ref())?,
        broadcast: s.broadcast,
    })
}

pub fn group_to_wire(g: &GroupConfig) -> pb::Group {
    let (start, start_at_ms) = group_start_to_wire(g.start);
    pb::Group {
        name: g.name.as_str().to_owned(),
        fifo: g.fifo,
        max_attempts: g.max_attempts,
        created_at_ms: g.created_at_ms,
        auto_created: g.auto_created,
        start,
        start_at_ms,
        retry_backoff: crate::retry::to_wire(&g.retry),
        broadcast: g.broadcast,
    }
}

pub fn group_from_wire(g: pb::Group) -> Result<GroupConfig, WireError> {
    Ok(GroupConfig {
        name: group_name(&g.name)?,
        fifo: g.fifo,
        max_attempts: g.max_attempts,
        created_at_ms: g.created_at_ms,
        auto_created: g.auto_created,
        start: group_start_from_wire(g.start, g.start_at_ms)?,
        retry: retry_from_wire(g.retry_backoff.as_ref())?,
        broadcast: g.broadcast,
    })
}

pub fn group_update_to_wire(name: &crate::GroupName, u: &crate::GroupUpdate) -> pb::GroupUpdate {
    pb::GroupUpdate {
        name: name.as_str().to_owned(),
        max_attempts: u.max_attempts,
        retry_backoff: u.retry.as_ref().and_then(crate::retry::to_wire),
        retry_standard: u.retry == Some(crate::retry::RetryBackoff::Standard),
    }
}

pub fn group_update_from_wire(
    u: pb::GroupUpdate,
) -> Result<(crate::GroupName, crate::GroupUpdate), WireError> {
    group_update_from_parts(
        &u.name,
        u.max_attempts,
        u.retry_backoff.as_ref(),
        u.retry_standard,
    )
}

/// A group update from the fields the admin and controller requests share: the back-off
/// becomes `retry` when set, the standard one with `retry_standard`, else stays.
pub fn group_update_from_parts(
    name: &str,
    max_attempts: Option<u32>,
    retry: Option<&crate::pb::group::RetryBackoff>,
    retry_standard: bool,
) -> Result<(crate::GroupName, crate::GroupUpdate), WireError> {
    let retry = match (retry, retry_standard) {
        (Some(_), true) => {
            return Err(WireError(
                "a group update sets either a retry back-off or the standard one".into(),
            ));
        }
        (Some(wire), false) => Some(retry_from_wire(Some(wire))?),
        (None, true) => Some(crate::retry::RetryBackoff::Standard),
        (None, false) => None,
    };
    Ok((
        group_name(name)?,
        crate::GroupUpdate {
            max_attempts,
            retry,
        },
    ))
}

fn retry_from_wire(
    wire: Option<&crate::pb::group::RetryBackoff>,
) -> Result<crate::retry::RetryBackoff, WireError> {
    crate::retry::from_wire(wire).map_err(|e| WireError(e.to_string()))
}

/// A store node as `ListStores` carries it.
pub fn store_node_to_wire(s: crate::controller_api::StoreNodeEntry) -> pb::StoreNodeInfo {
    pb::StoreNodeInfo {
        id: s.id,
        addr: s.addr,
        configured: s.configured,
        registered_ms: s.registered_ms,
        draining: s.draining,
        scaled_away: s.scaled_away,
        staying: s.staying,
    }
}

pub fn store_node_from_wire(s: pb::StoreNodeInfo) -> crate::controller_api::StoreNodeEntry {
    crate::controller_api::StoreNodeEntry {
        id: s.id,
        addr: s.addr,
        configured: s.configured,
        registered_ms: s.registered_ms,
        draining: s.draining,
        scaled_away: s.scaled_away,
        staying: s.staying,
    }
}

impl From<WireError> for ControllerError {
    fn from(e: WireError) -> Self {
        ControllerError::Internal(format!("a controller node sent an invalid reply: {}", e.0))
    }
}

/// The status a controller node answers a failed call with.
pub fn error_to_status(err: &ControllerError) -> Status {
    use pb::controller_failure::Kind;
    let (code, kind, detail, leader) = match err {
        ControllerError::AlreadyExists(d) => (Code::AlreadyExists, Kind::AlreadyExists, d, None),
        ControllerError::NotFound(d) => (Code::NotFound, Kind::NotFound, d, None),
        ControllerError::Invalid(d) => (Code::InvalidArgument, Kind::Invalid, d, None),
        ControllerError::Unavailable(d) => (Code::Unavailable, Kind::Unavailable, d, None),
        ControllerError::Internal(d) => (Code::Internal, Kind::Internal, d, None),
        ControllerError::BeingDeleted(d) => (Code::FailedPrecondition, Kind::BeingDeleted, d, None),
        ControllerError::NotLeader { leader } => {
            return Status::with_details(
                Code::Unavailable,
                err.to_string(),
                pb::ControllerFailure {
                    kind: Kind::NotLeader as i32,
                    detail: String::new(),
                    leader: *leader,
                }
                .encode_to_vec()
                .into(),
            );
        }
    };
    let failure = pb::ControllerFailure {
        kind: kind as i32,
        detail: detail.clone(),
        leader,
    };
    Status::with_details(code, err.to_string(), failure.encode_to_vec().into())
}

/// The `ControllerError` behind a status from a controller node; a status without our details
/// (the call never reached a controller) is `Unavailable` when retrying can help.
pub fn status_to_error(status: &Status) -> ControllerError {
    use pb::controller_failure::Kind;
    let failure = pb::ControllerFailure::decode(status.details()).unwrap_or_default();
    match Kind::try_from(failure.kind) {
        Ok(Kind::AlreadyExists) => ControllerError::AlreadyExists(failure.detail),
        Ok(Kind::NotFound) => ControllerError::NotFound(failure.detail),
        Ok(Kind::Invalid) => ControllerError::Invalid(failure.detail),
        Ok(Kind::Unavailable) => ControllerError::Unavailable(failure.detail),
        Ok(Kind::Internal) => ControllerError::Internal(failure.detail),
        Ok(Kind::BeingDeleted) => ControllerError::BeingDeleted(failure.detail),
        Ok(Kind::NotLeader) => ControllerError::NotLeader {
            leader: failure.leader,
        },
        _ => {
            let what = format!("controller node: {}: {}", status.code(), status.message());
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    ControllerError::Unavailable(what)
                }
                _ => ControllerError::Internal(what),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::{GroupName, TopicName};

    #[test]
    fn values_and_errors_survive_the_wire() {
        let topic = TopicConfig {
            name: TopicName::new("orders").unwrap(),
            topic_type: TopicType::Fifo,
            queue_count: 2,
            queue_shards: vec![0, 1],
            created_at_ms: 5,
            auto_created: true,
            retention_ms: None,
            retention_revision: 0,
        };
        assert_eq!(topic_from_wire(topic_to_wire(&topic)).unwrap(), topic);
        let group = GroupConfig {
            name: GroupName::new("billing").unwrap(),
            fifo: true,
            max_attempts: 3,
            created_at_ms: 7,
            auto_created: false,
            start: GroupStart::At(-3),
            retry: crate::retry::RetryBackoff::parse_exponential("1s,1m,2").unwrap(),
            broadcast: true,
        };
        assert_eq!(group_from_wire(group_to_wire(&group)).unwrap(), group);
        for start in [GroupStart::Auto, GroupStart::Earliest, GroupStart::Latest] {
            let spec = GroupSpec {
                name: GroupName::new("billing").unwrap(),
                fifo: false,
                max_attempts: 2,
                auto_created: true,
                start,
                retry: crate::retry::RetryBackoff::parse_delays("2s,4s").unwrap(),
                broadcast: start == GroupStart::Earliest,
            };
            assert_eq!(
                group_spec_from_wire(group_spec_to_wire(&spec)).unwrap(),
                spec
            );
        }
        let mut bad = group_to_wire(&group);
        bad.start = 9;
        assert!(group_from_wire(bad).is_err());
        let mut bad = group_to_wire(&group);
        bad.retry_backoff =
            crate::retry::to_wire(&crate::retry::RetryBackoff::Delays { delays_ms: vec![0] });
        assert!(group_from_wire(bad).is_err(), "a back-off out of bounds");
        let spec = TopicSpec {
            name: TopicName::new("orders").unwrap(),
            topic_type: TopicType::Mixed,
            queue_count: 8,
            auto_created: false,
        };
        assert_eq!(
            topic_spec_from_wire(topic_spec_to_wire(&spec)).unwrap(),
            spec
        );
        let mut bad = topic_to_wire(&topic);
        bad.queue_shards.pop();
        assert!(topic_from_wire(bad).is_err());
        let mut bad = topic_spec_to_wire(&spec);
        bad.topic_type = 0;
        assert!(topic_spec_from_wire(bad).is_err());
        for err in [
            ControllerError::AlreadyExists("topic orders".into()),
            ControllerError::NotFound("group billing".into()),
            ControllerError::Invalid("queue count 0".into()),
            ControllerError::Unavailable("election".into()),
            ControllerError::Internal("bug".into()),
            ControllerError::NotLeader { leader: Some(2) },
            ControllerError::NotLeader { leader: None },
        ] {
            assert_eq!(status_to_error(&error_to_status(&err)), err);
        }
        assert!(matches!(
            status_to_error(&Status::unavailable("refused")),
            ControllerError::Unavailable(_)
        ));
    }
}
