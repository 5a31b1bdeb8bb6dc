//! Incidents, quarantine, escalation and the SIEM export.
//!
//! A `high` or `critical` assessment, or a template refusal, is an [`Occurrence`]. Recording a
//! batch of them ([`IncidentStore::record`]) is one SQLite transaction that opens an incident or
//! groups the occurrence into the open one of the same tenant, user, rule and kind seen within
//! the grouping window (count, first and last seen, level raised to the highest), holds the
//! item in quarantine when the caller hands over its decision context, and inserts one
//! escalation event per configured sink into a durable outbox. A [`DeliveryWorker`] sends the
//! outbox: every attempt of an event carries the same event id, failures are retried with
//! exponential backoff and full jitter, and a claimed row is leased, not flagged, so the rows of
//! a process that died become due again. See `docs/incidents.md`.
//!
//! Reviewer operations ([`acknowledge`], [`assign`], [`resolve`], [`comment`], [`release`],
//! [`reject`], [`view_quarantined`]) are functions over a [`rusqlite::Connection`] so that they
//! run inside the transaction the registry opens to authorize the reviewer; each returns what it
//! changed and the audit entries to record with it. Changes nobody reviewed (incidents opened
//! or grouped, items held) wait in a queue that [`pending_audit`] turns into audit entries.
//! Audit entries name incidents and items by id, rules and texts by digest, never a user.
//!
//! ```no_run
//! use std::time::Duration;
//! use host_runtime::incidents::{IncidentStore, Occurrence, OccurrenceKind};
//! use guard_core::{Action, Level};
//! let store = IncidentStore::open(std::path::Path::new(".sigil/sigil.db"))?;
//! let recorded = store.record(
//!     &[Occurrence {
//!         kind: OccurrenceKind::Assessment { action: Action::Block },
//!         tenant: None,
//!         subject: Some("user-17".into()),
//!         rule: "injection.ignore-previous".into(),
//!         level: Level::Critical,
//!         at: guard_core::time::Timestamp::parse("2026-12-03T12:00:00Z")?,
//!         request_id: "req-1".into(),
//!         summary: serde_json::json!({"score": 0.97}),
//!         quarantine: Some(serde_json::json!({"request": {"text": "…"}})),
//!         sealed: None,
//!     }],
//!     Duration::from_secs(3600),
//! )?;
//! assert!(recorded[0].as_ref().is_ok_and(|r| r.opened));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod deliver;
mod outbox;
mod review;
mod seal;
mod siem;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use guard_core::time::Timestamp;
use guard_core::{Action, Level};
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

