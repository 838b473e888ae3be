//! Typed, layered configuration: the compiled-in `config/default.toml`, then an optional file, then
//! `FROSTBYTE_…` environment variables, then command-line flags. Unknown keys are errors, every problem is
//! reported at once, and secrets stay wrapped so that they never reach a log line or a `Debug` print.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The compiled-in base layer.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

const ENV_PREFIX: &str = "FROSTBYTE_";

/// Short environment aliases for the settings people set most.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("FROSTBYTE_PORT", "server.port"),
    ("FROSTBYTE_HOST", "server.host"),
    ("FROSTBYTE_DATA_DIR", "storage.data_dir"),
    ("FROSTBYTE_DATABASE_URL", "storage.metadata_url"),
    ("FROSTBYTE_BLOB_URL", "storage.blob_url"),
    ("FROSTBYTE_ADMIN_API_KEY", "auth.admin_api_key"),
    ("FROSTBYTE_JWT_SECRET", "auth.jwt_secret"),
    ("FROSTBYTE_LOG", "log.level"),
];

/// Settings whose environment values are always strings, even when they look like numbers.
const STRING_KEYS: &[&str] = &[
    "server.host",
    "storage.data_dir",
    "storage.metadata_url",
    "storage.blob_url",
    "signals.offline_dir",
    "signals.nats.url",
    "signals.nats.subject_prefix",
    "signals.nats.stream",
    "signals.nats.durable",
    "pipelines.dir",
    "pipelines.env",
    "auth.admin_api_key",
    "auth.jwt_secret",
    "log.format",
    "log.level",
    "embedding.default",
    "embedding.openai.base_url",
    "embedding.openai.model",
    "embedding.openai.api_key",
    "scan.scanner",
];

/// Tables whose keys are names the operator chooses (`[pipelines.connections.NAME]`, `[pipelines.webhook_secrets]`):
/// the compiled-in defaults cannot list them, so their fields are checked by their own types instead.
const OPEN_TABLES: &[&str] = &["pipelines.connections.", "pipelines.webhook_secrets."];

fn is_known(known: &BTreeSet<String>, key: &str) -> bool {
    known.contains(key) || OPEN_TABLES.iter().any(|prefix| key.starts_with(prefix))
}

/// Minimum length of a configured secret.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub metrics_public: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub metadata_url: String,
    pub blob_url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(deserialize_with = "optional_secret")]
    pub admin_api_key: Option<SecretString>,
    #[serde(deserialize_with = "optional_secret")]
    pub jwt_secret: Option<SecretString>,
    pub jwt_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The pipeline workers `serve` runs in-process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// How many jobs run at once (0 runs no workers: an API-only process).
    pub count: u32,
    /// How long an idle worker waits before polling the queue again.
    pub poll_interval_ms: u64,
    /// How long a claimed job is leased before another worker may take it over.
    pub lease_secs: u64,
    /// The most jobs one tenant may have running at once.
    pub per_tenant_cap: u32,
    /// The most jobs a worker claims at once (one tenant, one stage); their stage writes commit in one
    /// transaction.
    pub batch_size: u32,
}

/// The embedders this deployment offers (`[embedding]`): `hash` always, `openai` when its `base_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// The embedder a request that names none gets: `hash`, `openai`, or a model id.
    pub default: String,
    /// The hash embedder's dimension (model id `hash-v1-{dimensions}`).
    pub hash_dimensions: usize,
    pub openai: OpenAiEmbeddingConfig,
}

/// An OpenAI-compatible embeddings endpoint (`[embedding.openai]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingConfig {
    /// Empty: no `openai` embedder.
    pub base_url: String,
    pub model: String,
    pub dimensions: usize,
    #[serde(deserialize_with = "optional_secret")]
    pub api_key: Option<SecretString>,
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub retry_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl EmbeddingConfig {
    /// The adapters' settings.
    pub fn settings(&self) -> frostbyte_adapters::embed::EmbeddingSettings {
        let o = &self.openai;
        let openai = (!o.base_url.trim().is_empty()).then(|| frostbyte_adapters::embed::OpenAiConfig {
            base_url: o.base_url.clone(),
            model: o.model.clone(),
            dimensions: o.dimensions,
            api_key: o.api_key.clone(),
            batch_size: o.batch_size,
            timeout: std::time::Duration::from_secs(o.timeout_secs),
            max_retries: o.max_retries,
            retry_backoff: std::time::Duration::from_millis(o.retry_backoff_ms),
            max_backoff: std::time::Duration::from_millis(o.max_backoff_ms),
        });
        frostbyte_adapters::embed::EmbeddingSettings {
            default: self.default.clone(),
            hash_dimension: self.hash_dimensions,
            openai,
        }
    }

    fn validate(&self, out: &mut Vec<String>) {
        if !(1..=600).contains(&self.openai.timeout_secs) {
            out.push(format!(
                "embedding.openai.timeout_secs must be between 1 and 600 (got {})",
                self.openai.timeout_secs
            ));
        }
        if self.openai.max_retries > 10 {
            out.push(format!("embedding.openai.max_retries must be at most 10 (got {})", self.openai.max_retries));
        }
        // Dimensions, batch size, URL and the default are checked by building the registry, which names the key.
        if let Err(e) = frostbyte_adapters::embed::registry(&self.settings()) {
            out.push(e.to_string());
        }
    }
}

