//! Where behaviour profiles and detection records live: SQLite by default, PostgreSQL for several
//! host instances sharing state, behind one trait, [`ProfileStore`].
//!
//! A profile is the opaque JSON string the guard returned last time for a user, keyed by
//! ([`ProfileKey`]) tenant and subject (the user id or API key id as the caller gives it). Each
//! row carries a revision; [`ProfileStore::update`] reads it, lets the caller compute the next
//! profile (the host re-runs the assessment with the fresh profile) and writes with
//! compare-and-swap on the revision, retrying a bounded number of times, so two instances updating
//! one profile at once lose no update. The detection record of an assessment is written in the
//! same transaction as the profile it produced, so a retried assessment is recorded once.
//!
//! Privacy: no raw prompt text is stored unless the host is configured to keep redacted excerpts
//! ([`DetectionOptions::keep_excerpts`]); [`ProfileStore::purge`] enforces retention,
//! [`ProfileStore::erase`] and [`ProfileStore::export`] serve a user's requests. Each subject has
//! a random key for the keyed pseudonym under which audit entries name them; erasure destroys it,
//! so entries written before cannot be tied to the user afterwards. See `docs/behaviour.md`.
//!
//! ```no_run
//! use host_runtime::store::{self, ProfileKey, StoreSpec, Update};
//! let store = store::open(&"sqlite:.sigil/sigil.db".parse::<StoreSpec>()?)?;
//! let key = ProfileKey::new(None, "user-17")?;
//! let now = guard_core::time::Timestamp::parse("2026-12-03T12:00:00Z")?;
//! store.update(&key, now, &mut |current| {
//!     // The host assesses here with `current` and returns the guard's new profile.
//!     Ok(Update::profile(current.unwrap_or("{}").to_string()))
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod assess;
mod detection;
mod erase;
mod pool;
mod postgres;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use guard_core::time::Timestamp;
use guard_core::{Action, Level};
use serde::Serialize;

pub use assess::{
    assess_with_store, call_with_store, excerpt_record_id, with_profile, AssessError, Behaviour,
    EXCERPT_KIND,
};
pub use detection::{detection, redact, DetectionOptions, MAX_EXCERPT_CHARS};
pub use erase::{erase_user, export_user, purge_recorded, EraseTarget, UsersError};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Largest profile stored, in bytes of JSON.
pub const MAX_PROFILE_BYTES: usize = 64 << 10;
/// Longest subject (user or API key id), in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Longest tenant id, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;
/// Attempts of one update before it gives up on a profile that keeps changing under it.
pub const MAX_UPDATE_ATTEMPTS: u32 = 64;

/// An error from the caller's update function, passed through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the caller computes from the current profile.
pub type UpdateFn<'a> = dyn FnMut(Option<&str>) -> Result<Update, BoxError> + 'a;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQLite database could not be read or written.
    #[error("behaviour store (sqlite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL server refused or could not be reached.
    #[error("behaviour store (postgres): {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The store spec is not one this build understands.
    #[error("store `{spec}`: {reason}")]
    Spec {
        /// The spec, shortened (and without any password).
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A tenant or subject id is not acceptable as a key.
    #[error("{0}")]
    InvalidKey(String),
    /// A profile is larger than [`MAX_PROFILE_BYTES`].
    #[error("the profile is {size} bytes, over the {limit}-byte limit")]
    ProfileTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A profile is not a JSON object.
    #[error("the profile is not a JSON object: {0}")]
    InvalidProfile(String),
    /// The profile changed under every attempt.
    #[error(
        "the profile kept changing under {attempts} attempts in a row; the update was not made"
    )]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// The caller's update function failed; nothing was written.
    #[error("{0}")]
    Update(BoxError),
    /// The database holds tables of another version, or rows this version does not write.
    #[error("not a Sigil behaviour store of this version: {0}")]
    Schema(String),
    /// A stored row is malformed.
    #[error("the behaviour store holds a malformed record: {0}")]
    Corrupt(String),
    /// The system's random generator failed.
    #[error("no randomness for a pseudonym key")]
    Random,
}

