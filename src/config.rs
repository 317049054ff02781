//! Configuration of the `vela` binary: one TOML document whose sections are the roles'
//! own configs. Precedence, lowest first: built-in defaults < config file < `VELA_…`
//! environment variables < command-line flags.
//!
//! Environment variables name a key path with `__` between levels:
//! `VELA_DATA_DIR=/var/lib/vela`, `VELA_PROXY__AUTO_CREATE_TOPICS=false`,
//! `VELA_STORE__FLUSH=async`. Values are read as TOML values when they parse as one
//! (`true`, `8`), otherwise as strings. An unknown key is an error, except for the few
//! `VELA_` variables that are not config keys (`VELA_CONFIG`, `VELA_ADMIN_SERVER`,
//! `VELA_BOOTSTRAP`, `VELA_NODE_ID_FROM_HOSTNAME`, `VELA_BENCH_*`, `VELA_TEST_*`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

mod cluster;
pub use cluster::{ClusterConfig, ClusterNode, ClusterTlsConfig};

/// Largest `proxy.max_body_size` accepted.
const MAX_BODY_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// Prefix of every environment variable the binary reads.
pub const ENV_PREFIX: &str = "VELA_";

/// `VELA_` variables that are not config keys: the config file path, the admin CLI's server
/// and credentials, the role flags `--bootstrap` and `--node-id-from-hostname`, and anything under `VELA_BENCH_` / `VELA_TEST_` (benchmarks and tests).
fn is_reserved_env(path: &str) -> bool {
    path == "CONFIG"
        || path == "ADMIN_SERVER"
        || path == "ADMIN_ACCESS_KEY"
        || path == "ADMIN_SECRET_KEY"
        || path == "ADMIN_CA_FILE"
        || path == "BOOTSTRAP"
        || path == "NODE_ID_FROM_HOSTNAME"
        || path.starts_with("BENCH_")
        || path.starts_with("TEST_")
}

/// The whole configuration of one `vela` process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VelaConfig {
    /// Root of everything Vela writes: `<data_dir>/store`, `<data_dir>/controller`.
    pub data_dir: PathBuf,
    /// Where `apache.rocketmq.v2.MessagingService` and the Vela admin service listen.
    pub grpc_listen: SocketAddr,
    /// Where `/health`, `/ready` and `/metrics` are served.
    pub http_listen: SocketAddr,
    /// Serve the Vela admin service here instead of on `grpc_listen` (a port only operators
    /// reach). Default: on `grpc_listen`.
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
    pub proxy: vela_proxy::ProxyConfig,
    pub store: vela_store::StoreConfig,
    pub controller: vela_controller::ControllerConfig,
    /// The cluster this process is part of, when the roles run as separate processes.
    pub cluster: ClusterConfig,
    /// Users, ACLs and request signatures (ADR 0019; README "Securing Vela").
    pub auth: vela_proxy::AuthConfig,
    /// TLS on `grpc_listen` (clients and `vela admin`).
    pub tls: TlsConfig,
    /// Metrics export over OTLP, and metric limits (`docs/metrics.md`, ADR 0022).
    pub telemetry: vela_telemetry::TelemetryConfig,
    /// Object storage for sealed log segments (README "Keeping 30 days", ADR 0023).
    pub tier: vela_tier::TierConfig,
}

