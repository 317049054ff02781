//! The controller's side of routes (issue 12, ADR 0025): a route's secret keys are sealed before
//! they are proposed and opened for the node that runs it; a route whose source is this Vela
//! gets its consumer group here, where the source topic's type is known.

use std::collections::BTreeMap;
use std::sync::Arc;

use vela_proto::route::{
    HttpHeader, HttpTarget, RouteConfig, RouteCredentials, RouteEndpoint, RouteRuntime, RouteSpec,
    RouteStatus, RouteTarget,
};
use vela_proto::{ControllerApi, ControllerError, GroupSpec, GroupStart, RouteName, TopicType};

use crate::command::{Applied, ControllerCommand};
use crate::controller::{Controller, unexpected};
use crate::metadata::{
    LoggedRoute, StoredCredentials, StoredEndpoint, StoredHeader, StoredHttp, StoredRoute,
};

/// What a route's sealed secret key is bound to: it cannot be moved to another route or side.
fn secret_context(route: &RouteName, side: &str) -> String {
    format!("route-secret:{route}:{side}")
}

/// What a sealed header value is bound to: its route and header.
fn header_context(route: &RouteName, header: &str) -> String {
    format!("route-header:{route}:{}", header.to_ascii_lowercase())
}

impl Controller {
    /// Runs routes in this process from now on (`None`: no longer): it is told when routes
    /// change and answers `route_statuses`.
    pub fn set_route_runtime(&self, runtime: Option<Arc<dyn RouteRuntime>>) {
        *self.route_runtime.write() = runtime;
    }

    /// What the routes running in this process report (empty where none run).
    pub fn local_route_statuses(&self) -> BTreeMap<RouteName, RouteStatus> {
        self.route_runtime
            .read()
            .as_ref()
            .map(|r| r.statuses())
            .unwrap_or_default()
    }

    fn routes_changed(&self) {
        if let Some(runtime) = self.route_runtime.read().as_ref() {
            runtime.changed();
        }
    }

    fn seal_endpoint(&self, route: &RouteName, side: &str, e: &RouteEndpoint) -> StoredEndpoint {
        StoredEndpoint {
            address: e.address.clone(),
            tls: e.tls,
            credentials: e.credentials.as_ref().map(|c| StoredCredentials {
                access_key: c.access_key.clone(),
                secret_key: self
                    .sealer
                    .seal(&secret_context(route, side), c.secret_key.expose()),
            }),
        }
    }

    fn open_endpoint(
        &self,
        route: &RouteName,
        side: &str,
        e: &StoredEndpoint,
    ) -> Result<RouteEndpoint, ControllerError> {
        let failed = |e: String| ControllerError::Internal(format!("{side} of route {route}: {e}"));
        let credentials = match &e.credentials {
            None => None,
            Some(c) => {
                let secret = self
                    .sealer
                    .open(&secret_context(route, side), &c.secret_key)
                    .map_err(|e| failed(e.to_string()))?;
                Some(RouteCredentials::new(&c.access_key, &secret).map_err(|e| failed(e.0))?)
            }
        };
        Ok(RouteEndpoint {
            address: e.address.clone(),
            tls: e.tls,
            credentials,
        })
    }

    fn open_headers(&self, r: &StoredRoute) -> Result<Vec<HttpHeader>, ControllerError> {
        r.http_headers
            .iter()
            .map(|h| {
                let failed = |e: String| {
                    ControllerError::Internal(format!("header {} of route {}: {e}", h.name, r.name))
                };
                let value = self
                    .sealer
                    .open(&header_context(&r.name, &h.name), &h.value)
                    .map_err(|e| failed(e.to_string()))?;
                HttpHeader::new(&h.name, &value).map_err(|e| failed(e.0))
            })
            .collect()
    }

    fn open_route(&self, r: &StoredRoute) -> Result<RouteConfig, ControllerError> {
        Ok(RouteConfig {
            spec: RouteSpec {
                name: r.name.clone(),
                source_topic: r.source_topic.clone(),
                group: r.group.clone(),
                source: self.open_endpoint(&r.name, "source", &r.source)?,
                target: match &r.http {
                    Some(http) => RouteTarget::Http(HttpTarget {
                        url: http.url.clone(),
                        batch: http.batch,
                        headers: self.open_headers(r)?,
                    }),
                    None => RouteTarget::Topic {
                        topic: r.target_topic.clone(),
                        endpoint: self.open_endpoint(&r.name, "target", &r.target)?,
                    },
                },
                filter: r.filter.clone(),
                start: r.start,
                keep_message_id: r.keep_message_id,
            },
            paused: r.paused,
            created_at_ms: r.created_at_ms,
        })
    }