impl From<aws_lc_rs::error::Unspecified> for StoreError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        StoreError::Random
    }
}

/// Which user a profile belongs to: an optional tenant and a subject (user or API key id), as
/// given. Both must be 1 to [`MAX_TENANT_BYTES`] / [`MAX_SUBJECT_BYTES`] bytes without control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    tenant: Option<String>,
    subject: String,
}

impl ProfileKey {
    /// A checked key.
    pub fn new(tenant: Option<&str>, subject: &str) -> Result<Self, StoreError> {
        check_subject(subject)?;
        if let Some(tenant) = tenant {
            check_tenant(tenant)?;
        }
        Ok(ProfileKey {
            tenant: tenant.map(str::to_string),
            subject: subject.to_string(),
        })
    }

    /// The tenant, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The tenant as stored: the empty string for none (never a valid tenant id).
    fn tenant_column(&self) -> &str {
        self.tenant.as_deref().unwrap_or("")
    }
}

fn check_id(id: &str, what: &str, max: usize) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > max {
        return Err(StoreError::InvalidKey(format!(
            "a {what} id must be 1 to {max} bytes (this one is {})",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(StoreError::InvalidKey(format!(
            "{what} id `{}` holds control characters",
            shorten(id)
        )));
    }
    // Invisible and direction-changing characters would make two ids that look alike two
    // users, and reorder what a terminal shows.
    if id.chars().any(guard_core::text::normalize::is_invisible) {
        return Err(StoreError::InvalidKey(format!(
            "{what} id `{}` holds invisible or bidirectional control characters",
            shorten(id)
        )));
    }
    Ok(())
}

/// Checks a subject id as [`ProfileKey::new`] does.
pub fn check_subject(subject: &str) -> Result<(), StoreError> {
    check_id(subject, "subject", MAX_SUBJECT_BYTES)
}

/// Checks a tenant id as [`ProfileKey::new`] does.
pub fn check_tenant(tenant: &str) -> Result<(), StoreError> {
    check_id(tenant, "tenant", MAX_TENANT_BYTES)
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProfile {
    /// The profile JSON, exactly as the guard returned it.
    pub profile: String,
    /// Its revision: 1 for the first write, one more for each update.
    pub revision: u64,
    /// When it was last written (the host's clock).
    pub seen_at: Timestamp,
}

/// What an update writes: the new profile and, when the assessment is to be recorded, its
/// detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The new profile JSON (an object of at most [`MAX_PROFILE_BYTES`]).
    pub profile: String,
    /// The detection to record with it.
    pub detection: Option<Detection>,
}

impl Update {
    /// A profile and nothing to record.
    pub fn profile(profile: String) -> Self {
        Update {
            profile,
            detection: None,
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// The profile's revision now.
    pub revision: u64,
    /// How many times the update function ran (1 when nothing raced it).
    pub attempts: u32,
}

/// A finding as a detection keeps it: no text, no span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DetectedFinding {
    /// Rule, model or signal id.
    pub id: String,
    /// Its category.
    pub category: String,
}

/// The digest of one untrusted segment's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SegmentDigest {
    /// The segment's index in the request.
    pub segment: usize,
    /// Hex SHA-256 of its text.
    pub sha256: String,
}

/// One assessment worth remembering (`medium` or above by default).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The level.
    pub level: Level,
    /// The action.
    pub action: Action,
    /// The fused score.
    pub score: f64,
    /// What was found.
    pub findings: Vec<DetectedFinding>,
    /// SHA-256 of each untrusted segment's text.
    pub digests: Vec<SegmentDigest>,
    /// A redacted excerpt, only when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// A stored detection, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionRecord {
    /// When it was recorded (the host's clock), RFC 3339 UTC.
    pub time: String,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The subject.
    pub subject: String,
    /// The level.
    pub level: String,
    /// The action.
    pub action: String,
    /// The fused score.
    pub score: f64,
    /// What was found.
    pub findings: Vec<DetectedFinding>,
    /// SHA-256 of each untrusted segment's text.
    pub digests: Vec<SegmentDigest>,
    /// The redacted excerpt, when one was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// A stored profile, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedProfile {
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The profile (its JSON as stored).
    pub profile: serde_json::Value,
    /// Its revision.
    pub revision: u64,
    /// When it was last written, RFC 3339 UTC.
    pub seen_at: String,
}

/// Everything the store holds about one subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Export {
    /// The subject.
    pub subject: String,
    /// The tenant asked for, or none for every tenant.
    pub tenant: Option<String>,
    /// Its profiles, by tenant.
    pub profiles: Vec<ExportedProfile>,
    /// Its detections, oldest first.
    pub detections: Vec<DetectionRecord>,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// Profiles deleted.
    pub profiles: u64,
    /// Detections deleted.
    pub detections: u64,
    /// The subject's pseudonym under the key erasure destroyed (or a one-off key when the store
    /// had none): what the audit entry names.
    pub pseudonym: String,
    /// Whether the subject's pseudonym key was destroyed (it is kept while rows of the subject
    /// remain in other tenants).
    pub key_destroyed: bool,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Detections older than the retention.
    pub detections: u64,
    /// Profiles not written for longer than the retention.
    pub profiles: u64,
    /// Pseudonym keys of subjects with nothing left.
    pub subjects: u64,
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Detections older than this many days are deleted.
    pub detections_days: u32,
    /// Profiles not seen for this many days are deleted.
    pub profiles_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            detections_days: 90,
            profiles_days: 30,
        }
    }
}