/// TLS on the client port (README "Securing Vela"). Off: plaintext, which the official Rust
/// 5.0.0 client needs (it cannot do TLS).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// The server's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate this CA (PEM) signed.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The server TLS settings, files read now and again whenever they change (`None` when
    /// TLS is off).
    pub fn server_config(&self) -> anyhow::Result<Option<Arc<vela_proxy::tls::ServerTls>>> {
        use anyhow::Context;
        if !self.enabled {
            return Ok(None);
        }
        let path = |key: &str, path: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
            let path = path
                .clone()
                .with_context(|| format!("tls.enabled needs tls.{key}"))?;
            std::fs::metadata(&path)
                .with_context(|| format!("cannot read tls.{key} {}", path.display()))?;
            Ok(path)
        };
        let files = vela_proxy::tls::TlsFiles {
            cert: path("cert_file", &self.cert_file)?,
            key: path("key_file", &self.key_file)?,
            client_ca: match &self.client_ca_file {
                Some(_) => Some(path("client_ca_file", &self.client_ca_file)?),
                None => None,
            },
        };
        vela_proxy::tls::ServerTls::load(files)
            .map(Some)
            .map_err(anyhow::Error::msg)
            .context("tls")
    }
}

impl Default for VelaConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./vela-data"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            admin_listen: None,
            log: LogConfig::default(),
            proxy: vela_proxy::ProxyConfig::default(),
            store: vela_store::StoreConfig::default(),
            controller: vela_controller::ControllerConfig::default(),
            cluster: ClusterConfig::default(),
            auth: vela_proxy::AuthConfig::default(),
            tls: TlsConfig::default(),
            telemetry: vela_telemetry::TelemetryConfig::default(),
            tier: vela_tier::TierConfig::default(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,vela_store=debug`. `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        // openraft narrates every election at info; its warnings are what an operator needs.
        Self {
            level: "info,openraft=warn".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Which defaults apply before the file, environment and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One process, every role; topics and groups are auto-created on first use.
    Standalone,
    /// A store node of a cluster (`vela store`).
    Store,
    /// A controller node of a cluster (`vela controller`).
    Controller,
    /// A proxy of a cluster (`vela proxy`): topics and groups are created explicitly.
    Proxy,
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub data_dir: Option<PathBuf>,
    pub grpc_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

/// A configuration problem, reported as one readable line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The profile's defaults as a TOML table (merged under the file).
fn profile_defaults(profile: Profile) -> toml::Table {
    let text = match profile {
        Profile::Standalone => "[proxy]\nauto_create_topics = true\nauto_create_groups = true\n",
        // A store node's shards heartbeat their peers ten times a second; openraft warns on
        // every failed heartbeat while a peer is down, which would bury everything else.
        Profile::Store | Profile::Controller => "[log]\nlevel = \"info,openraft=error\"\n",
        Profile::Proxy => "",
    };
    // A constant document: parsing cannot fail, and an empty table is a safe fallback.
    text.parse::<toml::Table>().unwrap_or_default()
}

/// Loads the configuration: profile defaults < `file` < `env` < `flags`.
pub fn load(
    profile: Profile,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<VelaConfig, ConfigError> {
    let mut table = profile_defaults(profile);
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file_table = text
            .parse::<toml::Table>()
            .map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        merge(&mut table, file_table);
    }
    merge(&mut table, env_table(env)?);
    let mut flag_table = toml::Table::new();
    if let Some(d) = &flags.data_dir {
        flag_table.insert(
            "data_dir".into(),
            toml::Value::String(d.display().to_string()),
        );
    }
    if let Some(a) = flags.grpc_listen {
        flag_table.insert("grpc_listen".into(), toml::Value::String(a.to_string()));
    }
    if let Some(a) = flags.http_listen {
        flag_table.insert("http_listen".into(), toml::Value::String(a.to_string()));
    }
    merge(&mut table, flag_table);
    from_table(profile, table)
}

/// A node id from a StatefulSet pod's host name `<name>-<ordinal>`: the ordinal + 1 (ids
/// start at 1; 0 is reserved).
pub fn node_id_from_hostname(host: &str) -> Result<u64, ConfigError> {
    let short = host.split('.').next().unwrap_or(host);
    short
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<u64>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "host name {host:?} does not end in -<ordinal> (a StatefulSet pod's name), so \
                 it gives no node id"
            ))
        })
}

