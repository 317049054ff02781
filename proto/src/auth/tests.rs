use super::*;

fn user(kind: UserType) -> User {
    User {
        name: UserName::new("alice").expect("name"),
        password: Password::new("s3cret").expect("password"),
        user_type: kind,
        status: UserStatus::Enabled,
    }
}

fn entry(resource: &str, actions: &str, decision: Decision, ips: &[&str]) -> PolicyEntry {
    PolicyEntry {
        resource: resource.parse().expect("resource"),
        actions: parse_actions(actions).expect("actions"),
        source_ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
        decision,
    }
}

fn acl(entries: Vec<PolicyEntry>) -> Acl {
    let mut acl = Acl {
        subject: "User:alice".parse().expect("subject"),
        entries: Vec::new(),
    };
    acl.merge(entries).expect("merge");
    acl
}

fn may(acl: &Acl, resource: Resource, action: Action) -> bool {
    authorize(
        &user(UserType::Normal),
        Some(acl),
        &[Access::new(resource, action)],
        None,
    )
    .is_ok()
}

#[test]
fn resource_patterns_parse_print_and_match() {
    for (text, printed) in [
        ("*", "*"),
        ("Topic:orders", "Topic:orders"),
        ("topic:order*", "Topic:order*"),
        ("Group:*", "Group:*"),
        (" Cluster:* ", "Cluster:*"),
        ("Topic:ns%orders", "Topic:ns%orders"),
    ] {
        let pattern: ResourcePattern = text.parse().expect(text);
        assert_eq!(pattern.to_string(), printed, "{text}");
        assert_eq!(printed.parse::<ResourcePattern>(), Ok(pattern));
    }
    for bad in [
        "",
        "orders",
        "Queue:orders",
        "Topic:",
        "Topic:*x",
        "Topic:a b",
        "Topic:a*b*",
        "Cluster:east",
        "User:alice",
    ] {
        assert!(bad.parse::<ResourcePattern>().is_err(), "{bad:?}");
    }
    let prefix: ResourcePattern = "Topic:order*".parse().expect("prefix");
    assert!(prefix.matches(&Resource::topic("orders")));
    assert!(prefix.matches(&Resource::topic("order")));
    assert!(!prefix.matches(&Resource::topic("ord")));
    assert!(!prefix.matches(&Resource::group("orders")));
    let any: ResourcePattern = "*".parse().expect("any");
    assert!(any.matches(&Resource::group("g")) && any.matches(&Resource::cluster()));
}

#[test]
fn names_actions_and_subjects_are_validated() {
    assert!(UserName::new("").is_err());
    assert!(UserName::new("a:b").is_err());
    assert!(UserName::new("x".repeat(65)).is_err());
    assert!(UserName::new("svc.orders@prod-1").is_ok());
    assert!(Password::new("").is_err());
    assert!(Password::new("a\nb").is_err());
    assert_eq!(
        format!("{:?}", Password::new("hunter2").expect("pw")),
        "***"
    );
    assert_eq!(
        parse_actions("sub, PUB,Pub"),
        Ok(vec![Action::Pub, Action::Sub])
    );
    assert!(parse_actions("").is_err());
    assert!(parse_actions("PUB,SEND").is_err());
    assert_eq!(
        "user:bob".parse::<Subject>().map(|s| s.to_string()),
        Ok("User:bob".into())
    );
    assert!("Role:admins".parse::<Subject>().is_err());
    assert_eq!("deny".parse::<Decision>(), Ok(Decision::Deny));
    assert_eq!("SUPER".parse::<UserType>(), Ok(UserType::Super));
    assert_eq!("disable".parse::<UserStatus>(), Ok(UserStatus::Disabled));
    assert!("10.0.0.0/8".parse::<SourceNet>().is_ok());
    assert!("::1".parse::<SourceNet>().is_ok());
    assert!("10.0.0.0/33".parse::<SourceNet>().is_err());
}

#[test]
fn super_users_bypass_and_no_policy_means_no() {
    let need = [Access::new(Resource::topic("orders"), Action::Pub)];
    assert_eq!(authorize(&user(UserType::Super), None, &need, None), Ok(()));
    assert!(matches!(
        authorize(&user(UserType::Normal), None, &need, None),
        Err(Denied::NoPolicy { .. })
    ));
    let only_sub = acl(vec![entry("Topic:orders", "SUB", Decision::Allow, &[])]);
    assert!(!may(&only_sub, Resource::topic("orders"), Action::Pub));
    assert!(may(&only_sub, Resource::topic("orders"), Action::Sub));
}

#[test]
fn the_most_specific_entry_decides() {
    let acl = acl(vec![
        entry("*", "ALL", Decision::Allow, &[]),
        entry("Topic:*", "PUB", Decision::Deny, &[]),
        entry("Topic:order*", "PUB", Decision::Allow, &[]),
        entry("Topic:orders-secret*", "PUB", Decision::Deny, &[]),
        entry("Topic:orders-secret-ok", "PUB", Decision::Allow, &[]),
    ]);
    assert!(may(&acl, Resource::topic("orders"), Action::Pub));
    assert!(!may(&acl, Resource::topic("payments"), Action::Pub));
    assert!(!may(&acl, Resource::topic("orders-secret-1"), Action::Pub));
    assert!(may(&acl, Resource::topic("orders-secret-ok"), Action::Pub));
    // Topic:* says nothing about SUB, so the typeless `*` decides.
    assert!(may(&acl, Resource::topic("payments"), Action::Sub));
    assert!(may(&acl, Resource::group("g"), Action::Sub));
}