impl Retention {
    fn cutoffs(self, now: Timestamp) -> (i64, i64) {
        let day = 86_400i64;
        (
            now.saturating_add_seconds(-i64::from(self.detections_days) * day)
                .unix_seconds(),
            now.saturating_add_seconds(-i64::from(self.profiles_days) * day)
                .unix_seconds(),
        )
    }
}

/// A profile store. Every method is blocking: async callers run them with `spawn_blocking`.
pub trait ProfileStore: Send + Sync + fmt::Debug {
    /// The stored profile of `key`.
    fn load(&self, key: &ProfileKey) -> Result<Option<StoredProfile>, StoreError>;

    /// Reads the profile of `key`, calls `f` with it (`None` for a new user), and writes what `f`
    /// returns if the profile is still at the revision read; otherwise reads again and calls `f`
    /// again, at most [`MAX_UPDATE_ATTEMPTS`] times. `now` is the host's clock: it becomes the
    /// profile's `seen_at` and the detection's time.
    fn update(
        &self,
        key: &ProfileKey,
        now: Timestamp,
        f: &mut UpdateFn<'_>,
    ) -> Result<Updated, StoreError>;

    /// Deletes the subject's profiles and detections in every tenant (or in `tenant` alone) in
    /// one transaction.
    fn erase(&self, subject: &str, tenant: Option<&str>) -> Result<Erased, StoreError>;

    /// Everything held about the subject (in every tenant, or in `tenant` alone).
    fn export(&self, subject: &str, tenant: Option<&str>) -> Result<Export, StoreError>;

    /// The subject's pseudonym under its key, or under a one-off key when it has none.
    fn pseudonym(&self, subject: &str) -> Result<String, StoreError>;

    /// Deletes detections and profiles past their retention, and the pseudonym keys of subjects
    /// with nothing left.
    fn purge(&self, now: Timestamp, retention: Retention) -> Result<Purged, StoreError>;