pub use deliver::{DeliveryObserver, DeliveryWorker, FlushReport};
pub use outbox::{
    pagerduty_body, slack_body, EscalationConfig, RetryPolicy, Secret, Sink, DEFAULT_PAGERDUTY_URL,
    EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
pub use review::{
    acknowledge, assign, check_sealed, comment, counts, erase_subject_in, get_incident,
    list_incidents, list_quarantine, pending_audit, record_pending_audit, reject, release, resolve,
    reviewed, view_quarantined, Counts, ErasedSubject, Released, Reviewer,
};
pub use seal::{seal_context, SealedContext, QUARANTINE_KIND};
pub use siem::{export_jsonl, ExportCounts, OCSF_VERSION};
pub use store::{init_in, record_in};

/// Longest rule, request id, tenant-free text field an occurrence carries, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Largest summary of an occurrence, in bytes of JSON.
pub const MAX_SUMMARY_BYTES: usize = 16 << 10;
/// Largest decision context held in quarantine, in bytes of JSON.
pub const MAX_CONTEXT_BYTES: usize = 48 << 20;
/// Longest comment, resolution or reason, in bytes.
pub const MAX_NOTE_BYTES: usize = 4 << 10;
/// Most occurrences one [`IncidentStore::record`] call takes.
pub const MAX_BATCH: usize = 4096;
/// Most rows one listing returns.
pub const MAX_PAGE: u32 = 500;
/// Rows a listing returns when the filter names no limit.
pub const DEFAULT_PAGE: u32 = 50;
/// A grouping window that suits most services: repeats within an hour of the last one join it.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Why an incident or quarantine operation failed. The HTTP layer maps [`NotFound`] to 404,
/// [`Conflict`] to 409, [`Invalid`] to 400 and the rest to 503.
///
/// [`NotFound`]: IncidentError::NotFound
/// [`Conflict`]: IncidentError::Conflict
/// [`Invalid`]: IncidentError::Invalid
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncidentError {
    /// No incident or item has this id.
    #[error("{0}")]
    NotFound(String),
    /// The change is not possible from the current state (acknowledging a resolved incident,
    /// releasing an item twice).
    #[error("{0}")]
    Conflict(String),
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be read or written.
    #[error("incident store: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The database holds tables of another version, or rows this version does not write.
    #[error("not a Sigil incident store of this version: {0}")]
    Schema(String),
    /// A stored row is malformed.
    #[error("the incident store holds a malformed record: {0}")]
    Corrupt(String),
    /// The escalation configuration is not usable.
    #[error("escalation: {0}")]
    Config(String),
    /// The system's random generator failed.
    #[error("no randomness for an id")]
    Random,
    /// A task of the delivery worker could not run.
    #[error("delivery worker: {0}")]
    Worker(String),
    /// The behaviour store's detections could not be read.
    #[error(transparent)]
    Detections(#[from] crate::store::StoreError),
    /// The export could not be written.
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    /// The registry refused (authentication, role, clock) or failed, or its audit log did.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A quarantined context could not be sealed or opened.
    #[error("vault: {0}")]
    Vault(crate::vault::VaultError),
}

impl From<aws_lc_rs::error::Unspecified> for IncidentError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        IncidentError::Random
    }
}

/// What happened, besides its level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OccurrenceKind {
    /// The guard assessed an input as `high` or `critical`.
    Assessment {
        /// What the policy did.
        action: Action,
    },
    /// The guard refused a template.
    TemplateRefusal {
        /// The refusal code (`docs/contract.md`).
        code: String,
    },
}

impl OccurrenceKind {
    /// `assessment` or `template_refusal`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OccurrenceKind::Assessment { .. } => "assessment",
            OccurrenceKind::TemplateRefusal { .. } => "template_refusal",
        }
    }
}

/// One assessment or refusal worth an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// What it was.
    pub kind: OccurrenceKind,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The user id, as the caller gave it (reviewers need it; audit entries never carry it).
    pub subject: Option<String>,
    /// The grouping key: the top finding's id, or the refusal code.
    pub rule: String,
    /// Its level.
    pub level: Level,
    /// When it happened.
    pub at: Timestamp,
    /// The request's id.
    pub request_id: String,
    /// What a reviewer sees first: score, finding ids and categories, template id and version.
    /// No prompt text.
    pub summary: serde_json::Value,
    /// For `quarantine` and `block`: the whole decision context (the request, the rendered
    /// prompt, the guard's answer), held for a reviewer and handed back on release. It is
    /// sealed by the store's vault before it is written ([`IncidentStore::seal`]); a store
    /// without a vault does not keep it.
    pub quarantine: Option<serde_json::Value>,
    /// The context, sealed already (by [`IncidentStore::seal`], outside the store's
    /// transaction); when present it is held instead of `quarantine`.
    pub sealed: Option<SealedContext>,
}

/// Where an incident stands: `open` → `acknowledged` → `resolved` (or `open` → `resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Nobody has looked at it yet.
    Open,
    /// A reviewer has it.
    Acknowledged,
    /// Closed; a repeat opens a new incident.
    Resolved,
}

