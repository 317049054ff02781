//! `[tier]`: where sealed segments go and how they are read back.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// Configuration of the object-storage tier.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Where sealed segments go: `s3://bucket/prefix` (S3, Alibaba OSS and other S3-compatible
    /// stores), `file:///path` (a local or mounted directory). Empty: no tier. Absent: no tier,
    /// except `vela standalone`, which tiers to `file://<data_dir>/tier`.
    pub url: Option<String>,
    /// The S3 API's endpoint (`http://127.0.0.1:9000`, `https://oss-cn-hangzhou.aliyuncs.com`).
    /// Default: AWS (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, then `us-east-1`).
    pub region: Option<String>,
    /// Allow `http://` endpoints (test servers).
    pub allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.endpoint/key`; Alibaba OSS accepts only these)
    /// instead of path style (`endpoint/bucket/key`; MinIO and moto default to it).
    pub virtual_hosted_style: bool,
    /// Credentials (default: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`). A pair the
    /// controllers keep (`vela admin tier credentials set`) wins over these while it is set.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// How often each shard's leader looks for sealed segments to upload and each replica for
    /// uploaded segments whose local retention is over.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Local disk for blocks read from the tier (a bounded read-ahead cache; emptied at start).
    /// Default: `<data_dir>/tier-cache`.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Most bytes the read cache keeps on disk.
    pub cache_size: ByteSize,
    /// Bytes fetched per range read (a reader asking for one record gets the block around it).
    pub read_block: ByteSize,
    /// Range reads in flight at once, per node: cold reads queue behind this instead of
    /// competing with hot traffic for the network without limit.
    pub max_concurrent_reads: usize,
    /// Part size of multipart uploads (segments larger than one part go up in parts; S3 needs
    /// at least 5 MiB).
    pub part_size: ByteSize,
    /// An object under a shard's prefix that its manifest does not name is deleted once it is
    /// this old (an upload whose manifest entry never committed, a deposed leader's upload).
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            allow_http: false,
            virtual_hosted_style: false,
            access_key_id: None,
            secret_access_key: None,
            interval: Duration::from_secs(10),
            cache_dir: None,
            cache_size: ByteSize::gib(1),
            read_block: ByteSize::mib(4),
            max_concurrent_reads: 8,
            part_size: ByteSize::mib(8),
            orphan_grace: Duration::from_secs(3600),
        }
    }
}

/// Never prints the secret.
impl std::fmt::Debug for TierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("interval", &self.interval)
            .field("cache_dir", &self.cache_dir)
            .field("cache_size", &self.cache_size)
            .field("read_block", &self.read_block)
            .field("max_concurrent_reads", &self.max_concurrent_reads)
            .field("part_size", &self.part_size)
            .field("orphan_grace", &self.orphan_grace)
            .finish()
    }
}

impl TierConfig {
    /// Checks the values that do not need the store to be reached.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = self.url.as_deref().filter(|u| !u.is_empty()) {
            crate::Location::parse(url)?;
        }
        if self.interval.is_zero() {
            return Err("tier.interval must be longer than 0s".into());
        }
        if self.read_block.as_u64() < 4096 || self.read_block.as_u64() > 256 << 20 {
            return Err(format!(
                "tier.read_block {} is outside 4KiB..=256MiB",
                self.read_block
            ));
        }
        if self.cache_size.as_u64() < self.read_block.as_u64() {
            return Err("tier.cache_size must hold at least one tier.read_block".into());
        }
        if self.max_concurrent_reads == 0 {
            return Err("tier.max_concurrent_reads must be at least 1".into());
        }
        if self.part_size.as_u64() < 5 << 20 {
            return Err(format!(
                "tier.part_size {} is below S3's 5MiB minimum",
                self.part_size
            ));
        }
        Ok(())
    }

    /// The configured URL, if tiering is on (`url` present and not empty).
    pub fn enabled_url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_bad_values_are_refused() {
        let cfg: TierConfig = toml::from_str(
            r#"url = "s3://bkt/vela/prod"
               endpoint = "http://127.0.0.1:9000"
               allow_http = true
               secret_access_key = "s3cr3t"
               interval = "2s"
               read_block = "1MiB""#,
        )
        .unwrap();
        assert_eq!(cfg.enabled_url(), Some("s3://bkt/vela/prod"));
        assert_eq!(cfg.interval, Duration::from_secs(2));
        assert_eq!(cfg.read_block, ByteSize::mib(1));
        assert!(cfg.validate().is_ok());
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        let off: TierConfig = toml::from_str(r#"url = """#).unwrap();
        assert_eq!(off.enabled_url(), None);
        for bad in [
            r#"url = "ftp://x""#,
            r#"url = "s3://""#,
            r#"url = "file://relative/dir""#,
            r#"read_block = "1KiB""#,
            r#"part_size = "1MiB""#,
            r#"max_concurrent_reads = 0"#,
        ] {
            let cfg: TierConfig = toml::from_str(bad).unwrap();
            assert!(cfg.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<TierConfig>("bucket = \"x\"").is_err());
    }
}
