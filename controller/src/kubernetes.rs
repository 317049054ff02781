//! The store StatefulSet through the Kubernetes API (issue 11): the controller reads and sets
//! its replicas (the `scale` subresource) with `kube`, in the namespace its client defaults to
//! (in a pod: its own; outside: the kubeconfig context's). The chart grants exactly that
//! (a Role on `statefulsets/scale`, get and patch).

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use vela_proto::ControllerError;

/// The store StatefulSet the controller scales.
pub struct StoreStatefulSet {
    api: Api<StatefulSet>,
    name: String,
    namespace: String,
}

impl StoreStatefulSet {
    /// Connects as the process is configured to (in a pod: its service account; otherwise
    /// `KUBECONFIG` or `~/.kube/config`), for the StatefulSet `name`.
    pub async fn connect(name: &str) -> Result<Self, String> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
        Ok(Self::with_client(client, name))
    }

    /// The StatefulSet `name` in `client`'s default namespace.
    pub fn with_client(client: kube::Client, name: &str) -> Self {
        let namespace = client.default_namespace().to_owned();
        StoreStatefulSet {
            api: Api::default_namespaced(client),
            name: name.to_owned(),
            namespace,
        }
    }

    /// `namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its desired replicas.
    pub async fn replicas(&self) -> Result<u32, ControllerError> {
        let scale = self
            .api
            .get_scale(&self.name)
            .await
            .map_err(|e| self.error("get", e))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        u32::try_from(replicas).map_err(|_| {
            ControllerError::Internal(format!(
                "statefulset {} has {replicas} replicas",
                self.describe()
            ))
        })
    }

    /// Sets its desired replicas.
    pub async fn set_replicas(&self, replicas: u32) -> Result<(), ControllerError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| self.error("patch", e))?;
        Ok(())
    }

    /// A failed call as the controller reports it: a refusal by RBAC or a missing StatefulSet
    /// names what to grant or fix; anything else is worth retrying.
    fn error(&self, verb: &str, err: kube::Error) -> ControllerError {
        let what = self.describe();
        match &err {
            kube::Error::Api(status) if status.code == 403 => ControllerError::Invalid(format!(
                "the controller may not {verb} statefulsets/scale {what}: grant its service \
                 account get and patch on statefulsets/scale (the chart's Role does): {}",
                status.message
            )),
            kube::Error::Api(status) if status.code == 404 => {
                ControllerError::NotFound(format!("statefulset {what}"))
            }
            _ => ControllerError::Unavailable(format!(
                "Kubernetes API, {verb} statefulsets/scale {what}: {err}"
            )),
        }
    }
}