    /// A local source's route needs its topic and gets its group: created from the route's
    /// start point when absent (FIFO when the topic is, so order per message group holds);
    /// an existing group keeps its position, so a start point is refused for it.
    async fn ensure_route_group(&self, spec: &RouteSpec) -> Result<(), ControllerError> {
        let topic = self
            .get_topic(&spec.source_topic)
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("topic {}", spec.source_topic)))?;
        if let Some(group) = self.get_group(&spec.group).await? {
            // Each start of a route's consumer would be a new instance of a broadcast group,
            // starting afresh: what arrived in between would never be copied.
            if group.broadcast {
                return Err(ControllerError::Invalid(format!(
                    "consumer group {} is a broadcast group: a route needs a group of its own",
                    spec.group
                )));
            }
            if spec.start != GroupStart::Auto {
                return Err(ControllerError::Invalid(format!(
                    "consumer group {} exists: the route continues from its position; omit \
                     the start point or name a new group",
                    spec.group
                )));
            }
            return Ok(());
        }
        let group = GroupSpec {
            name: spec.group.clone(),
            fifo: topic.topic_type == TopicType::Fifo,
            max_attempts: 0,
            auto_created: false,
            start: spec.start,
            retry: vela_proto::retry::RetryBackoff::Standard,
            broadcast: false,
        };
        match self.create_group(group).await {
            Ok(_) | Err(ControllerError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn propose_create_route(
        &self,
        spec: RouteSpec,
    ) -> Result<RouteConfig, ControllerError> {
        spec.validate().map_err(|e| ControllerError::Invalid(e.0))?;
        self.read_barrier().await?;
        if self.metadata.read().routes().any(|r| r.name == spec.name) {
            return Err(ControllerError::AlreadyExists(format!(
                "route {}",
                spec.name
            )));
        }
        if spec.source.address.is_none() {
            self.ensure_route_group(&spec).await?;
        }
        let (target_topic, target, http, headers) = match &spec.target {
            RouteTarget::Topic { topic, endpoint } => (
                topic.clone(),
                self.seal_endpoint(&spec.name, "target", endpoint),
                None,
                Vec::new(),
            ),
            RouteTarget::Http(http) => (
                spec.source_topic.clone(),
                self.seal_endpoint(&spec.name, "target", &RouteEndpoint::local()),
                Some(StoredHttp {
                    url: http.url.clone(),
                    batch: http.batch,
                }),
                http.headers
                    .iter()
                    .map(|h| StoredHeader {
                        name: h.name().to_owned(),
                        value: self
                            .sealer
                            .seal(&header_context(&spec.name, h.name()), h.expose()),
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let route = Box::new(LoggedRoute {
            source: self.seal_endpoint(&spec.name, "source", &spec.source),
            target,
            name: spec.name,
            source_topic: spec.source_topic,
            group: spec.group,
            target_topic,
            filter: spec.filter,
            start: spec.start,
            keep_message_id: spec.keep_message_id,
            paused: false,
            created_at_ms: self.clock.now_ms(),
        });
        let command = match http {
            None => ControllerCommand::CreateRoute { route },
            Some(http) if headers.is_empty() => ControllerCommand::CreateHttpRoute { route, http },
            Some(http) => ControllerCommand::CreateHttpRouteWithHeaders {
                route,
                http,
                headers,
            },
        };
        match self.group.propose(command).await? {
            Ok(Applied::Route(route)) => {
                self.routes_changed();
                self.open_route(&route)
            }
            other => Err(unexpected("create-route", &other)),
        }
    }

    pub(crate) async fn propose_delete_route(
        &self,
        name: &RouteName,
    ) -> Result<(), ControllerError> {
        let command = ControllerCommand::DeleteRoute { name: name.clone() };
        match self.group.propose(command).await? {
            Ok(Applied::Deleted) => {
                self.routes_changed();
                Ok(())
            }
            other => Err(unexpected("delete-route", &other)),
        }
    }

    pub(crate) async fn propose_route_paused(
        &self,
        name: &RouteName,
        paused: bool,
    ) -> Result<RouteConfig, ControllerError> {
        let command = ControllerCommand::SetRoutePaused {
            name: name.clone(),
            paused,
        };
        match self.group.propose(command).await? {
            Ok(Applied::Route(route)) => {
                self.routes_changed();
                self.open_route(&route)
            }
            other => Err(unexpected("set-route-paused", &other)),
        }
    }

    /// Every route with its secret keys opened.
    pub(crate) async fn read_routes(&self) -> Result<Vec<RouteConfig>, ControllerError> {
        self.read_barrier().await?;
        let routes: Vec<StoredRoute> = self.metadata.read().routes().cloned().collect();
        routes.iter().map(|r| self.open_route(r)).collect()
    }
}
