//! Routes in the metadata (issue 12, ADR 0025): deterministic transitions, like the rest. A
//! route's secret keys are sealed before they are proposed (as passwords are, ADR 0019).

use serde::{Deserialize, Serialize};
use vela_proto::route::RouteFilter;
use vela_proto::{GroupName, GroupStart, RouteName, TopicName};

use super::Metadata;
use crate::command::{Applied, Rejected};
use crate::secrets::SealedSecret;

/// An access key and its sealed secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredentials {
    pub access_key: String,
    pub secret_key: SealedSecret,
}

/// One side of a route as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    /// `HOST:PORT`; `None`: the Vela the route runs on.
    pub address: Option<String>,
    pub tls: bool,
    pub credentials: Option<StoredCredentials>,
}

/// An HTTP target (CloudEvents) as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHttp {
    pub url: String,
    pub batch: u32,
}

/// A header an HTTP target's requests carry, its value sealed (context
/// `route-header:<route>:<lowercase name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader {
    pub name: String,
    pub value: SealedSecret,
}

/// A route as the log carries it (`CreateRoute`, `CreateHttpRoute`). Logged with postcard in
/// this field order: never change it; new fields need a new command variant. Of a route to an
/// HTTP target, `target_topic` is the source topic and `target` has no address (unused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRoute {
    pub name: RouteName,
    pub source_topic: TopicName,
    pub group: GroupName,
    pub source: StoredEndpoint,
    pub target_topic: TopicName,
    pub target: StoredEndpoint,
    pub filter: RouteFilter,
    pub start: GroupStart,
    pub keep_message_id: bool,
    pub paused: bool,
    pub created_at_ms: i64,
}

/// A route as the metadata keeps it: what was logged, and an HTTP target when it has one. Part
/// of the JSON snapshot, so fields added later need `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoute {
    pub name: RouteName,
    pub source_topic: TopicName,
    pub group: GroupName,
    pub source: StoredEndpoint,
    pub target_topic: TopicName,
    pub target: StoredEndpoint,
    pub filter: RouteFilter,
    pub start: GroupStart,
    pub keep_message_id: bool,
    pub paused: bool,
    pub created_at_ms: i64,
    /// The route goes to this HTTP target instead of `target_topic` at `target`.
    #[serde(default)]
    pub http: Option<StoredHttp>,
    /// Headers every request to the HTTP target carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<StoredHeader>,
}

impl StoredRoute {
    pub fn new(
        logged: LoggedRoute,
        http: Option<StoredHttp>,
        http_headers: Vec<StoredHeader>,
    ) -> Self {
        StoredRoute {
            name: logged.name,
            source_topic: logged.source_topic,
            group: logged.group,
            source: logged.source,
            target_topic: logged.target_topic,
            target: logged.target,
            filter: logged.filter,
            start: logged.start,
            keep_message_id: logged.keep_message_id,
            paused: logged.paused,
            created_at_ms: logged.created_at_ms,
            http,
            http_headers,
        }
    }
}

impl Metadata {
    pub(super) fn create_route(&mut self, route: StoredRoute) -> Result<Applied, Rejected> {
        if self.routes.contains_key(&route.name) {
            return Err(Rejected::RouteExists(route.name));
        }
        self.routes.insert(route.name.clone(), route.clone());
        Ok(Applied::Route(Box::new(route)))
    }

    pub(super) fn delete_route(&mut self, name: RouteName) -> Result<Applied, Rejected> {
        match self.routes.remove(&name) {
            Some(_) => Ok(Applied::Deleted),
            None => Err(Rejected::RouteNotFound(name)),
        }
    }

    pub(super) fn set_route_paused(
        &mut self,
        name: RouteName,
        paused: bool,
    ) -> Result<Applied, Rejected> {
        let Some(route) = self.routes.get_mut(&name) else {
            return Err(Rejected::RouteNotFound(name));
        };
        route.paused = paused;
        Ok(Applied::Route(Box::new(route.clone())))
    }

