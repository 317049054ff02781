//! The admin RPCs for routes (issue 12, ADR 0025): validated into domain values here, kept by
//! the controller, run where the process has a route runtime. Secret keys go in, never out.

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

/// Routes run only where a process has a route runtime: refuse to create one nothing would run.
fn runtime(shared: &Shared) -> Result<&dyn vela_proto::route::RouteRuntime, Status> {
    shared.ctx.routes.as_deref().ok_or_else(|| {
        Status::failed_precondition(
            "routes run in `vela standalone` in this version; a cluster does not place them on \
             a node yet (issue 12)",
        )
    })
}

/// Tells the runtime the routes changed, so it acts now.
fn changed(shared: &Shared) {
    if let Some(runtime) = &shared.ctx.routes {
        runtime.changed();
    }
}

fn info(shared: &Shared, route: &RouteConfig) -> api::RouteInfo {
    let status = shared.ctx.routes.as_ref().map(|r| {
        r.statuses().remove(&route.spec.name).unwrap_or_else(|| {
            // Created or resumed a moment ago: the runtime is starting it.
            RouteStatus::new(if route.paused {
                RouteState::Paused
            } else {
                RouteState::Starting
            })
        })
    });
    api::RouteInfo {
        route: Some(route_to_wire(route, Secrets::Omit)),
        status: status.as_ref().map(status_to_wire),
    }
}

pub(super) async fn create_route(
    shared: &Shared,
    req: route_pb::RouteSpec,
) -> Result<api::RouteInfo, Status> {
    runtime(shared)?;
    let spec = spec_from_wire(req).map_err(|e| Status::invalid_argument(e.0))?;
    let route = shared
        .ctx
        .controller
        .create_route(spec)
        .await
        .map_err(controller_to_grpc)?;
    changed(shared);
    Ok(info(shared, &route))
}

pub(super) async fn delete_route(shared: &Shared, name: &str) -> Result<(), Status> {
    let name = route_name(name)?;
    shared
        .ctx
        .controller
        .delete_route(&name)
        .await
        .map_err(controller_to_grpc)?;
    changed(shared);
    Ok(())
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
    changed(shared);
    Ok(info(shared, &route))
}

pub(super) async fn list(shared: &Shared) -> Result<Vec<api::RouteInfo>, Status> {
    let routes = shared
        .ctx
        .controller
        .routes()
        .await
        .map_err(controller_to_grpc)?;
    Ok(routes.iter().map(|r| info(shared, r)).collect())
}

pub(super) async fn describe(shared: &Shared, name: &str) -> Result<api::RouteInfo, Status> {
    let name = route_name(name)?;
    let routes = shared
        .ctx
        .controller
        .routes()
        .await
        .map_err(controller_to_grpc)?;
    routes
        .iter()
        .find(|r| r.spec.name == name)
        .map(|r| info(shared, r))
        .ok_or_else(|| Status::not_found(format!("route {name} not found")))
}
