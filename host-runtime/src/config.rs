//! The service's configuration: a TOML file, then environment overrides, over defaults that run
//! with neither.
//!
//! The file is `--config PATH` or, without it, the file named by `SIGIL_CONFIG`; without either,
//! the defaults alone (listen on 127.0.0.1:8080, data under `.sigil`, no escalation, JSON logs
//! at `info`). Every scalar key can be overridden from the environment by `SIGIL_` and its
//! path in upper snake case: `listen` by `SIGIL_LISTEN`, `limits.max_body_bytes` by
//! `SIGIL_LIMITS_MAX_BODY_BYTES`, `telemetry.emf.enabled` by `SIGIL_TELEMETRY_EMF_ENABLED`
//! ([`ENV_KEYS`] lists them all). The environment wins over the file. Escalation sinks are
//! configured in the file only; their secrets can stay out of it, as `secret_env = "NAME"`
//! (likewise `url_env`, `routing_key_env`) naming a variable that holds the value.
//!
//! Refused with the offending key named: unknown keys (in the file, and `SIGIL_` variables that
//! start like a section, such as `SIGIL_LIMITS_MAX_BODYBYTES`), values of the wrong type, and
//! values out of range. Sizes are bytes or a number with a unit (`16MiB`, `512KiB`, `1GB`);
//! durations a number with a unit (`500ms`, `30s`, `15m`, `2h`, `7d`, or `1h30m`).
//!
//! ```
//! use host_runtime::config::ServiceConfig;
//!
//! let file = r#"
//! listen = "0.0.0.0:8080"
//! [limits]
//! max_body_bytes = "4MiB"
//! "#;
//! let env = [("SIGIL_LIMITS_MAX_BATCH".to_string(), "16".to_string())];
//! let config = ServiceConfig::from_sources(Some(("sigil.toml", file)), env)?;
//! assert_eq!(config.listen.as_str(), "0.0.0.0:8080");
//! assert_eq!(config.limits.max_body_bytes.bytes(), 4 << 20);
//! assert_eq!(config.limits.max_batch, 16);
//! # Ok::<(), host_runtime::config::ConfigError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guard_core::Level;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::engine::EngineLimits;
use crate::service::ServerLimits;
use crate::store::{DetectionOptions, Retention, StoreSpec};
use crate::telemetry::emf::{check_namespace, EmfTarget, DEFAULT_NAMESPACE};
use crate::telemetry::logging::{LogFormat, LogOptions};
use crate::telemetry::LabelLimits;

/// The variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "SIGIL_CONFIG";

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration `{}`: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or holds an unknown key or a bad value; the message names
    /// the key and its line.
    #[error("configuration `{file}`: {message}")]
    File {
        /// The file.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// An environment override is unknown or its value unfit.
    #[error("environment variable `{var}`: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or contradicts another.
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// The key's path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The first characters of untrusted text, for error messages.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A parser's message with control characters (but line breaks) shown as `?`: it quotes the
/// file's line, which may hold anything.
fn printable(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Value types

/// An address to listen on: `IP:PORT`, `[IPv6]:PORT` or `HOSTNAME:PORT` (resolved when bound).
#[derive(Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Checks `text` and keeps it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let reason = || {
            format!(
                "`{}` is not a listen address: use HOST:PORT, e.g. `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`",
                shorten(text)
            )
        };
        if text.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(ListenAddr(text.to_string()));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(reason)?;
        port.parse::<u16>().map_err(|_| reason())?;
        let hostname = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if hostname {
            Ok(ListenAddr(text.to_string()))
        } else {
            Err(reason())
        }
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ListenAddr::parse(&text).map_err(de::Error::custom)
    }
}