    /// Every route, by name.
    pub fn routes(&self) -> impl Iterator<Item = &StoredRoute> {
        self.routes.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;

    fn route(name: &str) -> LoggedRoute {
        LoggedRoute {
            name: RouteName::new(name).expect("name"),
            source_topic: TopicName::new("t").expect("topic"),
            group: GroupName::new("g").expect("group"),
            source: StoredEndpoint {
                address: None,
                tls: false,
                credentials: None,
            },
            target_topic: TopicName::new("u").expect("topic"),
            target: StoredEndpoint {
                address: Some("h:1".into()),
                tls: true,
                credentials: Some(StoredCredentials {
                    access_key: "ak".into(),
                    secret_key: SealedSecret {
                        key_id: [1; 8],
                        nonce: [2; 12],
                        sealed: vec![0xab],
                    },
                }),
            },
            filter: RouteFilter::Tag("A".into()),
            start: GroupStart::At(5),
            keep_message_id: true,
            paused: false,
            created_at_ms: 7,
        }
    }

    #[test]
    fn routes_create_pause_delete() {
        let mut md = Metadata::default();
        let logged = route("r");
        let r = StoredRoute::new(logged.clone(), None, Vec::new());
        assert_eq!(
            md.apply(ControllerCommand::CreateRoute {
                route: Box::new(logged.clone())
            }),
            Ok(Applied::Route(Box::new(r.clone())))
        );
        assert_eq!(
            md.apply(ControllerCommand::CreateRoute {
                route: Box::new(logged)
            }),
            Err(Rejected::RouteExists(r.name.clone()))
        );
        let paused = md
            .apply(ControllerCommand::SetRoutePaused {
                name: r.name.clone(),
                paused: true,
            })
            .expect("paused");
        assert!(matches!(paused, Applied::Route(ref p) if p.paused));
        assert!(md.routes().all(|r| r.paused));
        assert_eq!(
            md.apply(ControllerCommand::DeleteRoute {
                name: r.name.clone()
            }),
            Ok(Applied::Deleted)
        );
        assert_eq!(md.routes().count(), 0);
        assert_eq!(
            md.apply(ControllerCommand::SetRoutePaused {
                name: r.name.clone(),
                paused: false
            }),
            Err(Rejected::RouteNotFound(r.name))
        );
    }

    #[test]
    fn route_commands_golden_bytes() {
        // Variants 14 to 17 and 21 (ADR 0025), fields in order.
        let name = RouteName::new("r").expect("name");
        let cases = [
            (
                ControllerCommand::CreateRoute {
                    route: Box::new(route("r")),
                },
                "0e01720174016700000001750103683a31010102616b0101010101010101020202020202\
                 02020202020201ab010141030a01000e",
            ),
            (
                ControllerCommand::DeleteRoute { name: name.clone() },
                "0f0172",
            ),
            (
                ControllerCommand::SetRoutePaused { name, paused: true },
                "10017201",
            ),
            (
                ControllerCommand::CreateHttpRoute {
                    route: Box::new(route("r")),
                    http: StoredHttp {
                        url: "h".into(),
                        batch: 2,
                    },
                },
                "1101720174016700000001750103683a31010102616b0101010101010101020202020202\
                 02020202020201ab010141030a01000e016802",
            ),
            (
                ControllerCommand::CreateHttpRouteWithHeaders {
                    route: Box::new(route("r")),
                    http: StoredHttp {
                        url: "h".into(),
                        batch: 2,
                    },
                    headers: vec![StoredHeader {
                        name: "X".into(),
                        value: SealedSecret {
                            key_id: [3; 8],
                            nonce: [4; 12],
                            sealed: vec![0xcd],
                        },
                    }],
                },
                "1501720174016700000001750103683a31010102616b0101010101010101020202020202\
                 02020202020201ab010141030a01000e01680201015803030303030303030404040404040404\
                 0404040401cd",
            ),
        ];
        super::super::assert_golden(cases);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    /// Snapshots written before HTTP targets (no `http` field) still read.
    #[test]
    fn routes_of_older_snapshots_read_without_an_http_target() {
        let json = r#"{"name":"r","source_topic":"t","group":"g",
            "source":{"address":null,"tls":false,"credentials":null},"target_topic":"u",
            "target":{"address":"h:1","tls":false,"credentials":null},"filter":"All",
            "start":"Auto","keep_message_id":false,"paused":true,"created_at_ms":7}"#;
        let route: StoredRoute = serde_json::from_str(json).expect("reads");
        assert_eq!(route.http, None);
        assert!(route.http_headers.is_empty());
        assert!(route.paused);
        // A route without headers writes what it wrote before them.
        let back = serde_json::to_string(&route).expect("writes");
        assert!(!back.contains("http_headers"), "{back}");
    }
}
