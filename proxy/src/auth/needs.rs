//! What each request needs, as RocketMQ maps requests to resources and actions
//! (`rocketmq-facts.md` §7): sends and transaction ends publish to the topic; receives, acks,
//! dead-lettering, assignments and offsets subscribe to the topic and the group; invisibility
//! changes, consumer heartbeats and terminations subscribe to the group; a route query needs
//! either on the topic. Names are matched with their namespace folded in (`ns%name`).

use vela_proto::auth::{Access, Action, Resource};
use vela_proto::pb::rocketmq as pb;

/// The full name of a resource as the rest of the proxy folds it (`ns%name`; the header's
/// namespace when the resource has none).
fn full_name(resource: &pb::Resource, header_namespace: &str) -> String {
    let namespace = if resource.resource_namespace.is_empty() {
        header_namespace
    } else {
        &resource.resource_namespace
    };
    if namespace.is_empty() || resource.name.starts_with(&format!("{namespace}%")) {
        resource.name.clone()
    } else {
        format!("{namespace}%{}", resource.name)
    }
}

fn topic(resource: Option<&pb::Resource>, ns: &str, action: Action) -> Option<Access> {
    resource.map(|r| Access::new(Resource::topic(full_name(r, ns)), action))
}

fn group(resource: Option<&pb::Resource>, ns: &str, action: Action) -> Option<Access> {
    resource
        .filter(|r| !r.name.is_empty())
        .map(|r| Access::new(Resource::group(full_name(r, ns)), action))
}

/// What a request needs of its user's ACL. `ns`: the `x-mq-namespace` header.
pub(crate) trait Needs {
    fn needs(&self, ns: &str) -> Vec<Access>;
}

impl Needs for pb::QueryRouteRequest {
    fn needs(&self, ns: &str) -> Vec<Access> {
        self.topic
            .iter()
            .map(|r| {
                Access::any_of(
                    Resource::topic(full_name(r, ns)),
                    &[Action::Pub, Action::Sub],
                )
            })
            .collect()
    }
}

impl Needs for pb::SendMessageRequest {
    fn needs(&self, ns: &str) -> Vec<Access> {
        let mut needs: Vec<Access> = self
            .messages
            .iter()
            .filter_map(|m| topic(m.topic.as_ref(), ns, Action::Pub))
            .collect();
        needs.dedup();
        needs
    }
}

impl Needs for pb::EndTransactionRequest {
    fn needs(&self, ns: &str) -> Vec<Access> {
        topic(self.topic.as_ref(), ns, Action::Pub)
            .into_iter()
            .collect()
    }
}

macro_rules! topic_and_group_sub {
    ($($req:ident),* $(,)?) => {$(
        impl Needs for pb::$req {
            fn needs(&self, ns: &str) -> Vec<Access> {
                topic(self.topic.as_ref(), ns, Action::Sub)
                    .into_iter()
                    .chain(group(self.group.as_ref(), ns, Action::Sub))
                    .collect()
            }
        }
    )*};
}

topic_and_group_sub!(
    QueryAssignmentRequest,
    AckMessageRequest,
    ForwardMessageToDeadLetterQueueRequest,
);

macro_rules! queue_and_group_sub {
    ($($req:ident),* $(,)?) => {$(
        impl Needs for pb::$req {
            fn needs(&self, ns: &str) -> Vec<Access> {
                topic(
                    self.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                    ns,
                    Action::Sub,
                )
                .into_iter()
                .chain(group(self.group.as_ref(), ns, Action::Sub))
                .collect()
            }
        }
    )*};
}

queue_and_group_sub!(
    ReceiveMessageRequest,
    PullMessageRequest,
    UpdateOffsetRequest,
    GetOffsetRequest,
);

impl Needs for pb::QueryOffsetRequest {
    fn needs(&self, ns: &str) -> Vec<Access> {
        topic(
            self.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
            ns,
            Action::Sub,
        )
        .into_iter()
        .collect()
    }
}

macro_rules! group_sub {
    ($($req:ident),* $(,)?) => {$(
        impl Needs for pb::$req {
            fn needs(&self, ns: &str) -> Vec<Access> {
                group(self.group.as_ref(), ns, Action::Sub).into_iter().collect()
            }
        }
    )*};
}