/// How hybrid search fuses its keyword and vector lists (`[search]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// The `k` of reciprocal rank fusion.
    pub rrf_k: f64,
    pub keyword_weight: f64,
    pub vector_weight: f64,
    /// Depth of each list before fusion (at least `top_k`).
    pub candidates: usize,
}

impl SearchConfig {
    pub fn fusion(&self) -> frostbyte_core::service::search::FusionSettings {
        frostbyte_core::service::search::FusionSettings {
            rrf_k: self.rrf_k,
            keyword_weight: self.keyword_weight,
            vector_weight: self.vector_weight,
            candidates: self.candidates,
        }
    }
}

/// The malware scanner intake runs every file through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// `none`, `clamd://host:port` or `clamd+unix:///path/to/clamd.sock`.
    pub scanner: String,
    /// The most seconds one file's scan may take (connect, stream, verdict).
    pub timeout_secs: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig { scanner: "none".into(), timeout_secs: 30 }
    }
}

/// Signals (`[signals]`): event ingest limits and the offline feature store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    /// Largest `POST /api/v1/signals/{tenant}/events` body, in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Most events in one request (413 beyond it).
    pub max_events_per_request: usize,
    /// Events stamped more than this many seconds in the future are refused (`FUTURE_EVENT`).
    pub future_horizon_secs: u64,
    /// Directory of the offline (Parquet) feature store; empty means `<data_dir>/offline`, `off` disables it.
    pub offline_dir: String,
    /// The NATS JetStream consumer (`[signals.nats]`).
    pub nats: NatsConfig,
}

/// The NATS JetStream consumer of signal events (`[signals.nats]`): a durable pull consumer on
/// `{subject_prefix}.{tenant_id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL (`nats://host:4222`, several separated by commas); empty: no consumer.
    pub url: String,
    /// Events for tenant T are published on `{subject_prefix}.T`.
    pub subject_prefix: String,
    /// The JetStream stream holding those subjects (created with `{subject_prefix}.*` if missing).
    pub stream: String,
    /// The durable consumer's name; every process with the same name shares its messages.
    pub durable: String,
    /// Most messages pulled and ingested together (one ingest per tenant per batch).
    pub batch_size: usize,
    /// Seconds a delivered message may stay unacknowledged before JetStream redelivers it.
    pub ack_wait_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            subject_prefix: "frostbyte.signals".into(),
            stream: "FROSTBYTE_SIGNALS".into(),
            durable: "frostbyte-signals".into(),
            batch_size: 256,
            ack_wait_secs: 30,
        }
    }
}

/// A JetStream stream or consumer name: printable, no whitespace, `.`, `*`, `>` or path separators.
fn valid_nats_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

impl NatsConfig {
    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.url.trim().is_empty() {
            return out;
        }
        if !cfg!(feature = "nats") {
            out.push("signals.nats.url is set but this build has no NATS support (feature `nats`)".into());
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self
                .subject_prefix
                .split('.')
                .all(|t| !t.is_empty() && t != "*" && t != ">" && t.chars().all(|c| c.is_ascii_graphic()));
        if !prefix_ok {
            out.push(format!(
                "signals.nats.subject_prefix must be dot-separated tokens without wildcards or spaces (got {:?})",
                self.subject_prefix
            ));
        }
        if !valid_nats_name(&self.stream) {
            out.push(format!(
                "signals.nats.stream must be a name without spaces, `.`, `*`, `>` (got {:?})",
                self.stream
            ));
        }
        if !valid_nats_name(&self.durable) {
            out.push(format!(
                "signals.nats.durable must be a name without spaces, `.`, `*`, `>` (got {:?})",
                self.durable
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            out.push(format!("signals.nats.batch_size must be between 1 and 10000 (got {})", self.batch_size));
        }
        if !(1..=3_600).contains(&self.ack_wait_secs) {
            out.push(format!("signals.nats.ack_wait_secs must be between 1 and 3600 (got {})", self.ack_wait_secs));
        }
        out
    }
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_events_per_request: 100_000,
            future_horizon_secs: 300,
            offline_dir: String::new(),
            nats: NatsConfig::default(),
        }
    }
}

