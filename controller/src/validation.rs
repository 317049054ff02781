//! Checks and defaults applied to a caller's spec before it is proposed. They live on the proposing
//! side, not in apply: tightening a rule later must not change how an old log replays.

use vela_proto::{
    BROADCAST_MARKER, ControllerError, DEFAULT_MAX_ATTEMPTS, DLQ_PREFIX, GroupName, GroupSpec,
    GroupUpdate, MAX_BROADCAST_GROUP_LEN, TopicName, TopicSpec,
};

/// Prefix of the per-group retry topics the system creates (`%RETRY%<group>`).
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Most queues one topic may have.
pub const MAX_QUEUE_COUNT: u32 = 1024;
/// Most deliveries a group may allow per message.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;

/// Whether `name` belongs to the system (dead-letter and retry topics).
pub fn is_reserved_topic(name: &TopicName) -> bool {
    let name = name.as_str();
    name.starts_with(DLQ_PREFIX) || name.starts_with(RETRY_PREFIX)
}

/// Validates a topic spec; `allow_reserved` is true only for topics the system creates itself.
pub fn validate_topic_spec(spec: &TopicSpec, allow_reserved: bool) -> Result<(), ControllerError> {
    if !(1..=MAX_QUEUE_COUNT).contains(&spec.queue_count) {
        return Err(ControllerError::Invalid(format!(
            "topic {} queue_count {} is outside 1..={MAX_QUEUE_COUNT}",
            spec.name, spec.queue_count
        )));
    }
    let reserved = is_reserved_topic(&spec.name);
    if reserved && !allow_reserved {
        return Err(ControllerError::Invalid(format!(
            "topic name {} is reserved for the system ({DLQ_PREFIX} and {RETRY_PREFIX} prefixes)",
            spec.name
        )));
    }
    if !reserved && allow_reserved {
        return Err(ControllerError::Invalid(format!(
            "system topic {} must start with {DLQ_PREFIX} or {RETRY_PREFIX}",
            spec.name
        )));
    }
    Ok(())
}

/// Validates a group spec and fills in defaults (`max_attempts == 0` means the default).
pub fn resolve_group_spec(mut spec: GroupSpec) -> Result<GroupSpec, ControllerError> {
    if spec.max_attempts == 0 {
        spec.max_attempts = DEFAULT_MAX_ATTEMPTS;
    }
    if spec.max_attempts > MAX_ATTEMPTS_LIMIT {
        return Err(ControllerError::Invalid(format!(
            "group {} max_attempts {} is outside 1..={MAX_ATTEMPTS_LIMIT}",
            spec.name, spec.max_attempts
        )));
    }
    spec.retry
        .validate()
        .map_err(|e| ControllerError::Invalid(format!("group {}: {e}", spec.name)))?;
    if spec.name.is_broadcast_instance() {
        return Err(ControllerError::Invalid(format!(
            "group name {} holds {BROADCAST_MARKER}, which names broadcast groups' instances",
            spec.name
        )));
    }
    if spec.broadcast && spec.name.as_str().len() > MAX_BROADCAST_GROUP_LEN {
        return Err(ControllerError::Invalid(format!(
            "broadcast group name {} is longer than {MAX_BROADCAST_GROUP_LEN} characters",
            spec.name
        )));
    }
    Ok(spec)
}

/// Checks an update of group `name`: attempts within bounds, a valid back-off, something to
/// change.
pub fn validate_group_update(
    name: &GroupName,
    update: &GroupUpdate,
) -> Result<(), ControllerError> {
    if update.max_attempts.is_none() && update.retry.is_none() {
        return Err(ControllerError::Invalid(format!(
            "group {name}: the update changes nothing"
        )));
    }
    if let Some(attempts) = update.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&attempts)
    {
        return Err(ControllerError::Invalid(format!(
            "group {name} max_attempts {attempts} is outside 1..={MAX_ATTEMPTS_LIMIT}"
        )));
    }
    if let Some(retry) = &update.retry {
        retry
            .validate()
            .map_err(|e| ControllerError::Invalid(format!("group {name}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vela_proto::{GroupName, TopicType};

    use super::*;

    fn topic(name: &str, queue_count: u32) -> TopicSpec {
        TopicSpec {
            name: TopicName::new(name).expect("valid name"),
            topic_type: TopicType::Normal,
            queue_count,
            auto_created: false,
        }
    }

    fn group(max_attempts: u32) -> GroupSpec {
        GroupSpec {
            name: GroupName::new("billing").expect("valid name"),
            fifo: false,
            max_attempts,
            auto_created: false,
            start: vela_proto::GroupStart::Auto,
            retry: Default::default(),
            broadcast: false,
        }
    }

    #[test]
    fn queue_count_bounds() {
        assert!(matches!(
            validate_topic_spec(&topic("t", 0), false),
            Err(ControllerError::Invalid(_))
        ));
        assert!(validate_topic_spec(&topic("t", 1), false).is_ok());
        assert!(validate_topic_spec(&topic("t", 1024), false).is_ok());
        assert!(matches!(
            validate_topic_spec(&topic("t", 1025), false),
            Err(ControllerError::Invalid(_))
        ));
    }

    #[test]
    fn reserved_names_only_through_the_system_path() {
        for name in ["%DLQ%billing", "%RETRY%billing"] {
            let err = validate_topic_spec(&topic(name, 1), false);
            assert!(
                matches!(&err, Err(ControllerError::Invalid(msg)) if msg.contains("reserved")),
                "{name}: {err:?}"
            );
            assert!(validate_topic_spec(&topic(name, 1), true).is_ok());
        }
        // A name merely containing the prefix later on is a user topic.
        assert!(validate_topic_spec(&topic("ns%DLQ%x", 1), false).is_ok());
        assert!(validate_topic_spec(&topic("orders", 1), true).is_err());
    }

    #[test]
    fn max_attempts_defaults_and_bounds() {
        assert_eq!(
            resolve_group_spec(group(0)).map(|g| g.max_attempts),
            Ok(DEFAULT_MAX_ATTEMPTS)
        );
        assert_eq!(resolve_group_spec(group(1)).map(|g| g.max_attempts), Ok(1));
        assert_eq!(
            resolve_group_spec(group(1000)).map(|g| g.max_attempts),
            Ok(1000)
        );
        assert!(matches!(
            resolve_group_spec(group(1001)),
            Err(ControllerError::Invalid(_))
        ));
    }
}