impl IncidentStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            IncidentStatus::Open,
            IncidentStatus::Acknowledged,
            IncidentStatus::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An incident as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Its id (`inc_` and 32 hex digits).
    pub id: String,
    /// `assessment` or `template_refusal`.
    pub kind: String,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The user, if known.
    pub subject: Option<String>,
    /// The grouping rule.
    pub rule: String,
    /// The highest level of its occurrences.
    pub level: Level,
    /// Where it stands.
    pub status: IncidentStatus,
    /// How many occurrences it groups.
    pub count: u64,
    /// The first occurrence's time, RFC 3339 UTC.
    pub first_seen: String,
    /// The last occurrence's time.
    pub last_seen: String,
    /// The first occurrence's request id.
    pub first_request_id: String,
    /// The last occurrence's request id.
    pub last_request_id: String,
    /// The last occurrence's summary.
    pub summary: serde_json::Value,
    /// Who has it.
    pub assignee: Option<String>,
    /// When it was acknowledged.
    pub acknowledged_at: Option<String>,
    /// By whom.
    pub acknowledged_by: Option<String>,
    /// When it was resolved.
    pub resolved_at: Option<String>,
    /// By whom.
    pub resolved_by: Option<String>,
    /// The resolution note.
    pub resolution: Option<String>,
    /// When it last changed.
    pub updated_at: String,
}

/// A reviewer's comment on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    /// When.
    pub at: String,
    /// Who.
    pub author: String,
    /// What.
    pub body: String,
}

/// An incident with its comments and quarantined items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub incident: Incident,
    /// Its comments, oldest first (at most [`MAX_PAGE`]).
    pub comments: Vec<Comment>,
    /// Its quarantined items, oldest first (at most [`MAX_PAGE`], without their context).
    pub quarantine: Vec<QuarantineItem>,
}

/// Where a quarantined item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineStatus {
    /// Waiting for a reviewer; never forwarded to a model.
    Held,
    /// A reviewer let it through; its context was handed back and erased here.
    Released,
    /// A reviewer refused it; its context was erased.
    Rejected,
}

impl QuarantineStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineStatus::Held => "held",
            QuarantineStatus::Released => "released",
            QuarantineStatus::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            QuarantineStatus::Held,
            QuarantineStatus::Released,
            QuarantineStatus::Rejected,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A quarantined item, without its context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineItem {
    /// Its id (`qtn_` and 32 hex digits).
    pub id: String,
    /// The incident it belongs to.
    pub incident_id: String,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The user, if known.
    pub subject: Option<String>,
    /// The request's id.
    pub request_id: String,
    /// The level.
    pub level: Level,
    /// What the policy did (`quarantine` or `block`; `block` for a template refusal).
    pub action: Action,
    /// When it was held.
    pub held_at: String,
    /// Where it stands.
    pub status: QuarantineStatus,
    /// Hex SHA-256 of the held context's JSON (what the audit entry names).
    pub context_sha256: String,
    /// The occurrence's summary.
    pub summary: serde_json::Value,
    /// When a reviewer decided.
    pub decided_at: Option<String>,
    /// Who.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// What recording one occurrence did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// The incident it opened or joined.
    pub incident_id: String,
    /// Whether it opened the incident.
    pub opened: bool,
    /// The incident's count now.
    pub count: u64,
    /// The incident's level now.
    pub level: Level,
    /// Whether it raised the incident's level.
    pub level_raised: bool,
    /// The quarantined item it made, when it handed over a context.
    pub quarantine_id: Option<String>,
    /// The escalation events it queued (one id per event, shared by every sink).
    pub events: Vec<String>,
}

/// Which incidents to list. Every field is optional; `since` is RFC 3339 UTC and filters on the
/// last occurrence; `cursor` is the `next_cursor` of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    /// Only this status.
    pub status: Option<IncidentStatus>,
    /// Only this level.
    pub level: Option<Level>,
    /// Only this level or higher.
    pub min_level: Option<Level>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this user.
    pub subject: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only incidents assigned to this reviewer.
    pub assignee: Option<String>,
    /// Only incidents seen at or after this time.
    pub since: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent).
    pub limit: Option<u32>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// Which quarantined items to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineFilter {
    /// Only this status.
    pub status: Option<QuarantineStatus>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this user.
    pub subject: Option<String>,
    /// Only items of this incident.
    pub incident_id: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent).
    pub limit: Option<u32>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Incidents, quarantine and the outbox in one SQLite database, with a connection of its own
