//! The in-process harness: a standalone node in a temp dir with a clock tests can move
//! forward, plus helpers to build clients and drain messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use vela::config::{self, FlagOverrides, Profile, VelaConfig};
use vela::standalone::Standalone;
use vela_proto::clock::{Clock, SystemClock};
use vela_proto::pb::rocketmq as pb;
use vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient;
use vela_sdk::{ClientConfig, FilterExpression, MessageView, Producer, SimpleConsumer};

/// Wall clock plus an offset the test controls, so invisibility deadlines can pass without
/// waiting for them.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// A standalone node under test.
pub struct Node {
    pub node: Option<Standalone>,
    pub clock: Arc<OffsetClock>,
    pub config: VelaConfig,
    _dir: Option<TempDir>,
}

pub fn test_config(data_dir: PathBuf) -> VelaConfig {
    let flags = FlagOverrides {
        data_dir: Some(data_dir),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let mut config = config::load(Profile::Standalone, None, Vec::new(), &flags).unwrap();
    // Short polls keep empty receives cheap in tests (the default minimum is RocketMQ's 5 s).
    config.proxy.min_long_polling = Duration::from_secs(1);
    // The machine's disk is shared and its fill is not the test's: never refuse sends for it
    // (the disk guard has its own test in vela-store).
    config.store.disk_full_ratio = 1.0;
    config
}

impl Node {
    pub async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut VelaConfig)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path().to_owned());
        adjust(&mut config);
        let clock = Arc::new(OffsetClock::default());
        let node = Standalone::start_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        Node {
            node: Some(node),
            clock,
            config,
            _dir: Some(dir),
        }
    }

    pub fn endpoint(&self) -> String {
        self.node.as_ref().unwrap().grpc_addr().to_string()
    }

    pub fn http(&self) -> std::net::SocketAddr {
        self.node.as_ref().unwrap().http_addr()
    }

    /// Stops the node and starts it again on the same data dir (new ports).
    pub async fn restart(&mut self) {
        self.node.take().unwrap().stop().await.unwrap();
        let node = Standalone::start_with_clock(self.config.clone(), self.clock.clone())
            .await
            .unwrap();
        self.node = Some(node);
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.stop().await.unwrap();
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::builder()
            .endpoint(self.endpoint())
            .build()
            .unwrap()
    }

    pub async fn producer(&self, topic: &str) -> Producer {
        Producer::builder(self.client_config())
            .topics([topic])
            .build()
            .await
            .unwrap()
    }

    pub async fn consumer(&self, group: &str, topic: &str, tags: &str) -> SimpleConsumer {
        SimpleConsumer::builder(self.client_config(), group)
            .subscribe(topic, FilterExpression::tag(tags))
            .await_duration(Duration::from_secs(2))
            .build()
            .await
            .unwrap()
    }

    pub async fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        admin(&self.endpoint(), args).await
    }
}

/// The `kind` of each track event of one message `vela admin message show|find --output json`
/// printed.
pub fn track_kinds(message: &serde_json::Value) -> Vec<&str> {
    message["track"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default()
}

/// Runs `vela admin <args>` against `server` in-process.
pub async fn admin(server: &str, args: &[&str]) -> anyhow::Result<String> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        admin: vela::admin::AdminArgs,
    }
    let mut argv = vec!["vela-admin", "--server", server];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv)?;
    vela::admin::execute(&cli.admin.target(), cli.admin.command).await
}

/// Receives until `want` messages arrived or `patience` empty receives in a row, acking
/// each when `ack` is set. Returns what arrived, keyed by message id.
pub async fn drain(
    consumer: &SimpleConsumer,
    want: usize,
    ack: bool,
    patience: u32,
) -> HashMap<String, MessageView> {
    let mut got = HashMap::new();
    let mut empty = 0;
    while got.len() < want && empty < patience {
        let batch = consumer.receive(32, Duration::from_secs(60)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            if ack {
                consumer.ack(&m).await.unwrap();
            }
            got.insert(m.message_id.clone(), m);
        }
    }
    got
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A raw `MessagingService` client of `node`, for what the SDK does not call.
pub async fn raw_client(node: &Node) -> MessagingServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.endpoint()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MessagingServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A raw request with the headers the official clients send.
pub fn raw_req<T>(msg: T) -> tonic::Request<T> {
    use tonic::metadata::MetadataValue;
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "x-mq-client-id",
        MetadataValue::from_static("bad-input-test@1#0"),
    );
    r.metadata_mut()
        .insert("x-mq-language", MetadataValue::from_static("PYTHON"));
    r
}

pub fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}
