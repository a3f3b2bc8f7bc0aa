//! `haechi run`'s configuration: a TOML file, every setting overridable by
//! an environment variable `HAECHI_<SECTION>__<KEY>` (two underscores
//! between section and key), e.g. `HAECHI_KAFKA__BROKERS=10.0.0.5:9092`.
//! Extra librdkafka properties go in `[kafka.properties]`; from the
//! environment, `HAECHI_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS=50` sets
//! `fetch.wait.max.ms` (underscores become dots).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub kafka: KafkaConfig,
    pub engine: EngineConfig,
    pub store: StoreConfig,
    pub batch: BatchConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The consumer group: every `haechi run` of one deployment shares it.
    pub group_id: String,
    pub client_id: String,
    /// Input: listing events, key = seller_id.
    pub listings_topic: String,
    /// Output: one verdict per valid event, key = seller_id.
    pub verdicts_topic: String,
    /// Output: invalid messages with their bytes, position and reason.
    pub dlq_topic: String,
    /// Input: moderator decisions (co-partitioned with listings).
    pub decisions_topic: String,
    /// Seller state per partition (same partition count as listings).
    pub changelog_topic: String,
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// How often consumed offsets are committed (only offsets whose events
    /// are durable are ever stored for commit).
    pub commit_interval_ms: u32,
    /// How long librdkafka keeps retrying a produce before reporting it
    /// failed (haechi then retries it again itself).
    pub message_timeout_ms: u32,
    /// Extra librdkafka properties, passed through as they are.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "haechi".into(),
            client_id: "haechi".into(),
            listings_topic: "listings".into(),
            verdicts_topic: "listing-verdicts".into(),
            dlq_topic: "listings-dlq".into(),
            decisions_topic: "moderation-decisions".into(),
            changelog_topic: "haechi-changelog".into(),
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 3_000,
            commit_interval_ms: 1_000,
            message_timeout_ms: 30_000,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Rule packs, lists and (by default) the policy.
    pub rules: PathBuf,
    /// Policy file; default: `policy.toml` in the rules directory.
    pub policy: Option<PathBuf>,
    /// Model directory; default: the committed `models/default`.
    pub model: Option<PathBuf>,
    /// Rules, lists and history only.
    pub no_model: bool,
    /// How often the rules directory is checked for changes (0: never).
    pub reload_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rules: "rules".into(),
            policy: None,
            model: None,
            no_model: false,
            reload_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled store of this instance (seller history and review queue).
    pub data_dir: PathBuf,
    /// Days of event time an event's idempotency record is kept (a
    /// redelivery older than this is judged again) and a product's prices
    /// count.
    pub retention_days: i64,
    /// Days near-duplicate text by other sellers counts.
    pub duplicate_window_days: i64,
    /// Days a shared phone / messenger ID / account / domain counts.
    pub ident_window_days: i64,
    /// Compaction runs every this many days of event time.
    pub compact_every_days: i64,
    /// sled's page cache in MB (memory for speed).
    pub cache_mb: u64,
    /// The history's records (sellers, text bands, prices, identifiers)
    /// wholly in memory: faster, memory that grows with the sellers and
    /// the listings of the duplicate window.
    pub resident_history: bool,
    /// With resident_history: held-back keys per checkpoint into the
    /// history image (memory, and log to apply after a crash).
    pub checkpoint_keys: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let h = haechi_store::HistoryConfig::default();
        StoreConfig {
            data_dir: "data/haechi".into(),
            retention_days: h.retention_days,
            duplicate_window_days: h.duplicate_window_days,
            ident_window_days: h.ident_window_days,
            compact_every_days: h.compact_every_days,
            cache_mb: h.cache_mb,
            resident_history: h.resident_history,
            checkpoint_keys: h.checkpoint_keys,
        }
    }
}

