//! Routes over the wire (`vela.route.v1`): parsing is the boundary check, so whatever arrives is
//! validated into [`crate::route`] types once.

use crate::domain::{GroupName, GroupStart, RouteName, TopicName};
use crate::pb::route as pb;
use std::collections::BTreeMap;

use crate::route::{
    HttpHeader, HttpTarget, RouteConfig, RouteCredentials, RouteEndpoint, RouteError, RouteFilter,
    RouteSpec, RouteState, RouteStatus, RouteTarget,
};
use crate::store_wire::WireError;

fn named<T>(r: Result<T, crate::domain::NameError>) -> Result<T, WireError> {
    r.map_err(|e| WireError(e.to_string()))
}

impl From<RouteError> for WireError {
    fn from(e: RouteError) -> Self {
        WireError(e.0)
    }
}

/// Whether secret keys go on the wire (create requests and between roles) or stay off it
/// (answers to admin tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Include,
    Omit,
}

fn endpoint_to_wire(e: &RouteEndpoint, secrets: Secrets) -> pb::Endpoint {
    pb::Endpoint {
        address: e.address.clone().unwrap_or_default(),
        tls: e.tls,
        credentials: e.credentials.as_ref().map(|c| pb::Credentials {
            access_key: c.access_key.clone(),
            secret_key: match secrets {
                Secrets::Include => c.secret_key.expose().to_owned(),
                Secrets::Omit => String::new(),
            },
        }),
    }
}

fn endpoint_from_wire(e: Option<pb::Endpoint>, side: &str) -> Result<RouteEndpoint, WireError> {
    let e = e.unwrap_or_default();
    let credentials = match e.credentials {
        Some(c) if !c.access_key.is_empty() || !c.secret_key.is_empty() => Some(
            RouteCredentials::new(&c.access_key, &c.secret_key)
                .map_err(|err| WireError(format!("{side} credentials: {err}")))?,
        ),
        _ => None,
    };
    Ok(RouteEndpoint {
        address: Some(e.address).filter(|a| !a.is_empty()),
        tls: e.tls,
        credentials,
    })
}

fn start_to_wire(start: GroupStart) -> (String, i64) {
    match start {
        GroupStart::Auto => (String::new(), 0),
        GroupStart::Earliest => ("earliest".into(), 0),
        GroupStart::Latest => ("latest".into(), 0),
        GroupStart::At(ms) => ("at".into(), ms),
    }
}

fn start_from_wire(start: &str, at_ms: i64) -> Result<GroupStart, WireError> {
    match start {
        "" | "auto" => Ok(GroupStart::Auto),
        "earliest" => Ok(GroupStart::Earliest),
        "latest" => Ok(GroupStart::Latest),
        "at" if at_ms >= 0 => Ok(GroupStart::At(at_ms)),
        "at" => Err(WireError(format!("start time {at_ms} ms is before 1970"))),
        other => Err(WireError(format!(
            "start {other:?} is not earliest, latest or at"
        ))),
    }
}

pub fn spec_to_wire(s: &RouteSpec, secrets: Secrets) -> pb::RouteSpec {
    let (start, start_time_ms) = start_to_wire(s.start);
    let (filter_tag, filter_sql) = match &s.filter {
        RouteFilter::All => (String::new(), String::new()),
        RouteFilter::Tag(e) => (e.clone(), String::new()),
        RouteFilter::Sql(e) => (String::new(), e.clone()),
    };
    let (target_topic, target, target_url, target_batch, target_headers) = match &s.target {
        RouteTarget::Topic { topic, endpoint } => (
            topic.to_string(),
            Some(endpoint_to_wire(endpoint, secrets)),
            String::new(),
            0,
            Vec::new(),
        ),
        RouteTarget::Http(http) => (
            String::new(),
            None,
            http.url.clone(),
            http.batch,
            http.headers
                .iter()
                .map(|h| pb::Header {
                    name: h.name().to_owned(),
                    value: match secrets {
                        Secrets::Include => h.expose().to_owned(),
                        Secrets::Omit => String::new(),
                    },
                })
                .collect(),
        ),
    };
    pb::RouteSpec {
        name: s.name.to_string(),
        source_topic: s.source_topic.to_string(),
        group: s.group.to_string(),
        source: Some(endpoint_to_wire(&s.source, secrets)),
        target_topic,
        target,
        filter_tag,
        filter_sql,
        start,
        start_time_ms,
        keep_message_id: s.keep_message_id,
        target_url,
        target_batch,
        target_headers,
    }
}