impl SignalsConfig {
    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            out.push(format!(
                "signals.max_body_bytes must be between 1024 and 1073741824 (got {})",
                self.max_body_bytes
            ));
        }
        if !(1..=10_000_000).contains(&self.max_events_per_request) {
            out.push(format!(
                "signals.max_events_per_request must be between 1 and 10000000 (got {})",
                self.max_events_per_request
            ));
        }
        if self.future_horizon_secs > 30 * 86_400 {
            out.push(format!("signals.future_horizon_secs must be at most 2592000 (got {})", self.future_horizon_secs));
        }
        out.extend(self.nats.validate());
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// The pipeline engine (`[pipelines]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinesConfig {
    /// Directory of `{domain}/{name}.yml` definitions, relative to the working directory; missing is fine.
    pub dir: PathBuf,
    /// The value of `{{env}}` in definitions.
    pub env: String,
    /// Engine workers `serve` and `worker` run (0: none).
    pub workers: u32,
    /// How long an idle engine worker waits before polling the queue again.
    pub poll_interval_ms: u64,
    /// How long a claimed run is leased; heartbeats extend it while the run executes.
    pub lease_secs: u64,
    /// How often an executing run's cancel flag is read from the store (cancellation across processes).
    pub cancel_poll_ms: u64,
    /// How often the scheduler looks for due schedules.
    pub schedule_poll_ms: u64,
    /// How deep chained follow-ups may go (a run this deep starts none; the refusal is audited).
    pub max_chain_depth: u32,
    /// Attempts per webhook delivery before it is marked failed.
    pub webhook_max_attempts: u32,
    /// Waits between webhook attempts, in seconds (the last repeats).
    pub webhook_backoff_secs: Vec<u64>,
    /// How long one webhook request may take.
    pub webhook_timeout_ms: u64,
    /// How often the delivery worker looks for due webhook deliveries.
    pub webhook_poll_ms: u64,
    /// Webhook HMAC secrets by the name definitions give in `secret_env`, used when no environment variable of
    /// that name is set.
    #[serde(default)]
    pub webhook_secrets: std::collections::BTreeMap<String, SecretString>,
    /// Where `documents.sync` may read: absolute directories and `s3://bucket[/prefix]` URLs, `{tenant}` standing
    /// for the run's tenant id. Empty: no source is allowed.
    pub sync_roots: Vec<String>,
    /// SQL databases `records.copy` may use as `sql://NAME/table`, by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
}

/// One SQL database `records.copy` may read and write (`[pipelines.connections.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// `sqlite://…` or `postgres://…`; may hold a password, so it stays wrapped.
    pub url: SecretString,
    /// The tenants whose runs may use it; no other tenant can name it.
    pub tenants: Vec<String>,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig {
            dir: PathBuf::from("pipelines"),
            env: "dev".into(),
            workers: 1,
            poll_interval_ms: 500,
            lease_secs: 60,
            cancel_poll_ms: 500,
            schedule_poll_ms: 1_000,
            max_chain_depth: 5,
            webhook_max_attempts: 6,
            webhook_backoff_secs: vec![5, 30, 120, 600, 1800],
            webhook_timeout_ms: 10_000,
            webhook_poll_ms: 1_000,
            webhook_secrets: std::collections::BTreeMap::new(),
            sync_roots: Vec::new(),
            connections: BTreeMap::new(),
        }
    }
}

impl PipelinesConfig {
    /// Where `documents.sync` may read.
    pub fn sync_settings(&self) -> crate::engine::sync::SyncSettings {
        crate::engine::sync::SyncSettings::new(self.sync_roots.clone())
    }