#[test]
fn deny_wins_over_allow_at_equal_specificity() {
    let acl = acl(vec![
        entry("Topic:orders", "PUB", Decision::Allow, &[]),
        entry("Topic:orders", "PUB", Decision::Deny, &["10.0.0.0/8"]),
    ]);
    let from = |ip: &str| {
        authorize(
            &user(UserType::Normal),
            Some(&acl),
            &[Access::new(Resource::topic("orders"), Action::Pub)],
            Some(ip.parse().expect("ip")),
        )
    };
    assert!(matches!(from("10.1.2.3"), Err(Denied::DeniedBy { .. })));
    assert_eq!(from("192.168.0.1"), Ok(()));
    // An IPv4 client on an IPv6 socket is still in 10.0.0.0/8.
    assert!(from("::ffff:10.1.2.3").is_err());
}

#[test]
fn source_networks_limit_an_entry() {
    let acl = acl(vec![entry(
        "Topic:orders",
        "PUB",
        Decision::Allow,
        &["127.0.0.1", "192.168.0.0/16"],
    )]);
    let from = |ip: Option<&str>| {
        authorize(
            &user(UserType::Normal),
            Some(&acl),
            &[Access::new(Resource::topic("orders"), Action::Pub)],
            ip.map(|ip| ip.parse().expect("ip")),
        )
        .is_ok()
    };
    assert!(from(Some("127.0.0.1")));
    assert!(from(Some("192.168.7.7")));
    assert!(!from(Some("127.0.0.2")));
    assert!(!from(None));
}

#[test]
fn unknown_sources_meet_denies_and_network_order_does_not_matter() {
    // A DENY for some networks applies to a client whose address is unknown (fail closed).
    let deny = acl(vec![
        entry("Topic:orders", "PUB", Decision::Allow, &[]),
        entry("Topic:orders", "PUB", Decision::Deny, &["10.0.0.0/8"]),
    ]);
    let need = [Access::new(Resource::topic("orders"), Action::Pub)];
    assert!(authorize(&user(UserType::Normal), Some(&deny), &need, None).is_err());
    // The same networks in another order are the same entry.
    let mut twice = acl(vec![entry(
        "Topic:a",
        "PUB",
        Decision::Allow,
        &["10.0.0.0/8", "::1"],
    )]);
    twice
        .merge(vec![entry(
            "Topic:a",
            "SUB",
            Decision::Allow,
            &["::1", "10.0.0.0/8"],
        )])
        .expect("merge");
    assert_eq!(twice.entries.len(), 1);
}

#[test]
fn any_of_several_actions_and_every_access_is_needed() {
    let acl = acl(vec![
        entry("Topic:orders", "SUB", Decision::Allow, &[]),
        entry("Group:g1", "SUB", Decision::Allow, &[]),
    ]);
    let alice = user(UserType::Normal);
    let route = [Access::any_of(
        Resource::topic("orders"),
        &[Action::Pub, Action::Sub],
    )];
    assert_eq!(authorize(&alice, Some(&acl), &route, None), Ok(()));
    let receive = |group: &str| {
        [
            Access::new(Resource::topic("orders"), Action::Sub),
            Access::new(Resource::group(group), Action::Sub),
        ]
    };
    assert_eq!(authorize(&alice, Some(&acl), &receive("g1"), None), Ok(()));
    let err = authorize(&alice, Some(&acl), &receive("g2"), None).expect_err("no group policy");
    assert_eq!(
        err.to_string(),
        "user alice has no policy that allows SUB on Group:g2"
    );
}

#[test]
fn merging_replaces_the_entry_of_the_same_resource_and_networks() {
    let mut acl = acl(vec![entry("Topic:orders", "PUB", Decision::Allow, &[])]);
    acl.merge(vec![
        entry("Topic:orders", "PUB,SUB", Decision::Deny, &[]),
        entry("Group:*", "SUB", Decision::Allow, &[]),
    ])
    .expect("merge");
    assert_eq!(acl.entries.len(), 2);
    let orders = acl
        .entries
        .iter()
        .find(|e| e.resource.to_string() == "Topic:orders")
        .expect("orders entry");
    assert_eq!(orders.decision, Decision::Deny);
    assert_eq!(orders.actions, vec![Action::Pub, Action::Sub]);
    let too_many: Vec<PolicyEntry> = (0..=MAX_ACL_ENTRIES)
        .map(|i| entry(&format!("Topic:t{i}"), "PUB", Decision::Allow, &[]))
        .collect();
    assert!(acl.merge(too_many).is_err());
}

#[test]
fn stored_forms_are_text() {
    let e = entry("Topic:order*", "PUB,SUB", Decision::Deny, &["10.0.0.0/8"]);
    let json = serde_json::to_string(&e).expect("json");
    assert_eq!(
        json,
        r#"{"resource":"Topic:order*","actions":["PUB","SUB"],"source_ips":["10.0.0.0/8"],"decision":"Deny"}"#
    );
    assert_eq!(serde_json::from_str::<PolicyEntry>(&json).expect("back"), e);
}