/// Parses and validates a route spec ([`RouteSpec::validate`] included).
pub fn spec_from_wire(s: pb::RouteSpec) -> Result<RouteSpec, WireError> {
    let filter = match (s.filter_tag.trim(), s.filter_sql.trim()) {
        ("", "") => RouteFilter::All,
        (tag, "") => RouteFilter::tag(tag)?,
        ("", sql) => RouteFilter::sql(sql)?,
        _ => {
            return Err(WireError(
                "a route has a tag filter or an SQL filter, not both".into(),
            ));
        }
    };
    let target = if s.target_url.is_empty() {
        if !s.target_headers.is_empty() {
            return Err(WireError(
                "headers are for an HTTP target (--target-url)".into(),
            ));
        }
        RouteTarget::Topic {
            topic: named(TopicName::new(&s.target_topic))?,
            endpoint: endpoint_from_wire(s.target, "target")?,
        }
    } else {
        let endpoint_given = s
            .target
            .as_ref()
            .is_some_and(|t| !t.address.is_empty() || t.credentials.is_some() || t.tls);
        if !s.target_topic.is_empty() || endpoint_given {
            return Err(WireError(
                "a route has a target URL or a target endpoint and topic, not both".into(),
            ));
        }
        let headers = s
            .target_headers
            .iter()
            .map(|h| HttpHeader::new(&h.name, &h.value))
            .collect::<Result<Vec<_>, _>>()?;
        RouteTarget::Http(
            HttpTarget::new(&s.target_url, s.target_batch.max(1))?.with_headers(headers)?,
        )
    };
    let spec = RouteSpec {
        name: named(RouteName::new(&s.name))?,
        source_topic: named(TopicName::new(&s.source_topic))?,
        group: named(GroupName::new(&s.group))?,
        source: endpoint_from_wire(s.source, "source")?,
        target,
        filter: match filter {
            RouteFilter::Tag(e) if e == "*" => RouteFilter::All,
            f => f,
        },
        start: start_from_wire(&s.start, s.start_time_ms)?,
        keep_message_id: s.keep_message_id,
    };
    spec.validate()?;
    Ok(spec)
}

pub fn route_to_wire(r: &RouteConfig, secrets: Secrets) -> pb::Route {
    pb::Route {
        spec: Some(spec_to_wire(&r.spec, secrets)),
        paused: r.paused,
        created_at_ms: r.created_at_ms,
    }
}

pub fn route_from_wire(r: pb::Route) -> Result<RouteConfig, WireError> {
    Ok(RouteConfig {
        spec: spec_from_wire(
            r.spec
                .ok_or_else(|| WireError("a route without its spec".into()))?,
        )?,
        paused: r.paused,
        created_at_ms: r.created_at_ms,
    })
}

pub fn status_to_wire(s: &RouteStatus) -> pb::RouteStatus {
    let signed = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    pb::RouteStatus {
        state: s.state.to_string(),
        copied: s.copied,
        skipped_routed: s.skipped_routed,
        duplicates: s.duplicates,
        errors: s.errors,
        last_error: s.last_error.clone().unwrap_or_default(),
        last_error_ms: s.last_error_ms.unwrap_or(0),
        lag_messages: signed(s.lag_messages),
        lag_ms: signed(s.lag_ms),
        last_copied_ms: s.last_copied_ms.unwrap_or(0),
        copy_rate: s.copy_rate,
    }
}

pub fn status_from_wire(s: pb::RouteStatus) -> Result<RouteStatus, WireError> {
    let state = match s.state.as_str() {
        "starting" => RouteState::Starting,
        "running" => RouteState::Running,
        "retrying" => RouteState::Retrying,
        "paused" => RouteState::Paused,
        "stopped" => RouteState::Stopped,
        other => return Err(WireError(format!("unknown route state {other:?}"))),
    };
    let known = |v: i64| u64::try_from(v).ok();
    Ok(RouteStatus {
        state,
        copied: s.copied,
        skipped_routed: s.skipped_routed,
        duplicates: s.duplicates,
        errors: s.errors,
        last_error: Some(s.last_error).filter(|e| !e.is_empty()),
        last_error_ms: Some(s.last_error_ms).filter(|ms| *ms > 0),
        lag_messages: known(s.lag_messages),
        lag_ms: known(s.lag_ms),
        last_copied_ms: Some(s.last_copied_ms).filter(|ms| *ms > 0),
        copy_rate: s.copy_rate,
    })
}

pub fn statuses_to_wire(statuses: &BTreeMap<RouteName, RouteStatus>) -> pb::RouteStatuses {
    pb::RouteStatuses {
        routes: statuses
            .iter()
            .map(|(name, s)| (name.to_string(), status_to_wire(s)))
            .collect(),
    }
}