    /// The engine's settings.
    pub fn settings(&self) -> crate::engine::EngineSettings {
        crate::engine::EngineSettings {
            dir: Some(self.dir.clone()),
            env: self.env.clone(),
            lease: std::time::Duration::from_secs(self.lease_secs.max(1)),
            cancel_poll: std::time::Duration::from_millis(self.cancel_poll_ms.max(10)),
            schedule_poll: std::time::Duration::from_millis(self.schedule_poll_ms.max(100)),
            max_chain_depth: self.max_chain_depth,
            webhook_retry: frostbyte_core::pipelines::WebhookRetry {
                max_attempts: self.webhook_max_attempts.max(1),
                backoff: self.webhook_backoff_secs.iter().map(|s| std::time::Duration::from_secs(*s)).collect(),
            },
            webhook_timeout: std::time::Duration::from_millis(self.webhook_timeout_ms.max(100)),
            webhook_poll: std::time::Duration::from_millis(self.webhook_poll_ms.max(100)),
            webhook_secrets: self.webhook_secrets.clone(),
            connections: std::sync::Arc::new(
                self.connections
                    .iter()
                    .map(|(name, c)| {
                        let conn =
                            crate::engine::records::Connection { url: c.url.clone(), tenants: c.tenants.clone() };
                        (name.clone(), conn)
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Connection names, URLs and tenant lists.
    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, c) in &self.connections {
            let key = format!("pipelines.connections.{name}");
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                out.push(format!("{key}: a connection name is letters, digits, _ and - only"));
            }
            let url = c.url.expose_secret();
            if !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| url.starts_with(p)) {
                out.push(format!("{key}.url must start with sqlite: or postgres:// (got {})", redact_url(url)));
            }
            if c.tenants.is_empty() {
                out.push(format!("{key}.tenants must list at least one tenant"));
            }
            for t in &c.tenants {
                if frostbyte_core::TenantId::parse(t).is_err() {
                    out.push(format!("{key}.tenants: {t:?} is not a tenant id"));
                }
            }
        }
        out
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub workers: WorkersConfig,
    pub embedding: EmbeddingConfig,
    pub scan: ScanConfig,
    pub signals: SignalsConfig,
    pub search: SearchConfig,
    pub pipelines: PipelinesConfig,
}

fn optional_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(if s.is_empty() { None } else { Some(SecretString::from(s)) })
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
}

/// Every problem found while loading, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which metadata store a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataBackend {
    Sqlite,
    Postgres,
}