impl StoreConfig {
    /// The history settings (checked by [`RunConfig::validate`]).
    pub fn history(&self) -> haechi_store::HistoryConfig {
        haechi_store::HistoryConfig {
            retention_days: self.retention_days,
            duplicate_window_days: self.duplicate_window_days,
            ident_window_days: self.ident_window_days,
            compact_every_days: self.compact_every_days,
            cache_mb: self.cache_mb,
            resident_history: self.resident_history,
            checkpoint_keys: self.checkpoint_keys,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events judged between two durability points. Each batch pays a
    /// changelog round trip and an fsync: 1,000 → 4,000 took the backlog
    /// throughput from ~20k to ~25k events/s (BENCHMARKS.md); a steady
    /// trickle makes small batches whatever this is (`max_wait_ms`).
    pub max_events: usize,
    /// Longest wait for more events once a batch has one and the fetched
    /// ones are taken. 0 (the default): a batch is what was fetched — the
    /// local broker answers fetches every `fetch.wait.max.ms` anyway, and
    /// waiting 2 ms more delayed every verdict (BENCHMARKS.md, Kafka); under
    /// a backlog batches fill to `max_events` either way.
    pub max_wait_ms: u64,
    /// Threads that decode and analyze a batch's listings (pure work, in
    /// parallel; history and decisions stay in partition order on the loop's
    /// thread). 0 = the cores available, at most 4.
    pub analysis_threads: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 4_000,
            max_wait_ms: 0,
            analysis_threads: 0,
        }
    }
}

impl BatchConfig {
    /// [`BatchConfig::analysis_threads`] with 0 resolved.
    pub fn threads(&self) -> usize {
        match self.analysis_threads {
            0 => crate::process::default_threads(),
            n => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Metrics (`/metrics`), health (`/healthz`, `/readyz`) and, with
    /// moderators, the review API (`/v1/...`). Empty: no HTTP server.
    pub listen: String,
    /// Moderators file; when it exists the review API is served.
    pub moderators: Option<PathBuf>,
    /// Lease of a claim, in minutes.
    pub lease_mins: i64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9898".into(),
            moderators: None,
            lease_mins: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: the longest time to finish in-flight events and
    /// commit. Past it the process exits with status 3 without committing
    /// what is not durable (those events are redelivered: nothing is lost).
    pub timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { timeout_secs: 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// JSON lines instead of human-readable logs.
    pub json: bool,
    /// A tracing filter (`info`, `haechi_stream=debug,info`, ...).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            json: false,
            level: "info".into(),
        }
    }
}

const ENV_PREFIX: &str = "HAECHI_";

impl RunConfig {
    /// Reads a file (or the defaults when `path` is `None`) and applies the
    /// environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<RunConfig, ConfigError> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.to_owned(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "(defaults)".to_string()),
        };
        RunConfig::from_parts(&text, &name, std::env::vars())
    }

    /// [`RunConfig::load`] from text and an explicit environment (tests).
    pub fn from_parts(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RunConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: name.to_owned(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let defaults = toml::Table::try_from(RunConfig::default())
            .map_err(|e| invalid(format!("internal: {e}")))?;
        let mut overridden = Vec::new();
        for (var, raw) in env {
            let Some(path) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !path.contains("__") {
                continue; // HAECHI_LOG and friends belong to other commands.
            }
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let env_err = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            match parts.as_slice() {
                [section, key] => {
                    let Some(default) = defaults.get(section).and_then(|s| s.as_table()) else {
                        return Err(env_err(format!("no section [{section}]")));
                    };
                    let value = typed(default.get(key), &raw).map_err(env_err)?;
                    section_mut(&mut table, section).insert(key.clone(), value);
                }
                [section, props, key] if section == "kafka" && props == "properties" => {
                    let props = section_mut(&mut table, "kafka")
                        .entry("properties")
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let Some(t) = props.as_table_mut() {
                        t.insert(key.replace('_', "."), toml::Value::String(raw.clone()));
                    }
                }
                _ => return Err(env_err("expected HAECHI_<SECTION>__<KEY>".into())),
            }
            overridden.push(var);
        }
        let cfg: RunConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let origin = if overridden.is_empty() {
                        String::new()
                    } else {
                        format!(" (with overrides from {})", overridden.join(", "))
                    };
                    invalid(format!("{e}{origin}"))
                })?;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.batch.max_events == 0 {
            return Err("batch.max_events must be at least 1".into());
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        let s = &self.store;
        if s.cache_mb == 0 {
            return Err("store.cache_mb must be at least 1".into());
        }
        if s.checkpoint_keys == 0 {
            return Err("store.checkpoint_keys must be at least 1".into());
        }
        for (name, days) in [
            ("retention_days", s.retention_days),
            ("duplicate_window_days", s.duplicate_window_days),
            ("ident_window_days", s.ident_window_days),
            ("compact_every_days", s.compact_every_days),
        ] {
            if days < 1 {
                return Err(format!("store.{name} must be at least 1 (day), not {days}"));
            }
        }
        Ok(())
    }
}