/// A size in bytes: an integer, or a string with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`, `GB`,
/// `GiB`; decimal units are powers of 1000, binary ones of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes`.
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses `16MiB`, `512 KiB`, `1GB`, `4096`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let reason = || {
            format!(
                "`{}` is not a size: use bytes or a number and a unit, e.g. `16MiB`, `512KiB`, `1GB`",
                shorten(text)
            )
        };
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at_checked(digits).ok_or_else(reason)?;
        let number: u64 = number.parse().map_err(|_| reason())?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return Err(reason()),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{}` is too large", shorten(text)))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"16MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written with units: `500ms`, `30s`, `15m`, `2h`, `7d`, or several (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(Duration);

impl Span {
    /// A span of `duration`.
    pub const fn new(duration: Duration) -> Self {
        Span(duration)
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Parses `30s`, `15m`, `1h30m`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let reason = || {
            format!(
                "`{}` is not a duration: use a number and a unit (ms, s, m, h, d), e.g. `30s`, `15m`, `1h30m`",
                shorten(text)
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(reason());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, tail) = rest.split_at_checked(digits).ok_or_else(reason)?;
            let number: u64 = number.parse().map_err(|_| reason())?;
            let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at_checked(letters).ok_or_else(reason)?;
            let unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(reason()),
            };
            let ms = number
                .checked_mul(unit_ms)
                .ok_or_else(|| format!("`{}` is too long", shorten(text)))?;
            total = total
                .checked_add(Duration::from_millis(ms))
                .ok_or_else(|| format!("`{}` is too long", shorten(text)))?;
            rest = tail;
        }
        Ok(Span(total))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"30s\" or \"15m\"")
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Span, E> {
                Err(E::custom(
                    "a duration needs a unit: write it as a string such as \"30s\" or \"15m\"",
                ))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret value (a sink's URL, signing key or routing key): shown as `[redacted]` in debug
/// output. The escalation worker takes the same type.
pub use crate::incidents::Secret;

/// Where behaviour profiles are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSetting {
    /// In the data folder's database, beside the registry (the default).
    #[default]
    DataFolder,
    /// Nowhere: callers keep their users' profiles (`store = "none"`).
    Off,
    /// In the store named (`sqlite:PATH` or `postgres://…`).
    At(StoreSpec),
}

fn deserialize_store<'de, D: Deserializer<'de>>(d: D) -> Result<StoreSetting, D::Error> {
    let text = String::deserialize(d)?;
    if text == "none" {
        return Ok(StoreSetting::Off);
    }
    text.parse::<StoreSpec>()
        .map(StoreSetting::At)
        .map_err(|e| de::Error::custom(e.to_string()))
}

fn deserialize_level<'de, D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
    let text = String::deserialize(d)?;
    Level::ALL
        .into_iter()
        .find(|l| l.as_str() == text)
        .ok_or_else(|| {
            de::Error::custom(format!(
                "`{}` is not a level: very_low, low, medium, high or critical",
                shorten(&text)
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// Sections

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where the API listens.
    pub listen: ListenAddr,
    /// Where `/metrics` is served on a port of its own; without it, on `listen`.
    pub metrics_listen: Option<ListenAddr>,
    /// Where the service keeps its files (SQLite databases, keys, audit log).
    pub data_dir: PathBuf,
    /// The behaviour store: `sqlite:PATH`, `postgres://...`, or `none`; without it, the data
    /// folder's database.
    #[serde(deserialize_with = "deserialize_store")]
    pub store: StoreSetting,
    /// Sizes and guard limits.
    pub limits: Limits,
    /// Incident grouping.
    pub incidents: Incidents,
    /// Where incidents are escalated, and how deliveries are retried.
    pub escalation: Escalation,
    /// Logs and metrics.
    pub telemetry: Telemetry,
    /// What is recorded of each detection.
    pub detections: Detections,
    /// How long records are kept.
    pub retention: RetentionConfig,
    /// Encryption of sensitive data at rest.
    pub vault: VaultConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: ListenAddr("127.0.0.1:8080".into()),
            metrics_listen: None,
            data_dir: PathBuf::from(".sigil"),
            store: StoreSetting::DataFolder,
            limits: Limits::default(),
            incidents: Incidents::default(),
            escalation: Escalation::default(),
            telemetry: Telemetry::default(),
            detections: Detections::default(),
            retention: RetentionConfig::default(),
            vault: VaultConfig::default(),
        }
    }
}

/// `[vault]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// The master key: `local:PATH`, `aws-kms:KEY;region=…;replicas=…` or
    /// `pkcs11:module=…;token=…;key=…`; without it, the local development key
    /// `<data_dir>/keys/master.key`.
    pub master_key: Option<String>,
    /// The key store (tenant and user keys), a SQLite file kept apart from the data; without
    /// it, `<data_dir>/keys.db`.
    pub key_store: Option<PathBuf>,
    /// What a call does when the input it would quarantine cannot be stored encrypted:
    /// `block` (503, the default) or `proceed` (answered, the input not kept).
    pub on_unavailable: crate::service::Unsealable,
    /// How long an unwrapped key stays in memory (5m).
    pub cache_max_age: Span,
    /// How many uses an unwrapped key serves before it is unwrapped again (100000).
    pub cache_max_uses: u64,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            master_key: None,
            key_store: None,
            on_unavailable: crate::service::Unsealable::Block,
            cache_max_age: Span(Duration::from_secs(300)),
            cache_max_uses: 100_000,
        }
    }
}