impl Config {
    /// Loads from the process environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        Config::load_from(file, std::env::vars(), overrides)
    }

    /// Loads with an explicit environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let defaults = Figment::from(Toml::string(DEFAULT_TOML));
        let known = leaf_keys(&defaults);
        let mut figment = defaults;

        if let Some(path) = file {
            if !path.is_file() {
                errors.push(format!("config file {} does not exist or is not a file", path.display()));
            } else {
                let layer = Figment::from(Toml::file_exact(path));
                match layer.extract::<Dict>() {
                    Ok(_) => {
                        for key in leaf_keys(&layer).iter().filter(|k| !is_known(&known, k)) {
                            errors.push(format!("unknown key `{key}` in {}", path.display()));
                        }
                        figment = figment.merge(Toml::file_exact(path));
                    }
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
            }
        }

        for (name, value) in env {
            let Some(key) = env_key(&name) else { continue };
            if !is_known(&known, &key) {
                errors.push(format!("unknown setting `{key}` from environment variable {name}"));
                continue;
            }
            let value = if STRING_KEYS.contains(&key.as_str()) {
                Value::from(value)
            } else {
                value.parse::<Value>().unwrap_or_else(|_| Value::from(value))
            };
            figment = figment.merge(Serialized::default(&key, value));
        }

        if let Some(host) = &overrides.host {
            figment = figment.merge(Serialized::default("server.host", host));
        }
        if let Some(port) = overrides.port {
            figment = figment.merge(Serialized::default("server.port", port));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("storage.data_dir", dir.display().to_string()));
        }

        let server = section::<ServerConfig>(&figment, "server", &mut errors);
        let storage = section::<StorageConfig>(&figment, "storage", &mut errors);
        let auth = section::<AuthConfig>(&figment, "auth", &mut errors);
        let log = section::<LogConfig>(&figment, "log", &mut errors);
        let workers = section::<WorkersConfig>(&figment, "workers", &mut errors);
        let embedding = section::<EmbeddingConfig>(&figment, "embedding", &mut errors);
        let search = section::<SearchConfig>(&figment, "search", &mut errors);
        let scan = section::<ScanConfig>(&figment, "scan", &mut errors).unwrap_or_default();
        let signals = section::<SignalsConfig>(&figment, "signals", &mut errors).unwrap_or_default();
        let pipelines = section::<PipelinesConfig>(&figment, "pipelines", &mut errors).unwrap_or_default();
        let known =
            ["server", "storage", "auth", "log", "workers", "embedding", "search", "scan", "signals", "pipelines"];
        for extra in top_level_keys(&figment).difference(&known.map(String::from).into()) {
            errors.push(format!("unknown section `{extra}`"));
        }

        match (server, storage, auth, log, workers, embedding, search) {
            (Some(server), Some(storage), Some(auth), Some(log), Some(workers), Some(embedding), Some(search))
                if errors.is_empty() =>
            {
                let config =
                    Config { server, storage, auth, log, workers, embedding, search, scan, signals, pipelines };
                let problems = config.validate();
                if problems.is_empty() { Ok(config) } else { Err(ConfigErrors(problems)) }
            }
            (server, storage, auth, log, workers, embedding, search) => {
                // Report semantic problems of the sections that did parse, too.
                if let (
                    Some(server),
                    Some(storage),
                    Some(auth),
                    Some(log),
                    Some(workers),
                    Some(embedding),
                    Some(search),
                ) = (server, storage, auth, log, workers, embedding, search)
                {
                    errors.extend(
                        Config { server, storage, auth, log, workers, embedding, search, scan, signals, pipelines }
                            .validate(),
                    );
                }
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Range and cross-field rules.
    fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.signals.validate());
        out.extend(self.pipelines.validate());
        if self.server.host.trim().is_empty() {
            out.push("server.host must not be empty".into());
        }
        if !(1024..=1 << 30).contains(&self.server.max_body_bytes) {
            out.push(format!(
                "server.max_body_bytes must be between 1024 and 1073741824 (got {})",
                self.server.max_body_bytes
            ));
        }
        if self.server.shutdown_grace_secs > 600 {
            out.push("server.shutdown_grace_secs must be at most 600".into());
        }
        if self.workers.count > 256 {
            out.push(format!("workers.count must be at most 256 (got {})", self.workers.count));
        }
        if !(10..=60_000).contains(&self.workers.poll_interval_ms) {
            out.push(format!(
                "workers.poll_interval_ms must be between 10 and 60000 (got {})",
                self.workers.poll_interval_ms
            ));
        }
        if !(5..=86_400).contains(&self.workers.lease_secs) {
            out.push(format!("workers.lease_secs must be between 5 and 86400 (got {})", self.workers.lease_secs));
        }
        if !(1..=1000).contains(&self.workers.per_tenant_cap) {
            out.push(format!(
                "workers.per_tenant_cap must be between 1 and 1000 (got {})",
                self.workers.per_tenant_cap
            ));
        }
        if !(1..=256).contains(&self.workers.batch_size) {
            out.push(format!("workers.batch_size must be between 1 and 256 (got {})", self.workers.batch_size));
        }
        out.extend(crate::engine::sync::check_roots(&self.pipelines.sync_roots));
        let s = &self.search;
        if !(s.rrf_k.is_finite() && (1.0..=1000.0).contains(&s.rrf_k)) {
            out.push(format!("search.rrf_k must be between 1 and 1000 (got {})", s.rrf_k));
        }
        for (name, w) in [("search.keyword_weight", s.keyword_weight), ("search.vector_weight", s.vector_weight)] {
            if !(w.is_finite() && (0.0..=100.0).contains(&w)) {
                out.push(format!("{name} must be between 0 and 100 (got {w})"));
            }
        }
        if s.keyword_weight + s.vector_weight <= 0.0 {
            out.push("search.keyword_weight and search.vector_weight must not both be 0".into());
        }
        if !(1..=1000).contains(&s.candidates) {
            out.push(format!("search.candidates must be between 1 and 1000 (got {})", s.candidates));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            out.push("storage.data_dir must not be empty".into());
        }
        if !(1..=1000).contains(&self.storage.max_connections) {
            out.push("storage.max_connections must be between 1 and 1000".into());
        }
        let backend = match self.metadata_backend() {
            Ok(b) => Some(b),
            Err(e) => {
                out.push(e);
                None
            }
        };
        let blob = self.blob_url();
        if !["file://", "memory://", "s3://"].iter().any(|p| blob.starts_with(p)) {
            out.push(format!("storage.blob_url must start with file://, memory:// or s3:// (got {blob:?})"));
        }
        if !(60..=86_400).contains(&self.auth.jwt_ttl_secs) {
            out.push(format!("auth.jwt_ttl_secs must be between 60 and 86400 (got {})", self.auth.jwt_ttl_secs));
        }
        for (name, secret) in
            [("auth.admin_api_key", &self.auth.admin_api_key), ("auth.jwt_secret", &self.auth.jwt_secret)]
        {
            match secret {
                Some(s) if s.expose_secret().len() < MIN_SECRET_LEN => {
                    out.push(format!("{name} must be at least {MIN_SECRET_LEN} characters"))
                }
                None if backend == Some(MetadataBackend::Postgres) => out.push(format!(
                    "{name} is required with a PostgreSQL metadata store (every process must share it); \
                     set it in the config file or the environment"
                )),
                _ => {}
            }
        }
        self.embedding.validate(&mut out);
        if let Err(e) = frostbyte_adapters::resolve::scanner(&self.scan.scanner, Duration::from_secs(1)) {
            out.push(format!("scan.scanner: {e}"));
        }
        let p = &self.pipelines;
        if p.max_chain_depth > 100 {
            out.push(format!("pipelines.max_chain_depth must be at most 100 (got {})", p.max_chain_depth));
        }
        if !(1..=50).contains(&p.webhook_max_attempts) {
            out.push(format!(
                "pipelines.webhook_max_attempts must be between 1 and 50 (got {})",
                p.webhook_max_attempts
            ));
        }
        if p.webhook_backoff_secs.iter().any(|s| *s > 86_400) {
            out.push("pipelines.webhook_backoff_secs: each wait must be at most 86400".into());
        }
        if !(100..=120_000).contains(&p.webhook_timeout_ms) {
            out.push(format!(
                "pipelines.webhook_timeout_ms must be between 100 and 120000 (got {})",
                p.webhook_timeout_ms
            ));
        }
        for (name, secret) in &p.webhook_secrets {
            if !frostbyte_core::pipelines::webhook::valid_secret_name(name) {
                out.push(format!("pipelines.webhook_secrets.{name}: names are A-Z, 0-9 and _"));
            }
            if secret.expose_secret().len() < 16 {
                out.push(format!("pipelines.webhook_secrets.{name} must be at least 16 characters"));
            }
        }
        if !(1..=3600).contains(&self.scan.timeout_secs) {
            out.push(format!("scan.timeout_secs must be between 1 and 3600 (got {})", self.scan.timeout_secs));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            out.push(format!("log.level {:?} is not a valid filter: {e}", self.log.level));
        }
        out
    }

    /// The effective metadata store URL.
    pub fn metadata_url(&self) -> String {
        if self.storage.metadata_url.is_empty() {
            format!("sqlite://{}", self.storage.data_dir.join("frostbyte.db").display())
        } else {
            self.storage.metadata_url.clone()
        }
    }

    pub fn metadata_backend(&self) -> Result<MetadataBackend, String> {
        let url = self.metadata_url();
        if url.starts_with("sqlite:") {
            Ok(MetadataBackend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(MetadataBackend::Postgres)
        } else {
            Err(format!("storage.metadata_url must start with sqlite:// or postgres:// (got {url:?})"))
        }
    }

    /// The effective blob store URL. The data directory is made absolute because `file://` URLs must be.
    pub fn blob_url(&self) -> String {
        if self.storage.blob_url.is_empty() {
            let dir = std::path::absolute(self.storage.data_dir.join("blobs"))
                .unwrap_or_else(|_| self.storage.data_dir.join("blobs"));
            format!("file://{}", dir.display())
        } else {
            self.storage.blob_url.clone()
        }
    }

    /// A redacted, human-readable summary for `check-config` and start-up logs.
    pub fn summary(&self) -> BTreeMap<&'static str, String> {
        let secret = |s: &Option<SecretString>| match s {
            Some(_) => "(set)".to_owned(),
            None => "(not set: generated in the data directory)".to_owned(),
        };
        BTreeMap::from([
            ("server.listen", format!("{}:{}", self.server.host, self.server.port)),
            ("server.max_body_bytes", self.server.max_body_bytes.to_string()),
            ("server.metrics_public", self.server.metrics_public.to_string()),
            ("storage.data_dir", self.storage.data_dir.display().to_string()),
            ("storage.metadata_url", redact_url(&self.metadata_url())),
            ("storage.blob_url", redact_url(&self.blob_url())),
            ("auth.admin_api_key", secret(&self.auth.admin_api_key)),
            ("auth.jwt_secret", secret(&self.auth.jwt_secret)),
            ("auth.jwt_ttl_secs", self.auth.jwt_ttl_secs.to_string()),
            ("log", format!("{:?} {}", self.log.format, self.log.level).to_lowercase()),
            ("embedding.default", self.embedding.default.clone()),
            (
                "embedding.openai",
                match self.embedding.openai.base_url.as_str() {
                    "" => "(not configured)".to_owned(),
                    url => format!(
                        "{} {} ({} dims)",
                        redact_url(url),
                        self.embedding.openai.model,
                        self.embedding.openai.dimensions
                    ),
                },
            ),
            ("scan.scanner", self.scan.scanner.clone()),
            ("pipelines.dir", self.pipelines.dir.display().to_string()),
            ("pipelines.workers", self.pipelines.workers.to_string()),
            ("pipelines.sync_roots", self.pipelines.sync_roots.join(", ")),
            (
                "pipelines.connections",
                self.pipelines
                    .connections
                    .iter()
                    .map(|(name, c)| format!("{name}={} ({})", redact_url(c.url.expose_secret()), c.tenants.join(" ")))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ])
    }
}

