//! The escalation outbox: sinks as configuration, one row per (event, sink), claims under a
//! lease, and the bodies each kind of receiver gets.
//!
//! A row is inserted in the transaction that changed the incident, so an event exists exactly
//! when its change does. A worker claims due rows by setting a lease (an expiry time and its own
//! id) and counting the attempt; a worker that dies leaves rows whose lease runs out, and they
//! are due again. The event body is made once, at insertion: every attempt sends the same event
//! id and the same content.

use std::fmt;

use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::json;

use super::{now_ms, shorten, Incident, IncidentError};

/// Where PagerDuty's Events API v2 takes events.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The header carrying the event id on every attempt (also sent as `Idempotency-Key`).
pub const EVENT_ID_HEADER: &str = "x-sigil-event-id";
/// The header carrying the Unix time a signed webhook attempt was signed at.
pub const TIMESTAMP_HEADER: &str = "x-sigil-timestamp";
/// The header carrying `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under the
/// webhook's secret.
pub const SIGNATURE_HEADER: &str = "x-sigil-signature";

/// A secret kept out of logs and debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret from its text.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself (for signing and request bodies only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where escalation events go. A sink's `name` (default: its type) names its outbox rows, so
/// renaming a sink leaves the old name's undelivered rows to be marked dead.
///
/// URLs are secrets too (a Slack webhook URL is its credential): they appear in no log and no
/// debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sink {
    /// A generic JSON webhook: the event as JSON. With a secret, each attempt is signed.
    Webhook {
        /// The sink's name.
        #[serde(default)]
        name: Option<String>,
        /// Where to POST.
        url: Secret,
        /// The HMAC-SHA256 key for [`SIGNATURE_HEADER`].
        #[serde(default)]
        secret: Option<Secret>,
    },
    /// A Slack-compatible incoming webhook: `{"text", "blocks"}`.
    Slack {
        /// The sink's name.
        #[serde(default)]
        name: Option<String>,
        /// The incoming webhook's URL.
        url: Secret,
    },
    /// PagerDuty Events API v2: a `trigger` whose `dedup_key` is the incident id.
    #[serde(rename = "pagerduty")]
    PagerDuty {
        /// The sink's name.
        #[serde(default)]
        name: Option<String>,
        /// The events endpoint ([`DEFAULT_PAGERDUTY_URL`] when absent).
        #[serde(default)]
        url: Option<Secret>,
        /// The service's integration (routing) key.
        routing_key: Secret,
    },
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("type", &self.kind())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// `webhook`, `slack` or `pagerduty`.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Webhook { .. } => "webhook",
            Sink::Slack { .. } => "slack",
            Sink::PagerDuty { .. } => "pagerduty",
        }
    }

    /// The sink's name: the one configured, or its type.
    pub fn name(&self) -> &str {
        let name = match self {
            Sink::Webhook { name, .. }
            | Sink::Slack { name, .. }
            | Sink::PagerDuty { name, .. } => name,
        };
        name.as_deref().unwrap_or(self.kind())
    }

    /// Where it sends.
    pub(super) fn url(&self) -> &str {
        match self {
            Sink::Webhook { url, .. } | Sink::Slack { url, .. } => url.expose(),
            Sink::PagerDuty { url, .. } => {
                url.as_ref().map_or(DEFAULT_PAGERDUTY_URL, |u| u.expose())
            }
        }
    }

    /// The request body this sink sends for a stored event body.
    pub fn body(&self, event: &serde_json::Value) -> String {
        match self {
            Sink::Webhook { .. } => event.to_string(),
            Sink::Slack { .. } => slack_body(event).to_string(),
            Sink::PagerDuty { routing_key, .. } => {
                pagerduty_body(event, routing_key.expose()).to_string()
            }
        }
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// The first retry waits up to this long (full jitter: a random time from zero).
    pub base_ms: u64,
    /// No wait is longer than this.
    pub cap_ms: u64,
    /// A row not delivered this long after its event is marked dead (kept and counted).
    pub max_age_secs: u64,
    /// One attempt (connect, send, answer) may take this long.
    pub attempt_timeout_ms: u64,
    /// A claimed row is leased for this long (at least twice the attempt timeout).
    pub lease_ms: u64,
    /// Attempts in flight per sink at most.
    pub concurrency: u32,
    /// How long an idle worker sleeps before looking for due rows again (it also wakes when
    /// events are recorded through its store).
    pub poll_ms: u64,
    /// Delivered rows are deleted this long after delivery (by a worker, when it starts and
    /// every hour). Dead rows are kept for inspection.
    pub keep_delivered_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            cap_ms: 300_000,
            max_age_secs: 86_400,
            attempt_timeout_ms: 10_000,
            lease_ms: 60_000,
            concurrency: 4,
            poll_ms: 1_000,
            keep_delivered_secs: 7 * 86_400,
        }
    }
}