impl VaultConfig {
    /// The master key's spec, with the data folder's default.
    pub fn master_key_spec(&self, data_dir: &std::path::Path) -> String {
        self.master_key
            .clone()
            .unwrap_or_else(|| format!("local:{}", data_dir.join("keys/master.key").display()))
    }

    /// The key store's path, with the data folder's default.
    pub fn key_store_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.key_store
            .clone()
            .unwrap_or_else(|| data_dir.join("keys.db"))
    }

    /// The cache limits.
    pub fn cache_limits(&self) -> crate::vault::CacheLimits {
        crate::vault::CacheLimits {
            max_age: self.cache_max_age.duration(),
            max_uses: self.cache_max_uses,
            ..crate::vault::CacheLimits::default()
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body (16 MiB).
    pub max_body_bytes: ByteSize,
    /// Largest prompt (all texts and variables of one assessment) (1 MiB).
    pub max_prompt_bytes: ByteSize,
    /// Texts in one `/v1/scan` batch at most (64).
    pub max_batch: u32,
    /// Time every guard call gets (2 s).
    pub guard_deadline: Span,
    /// Extra time per MiB of input (2 s).
    pub guard_deadline_per_mib: Span,
    /// Linear memory one guard instance may grow to (512 MiB).
    pub guard_memory: ByteSize,
    /// Guard instances kept in the pool (16).
    pub guard_instances: u32,
    /// A request head must arrive within this time (15 s).
    pub header_read_timeout: Span,
    /// Connections served at once; more wait in the kernel's backlog (4096).
    pub max_connections: u32,
    /// How long a shutdown waits for calls in flight (20 s).
    pub shutdown_grace: Span,
}

impl Default for Limits {
    fn default() -> Self {
        let engine = EngineLimits::default();
        Limits {
            max_body_bytes: ByteSize(16 << 20),
            max_prompt_bytes: ByteSize(1 << 20),
            max_batch: 64,
            guard_deadline: Span(engine.deadline_base),
            guard_deadline_per_mib: Span(engine.deadline_per_mib),
            guard_memory: ByteSize(engine.memory_bytes as u64),
            guard_instances: engine.max_instances,
            header_read_timeout: Span(ServerLimits::default().header_read_timeout),
            max_connections: ServerLimits::default().max_connections as u32,
            shutdown_grace: Span(ServerLimits::default().shutdown_grace),
        }
    }
}

impl Limits {
    /// The listener's limits.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: self.header_read_timeout.duration(),
            max_connections: self.max_connections as usize,
            shutdown_grace: self.shutdown_grace.duration(),
        }
    }

    /// The engine's limits: these, and the engine's own input limit raised to the body limit
    /// where that is larger.
    pub fn engine_limits(&self) -> EngineLimits {
        let engine = EngineLimits::default();
        EngineLimits {
            memory_bytes: self.guard_memory.as_usize(),
            deadline_base: self.guard_deadline.duration(),
            deadline_per_mib: self.guard_deadline_per_mib.duration(),
            max_input_bytes: engine.max_input_bytes.max(self.max_body_bytes.as_usize()),
            max_instances: self.guard_instances,
        }
    }
}

/// `[incidents]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Incidents {
    /// Occurrences of the same tenant, user, rule and kind within this window join one
    /// incident (15 min).
    pub group_window: Span,
}

