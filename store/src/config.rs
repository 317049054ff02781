//! The store role's configuration: where data lives, which shards this node holds, how the log
//! is flushed and how long messages are retained. Durations and sizes are human-readable
//! (`"72h"`, `"64MiB"`).

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};
use vela_proto::domain::ShardId;

/// Configuration of the store role.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Root of the store's files: `<data_dir>/shards/<shard>/{log/,snapshot}`.
    pub data_dir: PathBuf,
    /// This node's Raft id.
    pub node_id: u64,
    /// Shards this node holds.
    pub shards: Vec<ShardId>,
    /// When an append counts as durable.
    pub flush: FlushSetting,
    /// Size at which a log segment is sealed and a new one started.
    pub segment_size: ByteSize,
    /// How far ahead of its records the active segment is filled with zeros, so most fsyncs
    /// flush data only (ADR 0015). "0B" turns it off (for copy-on-write file systems, where
    /// it saves nothing).
    pub segment_preallocate: ByteSize,
    /// Messages older than this may be deleted (whole segments at a time).
    #[serde(with = "humantime_serde")]
    pub retention_time: Duration,
    /// How often each shard's leader runs a retention pass (segments past the retention go,
    /// topics kept shorter than the log expire their old messages); Kafka's
    /// `log.retention.check.interval.ms`.
    #[serde(deserialize_with = "nonzero_duration")]
    pub retention_check_interval: Duration,
    /// Oldest segments beyond this total size may be deleted. Unlimited when absent. With a
    /// tier (`[tier]`), both limits count the tiered and the local log together.
    pub retention_size: Option<ByteSize>,
    /// With a tier: how long a sealed segment stays on local disk once it is uploaded (reads
    /// of older messages go to the tier).
    #[serde(with = "humantime_serde")]
    pub local_retention_time: Duration,
    /// With a tier: uploaded segments beyond this much local log go first. Unlimited when absent.
    pub local_retention_size: Option<ByteSize>,
    /// Sends are refused (retriably) while the file system holding `data_dir` is this full
    /// (0.95: 95%, as `df` counts), so a long object-store outage or a long retention cannot
    /// fill the disk; 1.0 refuses only when nothing is left. Like RocketMQ's
    /// `diskSpaceWarningLevelRatio` (0.9) and BookKeeper's `diskUsageThreshold` (0.95).
    pub disk_full_ratio: f64,
    /// Applied entries between two state snapshots. A snapshot holds consumer state, not the
    /// queues' entries (those are in the index file), and makes the index file durable; a
    /// restart replays at most this many entries from the log.
    pub snapshot_every_entries: u64,
    /// Message bytes applied between two state snapshots, whatever the number of entries: a
    /// restart reads and decodes at most about this much of the log.
    pub snapshot_every_bytes: ByteSize,
    /// Longest delay a delay message may ask for.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Memory for recently written log entries (counted as decoded, which for small messages is
    /// about twice their size on disk), so receives rarely read from disk.
    pub log_cache: ByteSize,
    /// Page cache of each shard's queue index file (`index.redb`).
    pub index_cache: ByteSize,
    /// Keep, in each shard's index file, a lookup of message ids and keys and each message's
    /// track (stored, delivered, acknowledged, dead-lettered), for `vela admin message
    /// show|find` (ADR 0028; RocketMQ's `messageIndexEnable`). Off: nothing is recorded from
    /// then on and lookups find only what was recorded before.
    pub message_index: bool,
    /// How often each shard re-reads and verifies its sealed log segments in the background
    /// (0 turns the scheduled scrub off).
    #[serde(with = "humantime_serde")]
    pub scrub_interval: Duration,
    /// Most bytes a second a scrub reads, per shard (0: as fast as the disk goes).
    pub scrub_rate: ByteSize,
    /// How long after it is stored an unresolved transaction half message is first checked
    /// back with a producer of its topic, unless the message asks for its own time
    /// (`orphaned_transaction_recovery_duration`).
    #[serde(with = "humantime_serde")]
    pub transaction_check_after: Duration,
    /// Time between two check-backs of one half message.
    #[serde(deserialize_with = "nonzero_duration")]
    pub transaction_check_interval: Duration,
    /// Check-backs of one half message; once the last has had its interval without an answer,
    /// the store rolls the message back and logs it (0: roll back at `transaction_check_after`
    /// without asking).
    pub transaction_check_max: u32,
    /// A consumer group reading a queue for the first time starts at the queue's first
    /// retained message when that message was stored less than this long ago (a young queue:
    /// produce, then subscribe, still works); on a queue with older history it starts at the
    /// first message stored since the group was created, so a new group does not replay days
    /// of retention by surprise. Dead-letter topics always start at their first message.
    #[serde(with = "humantime_serde")]
    pub new_group_start_window: Duration,
    /// A broadcast group's consumer instance that has not received for this long is
    /// forgotten: its positions and what it had in flight are dropped (ADR 0029). An instance
    /// that comes back later starts again as a new one.
    #[serde(deserialize_with = "nonzero_duration")]
    pub broadcast_instance_expiry: Duration,
    /// Cluster only, for a store node that joins at runtime (its `node_id` is not in
    /// `[[cluster.stores]]`, e.g. a StatefulSet scaled out): the `host:port` at which the other
    /// processes reach its gRPC port. It registers there with the controller, which places
    /// replicas on it; it holds none of `cluster.shards`.
    pub advertise_addr: Option<String>,
}