group_sub!(
    ChangeInvisibleDurationRequest,
    NotifyClientTerminationRequest
);

impl Needs for pb::HeartbeatRequest {
    /// A consumer's heartbeat subscribes with its group; a producer's needs nothing.
    fn needs(&self, ns: &str) -> Vec<Access> {
        if self.client_type == pb::ClientType::Producer as i32 {
            return Vec::new();
        }
        group(self.group.as_ref(), ns, Action::Sub)
            .into_iter()
            .collect()
    }
}

impl Needs for pb::RecallMessageRequest {
    fn needs(&self, ns: &str) -> Vec<Access> {
        topic(self.topic.as_ref(), ns, Action::Pub)
            .into_iter()
            .collect()
    }
}

impl Needs for pb::SyncLiteSubscriptionRequest {
    fn needs(&self, _ns: &str) -> Vec<Access> {
        // Not implemented: answered NOT_IMPLEMENTED once the caller is authenticated.
        Vec::new()
    }
}

/// What a Telemetry `Settings` declares: a producer publishes to its topics; a consumer
/// subscribes with its group to its topics.
pub(crate) fn settings_needs(settings: &pb::Settings, ns: &str) -> Vec<Access> {
    match &settings.pub_sub {
        Some(pb::settings::PubSub::Publishing(p)) => p
            .topics
            .iter()
            .map(|t| Access::new(Resource::topic(full_name(t, ns)), Action::Pub))
            .collect(),
        Some(pb::settings::PubSub::Subscription(s)) => group(s.group.as_ref(), ns, Action::Sub)
            .into_iter()
            .chain(
                s.subscriptions
                    .iter()
                    .filter_map(|e| topic(e.topic.as_ref(), ns, Action::Sub)),
            )
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(ns: &str, name: &str) -> Option<pb::Resource> {
        Some(pb::Resource {
            resource_namespace: ns.into(),
            name: name.into(),
        })
    }

    #[test]
    fn requests_map_to_resources_and_actions_as_rocketmq_does() {
        let send = pb::SendMessageRequest {
            messages: vec![
                pb::Message {
                    topic: res("", "a"),
                    ..Default::default()
                },
                pb::Message {
                    topic: res("", "a"),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            send.needs(""),
            vec![Access::new(Resource::topic("a"), Action::Pub)]
        );
        let receive = pb::ReceiveMessageRequest {
            group: res("", "g"),
            message_queue: Some(pb::MessageQueue {
                topic: res("", "t"),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            receive.needs("ns"),
            vec![
                Access::new(Resource::topic("ns%t"), Action::Sub),
                Access::new(Resource::group("ns%g"), Action::Sub),
            ]
        );
        let route = pb::QueryRouteRequest {
            topic: res("tenant", "t"),
            endpoints: None,
        };
        assert_eq!(
            route.needs("other"),
            vec![Access::any_of(
                Resource::topic("tenant%t"),
                &[Action::Pub, Action::Sub]
            )]
        );
        let producer_heartbeat = pb::HeartbeatRequest {
            group: None,
            client_type: 1,
        };
        assert!(producer_heartbeat.needs("").is_empty());
        let producer_with_group = pb::HeartbeatRequest {
            group: res("", "g"),
            client_type: pb::ClientType::Producer as i32,
        };
        assert!(producer_with_group.needs("").is_empty());
        let delete = vela_proto::pb::admin::DeleteTopicRequest {
            name: " secret ".into(),
        };
        assert_eq!(
            AdminNeeds::needs(&delete),
            vec![Access::new(Resource::topic("secret"), Action::Delete)]
        );
        let clients_of = vela_proto::pb::admin::ListClientsRequest {
            group: " g ".into(),
        };
        assert_eq!(
            AdminNeeds::needs(&clients_of),
            vec![Access::new(Resource::group("g"), Action::Get)]
        );
        let every_client = vela_proto::pb::admin::ListClientsRequest::default();
        assert_eq!(
            AdminNeeds::needs(&every_client),
            vec![Access::new(Resource::cluster(), Action::Get)]
        );
        // Commands that run in users' processes are for SUPER users only.
        assert!(vela_proto::pb::admin::VerifyMessageRequest::default().super_only());
        assert!(vela_proto::pb::admin::ClientStackRequest::default().super_only());
        let change = pb::ChangeInvisibleDurationRequest {
            group: res("", "g"),
            topic: res("", "t"),
            ..Default::default()
        };
        assert_eq!(
            change.needs(""),
            vec![Access::new(Resource::group("g"), Action::Sub)]
        );
    }
}

/// What an admin request needs, as RocketMQ's admin processors are annotated (topic create ⇒
/// Topic:CREATE, describe ⇒ GET, list ⇒ LIST, …), so NORMAL users can be granted admin rights
/// narrowly. Users and ACLs are managed by SUPER users only ([`AdminNeeds::super_only`]):
/// a right to change ACLs is a right to everything.
pub(crate) trait AdminNeeds {
    fn needs(&self) -> Vec<Access>;
    /// What the call changes, for the audit log (`None`: it only reads).
    fn changes(&self) -> Option<String>;
    fn super_only(&self) -> bool {
        false
    }
}

/// The resource a list covers: only `Type:*` and `*` match an empty name.
fn every(kind: vela_proto::auth::ResourceType) -> Resource {
    Resource {
        kind,
        name: String::new(),
    }
}

mod admin_impls {
    use vela_proto::auth::{Access, Action, Resource, ResourceType};
    use vela_proto::pb::admin as api;
    use vela_proto::pb::auth as auth_pb;

    use super::{AdminNeeds, every};

    // Names are trimmed here exactly as the handlers trim them, so what is authorized is what
    // is touched (` secret` must not slip past a DENY on `Topic:secret`).

    macro_rules! admin_needs {
        ($($req:ident => |$r:ident| $needs:expr, $changes:expr;)*) => {$(
            impl AdminNeeds for api::$req {
                #[allow(unused_variables)]
                fn needs(&self) -> Vec<Access> {
                    let $r = self;
                    $needs
                }
                #[allow(unused_variables)]
                fn changes(&self) -> Option<String> {
                    let $r = self;
                    $changes
                }
            }
        )*};
    }

    admin_needs! {
        CreateTopicRequest => |r| vec![Access::new(Resource::topic(r.name.trim()), Action::Create)],
            Some(format!("create topic {}", r.name));
        DeleteTopicRequest => |r| vec![Access::new(Resource::topic(r.name.trim()), Action::Delete)],
            Some(format!("delete topic {}", r.name));
        UpdateTopicRequest => |r| vec![Access::new(Resource::topic(r.name.trim()), Action::Update)],
            Some(format!("update topic {}", r.name));
        ListTopicsRequest => |r| vec![Access::new(every(ResourceType::Topic), Action::List)], None;
        DescribeTopicRequest => |r| vec![Access::new(Resource::topic(r.name.trim()), Action::Get)], None;
        CreateGroupRequest => |r| vec![Access::new(Resource::group(r.name.trim()), Action::Create)],
            Some(format!("create group {}", r.name));
        DeleteGroupRequest => |r| vec![Access::new(Resource::group(r.name.trim()), Action::Delete)],
            Some(format!("delete group {}", r.name));
        UpdateGroupRequest => |r| vec![Access::new(Resource::group(r.name.trim()), Action::Update)],
            Some(format!("update group {}", r.name));
        ListGroupsRequest => |r| vec![Access::new(every(ResourceType::Group), Action::List)], None;
        DescribeGroupRequest => |r| vec![Access::new(Resource::group(r.name.trim()), Action::Get)], None;
        QueueStatsRequest => |r| {
            let mut needs = vec![Access::new(Resource::topic(r.topic.trim()), Action::Get)];
            if !r.group.trim().is_empty() {
                needs.push(Access::new(Resource::group(r.group.trim()), Action::Get));
            }
            needs
        }, None;
        ResetGroupRequest => |r| vec![
            Access::new(Resource::group(r.group.trim()), Action::Update),
            Access::new(Resource::topic(r.topic.trim()), Action::Get),
        ], Some(format!("reset group {} on topic {}", r.group, r.topic));
        LookupMessagesRequest => |r| vec![Access::new(
            match r.topic.trim() {
                "" => every(ResourceType::Topic),
                name => Resource::topic(name),
            },
            Action::Get,
        )], None;
        ClusterInfoRequest => |r| vec![Access::new(Resource::cluster(), Action::Get)], None;
        ClusterStatusRequest => |r| vec![Access::new(Resource::cluster(), Action::Get)], None;
        TierStatusRequest => |r| vec![Access::new(Resource::cluster(), Action::Get)], None;
        DrainStoreRequest => |r| vec![Access::new(Resource::cluster(), Action::Update)],
            Some(format!("drain store node {}", r.store));
        ListStoresRequest => |r| vec![Access::new(Resource::cluster(), Action::Get)], None;
        RemoveStoreRequest => |r| vec![Access::new(Resource::cluster(), Action::Update)],
            Some(format!("remove store node {}", r.store));
        UndrainStoreRequest => |r| vec![Access::new(Resource::cluster(), Action::Update)],
            Some(format!("undrain store node {}", r.store));
        ScaleStoresRequest => |r| vec![Access::new(Resource::cluster(), Action::Update)],
            Some(format!("scale the store nodes to {}", r.replicas));
        ListClientsRequest => |r| vec![match r.group.trim() {
            "" => Access::new(Resource::cluster(), Action::Get),
            group => Access::new(Resource::group(group), Action::Get),
        }], None;
    }

    macro_rules! super_only {
        ($($req:ty => |$r:ident| $changes:expr;)*) => {$(
            impl AdminNeeds for $req {
                fn needs(&self) -> Vec<Access> {
                    Vec::new()
                }
                #[allow(unused_variables)]
                fn changes(&self) -> Option<String> {
                    let $r = self;
                    $changes
                }
                fn super_only(&self) -> bool {
                    true
                }
            }
        )*};
    }

    super_only! {
        auth_pb::User => |r| Some(format!("create user {} ({})", r.name, r.user_type));
        auth_pb::UserUpdate => |r| Some(format!(
            "update user {}{}{}{}",
            r.name,
            if r.password.is_some() { " password" } else { "" },
            r.user_type.as_ref().map(|t| format!(" type={t}")).unwrap_or_default(),
            r.status.as_ref().map(|s| format!(" status={s}")).unwrap_or_default(),
        ));
        api::DeleteUserRequest => |r| Some(format!("delete user {}", r.name));
        api::ListUsersRequest => |r| None;
        auth_pb::PutAcl => |r| Some(format!(
            "{} ACL of {}",
            if r.create { "create" } else { "update" },
            r.acl.as_ref().map_or("", |a| a.subject.as_str()),
        ));
        auth_pb::DeleteAcl => |r| Some(format!(
            "delete ACL of {} ({})",
            r.subject,
            if r.resources.is_empty() { "all".to_owned() } else { r.resources.join(", ") },
        ));
        api::ListAclsRequest => |r| None;
        // Routes (ADR 0025): a route reads and writes with the server's rights.
        vela_proto::pb::route::RouteSpec => |r| Some(format!(
            "create route {} ({} to {} at {})",
            r.name,
            r.source_topic,
            r.target_topic,
            r.target.as_ref().map_or("", |t| t.address.as_str()),
        ));
        api::DeleteRouteRequest => |r| Some(format!("delete route {}", r.name));
        vela_proto::pb::route::SetRoutePaused => |r| Some(format!(
            "{} route {}",
            if r.paused { "pause" } else { "resume" },
            r.name,
        ));
        api::ListRoutesRequest => |r| None;
        api::DescribeRouteRequest => |r| None;
        // Receipt keys (ADR 0030).
        api::ListReceiptKeysRequest => |r| None;
        api::RotateReceiptKeyRequest => |r| Some("rotate receipt key".to_owned());
        api::RetireReceiptKeyRequest => |r| Some(format!(
            "retire receipt key {}{}",
            r.id,
            if r.force { " (forced)" } else { "" },
        ));
        // Tier credentials (issue 8): the secret is never in the audit line.
        api::SetTierCredentialsRequest => |r| Some(format!(
            "set tier credentials (access key id {})",
            r.access_key_id,
        ));
        api::ClearTierCredentialsRequest => |r| Some("clear tier credentials".to_owned());
        api::DescribeTierCredentialsRequest => |r| None;
        // Server-to-client commands run in the users' processes.
        api::VerifyMessageRequest => |r| Some(format!(
            "verify message {} of topic {} on client {}",
            r.message_id, r.topic, r.client_id,
        ));
        api::ClientStackRequest => |r| None;
    }
}