impl Default for Incidents {
    fn default() -> Self {
        Incidents {
            group_window: Span(Duration::from_secs(15 * 60)),
        }
    }
}

/// `[escalation]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Escalation {
    /// `[[escalation.sinks]]`.
    pub sinks: Vec<SinkConfig>,
    /// The first retry waits up to this long (1 s).
    pub retry_base: Span,
    /// No wait between retries is longer (5 min).
    pub retry_cap: Span,
    /// A message not delivered this long after its event is given up (24 h).
    pub retry_max_age: Span,
    /// How long one delivery attempt may take (10 s).
    pub attempt_timeout: Span,
    /// How long a claimed delivery stays claimed before another worker may take it over, after a
    /// crash (1 min; at least twice the attempt timeout plus a second is used).
    pub lease: Span,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            sinks: Vec::new(),
            retry_base: Span(Duration::from_secs(1)),
            retry_cap: Span(Duration::from_secs(300)),
            retry_max_age: Span(Duration::from_secs(86_400)),
            attempt_timeout: Span(Duration::from_secs(10)),
            lease: Span(Duration::from_secs(60)),
        }
    }
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A JSON webhook, signed with `secret` when there is one.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
}

impl SinkKind {
    /// `webhook`, `slack` or `pagerduty`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Pagerduty => "pagerduty",
        }
    }
}

/// One `[[escalation.sinks]]` entry, with secrets given as `*_env` already read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Its name in metrics and outbox rows (default: its kind).
    #[serde(default)]
    pub name: Option<String>,
    /// What it is.
    pub kind: SinkKind,
    /// Where to send (for PagerDuty, optional: the Events API v2 by default).
    #[serde(default)]
    pub url: Option<Secret>,
    /// A webhook's signing key.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PagerDuty's routing (integration) key.
    #[serde(default)]
    pub routing_key: Option<Secret>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    routing_key_env: Option<String>,
}

impl SinkConfig {
    /// The sink's name: the one configured, or its kind.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The variables this sink reads its secrets from.
    fn env_names(&self) -> impl Iterator<Item = &str> {
        [&self.url_env, &self.secret_env, &self.routing_key_env]
            .into_iter()
            .filter_map(|v| v.as_deref())
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    /// `json` (default) or `text`.
    pub log_format: LogFormat,
    /// A level or `tracing` filter directives (`info`).
    pub log_level: String,
    /// Write fields that may hold prompt text as they are (off: see
    /// [`crate::telemetry::logging`]).
    pub log_prompts: bool,
    /// Distinct tenants in metric labels before the rest count as `other` (100).
    pub tenant_label_cap: usize,
    /// Distinct rule ids in metric labels before the rest count as `other` (1000).
    pub rule_label_cap: usize,
    /// `[telemetry.emf]`.
    pub emf: Emf,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            log_prompts: false,
            tenant_label_cap: LabelLimits::default().tenants,
            rule_label_cap: LabelLimits::default().rules,
            emf: Emf::default(),
        }
    }
}

impl Telemetry {
    /// The label limits of the service's metrics.
    pub fn label_limits(&self) -> LabelLimits {
        LabelLimits {
            tenants: self.tenant_label_cap,
            rules: self.rule_label_cap,
            ..LabelLimits::default()
        }
    }

    /// The options of [`crate::telemetry::logging::init`].
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            format: self.log_format,
            filter: self.log_level.clone(),
            log_prompts: self.log_prompts,
        }
    }
}

/// `[telemetry.emf]`: CloudWatch Embedded Metric Format lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Emf {
    /// Whether they are written (off).
    pub enabled: bool,
    /// `-` for standard output (default), or a file appended to.
    pub path: String,
    /// How often (60 s).
    pub interval: Span,
    /// The CloudWatch namespace (`Sigil`).
    pub namespace: String,
}

impl Default for Emf {
    fn default() -> Self {
        Emf {
            enabled: false,
            path: "-".into(),
            interval: Span(Duration::from_secs(60)),
            namespace: DEFAULT_NAMESPACE.into(),
        }
    }
}