/// Turns a merged table into the typed config and derives the per-role paths.
fn from_table(profile: Profile, table: toml::Table) -> Result<VelaConfig, ConfigError> {
    if profile == Profile::Store {
        let store = table.get("store").and_then(toml::Value::as_table);
        if store.is_some_and(|t| t.contains_key("shards")) {
            return Err(ConfigError::Invalid(
                "store.shards is for standalone; a store node of a cluster holds cluster.shards"
                    .into(),
            ));
        }
        // Two nodes that both default to one id would break Raft: say which node this is.
        if !store.is_some_and(|t| t.contains_key("node_id")) {
            return Err(ConfigError::Invalid(
                "store.node_id is required on a store node (its id in cluster.stores)".into(),
            ));
        }
    }
    if profile == Profile::Controller {
        let controller = table.get("controller").and_then(toml::Value::as_table);
        if controller.is_some_and(|t| t.contains_key("shards")) {
            return Err(ConfigError::Invalid(
                "controller.shards is for standalone; a controller node places queues on \
                 cluster.shards"
                    .into(),
            ));
        }
        if !controller.is_some_and(|t| t.contains_key("node_id")) {
            return Err(ConfigError::Invalid(
                "controller.node_id is required on a controller node (its id in \
                 cluster.controllers)"
                    .into(),
            ));
        }
    }
    for role in ["store", "controller"] {
        if table
            .get(role)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key("data_dir"))
        {
            return Err(ConfigError::Invalid(format!(
                "{role}.data_dir is derived from the top-level data_dir; set data_dir instead"
            )));
        }
    }
    let store_sets_max_delay = table
        .get("store")
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.contains_key("max_delay"));
    let mut config: VelaConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
    config.store.data_dir = config.data_dir.join("store");
    config.controller.data_dir = config.data_dir.join("controller");
    config.controller.metadata_key_file = config.auth.metadata_key_file.clone();
    config.proxy.auth = config.auth.clone();
    if config.auth.init_user.is_some() != config.auth.init_password.is_some() {
        return Err(ConfigError::Invalid(
            "auth.init_user and auth.init_password are given together or not at all".into(),
        ));
    }
    config.init_user()?;
    if config.tls.enabled && (config.tls.cert_file.is_none() || config.tls.key_file.is_none()) {
        return Err(ConfigError::Invalid(
            "tls.enabled needs tls.cert_file and tls.key_file".into(),
        ));
    }
    if config.auth.signature_window.is_zero() {
        return Err(ConfigError::Invalid(
            "auth.signature_window must be longer than 0s".into(),
        ));
    }
    // A request may carry several bodies and becomes one log record; keep it far below the
    // record size limit of the log (ADR 0001).
    if config.proxy.max_body_size.as_u64() > MAX_BODY_SIZE_LIMIT {
        return Err(ConfigError::Invalid(format!(
            "proxy.max_body_size {} is above the supported maximum of 16 MiB",
            config.proxy.max_body_size
        )));
    }
    config.proxy.validate().map_err(ConfigError::Invalid)?;
    config.telemetry.validate().map_err(ConfigError::Invalid)?;
    config.tier.validate().map_err(ConfigError::Invalid)?;
    // One knob for the delay limit in standalone: the store follows the proxy's unless told.
    if !store_sets_max_delay {
        config.store.max_delay = config.proxy.max_delay;
    }
    Ok(config)
}

impl VelaConfig {
    /// The SUPER user `auth.init_user` / `auth.init_password` describe, if given.
    pub fn init_user(&self) -> Result<Option<vela_proto::auth::User>, ConfigError> {
        let (Some(name), Some(password)) = (&self.auth.init_user, &self.auth.init_password) else {
            return Ok(None);
        };
        let bad = |e: vela_proto::auth::AuthValueError| {
            ConfigError::Invalid(format!("auth.init_user / init_password: {e}"))
        };
        Ok(Some(vela_proto::auth::User {
            name: vela_proto::auth::UserName::new(name.clone()).map_err(bad)?,
            password: vela_proto::auth::Password::new(password.clone()).map_err(bad)?,
            user_type: vela_proto::auth::UserType::Super,
            status: vela_proto::auth::UserStatus::Enabled,
        }))
    }
}