    /// Up to `limit` detections of every user recorded at or after `since`, whose row id is
    /// greater than `after`, in id order with their ids (a SIEM export pages by passing the last
    /// id back).
    fn detections_since(
        &self,
        since: Timestamp,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, DetectionRecord)>, StoreError>;

    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

/// Where the store is: `sqlite:PATH` or a `postgres://` (or `postgresql://`) URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL may carry a password.
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(spec_error(s, "name the database file: `sqlite:PATH`"));
            }
            return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            ::postgres::Config::from_str(s).map_err(|e| spec_error(s, &e.to_string()))?;
            return Ok(StoreSpec::Postgres(s.to_string()));
        }
        Err(spec_error(
            s,
            "a store is `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE`",
        ))
    }
}

fn spec_error(spec: &str, reason: &str) -> StoreError {
    StoreError::Spec {
        spec: shorten(&redact_url(spec)),
        reason: reason.to_string(),
    }
}

/// A URL with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Opens (and creates the tables of) the store a spec names.
pub fn open(spec: &StoreSpec) -> Result<Arc<dyn ProfileStore>, StoreError> {
    Ok(match spec {
        StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreSpec::Postgres(url) => Arc::new(PostgresStore::connect(url)?),
    })
}

/// Whether a store records no schema version yet (a new store, to be stamped with this build's);
/// refused when it records another version than this build reads.
fn schema_is_new(stored: Option<String>, version: &str) -> Result<bool, StoreError> {
    match stored {
        Some(v) if v == version => Ok(false),
        Some(v) => Err(StoreError::Schema(format!(
            "schema version `{}`; this build reads {version}",
            shorten(&v)
        ))),
        None => Ok(true),
    }
}

/// Checks a profile before it is written.
fn check_profile(profile: &str) -> Result<(), StoreError> {
    if profile.len() > MAX_PROFILE_BYTES {
        return Err(StoreError::ProfileTooLarge {
            size: profile.len(),
            limit: MAX_PROFILE_BYTES,
        });
    }
    match serde_json::from_str::<serde_json::Value>(profile) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(StoreError::InvalidProfile("it is not an object".into())),
        Err(e) => Err(StoreError::InvalidProfile(e.to_string())),
    }
}

/// A stored profile's JSON for an export; a row that no longer parses is exported as a string.
fn profile_value(profile: &str) -> serde_json::Value {
    serde_json::from_str(profile).unwrap_or_else(|_| serde_json::Value::String(profile.into()))
}

fn revision(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| StoreError::Corrupt(format!("revision {stored}")))
}

fn next_revision(stored: i64) -> Result<i64, StoreError> {
    stored
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt(format!("revision {stored}")))
}

fn time_text(seconds: i64) -> String {
    Timestamp::from_unix_seconds(seconds).to_string()
}

fn tenant_from_column(tenant: String) -> Option<String> {
    Some(tenant).filter(|t| !t.is_empty())
}

fn findings_json(findings: &[DetectedFinding]) -> String {
    serde_json::to_string(findings).unwrap_or_else(|_| "[]".into())
}

fn digests_json(digests: &[SegmentDigest]) -> String {
    serde_json::to_string(digests).unwrap_or_else(|_| "[]".into())
}

/// A stored detection row back as a record.
#[allow(clippy::too_many_arguments)]
fn detection_record(
    at: i64,
    tenant: String,
    subject: String,
    level: String,
    action: String,
    score: f64,
    findings: &str,
    digests: &str,
    excerpt: Option<String>,
) -> Result<DetectionRecord, StoreError> {
    Ok(DetectionRecord {
        time: time_text(at),
        tenant: tenant_from_column(tenant),
        subject,
        level,
        action,
        score,
        findings: serde_json::from_str(findings)
            .map_err(|e| StoreError::Corrupt(format!("detection findings: {e}")))?,
        digests: serde_json::from_str(digests)
            .map_err(|e| StoreError::Corrupt(format!("detection digests: {e}")))?,
        excerpt,
    })
}

/// A random key for a subject's pseudonym.
fn new_pseudonym_key() -> Result<[u8; 32], StoreError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut key)?;
    Ok(key)
}