impl RetryPolicy {
    /// The wait before the retry after attempt `attempts` (1 for the first attempt): a random
    /// time in `[0, min(cap, base · 2^(attempts-1))]`.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(40))
            .min(self.cap_ms);
        random_u64() % ceiling.saturating_add(1)
    }

    /// The lease actually used: at least twice the attempt timeout and a second more, so an
    /// attempt in flight never outlives its lease.
    pub fn effective_lease_ms(&self) -> u64 {
        self.lease_ms.max(
            self.attempt_timeout_ms
                .saturating_mul(2)
                .saturating_add(1_000),
        )
    }

    fn check(&self) -> Result<(), IncidentError> {
        if self.base_ms == 0 || self.cap_ms < self.base_ms {
            return Err(IncidentError::Config(
                "retry: base_ms must be at least 1 and cap_ms at least base_ms".into(),
            ));
        }
        if self.attempt_timeout_ms == 0 || self.concurrency == 0 || self.poll_ms == 0 {
            return Err(IncidentError::Config(
                "retry: attempt_timeout_ms, concurrency and poll_ms must be at least 1".into(),
            ));
        }
        if self.concurrency > 64 {
            return Err(IncidentError::Config(
                "retry: concurrency is at most 64".into(),
            ));
        }
        Ok(())
    }
}

/// Escalation as configured: the sinks and how deliveries are retried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationConfig {
    /// Where events go.
    pub sinks: Vec<Sink>,
    /// How deliveries are retried.
    pub retry: RetryPolicy,
}

impl EscalationConfig {
    /// Checks the sinks (names, URLs, keys) and the retry policy.
    pub fn check(&self) -> Result<(), IncidentError> {
        check_sinks(&self.sinks)?;
        self.retry.check()
    }
}

/// Checks sinks and returns their names.
pub(super) fn check_sinks(sinks: &[Sink]) -> Result<Vec<String>, IncidentError> {
    let mut names: Vec<String> = Vec::new();
    for sink in sinks {
        let name = sink.name();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
        {
            return Err(IncidentError::Config(format!(
                "sink name `{}` must be 1 to 64 of a-z 0-9 _ - .",
                shorten(name)
            )));
        }
        if names.iter().any(|n| n == name) {
            return Err(IncidentError::Config(format!(
                "two sinks are named `{name}`; give each its own `name`"
            )));
        }
        let uri: hyper::Uri = sink
            .url()
            .parse()
            .map_err(|_| IncidentError::Config(format!("sink `{name}`: the url is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(IncidentError::Config(format!(
                "sink `{name}`: the url must be http:// or https:// with a host"
            )));
        }
        if let Sink::PagerDuty { routing_key, .. } = sink {
            let key = routing_key.expose();
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(IncidentError::Config(format!(
                    "sink `{name}`: the routing key must be 1 to 128 printable characters"
                )));
            }
        }
        if let Sink::Webhook {
            secret: Some(secret),
            ..
        } = sink
        {
            if secret.expose().len() < 16 {
                return Err(IncidentError::Config(format!(
                    "sink `{name}`: a signing secret has at least 16 characters"
                )));
            }
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn random_u64() -> u64 {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // Jitter needs no secrecy: should the generator fail, the clock's nanoseconds serve.
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    }
    u64::from_le_bytes(bytes)
}

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    /// An incident was opened.
    Opened,
    /// Its level rose.
    Escalated,
    /// Its count reached 10, 100, 1000, …
    Repeated,
    /// A reviewer resolved it (sent to the sinks told of it before).
    Resolved,
}