/// Keys whose `VELA_…` values are always strings.
const RAW_STRING_ENV: &[&str] = &[
    "auth.init_user",
    "auth.init_password",
    "tier.url",
    "tier.endpoint",
    "tier.region",
    "tier.access_key_id",
    "tier.secret_access_key",
];
/// Tables whose `VELA_…` entries are always strings (header values and resource attributes).
const RAW_STRING_ENV_TABLES: &[&str] = &["telemetry.otlp.headers.", "telemetry.resource."];

/// Builds a table from `VELA_A__B=value` variables.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::new();
    for (key, value) in env {
        let Some(path) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if path.is_empty() || is_reserved_env(path) {
            continue;
        }
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "environment variable {key} has an empty key part"
            )));
        }
        // Secrets are taken as written: a password of digits is not a number, and a value that
        // fails to parse must not end up in an error message.
        let dotted = parts.join(".");
        let parsed = if RAW_STRING_ENV.contains(&dotted.as_str())
            || RAW_STRING_ENV_TABLES.iter().any(|t| dotted.starts_with(t))
        {
            toml::Value::String(value)
        } else {
            format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value))
        };
        let mut cursor = &mut table;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cursor.insert(part.clone(), parsed.clone());
            } else {
                let entry = cursor
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => cursor = t,
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "environment variable {key} conflicts with another VELA_ variable"
                        )));
                    }
                }
            }
        }
    }
    Ok(table)
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn node_ids_come_from_statefulset_pod_names() {
        assert_eq!(node_id_from_hostname("vela-store-0").expect("id"), 1);
        assert_eq!(
            node_id_from_hostname("vela-controller-2.vela-controller.ns.svc").expect("id"),
            3
        );
        for bad in ["vela", "vela-store-x", "", "store-"] {
            let err = node_id_from_hostname(bad).expect_err(bad).to_string();
            assert!(err.contains("-<ordinal>"), "{err}");
        }
    }

    #[test]
    fn standalone_defaults() {
        let c = load(
            Profile::Standalone,
            None,
            no_env(),
            &FlagOverrides::default(),
        )
        .expect("defaults load");
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.data_dir, PathBuf::from("./vela-data"));
        assert_eq!(c.store.data_dir, PathBuf::from("./vela-data/store"));
        assert!(c.proxy.auto_create_topics && c.proxy.auto_create_groups);
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vela.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\ngrpc_listen = \"127.0.0.1:9001\"\n[proxy]\nauto_create_topics = false\n",
        )
        .expect("write");
        let env = vec![
            ("VELA_GRPC_LISTEN".to_owned(), "127.0.0.1:9002".to_owned()),
            ("VELA_PROXY__DEFAULT_QUEUE_COUNT".to_owned(), "4".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
            ("VELA_ADMIN_SERVER".to_owned(), "ignored".to_owned()),
            ("VELA_BENCH_SECONDS".to_owned(), "ignored".to_owned()),
        ];
        let flags = FlagOverrides {
            data_dir: Some(PathBuf::from("/from/flag")),
            ..FlagOverrides::default()
        };
        let c = load(Profile::Standalone, Some(&path), env, &flags).expect("loads");
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:9002");
        assert!(!c.proxy.auto_create_topics);
        assert!(c.proxy.auto_create_groups);
        assert_eq!(c.proxy.default_queue_count, 4);
    }

    #[test]
    fn auth_comes_from_its_section_and_the_environment() {
        let env = vec![
            ("VELA_AUTH__ENABLED".to_owned(), "true".to_owned()),
            ("VELA_AUTH__INIT_USER".to_owned(), "root".to_owned()),
            ("VELA_AUTH__INIT_PASSWORD".to_owned(), "0123".to_owned()),
            ("VELA_AUTH__SIGNATURE_WINDOW".to_owned(), "5m".to_owned()),
            ("VELA_ADMIN_ACCESS_KEY".to_owned(), "ignored".to_owned()),
            ("VELA_ADMIN_SECRET_KEY".to_owned(), "ignored".to_owned()),
        ];
        let c = load(Profile::Standalone, None, env, &FlagOverrides::default()).expect("loads");
        assert!(c.auth.enabled && c.proxy.auth.enabled);
        assert_eq!(c.auth.init_password.as_deref(), Some("0123"));
        assert_eq!(
            c.proxy.auth.signature_window,
            std::time::Duration::from_secs(300)
        );
        assert!(!format!("{:?}", c.auth).contains("0123"));
        let alone = vec![("VELA_AUTH__INIT_USER".to_owned(), "root".to_owned())];
        let err = load(Profile::Standalone, None, alone, &FlagOverrides::default())
            .expect_err("a user without a password");
        assert!(err.to_string().contains("together"), "{err}");
        let standalone = load(
            Profile::Standalone,
            None,
            no_env(),
            &FlagOverrides::default(),
        )
        .expect("defaults");
        assert!(!standalone.auth.enabled);
    }

    #[test]
    fn oversized_body_limits_are_refused() {
        let env = vec![("VELA_PROXY__MAX_BODY_SIZE".to_owned(), "64MiB".to_owned())];
        let err =
            load(Profile::Standalone, None, env, &FlagOverrides::default()).expect_err("too large");
        assert!(err.to_string().contains("max_body_size"), "{err}");
    }

    #[test]
    fn the_store_follows_the_proxy_delay_limit() {
        let env = vec![("VELA_PROXY__MAX_DELAY".to_owned(), "48h".to_owned())];
        let c = load(Profile::Standalone, None, env, &FlagOverrides::default()).expect("loads");
        assert_eq!(c.store.max_delay, std::time::Duration::from_secs(48 * 3600));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_readable_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vela.toml");
        std::fs::write(&path, "grpc_lisen = \"127.0.0.1:1\"\n").expect("write");
        let err = load(
            Profile::Standalone,
            Some(&path),
            no_env(),
            &FlagOverrides::default(),
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("grpc_lisen"), "{err}");

        let env = vec![("VELA_GRPC_LISTEN".to_owned(), "not-an-address".to_owned())];
        let err = load(Profile::Standalone, None, env, &FlagOverrides::default())
            .expect_err("bad address");
        assert!(err.to_string().contains("invalid"), "{err}");

        let missing = load(
            Profile::Standalone,
            Some(Path::new("/nonexistent/vela.toml")),
            no_env(),
            &FlagOverrides::default(),
        )
        .expect_err("missing file");
        assert!(missing.to_string().contains("/nonexistent/vela.toml"));
    }

    #[test]
    fn role_data_dirs_are_derived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vela.toml");
        std::fs::write(&path, "[store]\ndata_dir = \"/x\"\n").expect("write");
        let err = load(
            Profile::Standalone,
            Some(&path),
            no_env(),
            &FlagOverrides::default(),
        )
        .expect_err("derived key");
        assert!(err.to_string().contains("store.data_dir"));
    }

    #[test]
    fn every_cluster_example_config_parses_as_its_role() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/cluster");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("deploy/config/cluster exists") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let profile = if name.starts_with("store-") {
                Profile::Store
            } else if name.starts_with("controller-") {
                Profile::Controller
            } else if name.starts_with("proxy-") {
                Profile::Proxy
            } else {
                continue;
            };
            let c = load(profile, Some(&path), no_env(), &FlagOverrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c.cluster
                .validate_stores()
                .and_then(|()| c.cluster.validate_controllers())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Mutual TLS between the roles is on, each process with its own certificate.
            let tls = c
                .cluster
                .tls
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no [cluster.tls]", path.display()));
            let stem = name.trim_end_matches(".toml");
            assert!(
                tls.cert_file.ends_with(format!("{stem}.pem"))
                    && tls.key_file.ends_with(format!("{stem}.key")),
                "{}: {tls:?}",
                path.display()
            );
            match profile {
                Profile::Store => assert!(
                    c.cluster.stores.iter().any(|n| n.id == c.store.node_id),
                    "{}: node_id is not in cluster.stores",
                    path.display()
                ),
                Profile::Controller => assert!(
                    c.cluster
                        .controllers
                        .iter()
                        .any(|n| n.id == c.controller.node_id),
                    "{}: node_id is not in cluster.controllers",
                    path.display()
                ),
                // Receipt keys come from the controllers (ADR 0030): no key file to share.
                _ => assert!(c.cluster.secret_file.is_none(), "{}", path.display()),
            }
            seen.push(c);
        }
        assert!(
            seen.len() >= 8,
            "expected 3 + 3 + 2 examples in {}",
            dir.display()
        );
        // Every process of one cluster describes the same cluster (its own certificate aside).
        let shared = |c: &VelaConfig| ClusterConfig {
            tls: None,
            ..c.cluster.clone()
        };
        for c in &seen {
            assert_eq!(shared(c), shared(&seen[0]));
            assert_eq!(
                c.cluster.tls.as_ref().map(|t| &t.ca_file),
                seen[0].cluster.tls.as_ref().map(|t| &t.ca_file),
                "one cluster CA"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.toml");
        std::fs::write(&path, "[store]\nnode_id = 1\nshards = [0]\n").expect("write");
        let err = load(
            Profile::Store,
            Some(&path),
            no_env(),
            &FlagOverrides::default(),
        )
        .expect_err("store.shards on a store node");
        assert!(err.to_string().contains("cluster.shards"), "{err}");
        std::fs::write(&path, "[cluster]\nshards = [0]\n").expect("write");
        let err = load(
            Profile::Store,
            Some(&path),
            no_env(),
            &FlagOverrides::default(),
        )
        .expect_err("no node id");
        assert!(
            err.to_string().contains("store.node_id is required"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_store_list_is_a_readable_error() {
        let bad = |stores: &str| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("store.toml");
            std::fs::write(&path, format!("[store]\nnode_id = 1\n{stores}")).expect("write");
            let c = load(
                Profile::Store,
                Some(&path),
                no_env(),
                &FlagOverrides::default(),
            )
            .expect("parses");
            c.cluster
                .validate_stores()
                .expect_err("invalid")
                .to_string()
        };
        assert!(bad("[cluster]\nshards = []\n").contains("cluster.shards is empty"));
        assert!(bad("[cluster]\nshards = [1, 1]\n").contains("twice"));
        let bad = |stores: &str| bad(&format!("[cluster]\nshards = [0]\n{stores}"));
        assert!(bad("").contains("cluster.stores is empty"));
        let twice = "[[cluster.stores]]\nid = 1\naddr = \"a:1\"\n[[cluster.stores]]\nid = 1\naddr = \"b:1\"\n";
        assert!(bad(twice).contains("twice"));
        assert!(bad("[[cluster.stores]]\nid = 2\naddr = \"nohost\"\n").contains("host:port"));
        assert!(bad("[[cluster.stores]]\nid = 0\naddr = \"a:1\"\n").contains("reserved"));
        let both = "[[cluster.stores]]\nid = 1\naddr = \"a:1\"\n[[cluster.controllers]]\nid = 1\naddr = \"a:1\"\n";
        assert!(bad(both).contains("each process has its own port"));
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("deploy/config exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(
                    Profile::Standalone,
                    Some(&path),
                    no_env(),
                    &FlagOverrides::default(),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs found in {}", dir.display());
    }
}