/// Hides a password in a URL (`postgres://user:secret@host` → `postgres://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((creds, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Maps an environment variable name to a config key, or `None` when it is not a Frostbyte setting.
/// `FROSTBYTE_SECTION__KEY` maps to `section.key`; variables without `__` are only read through the aliases,
/// so unrelated `FROSTBYTE_*` variables (test URLs, for instance) are not mistaken for settings.
fn env_key(name: &str) -> Option<String> {
    if let Some((_, key)) = ENV_ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Some((*key).to_owned());
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    rest.contains("__").then(|| rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join("."))
}

fn section<T: serde::de::DeserializeOwned>(figment: &Figment, name: &str, errors: &mut Vec<String>) -> Option<T> {
    match figment.extract_inner::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.extend(e.into_iter().map(|e| e.to_string()));
            None
        }
    }
}

fn top_level_keys(figment: &Figment) -> BTreeSet<String> {
    figment.extract::<Dict>().map(|d| d.into_keys().collect()).unwrap_or_default()
}

fn leaf_keys(figment: &Figment) -> BTreeSet<String> {
    fn walk(prefix: &str, dict: &Dict, out: &mut BTreeSet<String>) {
        for (k, v) in dict {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                Value::Dict(_, inner) => walk(&key, inner, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Ok(dict) = figment.extract::<Dict>() {
        walk("", &dict, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_load_and_use_the_embedded_stores() {
        let c = Config::load_from(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server.port, 8000);
        assert_eq!(c.storage.data_dir, PathBuf::from("./frostbyte-data"));
        assert!(c.metadata_url().starts_with("sqlite://"));
        assert!(c.blob_url().starts_with("file:///"));
        assert!(c.auth.admin_api_key.is_none() && c.auth.jwt_secret.is_none(), "no built-in secrets");
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[server]\nport = 9001\nhost = \"0.0.0.0\"\n").unwrap();
        let c =
            Config::load_from(Some(&file), env(&[("FROSTBYTE_SERVER__PORT", "9002")]), &Overrides::default()).unwrap();
        assert_eq!((c.server.host.as_str(), c.server.port), ("0.0.0.0", 9002), "env beats file");
        let c = Config::load_from(
            Some(&file),
            env(&[("FROSTBYTE_PORT", "9002")]),
            &Overrides { port: Some(9003), ..Default::default() },
        )
        .unwrap();
        assert_eq!(c.server.port, 9003, "flags beat env");
    }

    #[test]
    fn the_nats_consumer_is_off_by_default_and_its_settings_are_checked() {
        let c = Config::load_from(None, env(&[]), &Overrides::default()).unwrap();
        assert!(c.signals.nats.url.is_empty());
        assert_eq!(c.signals.nats.subject_prefix, "frostbyte.signals");
        let c = Config::load_from(
            None,
            env(&[
                ("FROSTBYTE_SIGNALS__NATS__URL", "nats://127.0.0.1:4222"),
                ("FROSTBYTE_SIGNALS__NATS__STREAM", "S1"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!((c.signals.nats.url.as_str(), c.signals.nats.stream.as_str()), ("nats://127.0.0.1:4222", "S1"));
        let errs = Config::load_from(
            None,
            env(&[
                ("FROSTBYTE_SIGNALS__NATS__URL", "nats://127.0.0.1:4222"),
                ("FROSTBYTE_SIGNALS__NATS__SUBJECT_PREFIX", "a.*"),
                ("FROSTBYTE_SIGNALS__NATS__STREAM", "has.dot"),
                ("FROSTBYTE_SIGNALS__NATS__DURABLE", "has space"),
                ("FROSTBYTE_SIGNALS__NATS__BATCH_SIZE", "0"),
                ("FROSTBYTE_SIGNALS__NATS__ACK_WAIT_SECS", "0"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        let text = errs.to_string();
        for needle in ["subject_prefix", "nats.stream", "nats.durable", "batch_size", "ack_wait_secs"] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn sql_connections_are_named_scoped_to_tenants_and_kept_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "[pipelines.connections.warehouse]\nurl = \"postgres://etl:hunter2@db:5432/wh\"\ntenants = [\"acme\"]\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&file), env(&[]), &Overrides::default()).unwrap();
        let settings = c.pipelines.settings();
        assert_eq!(settings.connections["warehouse"].tenants, ["acme"]);
        assert!(!format!("{c:?} {settings:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.summary()).contains("hunter2"));
        std::fs::write(
            &file,
            "[pipelines.connections.\"bad name\"]\nurl = \"mysql://x\"\ntenants = []\n\
             [pipelines.connections.other]\nurl = \"sqlite://x.db\"\ntenants = [\"Not A Tenant\"]\n",
        )
        .unwrap();
        let text = Config::load_from(Some(&file), env(&[]), &Overrides::default()).unwrap_err().to_string();
        for needle in ["letters, digits", "must start with sqlite:", "at least one tenant", "is not a tenant id"] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[server]\nprot = 1\nmax_body_bytes = 5\n[storage]\nmax_connections = \"many\"\n")
            .unwrap();
        let errs = Config::load_from(
            Some(&file),
            env(&[("FROSTBYTE_AUTH__JWT_TTL", "5"), ("FROSTBYTE_LOG__FORMAT", "xml")]),
            &Overrides::default(),
        )
        .unwrap_err();
        let text = errs.to_string();
        for needle in ["server.prot", "auth.jwt_ttl", "max_connections", "format"] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        assert!(errs.0.len() >= 4, "{text}");
    }

    #[test]
    fn range_errors_are_listed_together() {
        let errs = Config::load_from(
            None,
            env(&[
                ("FROSTBYTE_SERVER__MAX_BODY_BYTES", "5"),
                ("FROSTBYTE_AUTH__JWT_TTL_SECS", "1"),
                ("FROSTBYTE_JWT_SECRET", "short"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(errs.0.len(), 3, "{errs}");
    }

    #[test]
    fn postgres_requires_explicit_secrets() {
        let errs = Config::load_from(
            None,
            env(&[("FROSTBYTE_DATABASE_URL", "postgres://postgres@127.0.0.1/fb")]),
            &Overrides::default(),
        )
        .unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("auth.admin_api_key is required") && text.contains("auth.jwt_secret is required"));
    }

    #[test]
    fn unrelated_frostbyte_variables_are_ignored() {
        Config::load_from(None, env(&[("FROSTBYTE_TEST_POSTGRES_URL", "postgres://x")]), &Overrides::default())
            .unwrap();
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let secret = "s3cr3t-value-that-is-long-enough-0123456789";
        let c = Config::load_from(None, env(&[("FROSTBYTE_ADMIN_API_KEY", secret)]), &Overrides::default()).unwrap();
        assert!(!format!("{c:?}").contains(secret));
        assert!(!format!("{:?}", c.summary()).contains(secret));
    }

    #[test]
    fn numeric_looking_secrets_stay_strings() {
        let secret = "12345678901234567890123456789012345";
        let c = Config::load_from(None, env(&[("FROSTBYTE_JWT_SECRET", secret)]), &Overrides::default()).unwrap();
        assert_eq!(c.auth.jwt_secret.unwrap().expose_secret(), secret);
    }

    #[test]
    fn embedding_defaults_offer_hash_only() {
        let c = Config::load_from(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.embedding.default, "hash");
        let registry = frostbyte_adapters::embed::registry(&c.embedding.settings()).unwrap();
        assert_eq!(registry.names(), ["hash"]);
        assert_eq!(registry.default_embedder().model_id(), "hash-v1-384");
    }

    #[test]
    fn an_openai_embedder_is_configured_from_the_environment_with_its_key_hidden() {
        let key = "12345678901234567890";
        let c = Config::load_from(
            None,
            env(&[
                ("FROSTBYTE_EMBEDDING__OPENAI__BASE_URL", "http://127.0.0.1:9999/v1"),
                ("FROSTBYTE_EMBEDDING__OPENAI__MODEL", "text-embedding-3-small"),
                ("FROSTBYTE_EMBEDDING__OPENAI__DIMENSIONS", "1536"),
                ("FROSTBYTE_EMBEDDING__OPENAI__API_KEY", key),
                ("FROSTBYTE_EMBEDDING__DEFAULT", "openai"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.embedding.openai.api_key.as_ref().unwrap().expose_secret(), key, "stays a string");
        assert!(!format!("{c:?}").contains(key) && !format!("{:?}", c.summary()).contains(key));
        let registry = frostbyte_adapters::embed::registry(&c.embedding.settings()).unwrap();
        assert_eq!(registry.default_embedder().model_id(), "openai/text-embedding-3-small");
        assert_eq!(registry.default_embedder().dimension(), 1536);
    }

    #[test]
    fn embedding_problems_are_reported() {
        let errs = Config::load_from(
            None,
            env(&[("FROSTBYTE_EMBEDDING__DEFAULT", "openai"), ("FROSTBYTE_EMBEDDING__OPENAI__TIMEOUT_SECS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("timeout_secs") && text.contains("\"openai\" is not configured"), "{text}");
        let errs = Config::load_from(
            None,
            env(&[("FROSTBYTE_EMBEDDING__OPENAI__BASE_URL", "http://127.0.0.1:9/v1")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(errs.to_string().contains("embedding.openai.model must be set"), "{errs}");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