impl EventKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "incident.opened",
            EventKind::Escalated => "incident.escalated",
            EventKind::Repeated => "incident.repeated",
            EventKind::Resolved => "incident.resolved",
        }
    }
}

/// The event as a generic webhook receives it, made once when the event is queued. It names
/// the incident, its level, rule and tenant, never the user: a reviewer opens the incident.
pub(super) fn event_body(event_id: &str, kind: EventKind, incident: &Incident) -> String {
    json!({
        "event_id": event_id,
        "type": kind.as_str(),
        "product": "sigil",
        "incident": {
            "id": incident.id,
            "kind": incident.kind,
            "level": incident.level.as_str(),
            "status": incident.status.as_str(),
            "rule": incident.rule,
            "tenant": incident.tenant,
            "count": incident.count,
            "first_seen": incident.first_seen,
            "last_seen": incident.last_seen,
            "summary": incident.summary,
        },
    })
    .to_string()
}

fn text_at<'a>(event: &'a serde_json::Value, pointer: &str) -> &'a str {
    event
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// Slack's mrkdwn escapes: `&`, `<` and `>`.
fn slack_escape(text: &str) -> String {
    text.chars()
        .take(300)
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c if c.is_control() => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn headline(event: &serde_json::Value) -> String {
    let what = match text_at(event, "/type") {
        "incident.escalated" => "escalated to",
        "incident.repeated" => "repeated,",
        "incident.resolved" => "resolved,",
        _ => "opened,",
    };
    format!(
        "Sigil incident {} {what} {}: {} ({} occurrence{})",
        text_at(event, "/incident/id"),
        text_at(event, "/incident/level"),
        text_at(event, "/incident/rule"),
        event
            .pointer("/incident/count")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        if event
            .pointer("/incident/count")
            .and_then(serde_json::Value::as_u64)
            == Some(1)
        {
            ""
        } else {
            "s"
        }
    )
}

/// A Slack-compatible message for an event: `text` (the notification line) and `blocks`
/// (header, fields, the event id as context).
pub fn slack_body(event: &serde_json::Value) -> serde_json::Value {
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(value))});
    let count = event
        .pointer("/incident/count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
        .to_string();
    let tenant = text_at(event, "/incident/tenant");
    json!({
        "text": slack_escape(&headline(event)),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text":
                format!("Sigil: {} incident", text_at(event, "/incident/level"))}},
            {"type": "section", "fields": [
                field("Incident", text_at(event, "/incident/id")),
                field("Level", text_at(event, "/incident/level")),
                field("Rule", text_at(event, "/incident/rule")),
                field("Occurrences", &count),
                field("Tenant", if tenant.is_empty() { "none" } else { tenant }),
                field("Last seen", text_at(event, "/incident/last_seen")),
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("{} · event {}",
                    slack_escape(text_at(event, "/type")),
                    slack_escape(text_at(event, "/event_id")))}
            ]},
        ],
    })
}

/// PagerDuty's severity for a level.
fn pagerduty_severity(level: &str) -> &'static str {
    match level {
        "critical" => "critical",
        "high" => "error",
        "medium" => "warning",
        _ => "info",
    }
}

/// A PagerDuty Events API v2 `trigger` for an event (a `resolve` for `incident.resolved`):
/// `dedup_key` is the incident id, so every event of one incident (and every retry) lands on
/// one PagerDuty alert, which the resolution closes.
pub fn pagerduty_body(event: &serde_json::Value, routing_key: &str) -> serde_json::Value {
    if text_at(event, "/type") == "incident.resolved" {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": text_at(event, "/incident/id"),
        });
    }
    let summary: String = headline(event).chars().take(1024).collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": text_at(event, "/incident/id"),
        "payload": {
            "summary": summary,
            "source": "sigil",
            "severity": pagerduty_severity(text_at(event, "/incident/level")),
            "timestamp": text_at(event, "/incident/last_seen"),
            "component": "guard",
            "class": text_at(event, "/incident/rule"),
            "custom_details": {
                "event_id": text_at(event, "/event_id"),
                "event_type": text_at(event, "/type"),
                "incident": event.get("incident").cloned().unwrap_or(serde_json::Value::Null),
            },
        },
    })
}

