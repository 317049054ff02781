//! The admin RPCs for routes (issue 12, ADR 0025): validated into domain values here, kept by
//! the controller, run where the controller's process runs them (the standalone process, the
//! leader of a cluster's controllers), which also reports how they do. Secret keys go in,
//! never out.

use std::collections::BTreeMap;

use tonic::Status;
use vela_proto::RouteName;
use vela_proto::pb::admin as api;
use vela_proto::pb::route as route_pb;
use vela_proto::route::{RouteConfig, RouteState, RouteStatus};
use vela_proto::route_wire::{Secrets, route_to_wire, spec_from_wire, status_to_wire};

use crate::Shared;
use crate::status::controller_to_grpc;

fn route_name(name: &str) -> Result<RouteName, Status> {
    RouteName::new(name.trim()).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// How the routes are doing; empty when the node running them cannot say now (a new
/// controller leader starting them): the routes then show as starting.
async fn statuses(shared: &Shared) -> BTreeMap<RouteName, RouteStatus> {
    match shared.ctx.controller.route_statuses().await {
        Ok(statuses) => statuses,
        Err(err) => {
            tracing::debug!(error = %err, "route statuses");
            BTreeMap::new()
        }
    }
}

fn info(route: &RouteConfig, statuses: &BTreeMap<RouteName, RouteStatus>) -> api::RouteInfo {
    let status = statuses.get(&route.spec.name).cloned().unwrap_or_else(|| {
        // Created or resumed a moment ago, or a new leader: the runtime is starting it.
        RouteStatus::new(if route.paused {
            RouteState::Paused
        } else {
            RouteState::Starting
        })
    });
    api::RouteInfo {
        route: Some(route_to_wire(route, Secrets::Omit)),
        status: Some(status_to_wire(&status)),
    }
}

pub(super) async fn create_route(
    shared: &Shared,
    req: route_pb::RouteSpec,
) -> Result<api::RouteInfo, Status> {
    let spec = spec_from_wire(req).map_err(|e| Status::invalid_argument(e.0))?;
    let route = shared
        .ctx
        .controller
        .create_route(spec)
        .await
        .map_err(controller_to_grpc)?;
    Ok(info(&route, &statuses(shared).await))
}

pub(super) async fn delete_route(shared: &Shared, name: &str) -> Result<(), Status> {
    let name = route_name(name)?;
    shared
        .ctx
        .controller
        .delete_route(&name)
        .await
        .map_err(controller_to_grpc)
}

pub(super) async fn set_paused(
    shared: &Shared,
    req: route_pb::SetRoutePaused,
) -> Result<api::RouteInfo, Status> {
    let name = route_name(&req.name)?;
    let route = shared
        .ctx
        .controller
        .set_route_paused(&name, req.paused)
        .await
        .map_err(controller_to_grpc)?;
    Ok(info(&route, &statuses(shared).await))
}

pub(super) async fn list(shared: &Shared) -> Result<Vec<api::RouteInfo>, Status> {
    let routes = shared
        .ctx
        .controller
        .routes()
        .await
        .map_err(controller_to_grpc)?;
    let statuses = statuses(shared).await;
    Ok(routes.iter().map(|r| info(r, &statuses)).collect())
}

pub(super) async fn describe(shared: &Shared, name: &str) -> Result<api::RouteInfo, Status> {
    let name = route_name(name)?;
    let routes = shared
        .ctx
        .controller
        .routes()
        .await
        .map_err(controller_to_grpc)?;
    let route = routes
        .iter()
        .find(|r| r.spec.name == name)
        .ok_or_else(|| Status::not_found(format!("route {name} not found")))?;
    Ok(info(route, &statuses(shared).await))
}
