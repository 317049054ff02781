//! The controller node's gRPC service (`vela.controller.v1.Controller`): what a cluster's proxies
//! call through `vela_proto::controller_client::RemoteController`. Wire input is validated into
//! domain types here; only the group's leader answers (a follower says `NotLeader`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vela_proto::auth::UserName;
use vela_proto::auth_wire::*;
use vela_proto::cluster_status::member_to_wire;
use vela_proto::controller_wire::*;
use vela_proto::pb::auth as auth_pb;
use vela_proto::pb::controller as pb;
use vela_proto::pb::controller::controller_server::{
    Controller as ControllerRpc, ControllerServer,
};
use vela_proto::pb::route as route_pb;
use vela_proto::route_wire::{Secrets, route_to_wire, spec_from_wire, statuses_to_wire};
use vela_proto::store_wire::WireError;
use vela_proto::tier_credentials::{self, TierCredentials};
use vela_proto::{ControllerApi, RouteName};

use crate::Controller;

/// [`Controller`] as the `vela.controller.v1.Controller` gRPC service.
pub struct ControllerService {
    controller: Arc<Controller>,
}

impl ControllerService {
    /// The tonic service to add to the controller node's server.
    pub fn server(controller: Arc<Controller>) -> ControllerServer<ControllerService> {
        ControllerServer::new(ControllerService { controller })
    }
}