/// Queues one row.
pub(super) fn insert(
    conn: &Connection,
    event_id: &str,
    sink: &str,
    incident_id: &str,
    kind: EventKind,
    body: &str,
    now: i64,
) -> Result<(), IncidentError> {
    conn.prepare_cached(
        "INSERT INTO incident_outbox (event_id, sink, incident_id, event, body, created_at,
             due_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'pending')",
    )?
    .execute(params![
        event_id,
        sink,
        incident_id,
        kind.as_str(),
        body,
        now
    ])?;
    // The sinks told of an incident are told of its resolution, even after its rows are gone.
    conn.prepare_cached(
        "INSERT INTO incident_notified (incident_id, sink) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![incident_id, sink])?;
    Ok(())
}

/// Queues an `incident.resolved` event for every sink told of the incident before; returns
/// the event id when there was one.
pub(super) fn queue_resolved(
    conn: &Connection,
    incident: &Incident,
) -> Result<Option<String>, IncidentError> {
    let sinks: Vec<String> = conn
        .prepare_cached("SELECT sink FROM incident_notified WHERE incident_id = ?1 ORDER BY sink")?
        .query_map([&incident.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if sinks.is_empty() {
        return Ok(None);
    }
    let event_id = super::new_id("evt")?;
    let body = event_body(&event_id, EventKind::Resolved, incident);
    for sink in &sinks {
        insert(
            conn,
            &event_id,
            sink,
            &incident.id,
            EventKind::Resolved,
            &body,
            now_ms(),
        )?;
    }
    Ok(Some(event_id))
}

/// A claimed row.
#[derive(Debug, Clone)]
pub(super) struct Claimed {
    pub seq: i64,
    pub event_id: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: u32,
}

/// Claims up to `limit` due rows of `sink` for `owner` until `now + lease_ms`, counting the
/// attempt. Rows whose lease ran out (their worker died) are due again.
pub(super) fn claim(
    conn: &mut Connection,
    sink: &str,
    owner: &str,
    limit: u32,
    lease_ms: u64,
) -> Result<Vec<Claimed>, IncidentError> {
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let claimed = {
        let mut stmt = tx.prepare_cached(
            "UPDATE incident_outbox SET lease_until = ?1, lease_owner = ?2,
                 attempts = attempts + 1
             WHERE seq IN (SELECT seq FROM incident_outbox
                           WHERE state = 'pending' AND sink = ?3 AND due_at <= ?4
                             AND (lease_until IS NULL OR lease_until <= ?4)
                           ORDER BY due_at, seq LIMIT ?5)
             RETURNING seq, event_id, body, created_at, attempts",
        )?;
        let rows = stmt.query_map(params![until, owner, sink, now, limit], |r| {
            Ok(Claimed {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                body: r.get(2)?,
                created_at: r.get(3)?,
                attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    Ok(claimed)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// Worth another attempt (5xx, 408, 429, a timeout, a connection error), no sooner than
    /// `after_ms` when the receiver said so.
    Retry {
        status: Option<u16>,
        error: String,
        after_ms: Option<u64>,
    },
    /// Never worth another attempt (other 4xx, a redirect).
    Permanent { status: Option<u16>, error: String },
}

/// Records an attempt's outcome. A retry past the policy's max age is marked dead instead.
/// Returns the state the row is in now.
/// A row whose lease ran out and that another worker claimed meanwhile is that worker's to
/// settle: only a delivery is recorded over its claim.
pub(super) fn finish(
    conn: &mut Connection,
    row: &Claimed,
    owner: &str,
    outcome: &Outcome,
    policy: &super::RetryPolicy,
) -> Result<&'static str, IncidentError> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let state = match outcome {
        Outcome::Delivered { status } => {
            tx.prepare_cached(
                "UPDATE incident_outbox SET state = 'delivered', done_at = ?1, last_status = ?2,
                     lease_until = NULL, lease_owner = NULL, last_error = NULL
                 WHERE seq = ?3",
            )?
            .execute(params![now, status, row.seq])?;
            "delivered"
        }
        Outcome::Permanent { status, error } => {
            mark_dead(&tx, row.seq, owner, now, *status, error)?;
            "dead"
        }
        Outcome::Retry {
            status,
            error,
            after_ms,
        } => {
            let max_age =
                i64::try_from(policy.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let wait = policy
                .backoff_ms(row.attempts)
                .max(after_ms.unwrap_or(0).min(3_600_000));
            let due = now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
            if due.saturating_sub(row.created_at) > max_age {
                mark_dead(
                    &tx,
                    row.seq,
                    owner,
                    now,
                    *status,
                    &format!("{error}; gave up after {} attempts", row.attempts),
                )?;
                "dead"
            } else {
                tx.prepare_cached(
                    "UPDATE incident_outbox SET due_at = ?1, last_status = ?2, last_error = ?3,
                         lease_until = NULL, lease_owner = NULL
                     WHERE seq = ?4 AND state = 'pending' AND lease_owner = ?5",
                )?
                .execute(params![due, status, error, row.seq, owner])?;
                "pending"
            }
        }
    };
    tx.commit()?;
    Ok(state)
}

fn mark_dead(
    conn: &Connection,
    seq: i64,
    owner: &str,
    now: i64,
    status: Option<u16>,
    error: &str,
) -> Result<(), IncidentError> {
    conn.prepare_cached(
        "UPDATE incident_outbox SET state = 'dead', done_at = ?1, last_status = ?2,
             last_error = ?3, lease_until = NULL, lease_owner = NULL
         WHERE seq = ?4 AND state = 'pending' AND lease_owner = ?5",
    )?
    .execute(params![now, status, error, seq, owner])?;
    Ok(())
}

/// Marks dead the pending rows of sinks no longer configured, so they are counted rather than
/// waiting for ever.
pub(super) fn bury_unknown_sinks(
    conn: &mut Connection,
    sinks: &[String],
) -> Result<usize, IncidentError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let names = serde_json::to_string(sinks).map_err(|e| IncidentError::Corrupt(e.to_string()))?;
    let n = tx.execute(
        "UPDATE incident_outbox SET state = 'dead', done_at = ?1,
             last_error = 'the sink is no longer configured', lease_until = NULL,
             lease_owner = NULL
         WHERE state = 'pending' AND sink NOT IN (SELECT value FROM json_each(?2))",
        params![now_ms(), names],
    )?;
    tx.commit()?;
    Ok(n)
}

/// Gives up `owner`'s leases on rows still pending (at shutdown: they are due again at once).
pub(super) fn release_leases(conn: &mut Connection, owner: &str) -> Result<usize, IncidentError> {
    Ok(conn.execute(
        "UPDATE incident_outbox SET lease_until = NULL, lease_owner = NULL
         WHERE lease_owner = ?1 AND state = 'pending'",
        [owner],
    )?)
}

/// The earliest time a pending row of `sink` can be claimed, in ms, if any is pending.
pub(super) fn next_due(conn: &Connection, sink: &str) -> Result<Option<i64>, IncidentError> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(MAX(due_at, COALESCE(lease_until, 0))) FROM incident_outbox
             WHERE state = 'pending' AND sink = ?1",
        )?
        .query_row([sink], |r| r.get::<_, Option<i64>>(0))?)
}

/// Deletes rows delivered more than `keep_ms` ago; returns how many.
pub(super) fn purge_delivered(conn: &mut Connection, keep_ms: u64) -> Result<usize, IncidentError> {
    let cutoff = now_ms().saturating_sub(i64::try_from(keep_ms).unwrap_or(i64::MAX));
    Ok(conn.execute(
        "DELETE FROM incident_outbox WHERE state = 'delivered' AND done_at < ?1",
        [cutoff],
    )?)
}