fn section_mut<'t>(table: &'t mut toml::Table, section: &str) -> &'t mut toml::Table {
    let entry = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    match entry {
        toml::Value::Table(t) => t,
        _ => unreachable!("replaced by a table just above"),
    }
}

/// The raw environment string as the type the setting has.
fn typed(default: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    let bad = |what: &str| format!("{raw:?} is not {what}");
    Ok(match default {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
        }
        _ => toml::Value::String(raw.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let text = include_str!("../../../../haechi.example.toml");
        let cfg = RunConfig::from_parts(text, "haechi.example.toml", []).unwrap();
        // Every section and key of the defaults is spelled out in the example.
        let example: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(RunConfig::default()).unwrap();
        for (section, keys) in &defaults {
            let ex = example[section].as_table().unwrap();
            for key in keys.as_table().unwrap().keys() {
                if key != "properties" {
                    assert!(ex.contains_key(key), "example lacks {section}.{key}");
                }
            }
        }
        assert_eq!(cfg.kafka.listings_topic, "listings");
    }

    #[test]
    fn environment_overrides_the_file_with_the_right_types() {
        let cfg = RunConfig::from_parts(
            "[kafka]\nbrokers = 'a:1'\n[batch]\nmax_events = 10\n",
            "t.toml",
            env(&[
                ("HAECHI_KAFKA__BROKERS", "b:2"),
                ("HAECHI_BATCH__MAX_EVENTS", "20"),
                ("HAECHI_KAFKA__GROUP_ID", "123"),
                ("HAECHI_LOG__JSON", "true"),
                ("HAECHI_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "50"),
                ("HAECHI_LOG", "debug"),
                ("HAECHI_STORE__RETENTION_DAYS", "45"),
                ("HAECHI_STORE__CACHE_MB", "64"),
                ("HAECHI_STORE__RESIDENT_HISTORY", "true"),
                ("HAECHI_STORE__CHECKPOINT_KEYS", "5000"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.store.history().retention_days, 45);
        assert_eq!(cfg.store.history().cache_mb, 64);
        assert!(cfg.store.history().resident_history);
        assert_eq!(cfg.store.history().checkpoint_keys, 5000);
        assert_eq!(cfg.store.history().duplicate_window_days, 14, "the default");
        assert_eq!(cfg.kafka.brokers, "b:2");
        assert_eq!(cfg.batch.max_events, 20);
        assert_eq!(cfg.kafka.group_id, "123");
        assert!(cfg.log.json);
        assert_eq!(cfg.kafka.properties["fetch.wait.max.ms"], "50");
    }

    #[test]
    fn mistakes_are_named() {
        let e = RunConfig::from_parts("[kafka]\nbrokerz = 'x'\n", "t.toml", []).unwrap_err();
        assert!(e.to_string().contains("brokerz"), "{e}");
        let e = RunConfig::from_parts("", "t.toml", env(&[("HAECHI_BATCH__MAX_EVENTS", "many")]))
            .unwrap_err();
        assert!(e.to_string().contains("HAECHI_BATCH__MAX_EVENTS"), "{e}");
        let e = RunConfig::from_parts("", "t.toml", env(&[("HAECHI_NOPE__X", "1")])).unwrap_err();
        assert!(e.to_string().contains("no section [nope]"), "{e}");
        let e = RunConfig::from_parts("[batch]\nmax_events = 0\n", "t.toml", []).unwrap_err();
        assert!(e.to_string().contains("max_events"), "{e}");
        let e = RunConfig::from_parts("[store]\nduplicate_window_days = 0\n", "t.toml", [])
            .unwrap_err();
        assert!(e.to_string().contains("store.duplicate_window_days"), "{e}");
        let e = RunConfig::from_parts("[store]\ncache_mb = 0\n", "t.toml", []).unwrap_err();
        assert!(e.to_string().contains("store.cache_mb"), "{e}");
        let e = RunConfig::from_parts("[store]\ncheckpoint_keys = 0\n", "t.toml", []).unwrap_err();
        assert!(e.to_string().contains("store.checkpoint_keys"), "{e}");
    }
}