/// for the hot path. Every method is blocking: async callers run them with `spawn_blocking`.
#[derive(Debug)]
pub struct IncidentStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    sinks: Vec<String>,
    vault: Option<std::sync::Arc<crate::vault::Vault>>,
    wake: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

impl IncidentStore {
    /// Opens the database at `path`, creating it and the tables if needed. Without sinks
    /// nothing is escalated; see [`IncidentStore::open_with_sinks`].
    pub fn open(path: &Path) -> Result<Self, IncidentError> {
        Self::open_with_sinks(path, &[])
    }

    /// Opens the database and queues an escalation event for each of `sinks` whenever an
    /// incident is opened or its level rises.
    pub fn open_with_sinks(path: &Path, sinks: &[Sink]) -> Result<Self, IncidentError> {
        let names = outbox::check_sinks(sinks)?;
        let mut conn = connect(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        init_in(&tx)?;
        tx.commit()?;
        Ok(IncidentStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            sinks: names,
            vault: None,
            wake: Mutex::new(None),
        })
    }

    /// The same store, sealing the contexts it quarantines in `vault` under each user's key
    /// (reviewers open them through it: [`release`], [`view_quarantined`]). Without a vault,
    /// incidents are kept but quarantined contexts are not: nothing users wrote is stored in
    /// the clear.
    pub fn with_vault(mut self, vault: std::sync::Arc<crate::vault::Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// The vault quarantined contexts are sealed in, if any.
    pub fn vault(&self) -> Option<&crate::vault::Vault> {
        self.vault.as_deref()
    }

    /// Seals the occurrence's quarantined context (if it has one and no sealed one yet), so
    /// recording it makes no key-backend call inside the database transaction. Without a
    /// vault the context is dropped. On an error (the key backend down with no usable cached
    /// key) nothing changes and the caller decides: record without the context, or fail.
    pub fn seal(&self, occurrence: &mut Occurrence) -> Result<(), IncidentError> {
        if occurrence.sealed.is_some() {
            return Ok(());
        }
        let Some(context) = &occurrence.quarantine else {
            return Ok(());
        };
        let Some(vault) = &self.vault else {
            occurrence.quarantine = None;
            return Ok(());
        };
        let text = serde_json::to_string(context)
            .map_err(|e| IncidentError::Invalid(format!("context: {e}")))?;
        if text.len() > MAX_CONTEXT_BYTES {
            return Err(IncidentError::Invalid(format!(
                "the quarantine context is {} bytes, over the {}-byte limit",
                text.len(),
                MAX_CONTEXT_BYTES
            )));
        }
        let sealed = seal_context(
            vault,
            occurrence.tenant.as_deref().unwrap_or(""),
            occurrence.subject.as_deref().unwrap_or(""),
            &text,
        )?;
        occurrence.sealed = Some(sealed);
        occurrence.quarantine = None;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the sinks events are queued for.
    pub fn sinks(&self) -> &[String] {
        &self.sinks
    }

    /// Records a batch in one transaction: all valid occurrences are recorded together or, on a
    /// storage error, none. An invalid occurrence gets its own error in the answer (at its
    /// index) and is not recorded; the others are.
    pub fn record(
        &self,
        batch: &[Occurrence],
        window: Duration,
    ) -> Result<Vec<Result<Recorded, IncidentError>>, IncidentError> {
        // Contexts not sealed yet are sealed here, before the transaction; one that cannot be
        // gets its error at its index and is not recorded.
        let mut failed: Vec<Option<IncidentError>> = Vec::with_capacity(batch.len());
        let mut sealed_here = Vec::new();
        for occurrence in batch {
            if occurrence.quarantine.is_some() && occurrence.sealed.is_none() {
                let mut sealed = occurrence.clone();
                match self.seal(&mut sealed) {
                    Ok(()) => {
                        sealed_here.push(sealed);
                        failed.push(None);
                    }
                    Err(e) => failed.push(Some(e)),
                }
            } else {
                failed.push(None);
            }
        }
        let mut sealed_here = sealed_here.iter();
        let ready: Vec<&Occurrence> = batch
            .iter()
            .zip(&failed)
            .filter(|(_, failure)| failure.is_none())
            .filter_map(|(occurrence, _)| {
                if occurrence.quarantine.is_some() && occurrence.sealed.is_none() {
                    sealed_here.next()
                } else {
                    Some(occurrence)
                }
            })
            .collect();
        let recorded = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let results = record_in(&tx, &ready, window, &self.sinks)?;
            tx.commit()?;
            Ok(results)
        })?;
        let mut recorded = recorded.into_iter();
        let results: Vec<Result<Recorded, IncidentError>> = failed
            .into_iter()
            .map(|failure| match failure {
                Some(e) => Err(e),
                None => recorded.next().unwrap_or_else(|| {
                    Err(IncidentError::Worker(
                        "an occurrence went unanswered".into(),
                    ))
                }),
            })
            .collect();
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|r| !r.events.is_empty()))
        {
            self.wake();
        }
        Ok(results)
    }

    /// Runs `f` on the store's connection (for reads, and for the reviewer functions of this
    /// module outside a registry transaction). `f` must not call back into this store: the
    /// connection is held until it returns.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, IncidentError>,
    ) -> Result<T, IncidentError> {
        let mut guard = self.conn.lock().map_err(|_| {
            IncidentError::Worker("a thread panicked holding the connection".into())
        })?;
        f(&mut guard)
    }

    /// Tells a running [`DeliveryWorker`] that events were queued (record does this itself;
    /// call it after [`record_in`] in another transaction commits).
    pub fn wake(&self) {
        if let Ok(guard) = self.wake.lock() {
            if let Some(wake) = guard.as_ref() {
                wake.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    fn set_waker(&self, wake: tokio::sync::watch::Sender<u64>) {
        if let Ok(mut guard) = self.wake.lock() {
            *guard = Some(wake);
        }
    }
}

/// Opens a connection with the host's durability (WAL, `synchronous=FULL`).
fn connect(path: &Path) -> Result<Connection, IncidentError> {
    crate::sqlite::open(path, true).map_err(|e| match e {
        crate::sqlite::OpenError::Sqlite(e) => IncidentError::Storage(e),
        other => IncidentError::Schema(other.to_string()),
    })
}

/// A new random id: `prefix`, `_` and 32 hex digits.
pub(crate) fn new_id(prefix: &str) -> Result<String, IncidentError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{prefix}_{}", guard_core::provenance::hex(&bytes)))
}

/// The system clock in milliseconds since the Unix epoch (the outbox's clock: due times and
/// leases are the host's, never a caller's).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// At most 80 characters of input in a message, control characters escaped.
fn shorten(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

/// A time in seconds as RFC 3339 UTC.
fn time_text(seconds: i64) -> String {
    Timestamp::from_unix_seconds(seconds).to_string()
}

/// Checks a free-text id (rule, request id, assignee): 1 to [`MAX_ID_BYTES`] bytes, no control
/// or invisible characters.
fn check_text_id(value: &str, what: &str) -> Result<(), IncidentError> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(IncidentError::Invalid(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes (this one is {})",
            value.len()
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() || guard_core::text::normalize::is_invisible(c))
    {
        return Err(IncidentError::Invalid(format!(
            "{what} `{}` holds control or invisible characters",
            shorten(value)
        )));
    }
    Ok(())
}

/// Checks a note (comment, resolution, reason): at most [`MAX_NOTE_BYTES`], no control
/// characters other than line breaks and tabs.
fn check_note(value: &str, what: &str) -> Result<(), IncidentError> {
    if value.len() > MAX_NOTE_BYTES {
        return Err(IncidentError::Invalid(format!(
            "{what} is {} bytes, over the {MAX_NOTE_BYTES}-byte limit",
            value.len()
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(IncidentError::Invalid(format!(
            "{what} holds control characters"
        )));
    }
    Ok(())
}