fn nonzero_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let duration: Duration = humantime_serde::deserialize(deserializer)?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom("must be longer than 0s"));
    }
    Ok(duration)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/store"),
            node_id: 1,
            shards: vec![0],
            flush: FlushSetting::Sync,
            segment_size: ByteSize::mib(64),
            segment_preallocate: ByteSize::b(vela_raft::DEFAULT_PREALLOCATE_BYTES),
            retention_time: Duration::from_secs(72 * 3600),
            retention_check_interval: Duration::from_secs(60),
            retention_size: None,
            local_retention_time: Duration::from_secs(6 * 3600),
            local_retention_size: None,
            disk_full_ratio: 0.95,
            snapshot_every_entries: 100_000,
            snapshot_every_bytes: ByteSize::mib(256),
            max_delay: Duration::from_secs(24 * 3600),
            log_cache: ByteSize::mib(64),
            index_cache: ByteSize::mib(32),
            message_index: true,
            scrub_interval: Duration::from_secs(24 * 3600),
            scrub_rate: ByteSize::mib(32),
            transaction_check_after: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(30),
            transaction_check_max: 15,
            new_group_start_window: Duration::from_secs(600),
            broadcast_instance_expiry: Duration::from_secs(24 * 3600),
            advertise_addr: None,
        }
    }
}

/// When the log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushSetting {
    /// Every append is fsynced before it is acknowledged (group commit batches concurrent ones).
    Sync,
    /// Appends are acknowledged once written; fsync runs every `interval`.
    Async { interval: Duration },
}

/// Default fsync interval of [`FlushSetting::Async`].
pub const DEFAULT_ASYNC_FLUSH_INTERVAL: Duration = Duration::from_millis(10);

// Accepts `flush = "sync"`, `flush = "async"` and `flush = { mode = "async", interval = "5ms" }`.
impl<'de> Deserialize<'de> for FlushSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            mode: String,
            #[serde(default, with = "humantime_serde")]
            interval: Option<Duration>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Mode(String),
            Table(Table),
        }
        let (mode, interval) = match Raw::deserialize(deserializer)? {
            Raw::Mode(mode) => (mode, None),
            Raw::Table(t) => (t.mode, t.interval),
        };
        match (mode.to_ascii_lowercase().as_str(), interval) {
            ("sync", None) => Ok(FlushSetting::Sync),
            ("sync", Some(_)) => Err(serde::de::Error::custom(
                "flush mode \"sync\" takes no interval",
            )),
            ("async", interval) => Ok(FlushSetting::Async {
                interval: interval.unwrap_or(DEFAULT_ASYNC_FLUSH_INTERVAL),
            }),
            (other, _) => Err(serde::de::Error::custom(format!(
                "unknown flush mode {other:?} (expected \"sync\" or \"async\")"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_an_empty_config() {
        let cfg: StoreConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(cfg, StoreConfig::default());
        assert_eq!(cfg.shards, vec![0]);
        assert_eq!(cfg.retention_time, Duration::from_secs(72 * 3600));
    }

    #[test]
    fn human_durations_sizes_and_flush_modes_parse() {
        let cfg: StoreConfig = serde_json::from_str(
            r#"{"data_dir": "/d", "shards": [0, 3], "segment_size": "16MiB", "retention_time": "1h 30m",
                "retention_size": "10GiB", "max_delay": "2h",
                "flush": {"mode": "async", "interval": "5ms"},
                "scrub_interval": "7d", "scrub_rate": "8MiB",
                "transaction_check_after": "2s", "transaction_check_interval": "1m",
                "transaction_check_max": 3}"#,
        )
        .expect("parses");
        assert_eq!(cfg.shards, vec![0, 3]);
        assert_eq!(cfg.scrub_interval, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(cfg.scrub_rate, ByteSize::mib(8));
        assert_eq!(cfg.transaction_check_after, Duration::from_secs(2));
        assert_eq!(cfg.transaction_check_interval, Duration::from_secs(60));
        assert_eq!(cfg.transaction_check_max, 3);
        assert_eq!(cfg.segment_size, ByteSize::mib(16));
        assert_eq!(cfg.retention_time, Duration::from_secs(5400));
        assert_eq!(cfg.retention_size, Some(ByteSize::gib(10)));
        assert_eq!(
            cfg.flush,
            FlushSetting::Async {
                interval: Duration::from_millis(5)
            }
        );
        let sync: StoreConfig = serde_json::from_str(r#"{"flush": "sync"}"#).expect("parses");
        assert_eq!(sync.flush, FlushSetting::Sync);
        let plain_async: StoreConfig =
            serde_json::from_str(r#"{"flush": "async"}"#).expect("parses");
        assert_eq!(
            plain_async.flush,
            FlushSetting::Async {
                interval: DEFAULT_ASYNC_FLUSH_INTERVAL
            }
        );
    }

    #[test]
    fn mistakes_are_rejected() {
        assert!(serde_json::from_str::<StoreConfig>(r#"{"flush": "sometimes"}"#).is_err());
        assert!(
            serde_json::from_str::<StoreConfig>(r#"{"flush": {"mode": "sync", "interval": "1s"}}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<StoreConfig>(r#"{"retention": "1h"}"#).is_err(),
            "unknown field"
        );
        assert!(serde_json::from_str::<StoreConfig>(r#"{"max_delay": "soon"}"#).is_err());
        let zero = serde_json::from_str::<StoreConfig>(r#"{"transaction_check_interval": "0s"}"#);
        assert!(
            zero.is_err_and(|e| e.to_string().contains("longer than 0s")),
            "a zero check interval"
        );
    }
}