pub fn statuses_from_wire(
    s: pb::RouteStatuses,
) -> Result<BTreeMap<RouteName, RouteStatus>, WireError> {
    s.routes
        .into_iter()
        .map(|(name, status)| Ok((named(RouteName::new(&name))?, status_from_wire(status)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> pb::RouteSpec {
        pb::RouteSpec {
            name: "dr".into(),
            source_topic: "orders".into(),
            group: "route-dr".into(),
            source: Some(pb::Endpoint::default()),
            target_topic: "orders-copy".into(),
            target: Some(pb::Endpoint {
                address: "127.0.0.1:9081".into(),
                tls: true,
                credentials: Some(pb::Credentials {
                    access_key: "ak".into(),
                    secret_key: "sk".into(),
                }),
            }),
            filter_tag: "A||B".into(),
            filter_sql: String::new(),
            start: "at".into(),
            start_time_ms: 1_700_000_000_000,
            keep_message_id: true,
            target_url: String::new(),
            target_batch: 0,
            target_headers: Vec::new(),
        }
    }

    #[test]
    fn specs_round_trip_and_secrets_stay_off_admin_answers() {
        let spec = spec_from_wire(wire()).expect("valid");
        assert_eq!(spec.start, GroupStart::At(1_700_000_000_000));
        assert_eq!(spec.filter, RouteFilter::Tag("A||B".into()));
        assert_eq!(spec_to_wire(&spec, Secrets::Include), wire());
        let shown = spec_to_wire(&spec, Secrets::Omit);
        let creds = shown.target.and_then(|t| t.credentials).expect("kept");
        assert_eq!(
            (creds.access_key.as_str(), creds.secret_key.as_str()),
            ("ak", "")
        );
    }

    #[test]
    fn http_targets_round_trip_and_exclude_topic_targets() {
        let mut w = wire();
        w.target = None;
        w.target_topic = String::new();
        w.target_url = "https://hooks.example.com/vela".into();
        w.target_batch = 8;
        w.keep_message_id = false;
        w.target_headers = vec![pb::Header {
            name: "Authorization".into(),
            value: "Bearer t0ken".into(),
        }];
        let spec = spec_from_wire(w.clone()).expect("valid");
        assert_eq!(
            spec.target,
            RouteTarget::Http(
                HttpTarget::new("https://hooks.example.com/vela", 8)
                    .expect("url")
                    .with_headers(vec![
                        HttpHeader::new("Authorization", "Bearer t0ken").expect("header")
                    ])
                    .expect("headers")
            )
        );
        assert_eq!(spec_to_wire(&spec, Secrets::Include), w);
        let shown = spec_to_wire(&spec, Secrets::Omit);
        assert_eq!(
            shown.target_headers,
            vec![pb::Header {
                name: "Authorization".into(),
                value: String::new()
            }],
            "names only in answers to admin tools"
        );
        let mut on_topic = wire();
        on_topic.target_headers = w.target_headers.clone();
        assert!(
            spec_from_wire(on_topic).is_err(),
            "headers on a topic target"
        );
        let mut both = w.clone();
        both.target_topic = "t".into();
        let err = spec_from_wire(both).expect_err("both");
        assert!(err.0.contains("not both"), "{}", err.0);
        let mut big = w;
        big.target_batch = 100;
        assert!(spec_from_wire(big).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        let mut status = RouteStatus::new(RouteState::Retrying);
        status.copied = 5;
        status.last_error = Some("target down".into());
        status.last_error_ms = Some(9);
        status.lag_ms = Some(0);
        let statuses = BTreeMap::from([(RouteName::new("r").expect("name"), status)]);
        let back = statuses_from_wire(statuses_to_wire(&statuses)).expect("valid");
        assert_eq!(back, statuses);
        let mut bad = statuses_to_wire(&statuses);
        bad.routes
            .values_mut()
            .for_each(|s| s.state = "dancing".into());
        assert!(statuses_from_wire(bad).is_err());
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        type Mutation = fn(&mut pb::RouteSpec);
        let cases: [(Mutation, &str); 6] = [
            (|w| w.name = "a b".into(), "route name"),
            (|w| w.filter_sql = "a > 1".into(), "not both"),
            (|w| w.start = "yesterday".into(), "earliest, latest or at"),
            (|w| w.target = None, "needs a target"),
            (
                |w| {
                    if let Some(t) = &mut w.target {
                        t.credentials = Some(pb::Credentials {
                            access_key: "ak".into(),
                            secret_key: String::new(),
                        });
                    }
                },
                "target credentials",
            ),
            (|w| w.group = String::new(), "consumer group name"),
        ];
        for (mutate, expected) in cases {
            let mut w = wire();
            mutate(&mut w);
            let err = spec_from_wire(w).expect_err(expected);
            assert!(err.0.contains(expected), "{} should say {expected}", err.0);
        }
    }
}
