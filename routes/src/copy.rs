//! What a route writes for one source message: the same body, tag, keys, user properties,
//! message group and delivery time, plus where it came from. A message a route wrote is not
//! copied again.

use vela_proto::TopicName;
use vela_proto::route::{
    ORIGIN_CLUSTER_PROPERTY, ORIGIN_MESSAGE_ID_PROPERTY, ORIGIN_TOPIC_PROPERTY, ROUTE_PROPERTY,
    RouteSpec,
};
use vela_sdk::{Message, MessageView};

/// A message a route wrote (on this cluster or another) carries its origin: copying it again
/// would send it back where it came from when routes run both ways.
pub fn written_by_a_route(message: &MessageView) -> bool {
    message.properties.contains_key(ORIGIN_CLUSTER_PROPERTY)
}

/// The copy of `message` for the route's target topic. `cluster`: the source cluster's name.
pub fn copy_of(
    spec: &RouteSpec,
    topic: &TopicName,
    message: &MessageView,
    cluster: &str,
) -> vela_sdk::Result<Message> {
    let mut copy = Message::builder(topic.as_str())
        .body(message.body.clone())
        .keys(message.keys.iter().cloned());
    if let Some(tag) = &message.tag {
        copy = copy.tag(tag);
    }
    for (key, value) in &message.properties {
        copy = copy.property(key, value);
    }
    copy = copy
        .property(ORIGIN_MESSAGE_ID_PROPERTY, &message.message_id)
        .property(ORIGIN_TOPIC_PROPERTY, &message.topic)
        .property(ORIGIN_CLUSTER_PROPERTY, cluster)
        .property(ROUTE_PROPERTY, spec.name.as_str());
    if let Some(group) = &message.message_group {
        copy = copy.message_group(group);
    } else if let Some(at) = message.delivery_timestamp {
        copy = copy.delivery_timestamp(at);
    } else if let Some(priority) = message.priority {
        copy = copy.priority(priority);
    }
    if spec.keep_message_id {
        copy = copy.message_id(&message.message_id);
    }
    copy.build()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use vela_proto::route::{RouteEndpoint, RouteFilter, RouteTarget};
    use vela_proto::{GroupName, GroupStart, RouteName, TopicName};

    use super::*;

    fn spec(keep_message_id: bool) -> RouteSpec {
        RouteSpec {
            name: RouteName::new("dr").expect("name"),
            source_topic: TopicName::new("orders").expect("topic"),
            group: GroupName::new("route-dr").expect("group"),
            source: RouteEndpoint::local(),
            target: RouteTarget::Topic {
                topic: target(),
                endpoint: RouteEndpoint {
                    address: Some("127.0.0.1:1".into()),
                    tls: false,
                    credentials: None,
                },
            },
            filter: RouteFilter::All,
            start: GroupStart::Auto,
            keep_message_id,
        }
    }

    fn target() -> TopicName {
        TopicName::new("orders-b").expect("topic")
    }

    fn view(group: Option<&str>, delivery: Option<SystemTime>) -> MessageView {
        let mut view = MessageView::detached("orders", "01AB");
        view.tag = Some("paid".into());
        view.keys = vec!["k1".into(), "k2".into()];
        view.properties = HashMap::from([("region".to_owned(), "eu".to_owned())]);
        view.message_group = group.map(str::to_owned);
        view.body = "hello".into();
        view.delivery_timestamp = delivery;
        view
    }

    #[test]
    fn a_copy_keeps_what_the_producer_set_and_says_where_it_came_from() {
        let copy = copy_of(
            &spec(false),
            &target(),
            &view(Some("user-1"), None),
            "vela-a",
        )
        .expect("copy");
        assert_eq!(copy.topic(), "orders-b");
        assert_eq!(copy.body().as_ref(), b"hello");
        assert_eq!(copy.tag(), Some("paid"));
        assert_eq!(copy.keys(), ["k1", "k2"]);
        assert_eq!(copy.message_group(), Some("user-1"));
        assert_eq!(copy.message_id(), None);
        let p = copy.properties();
        assert_eq!(p["region"], "eu");
        assert_eq!(p[ORIGIN_MESSAGE_ID_PROPERTY], "01AB");
        assert_eq!(p[ORIGIN_TOPIC_PROPERTY], "orders");
        assert_eq!(p[ORIGIN_CLUSTER_PROPERTY], "vela-a");
        assert_eq!(p[ROUTE_PROPERTY], "dr");
    }

    #[test]
    fn delay_and_message_id_are_kept_when_asked() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let copy = copy_of(&spec(true), &target(), &view(None, Some(at)), "a").expect("copy");
        assert_eq!(copy.delivery_timestamp(), Some(at));
        assert_eq!(copy.message_id(), Some("01AB"));
    }

    #[test]
    fn copies_are_recognised_and_not_copied_again() {
        let original = view(None, None);
        assert!(!written_by_a_route(&original));
        let copy = copy_of(&spec(false), &target(), &original, "a").expect("copy");
        let mut seen_on_b = original.clone();
        seen_on_b.properties = copy.properties().clone();
        assert!(written_by_a_route(&seen_on_b));
    }
}