/// The subject's pseudonym under `key`, or under a one-off key when there is none.
fn pseudonym_with(key: Option<&[u8]>, subject: &str) -> Result<String, StoreError> {
    match key {
        Some(key) => Ok(crate::audit::pseudonym(key, subject)),
        None => Ok(crate::audit::pseudonym(&new_pseudonym_key()?, subject)),
    }
}

/// Waits a little before attempt `attempt + 1` of a contended update, longer each time, with
/// jitter so racing writers fall out of step.
/// The compare-and-swap loop both backends run: read the profile and its revision, let `f`
/// make the new one, write it if the revision is still the one read, else wait and try again.
/// `write` returns the new revision, or `None` when another writer got there first.
fn update_with(
    f: &mut UpdateFn<'_>,
    mut load: impl FnMut() -> Result<Option<(String, i64, i64)>, StoreError>,
    mut write: impl FnMut(Option<i64>, &Update) -> Result<Option<i64>, StoreError>,
) -> Result<Updated, StoreError> {
    for attempt in 1..=MAX_UPDATE_ATTEMPTS {
        let current = load()?;
        let update = f(current.as_ref().map(|(p, _, _)| p.as_str())).map_err(StoreError::Update)?;
        check_profile(&update.profile)?;
        if let Some(rev) = write(current.map(|(_, rev, _)| rev), &update)? {
            return Ok(Updated {
                revision: revision(rev)?,
                attempts: attempt,
            });
        }
        backoff(attempt);
    }
    Err(StoreError::Contended {
        attempts: MAX_UPDATE_ATTEMPTS,
    })
}

/// A stored row `(profile, revision, seen_at)` as a [`StoredProfile`].
fn stored_profile((profile, rev, seen): (String, i64, i64)) -> Result<StoredProfile, StoreError> {
    Ok(StoredProfile {
        profile,
        revision: revision(rev)?,
        seen_at: Timestamp::from_unix_seconds(seen),
    })
}

fn backoff(attempt: u32) {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let jitter = hasher.finish() % 1000;
    let base_us = 20u64 << attempt.min(8);
    let micros = base_us.min(5_000) * (500 + jitter) / 1000;
    std::thread::sleep(std::time::Duration::from_micros(micros));
}

/// At most 80 characters of user input in a message, control characters escaped.
fn shorten(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_hide_passwords() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreSpec>().ok(),
            Some(StoreSpec::Sqlite("/tmp/x.db".into()))
        );
        let pg: StoreSpec = "postgres://sigil:secret@127.0.0.1:5432/sigil"
            .parse()
            .unwrap_or_else(|_| StoreSpec::Sqlite("bad".into()));
        assert_eq!(pg.to_string(), "postgres://sigil:***@127.0.0.1:5432/sigil");
        assert!(format!("{pg:?}").contains("***"));
        assert!("mysql://x".parse::<StoreSpec>().is_err());
        assert!("sqlite:".parse::<StoreSpec>().is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert!(ProfileKey::new(None, "u-17").is_ok());
        assert!(ProfileKey::new(Some("acme"), "key:42").is_ok());
        assert!(ProfileKey::new(None, "").is_err());
        assert!(ProfileKey::new(Some(""), "u").is_err());
        assert!(ProfileKey::new(None, "a\nb").is_err());
        assert!(ProfileKey::new(None, &"x".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
        assert!(ProfileKey::new(Some(&"t".repeat(MAX_TENANT_BYTES + 1)), "u").is_err());
    }

    #[test]
    fn profiles_are_bounded_objects() {
        assert!(check_profile("{}").is_ok());
        assert!(matches!(
            check_profile("[1]"),
            Err(StoreError::InvalidProfile(_))
        ));
        assert!(matches!(
            check_profile("{"),
            Err(StoreError::InvalidProfile(_))
        ));
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_PROFILE_BYTES));
        assert!(matches!(
            check_profile(&big),
            Err(StoreError::ProfileTooLarge { .. })
        ));
    }
}