fn failed(err: vela_proto::ControllerError) -> Status {
    error_to_status(&err)
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn create_topic(
        &self,
        request: Request<pb::TopicSpec>,
    ) -> Result<Response<pb::Topic>, Status> {
        let wire = request.into_inner();
        let replicas = wire.replicas;
        let spec = topic_spec_from_wire(wire)?;
        let topic = match replicas {
            Some(replicas) => {
                self.controller
                    .create_topic_replicated(spec, replicas)
                    .await
            }
            None => self.controller.create_topic(spec).await,
        }
        .map_err(failed)?;
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::TopicDrop>, Status> {
        let name = topic_name(&request.into_inner().name)?;
        let drop = self.controller.delete_topic(&name).await.map_err(failed)?;
        Ok(Response::new(pb::TopicDrop {
            drop_id: drop.id,
            shards: drop.shards,
        }))
    }

    async fn finish_topic_drop(
        &self,
        request: Request<pb::TopicDropDone>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let name = topic_name(&req.name)?;
        self.controller
            .finish_topic_drop(&name, req.drop_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_topic_retention(
        &self,
        request: Request<pb::TopicRetention>,
    ) -> Result<Response<pb::Topic>, Status> {
        let req = request.into_inner();
        let name = topic_name(&req.name)?;
        let topic = self
            .controller
            .set_topic_retention(&name, req.retention_ms)
            .await
            .map_err(failed)?;
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn get_topic(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::MaybeTopic>, Status> {
        let name = topic_name(&request.into_inner().name)?;
        let topic = self.controller.get_topic(&name).await.map_err(failed)?;
        Ok(Response::new(pb::MaybeTopic {
            topic: topic.as_ref().map(topic_to_wire),
        }))
    }

    async fn list_topics(&self, _: Request<pb::Empty>) -> Result<Response<pb::Topics>, Status> {
        let topics = self.controller.list_topics().await.map_err(failed)?;
        Ok(Response::new(pb::Topics {
            topics: topics.iter().map(topic_to_wire).collect(),
        }))
    }

    async fn create_group(
        &self,
        request: Request<pb::GroupSpec>,
    ) -> Result<Response<pb::Group>, Status> {
        let spec = group_spec_from_wire(request.into_inner())?;
        let group = self.controller.create_group(spec).await.map_err(failed)?;
        Ok(Response::new(group_to_wire(&group)))
    }

    async fn update_group(
        &self,
        request: Request<pb::GroupUpdate>,
    ) -> Result<Response<pb::Group>, Status> {
        let (name, update) =
            vela_proto::controller_wire::group_update_from_wire(request.into_inner())?;
        let group = self
            .controller
            .update_group(&name, update)
            .await
            .map_err(failed)?;
        Ok(Response::new(group_to_wire(&group)))
    }

    async fn delete_group(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::GroupDrop>, Status> {
        let name = group_name(&request.into_inner().name)?;
        let drop = self.controller.delete_group(&name).await.map_err(failed)?;
        Ok(Response::new(pb::GroupDrop {
            drop_id: drop.drop.id,
            shards: drop.shards,
            drop_floor: drop.drop.floor,
        }))
    }

    async fn pending_deletions(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::PendingDeletionList>, Status> {
        let pending = self.controller.pending_deletions().await.map_err(failed)?;
        Ok(Response::new(pb::PendingDeletionList {
            deletions: pending
                .into_iter()
                .map(|d| pb::PendingDeletion {
                    kind: d.kind.as_str().to_owned(),
                    name: d.name,
                    drop_id: d.id,
                    shards: d.shards,
                })
                .collect(),
        }))
    }

    async fn finish_group_drop(
        &self,
        request: Request<pb::GroupDropDone>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let name = group_name(&req.name)?;
        self.controller
            .finish_group_drop(&name, req.drop_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_group(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::MaybeGroup>, Status> {
        let name = group_name(&request.into_inner().name)?;
        let group = self.controller.get_group(&name).await.map_err(failed)?;
        Ok(Response::new(pb::MaybeGroup {
            group: group.as_ref().map(group_to_wire),
        }))
    }

    async fn list_groups(&self, _: Request<pb::Empty>) -> Result<Response<pb::Groups>, Status> {
        let groups = self.controller.list_groups().await.map_err(failed)?;
        Ok(Response::new(pb::Groups {
            groups: groups.iter().map(group_to_wire).collect(),
        }))
    }

    async fn ensure_dead_letter_topic(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::Topic>, Status> {
        let name = group_name(&request.into_inner().name)?;
        let topic = self
            .controller
            .ensure_dead_letter_topic(&name)
            .await
            .map_err(failed)?;
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn proxy_heartbeat(
        &self,
        request: Request<pb::ProxyHeartbeatRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let beat = vela_proto::controller_api::ProxyBeat {
            addr: req.addr,
            admin_addr: Some(req.admin_addr).filter(|a| !a.is_empty()),
            version: req.version,
        };
        self.controller
            .proxy_heartbeat(&beat)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_proxies(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::Proxies>, Status> {
        let proxies = self.controller.proxies().await.map_err(failed)?;
        Ok(Response::new(pb::Proxies {
            proxies: proxies
                .into_iter()
                .map(|p| pb::ProxyInfo {
                    addr: p.addr,
                    version: p.version,
                    last_seen_ms: p.last_seen_ms,
                    admin_addr: p.admin_addr.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn create_user(
        &self,
        request: Request<auth_pb::User>,
    ) -> Result<Response<auth_pb::User>, Status> {
        let user = user_from_wire(request.into_inner())?;
        let info = self.controller.create_user(user).await.map_err(failed)?;
        Ok(Response::new(user_info_to_wire(&info)))
    }

    async fn update_user(
        &self,
        request: Request<auth_pb::UserUpdate>,
    ) -> Result<Response<auth_pb::User>, Status> {
        let (name, update) = user_update_from_wire(request.into_inner())?;
        let info = self
            .controller
            .update_user(&name, update)
            .await
            .map_err(failed)?;
        Ok(Response::new(user_info_to_wire(&info)))
    }

    async fn delete_user(&self, request: Request<pb::Name>) -> Result<Response<pb::Empty>, Status> {
        let name = UserName::new(request.into_inner().name).map_err(WireError::from)?;
        self.controller.delete_user(&name).await.map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_acl(
        &self,
        request: Request<auth_pb::PutAcl>,
    ) -> Result<Response<auth_pb::Acl>, Status> {
        let put = request.into_inner();
        let acl = acl_from_wire(put.acl.unwrap_or_default())?;
        let acl = self
            .controller
            .put_acl(&acl.subject, acl.entries, put.create)
            .await
            .map_err(failed)?;
        Ok(Response::new(acl_to_wire(&acl)))
    }

    async fn delete_acl(
        &self,
        request: Request<auth_pb::DeleteAcl>,
    ) -> Result<Response<pb::Empty>, Status> {
        let delete = request.into_inner();
        let subject = subject_from_wire(&delete.subject)?;
        let resources = resources_from_wire(&delete.resources)?;
        self.controller
            .delete_acl(&subject, &resources)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn auth_data(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<auth_pb::AuthData>, Status> {
        let data = self.controller.auth_data().await.map_err(failed)?;
        Ok(Response::new(auth_data_to_wire(&data)))
    }

    async fn create_route(
        &self,
        request: Request<route_pb::RouteSpec>,
    ) -> Result<Response<route_pb::Route>, Status> {
        let spec = spec_from_wire(request.into_inner())?;
        let route = self.controller.create_route(spec).await.map_err(failed)?;
        Ok(Response::new(route_to_wire(&route, Secrets::Include)))
    }

    async fn delete_route(
        &self,
        request: Request<pb::Name>,
    ) -> Result<Response<pb::Empty>, Status> {
        let name =
            RouteName::new(request.into_inner().name).map_err(|e| WireError(e.to_string()))?;
        self.controller.delete_route(&name).await.map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_route_paused(
        &self,
        request: Request<route_pb::SetRoutePaused>,
    ) -> Result<Response<route_pb::Route>, Status> {
        let request = request.into_inner();
        let name = RouteName::new(request.name).map_err(|e| WireError(e.to_string()))?;
        let route = self
            .controller
            .set_route_paused(&name, request.paused)
            .await
            .map_err(failed)?;
        Ok(Response::new(route_to_wire(&route, Secrets::Include)))
    }

    async fn list_routes(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<route_pb::Routes>, Status> {
        let routes = self.controller.routes().await.map_err(failed)?;
        Ok(Response::new(route_pb::Routes {
            routes: routes
                .iter()
                .map(|r| route_to_wire(r, Secrets::Include))
                .collect(),
        }))
    }

    async fn route_statuses(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<route_pb::RouteStatuses>, Status> {
        let statuses = self.controller.route_statuses().await.map_err(failed)?;
        Ok(Response::new(statuses_to_wire(&statuses)))
    }

    async fn receipt_keys(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ReceiptKeys>, Status> {
        let keys = self.controller.receipt_keys().await.map_err(failed)?;
        Ok(Response::new(vela_proto::receipt_keys::keys_to_wire(&keys)))
    }

    async fn rotate_receipt_key(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ReceiptKeys>, Status> {
        let keys = self.controller.rotate_receipt_key().await.map_err(failed)?;
        Ok(Response::new(vela_proto::receipt_keys::keys_to_wire(&keys)))
    }

    async fn retire_receipt_key(
        &self,
        request: Request<pb::RetireReceiptKeyRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.controller
            .retire_receipt_key(request.id, request.force)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn tier_credentials(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::TierCredentialsReply>, Status> {
        let credentials = self.controller.tier_credentials().await.map_err(failed)?;
        Ok(Response::new(tier_credentials::to_wire(
            credentials.as_ref(),
        )))
    }

    async fn set_tier_credentials(
        &self,
        request: Request<pb::SetTierCredentialsRequest>,
    ) -> Result<Response<pb::TierCredentialsReply>, Status> {
        let credentials = request
            .into_inner()
            .credentials
            .map(|c| TierCredentials::new(c.access_key_id, c.secret_access_key))
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self
            .controller
            .set_tier_credentials(credentials)
            .await
            .map_err(failed)?;
        Ok(Response::new(tier_credentials::to_wire(now.as_ref())))
    }

    async fn drain_store(
        &self,
        request: Request<pb::DrainStoreRequest>,
    ) -> Result<Response<pb::StoreDrain>, Status> {
        let drain = self
            .controller
            .drain_store(request.into_inner().store)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::StoreDrain {
            store: drain.store,
            moving: drain.moving,
            configured: drain.configured,
        }))
    }

    async fn register_store(
        &self,
        request: Request<pb::StoreNodeInfo>,
    ) -> Result<Response<pb::Empty>, Status> {
        let node = request.into_inner();
        self.controller
            .register_store(node.id, &node.addr)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_stores(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::StoreNodes>, Status> {
        let stores = self.controller.store_nodes().await.map_err(failed)?;
        Ok(Response::new(pb::StoreNodes {
            stores: stores.into_iter().map(store_node_to_wire).collect(),
        }))
    }

    async fn scale_stores(
        &self,
        request: Request<pb::ScaleStoresRequest>,
    ) -> Result<Response<pb::StoreScale>, Status> {
        let scale = self
            .controller
            .scale_stores(request.into_inner().replicas)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::StoreScale {
            from: scale.from,
            to: scale.to,
            draining: scale.draining,
            moving: scale.moving,
            done: scale.done,
        }))
    }

    async fn remove_store(
        &self,
        request: Request<pb::DrainStoreRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.controller
            .remove_store(request.into_inner().store)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn undrain_store(
        &self,
        request: Request<pb::DrainStoreRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.controller
            .undrain_store(request.into_inner().store)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn node_status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<vela_proto::pb::status::MemberStatus>, Status> {
        Ok(Response::new(member_to_wire(
            &self.controller.member_status(),
        )))
    }
}

#[cfg(test)]
mod tests;
