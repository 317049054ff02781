//! Authentication between a cluster's roles (ADR 0021): every channel one Vela process opens to
//! another node of its cluster (Raft, store and controller RPCs) is mutual TLS with the
//! cluster's CA once the binary installed the cluster's client settings, and plaintext before
//! (standalone, and tests that run several nodes in one process).
//!
//! The setting is process-wide on purpose: a process belongs to one cluster and has one
//! identity, and every internal client (`RemoteStore`, `RemoteController`, Raft networks,
//! replica copies) dials through [`endpoint`] without each of them carrying it.

use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The name node certificates are verified against (a DNS name in their subject alternative
/// names), so they need not list the addresses nodes are reached at.
pub const DEFAULT_SERVER_NAME: &str = "vela-cluster";

static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

/// A node's cluster TLS material, PEM.
#[derive(Clone)]
pub struct ClusterTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// The name to verify peers' certificates against.
    pub server_name: String,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// What this node presents and trusts when it dials another node.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(self.server_name.clone())
    }

    /// What this node's server presents, requiring a client certificate the cluster CA signed.
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Makes every later internal channel of this process mutual TLS. Once per process,
    /// before any channel is opened; a second call is refused.
    pub fn install(&self) -> Result<(), String> {
        CLIENT
            .set(self.client_config())
            .map_err(|_| "cluster TLS is already installed in this process".to_owned())
    }
}

/// Whether internal channels are mutual TLS in this process.
pub fn installed() -> bool {
    CLIENT.get().is_some()
}

/// The endpoint of the cluster node at `addr` (`host:port`): `https://` with the installed
/// client settings, else `http://`.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    match CLIENT.get() {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("node address {addr:?} is not valid: {e}"))?
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS to {addr}: {e}")),
        None => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("node address {addr:?} is not valid: {e}")),
    }
}
