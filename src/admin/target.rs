//! Where an admin command goes and how it gets there: the server, the credentials it signs
//! with, TLS (`https://`, a CA file, a client certificate), and the signed admin channel.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vela_proto::pb::admin::admin_service_client::AdminServiceClient;
use vela_sdk::{ClientConfig, Credentials, RequestSigner};

use super::root_cause;

/// The server an admin command goes to, and the credentials it signs with.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, or `https://host:port` for TLS.
    pub server: String,
    pub credentials: Option<Credentials>,
    /// CA (PEM file) to trust for TLS.
    pub ca_file: Option<PathBuf>,
    /// Certificate and key (PEM files) for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// `--yes`: destructive commands go ahead without asking.
    pub assume_yes: bool,
    /// `--output`: how results are printed.
    pub output: super::OutputFormat,
}

impl Target {
    /// A plaintext target without credentials.
    pub fn plain(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            credentials: None,
            ca_file: None,
            client_identity: None,
            assume_yes: false,
            output: super::OutputFormat::Table,
        }
    }

    /// The SDK client configuration: for the SDK clients (send, receive, dead letters) and
    /// the admin channel's headers and TLS alike.
    pub(super) fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut builder = ClientConfig::builder().endpoint(&self.server);
        if let Some(c) = &self.credentials {
            builder = builder.credentials(c.access_key.clone(), c.secret_key.clone());
        }
        if let Some(ca) = &self.ca_file {
            builder = builder.ca_pem(read(ca)?);
        }
        if let Some((cert, key)) = &self.client_identity {
            builder = builder.client_identity(read(cert)?, read(key)?);
        }
        Ok(builder.build()?)
    }
}

impl Target {
    /// The same target (credentials, TLS, output) at another server's `host:port`, over the
    /// scheme this one uses.
    pub(super) fn at(&self, addr: &str) -> Self {
        let server = match self.server.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{addr}"),
            None => addr.to_owned(),
        };
        Self {
            server,
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.server)
    }
}

/// The admin service's client, every call signed as the target says.
pub(super) type AdminClient = AdminServiceClient<InterceptedService<Channel, RequestSigner>>;

pub(super) async fn connect(target: &Target) -> anyhow::Result<AdminClient> {
    let server = &target.server;
    let uri = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let config = target.client_config()?;
    let mut endpoint = Channel::from_shared(uri.clone())
        .with_context(|| format!("invalid server address {server:?}"))?;
    if let Some(tls) = config.tls_config() {
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("TLS to {server}"))?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach vela at {server}: {}", root_cause(&e)))?;
    let signer = RequestSigner::new(&config, &admin_client_id())?;
    Ok(AdminServiceClient::with_interceptor(channel, signer))
}

/// How admin calls identify themselves (`x-mq-client-id`).
fn admin_client_id() -> String {
    format!("vela-admin@{}", std::process::id())
}