impl Emf {
    /// Where the lines go.
    pub fn target(&self) -> EmfTarget {
        EmfTarget::from_path(&self.path)
    }
}

/// `[detections]`: what is kept of each assessment in the behaviour store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Detections {
    /// The lowest level recorded (`medium`).
    #[serde(deserialize_with = "deserialize_level")]
    pub min_level: Level,
    /// Keep a redacted excerpt of what was found (off: only ids, categories and digests).
    pub keep_excerpts: bool,
}

impl Default for Detections {
    fn default() -> Self {
        let options = DetectionOptions::default();
        Detections {
            min_level: options.min_level,
            keep_excerpts: options.keep_excerpts,
        }
    }
}

impl Detections {
    /// As the behaviour store takes them.
    pub fn options(&self) -> DetectionOptions {
        DetectionOptions {
            min_level: self.min_level,
            keep_excerpts: self.keep_excerpts,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Detection records older than this are deleted (90 days).
    pub detections: Span,
    /// Profiles of users not seen for this long are deleted (30 days).
    pub profiles: Span,
    /// Closed incidents older than this are deleted (365 days).
    pub incidents: Span,
    /// How often the purge runs (1 h).
    pub purge_every: Span,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let store = Retention::default();
        let days = |d: u32| Span(Duration::from_secs(u64::from(d) * 86_400));
        RetentionConfig {
            detections: days(store.detections_days),
            profiles: days(store.profiles_days),
            incidents: days(365),
            purge_every: Span(Duration::from_secs(3600)),
        }
    }
}

impl RetentionConfig {
    /// The behaviour store's retention, in whole days (rounded up).
    pub fn store_retention(&self) -> Retention {
        let days =
            |s: Span| u32::try_from(s.duration().as_secs().div_ceil(86_400)).unwrap_or(u32::MAX);
        Retention {
            detections_days: days(self.detections),
            profiles_days: days(self.profiles),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

/// What an environment value is turned into before it meets the key's own parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as written.
    Text,
    /// A non-negative integer.
    Integer,
    /// `true`, `false`, `1` or `0`.
    Bool,
}

/// Every key that an environment variable can override, with what its value is.
pub const ENV_KEYS: [(&str, EnvKind); 40] = [
    ("listen", EnvKind::Text),
    ("metrics_listen", EnvKind::Text),
    ("data_dir", EnvKind::Text),
    ("store", EnvKind::Text),
    ("limits.max_body_bytes", EnvKind::Text),
    ("limits.max_prompt_bytes", EnvKind::Text),
    ("limits.max_batch", EnvKind::Integer),
    ("limits.guard_deadline", EnvKind::Text),
    ("limits.guard_deadline_per_mib", EnvKind::Text),
    ("limits.guard_memory", EnvKind::Text),
    ("limits.guard_instances", EnvKind::Integer),
    ("limits.header_read_timeout", EnvKind::Text),
    ("limits.max_connections", EnvKind::Integer),
    ("limits.shutdown_grace", EnvKind::Text),
    ("incidents.group_window", EnvKind::Text),
    ("escalation.retry_base", EnvKind::Text),
    ("escalation.retry_cap", EnvKind::Text),
    ("escalation.retry_max_age", EnvKind::Text),
    ("escalation.attempt_timeout", EnvKind::Text),
    ("escalation.lease", EnvKind::Text),
    ("telemetry.log_format", EnvKind::Text),
    ("telemetry.log_level", EnvKind::Text),
    ("telemetry.log_prompts", EnvKind::Bool),
    ("telemetry.tenant_label_cap", EnvKind::Integer),
    ("telemetry.rule_label_cap", EnvKind::Integer),
    ("telemetry.emf.enabled", EnvKind::Bool),
    ("telemetry.emf.path", EnvKind::Text),
    ("telemetry.emf.interval", EnvKind::Text),
    ("telemetry.emf.namespace", EnvKind::Text),
    ("detections.min_level", EnvKind::Text),
    ("detections.keep_excerpts", EnvKind::Bool),
    ("retention.detections", EnvKind::Text),
    ("retention.profiles", EnvKind::Text),
    ("retention.incidents", EnvKind::Text),
    ("retention.purge_every", EnvKind::Text),
    ("vault.master_key", EnvKind::Text),
    ("vault.key_store", EnvKind::Text),
    ("vault.on_unavailable", EnvKind::Text),
    ("vault.cache_max_age", EnvKind::Text),
    ("vault.cache_max_uses", EnvKind::Integer),
];

/// The sections: a `SIGIL_` variable starting with one of these is meant for the configuration,
/// so an unknown one is a mistake, not another program's variable.
const SECTIONS: [&str; 6] = [
    "limits",
    "incidents",
    "escalation",
    "telemetry",
    "detections",
    "retention",
];

/// `SIGIL_` and the key's path in upper snake case.
pub fn env_name(key: &str) -> String {
    format!("SIGIL_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn env_value(var: &str, kind: EnvKind, text: &str) -> Result<toml::Value, ConfigError> {
    let fail = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    match kind {
        EnvKind::Text => Ok(toml::Value::String(text.to_string())),
        EnvKind::Integer => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| fail(format!("`{}` is not a whole number", shorten(text)))),
        EnvKind::Bool => match text.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(fail(format!(
                "`{}` is not true, false, 1 or 0",
                shorten(text)
            ))),
        },
    }
}

/// Sets `key` (a dotted path) in `table`, making the sections on the way.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` in the file is not a section"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loading

impl ServiceConfig {
    /// The configuration of the process: the file at `path`, or the one `SIGIL_CONFIG` names,
    /// or none; then the process's environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        let text = match &path {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        let name = path.as_ref().map(|p| p.display().to_string());
        let file = name.as_deref().zip(text.as_deref());
        // Variables that are not valid Unicode cannot be meant for us: they are skipped.
        ServiceConfig::from_sources(
            file,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The configuration from a file's name and text (if any) and environment variables: the
    /// whole of [`ServiceConfig::load`] but reading nothing itself.
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (name, text) = file.unwrap_or(("(defaults)", ""));
        let file_error = |e: toml::de::Error| ConfigError::File {
            file: name.to_string(),
            message: printable(e.to_string().trim_end()),
        };
        // Parsed once for errors that point at the line and key, once as a table to override.
        let from_file: ServiceConfig = toml::from_str(text).map_err(file_error)?;
        let mut table: toml::Table = toml::from_str(text).map_err(file_error)?;

        let secret_vars: Vec<String> = from_file
            .escalation
            .sinks
            .iter()
            .flat_map(SinkConfig::env_names)
            .map(str::to_string)
            .collect();
        let lookup: std::collections::BTreeMap<String, String> = env.into_iter().collect();
        // In name order, so the first bad variable reported is the same every run.
        for (var, value) in lookup.range("SIGIL_".to_string()..) {
            if !var.starts_with("SIGIL_") {
                break;
            }
            if secret_vars.contains(var) {
                continue;
            }
            let known = ENV_KEYS.iter().find(|(key, _)| env_name(key) == *var);
            let Some((key, kind)) = known else {
                let rest = var.trim_start_matches("SIGIL_").to_ascii_lowercase();
                if SECTIONS.iter().any(|s| rest.starts_with(&format!("{s}_"))) {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: if rest.starts_with("escalation_sinks") {
                            "sinks are configured in the file; their secrets can come from variables named by `secret_env`, `url_env` or `routing_key_env`".into()
                        } else {
                            "no configuration key has this name (see the list in docs/deploy/README.md)".into()
                        },
                    });
                }
                continue;
            };
            let mut candidate = table.clone();
            set_path(&mut candidate, key, env_value(var, *kind, value)?).map_err(|message| {
                ConfigError::Env {
                    var: var.clone(),
                    message,
                }
            })?;
            // Tried one at a time, so that a bad value is blamed on its variable.
            ServiceConfig::deserialize(toml::Value::Table(candidate.clone())).map_err(|e| {
                ConfigError::Env {
                    var: var.clone(),
                    message: printable(e.to_string().trim_end()),
                }
            })?;
            table = candidate;
        }
        let mut config = ServiceConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::File {
                file: name.to_string(),
                message: printable(e.to_string().trim_end()),
            }
        })?;
        config.resolve_secrets(|var| lookup.get(var).cloned())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads each sink's `*_env` variables into its values.
    fn resolve_secrets(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (i, sink) in self.escalation.sinks.iter_mut().enumerate() {
            let fields = [
                ("url", &mut sink.url, &sink.url_env),
                ("secret", &mut sink.secret, &sink.secret_env),
                ("routing_key", &mut sink.routing_key, &sink.routing_key_env),
            ];
            for (field, value, var) in fields {
                let Some(var) = var else { continue };
                let key = format!("escalation.sinks[{i}].{field}_env");
                if value.is_some() {
                    return Err(invalid(
                        &key,
                        format!("give `{field}` or `{field}_env`, not both"),
                    ));
                }
                let text = lookup(var).ok_or_else(|| {
                    invalid(&key, format!("the variable `{}` is not set", shorten(var)))
                })?;
                *value = Some(Secret::new(text));
            }
        }
        Ok(())
    }

    /// Range and consistency checks the types alone do not make.
    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let kib = ByteSize(1 << 10);
        let gib = ByteSize(1 << 30);
        if l.max_body_bytes < kib || l.max_body_bytes > gib {
            return Err(invalid("limits.max_body_bytes", "between 1KiB and 1GiB"));
        }
        if l.max_prompt_bytes.bytes() == 0 || l.max_prompt_bytes > l.max_body_bytes {
            return Err(invalid(
                "limits.max_prompt_bytes",
                "at least 1 byte and at most limits.max_body_bytes",
            ));
        }
        if !(1..=10_000).contains(&l.max_batch) {
            return Err(invalid("limits.max_batch", "between 1 and 10000"));
        }
        let deadline = l.guard_deadline.duration();
        if deadline < Duration::from_millis(10) || deadline > Duration::from_secs(300) {
            return Err(invalid(
                "limits.guard_deadline",
                "between 10ms (the deadline's resolution) and 5m",
            ));
        }
        if l.guard_deadline_per_mib.duration() > Duration::from_secs(300) {
            return Err(invalid("limits.guard_deadline_per_mib", "at most 5m"));
        }
        if l.guard_memory < ByteSize(16 << 20) || l.guard_memory > ByteSize(4 << 30) {
            return Err(invalid(
                "limits.guard_memory",
                "between 16MiB and 4GiB (a wasm32 instance's whole address space)",
            ));
        }
        if !(1..=1024).contains(&l.guard_instances) {
            return Err(invalid("limits.guard_instances", "between 1 and 1024"));
        }
        let head = l.header_read_timeout.duration();
        if head < Duration::from_secs(1) || head > Duration::from_secs(300) {
            return Err(invalid("limits.header_read_timeout", "between 1s and 5m"));
        }
        if !(16..=1_000_000).contains(&l.max_connections) {
            return Err(invalid("limits.max_connections", "between 16 and 1000000"));
        }
        if l.shutdown_grace.duration() > Duration::from_secs(600) {
            return Err(invalid("limits.shutdown_grace", "at most 10m"));
        }
        if self.vault.cache_max_age.duration() > Duration::from_secs(24 * 3600) {
            return Err(invalid("vault.cache_max_age", "at most 24h"));
        }
        if let Some(spec) = &self.vault.master_key {
            crate::vault::check_spec(spec)
                .map_err(|e| invalid("vault.master_key", e.to_string()))?;
        }
        if self.incidents.group_window.duration() < Duration::from_secs(1) {
            return Err(invalid("incidents.group_window", "at least 1s"));
        }
        let e = &self.escalation;
        if e.retry_base.duration() < Duration::from_millis(1) {
            return Err(invalid("escalation.retry_base", "at least 1ms"));
        }
        if e.retry_cap < e.retry_base {
            return Err(invalid(
                "escalation.retry_cap",
                "at least escalation.retry_base",
            ));
        }
        if e.attempt_timeout.duration() < Duration::from_millis(1) {
            return Err(invalid("escalation.attempt_timeout", "at least 1ms"));
        }
        if e.lease.duration() < Duration::from_secs(1) {
            return Err(invalid("escalation.lease", "at least 1s"));
        }
        if e.retry_max_age.duration() < Duration::from_secs(1) {
            return Err(invalid("escalation.retry_max_age", "at least 1s"));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, sink) in e.sinks.iter().enumerate() {
            check_sink(i, sink)?;
            if names.contains(&sink.name()) {
                return Err(invalid(
                    &format!("escalation.sinks[{i}].name"),
                    format!(
                        "two sinks are named `{}`; give each its own `name`",
                        sink.name()
                    ),
                ));
            }
            names.push(sink.name());
        }
        let t = &self.telemetry;
        crate::telemetry::logging::check_filter(&t.log_level)
            .map_err(|e| invalid("telemetry.log_level", e.to_string()))?;
        if !(1..=100_000).contains(&t.tenant_label_cap) {
            return Err(invalid(
                "telemetry.tenant_label_cap",
                "between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&t.rule_label_cap) {
            return Err(invalid("telemetry.rule_label_cap", "between 1 and 100000"));
        }
        check_namespace(&t.emf.namespace)
            .map_err(|e| invalid("telemetry.emf.namespace", e.to_string()))?;
        if t.emf.path.is_empty() {
            return Err(invalid(
                "telemetry.emf.path",
                "`-` for standard output, or a file",
            ));
        }
        if t.emf.interval.duration() < Duration::from_secs(1) {
            return Err(invalid("telemetry.emf.interval", "at least 1s"));
        }
        let r = &self.retention;
        for (key, span) in [
            ("retention.detections", r.detections),
            ("retention.profiles", r.profiles),
            ("retention.incidents", r.incidents),
        ] {
            if span.duration() < Duration::from_secs(86_400) {
                return Err(invalid(key, "at least 1d"));
            }
        }
        if r.purge_every.duration() < Duration::from_secs(60) {
            return Err(invalid("retention.purge_every", "at least 1m"));
        }
        if self.metrics_listen.as_ref() == Some(&self.listen) {
            return Err(invalid(
                "metrics_listen",
                "differs from `listen`; leave it out to serve /metrics on `listen`",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "a directory"));
        }
        Ok(())
    }
}

