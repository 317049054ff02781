//! The admin RPCs for users and ACLs (ADR 0019): validated into domain values here, applied by
//! the controller. Passwords go in, never out.

use tonic::Status;
use vela_proto::auth_wire::*;
use vela_proto::pb::admin as api;
use vela_proto::pb::auth as auth_pb;
use vela_proto::store_wire::WireError;

use crate::Shared;
use crate::status::controller_to_grpc;

fn invalid(e: WireError) -> Status {
    Status::invalid_argument(e.0)
}

/// Every user and ACL, from the controller.
async fn auth_data(shared: &Shared) -> Result<vela_proto::auth::AuthData, Status> {
    shared
        .ctx
        .controller
        .auth_data()
        .await
        .map_err(controller_to_grpc)
}

pub(super) async fn create_user(
    shared: &Shared,
    req: auth_pb::User,
) -> Result<auth_pb::User, Status> {
    let user = user_from_wire(req).map_err(invalid)?;
    let info = shared
        .ctx
        .controller
        .create_user(user)
        .await
        .map_err(controller_to_grpc)?;
    Ok(user_info_to_wire(&info))
}

pub(super) async fn update_user(
    shared: &Shared,
    req: auth_pb::UserUpdate,
) -> Result<auth_pb::User, Status> {
    let (name, update) = user_update_from_wire(req).map_err(invalid)?;
    let info = shared
        .ctx
        .controller
        .update_user(&name, update)
        .await
        .map_err(controller_to_grpc)?;
    Ok(user_info_to_wire(&info))
}

pub(super) async fn delete_user(shared: &Shared, name: &str) -> Result<(), Status> {
    let name = vela_proto::auth::UserName::new(name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    shared
        .ctx
        .controller
        .delete_user(&name)
        .await
        .map_err(controller_to_grpc)
}

pub(super) async fn list_users(
    shared: &Shared,
    req: api::ListUsersRequest,
) -> Result<auth_pb::Users, Status> {
    let data = auth_data(shared).await?;
    let users: Vec<auth_pb::User> = data
        .users
        .iter()
        .filter(|u| req.name.is_empty() || u.name.as_str() == req.name)
        .map(|u| user_info_to_wire(&u.info()))
        .collect();
    if !req.name.is_empty() && users.is_empty() {
        return Err(Status::not_found(format!("user {} not found", req.name)));
    }
    Ok(auth_pb::Users { users })
}

pub(super) async fn put_acl(shared: &Shared, req: auth_pb::PutAcl) -> Result<auth_pb::Acl, Status> {
    let acl = acl_from_wire(req.acl.unwrap_or_default()).map_err(invalid)?;
    if acl.entries.is_empty() {
        return Err(Status::invalid_argument(
            "an ACL change needs at least one entry",
        ));
    }
    let acl = shared
        .ctx
        .controller
        .put_acl(&acl.subject, acl.entries, req.create)
        .await
        .map_err(controller_to_grpc)?;
    Ok(acl_to_wire(&acl))
}

pub(super) async fn delete_acl(shared: &Shared, req: auth_pb::DeleteAcl) -> Result<(), Status> {
    let subject = subject_from_wire(&req.subject).map_err(invalid)?;
    let resources = resources_from_wire(&req.resources).map_err(invalid)?;
    shared
        .ctx
        .controller
        .delete_acl(&subject, &resources)
        .await
        .map_err(controller_to_grpc)
}

pub(super) async fn list_acls(
    shared: &Shared,
    req: api::ListAclsRequest,
) -> Result<auth_pb::Acls, Status> {
    let subject = (!req.subject.is_empty())
        .then(|| subject_from_wire(&req.subject))
        .transpose()
        .map_err(invalid)?;
    let resource = (!req.resource.is_empty())
        .then(|| resources_from_wire(std::slice::from_ref(&req.resource)))
        .transpose()
        .map_err(invalid)?
        .and_then(|mut r| r.pop());
    let data = auth_data(shared).await?;
    let acls: Vec<auth_pb::Acl> = data
        .acls
        .into_iter()
        .filter(|a| subject.as_ref().is_none_or(|s| &a.subject == s))
        .filter_map(|mut a| {
            if let Some(resource) = &resource {
                a.entries.retain(|e| &e.resource == resource);
            }
            (!a.entries.is_empty()).then(|| acl_to_wire(&a))
        })
        .collect();
    if let Some(subject) = &subject
        && acls.is_empty()
        && resource.is_none()
    {
        return Err(Status::not_found(format!("no ACL for {subject}")));
    }
    Ok(auth_pb::Acls { acls })
}