fn check_sink(i: usize, sink: &SinkConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("escalation.sinks[{i}].{field}");
    let name = sink.name();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
    {
        return Err(invalid(
            &key("name"),
            format!("`{}` is not 1 to 64 of a-z 0-9 _ - .", shorten(name)),
        ));
    }
    match (&sink.url, sink.kind) {
        (None, SinkKind::Webhook | SinkKind::Slack) => {
            return Err(invalid(
                &key("url"),
                format!("a {} sink needs `url` or `url_env`", sink.kind.as_str()),
            ));
        }
        (Some(url), _) => {
            let u = url.expose();
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            let host = rest
                .map(|r| r.split(['/', '?', '#']).next().unwrap_or(""))
                .unwrap_or("");
            if host.is_empty() || u.chars().any(|c| c.is_control() || c == ' ') {
                // The URL itself may be a credential: it is not repeated.
                return Err(invalid(
                    &key("url"),
                    "must be an http:// or https:// URL with a host",
                ));
            }
        }
        (None, SinkKind::Pagerduty) => {}
    }
    match (sink.kind, &sink.routing_key) {
        (SinkKind::Pagerduty, None) => {
            return Err(invalid(
                &key("routing_key"),
                "a pagerduty sink needs `routing_key` or `routing_key_env`",
            ));
        }
        (SinkKind::Pagerduty, Some(_)) => {}
        (_, Some(_)) => {
            return Err(invalid(
                &key("routing_key"),
                "only pagerduty sinks take a routing key",
            ));
        }
        (_, None) => {}
    }
    if let Some(secret) = &sink.secret {
        if sink.kind != SinkKind::Webhook {
            return Err(invalid(&key("secret"), "only webhook sinks are signed"));
        }
        if secret.expose().len() < 16 {
            return Err(invalid(
                &key("secret"),
                "a signing secret has at least 16 characters",
            ));
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let fail = |reason: String| ConfigError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail("not a file".into()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "{} bytes; a configuration is at most {MAX_FILE_BYTES}",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not UTF-8 (byte {} is invalid)",
            e.utf8_error().valid_up_to()
        ))
    })
}
