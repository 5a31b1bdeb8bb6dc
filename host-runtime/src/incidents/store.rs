//! The tables and the recording of occurrences. Mutable rows (no append-only triggers here), so
//! every write runs in a `BEGIN IMMEDIATE` transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use guard_core::provenance::sha256_hex;
use guard_core::{Action, Level};
use rusqlite::{params, Connection, OptionalExtension as _, Row};

use super::outbox::{self, EventKind};
use super::seal::SealedContext;
use super::{
    check_text_id, new_id, now_ms, shorten, time_text, Incident, IncidentError, IncidentStatus,
    Occurrence, OccurrenceKind, QuarantineItem, QuarantineStatus, Recorded, MAX_BATCH,
    MAX_CONTEXT_BYTES, MAX_SUMMARY_BYTES,
};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incident_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS incidents (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    rule            TEXT NOT NULL,
    level           TEXT NOT NULL,
    rank            INTEGER NOT NULL,
    status          TEXT NOT NULL,
    count           INTEGER NOT NULL,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    first_request   TEXT NOT NULL,
    last_request    TEXT NOT NULL,
    summary         TEXT NOT NULL,
    assignee        TEXT,
    acknowledged_at INTEGER,
    acknowledged_by TEXT,
    resolved_at     INTEGER,
    resolved_by     TEXT,
    resolution      TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS incidents_group
    ON incidents (tenant, subject, rule, kind, last_seen) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, rank);
CREATE INDEX IF NOT EXISTS incidents_last_seen ON incidents (last_seen);
CREATE TABLE IF NOT EXISTS incident_comments (
    seq         INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    author      TEXT NOT NULL,
    body        TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS incident_comments_incident ON incident_comments (incident_id);
CREATE TABLE IF NOT EXISTS incident_quarantine (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    incident_id    TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    level          TEXT NOT NULL,
    action         TEXT NOT NULL,
    held_at        INTEGER NOT NULL,
    status         TEXT NOT NULL,
    context        TEXT,
    context_sha256 TEXT NOT NULL,
    summary        TEXT NOT NULL,
    decided_at     INTEGER,
    decided_by     TEXT,
    reason         TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS incident_quarantine_incident ON incident_quarantine (incident_id);
CREATE INDEX IF NOT EXISTS incident_quarantine_status ON incident_quarantine (status);
CREATE TABLE IF NOT EXISTS incident_outbox (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    sink         TEXT NOT NULL,
    incident_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_until  INTEGER,
    lease_owner  TEXT,
    state        TEXT NOT NULL,
    done_at      INTEGER,
    last_status  INTEGER,
    last_error   TEXT,
    UNIQUE (event_id, sink)
) STRICT;
CREATE INDEX IF NOT EXISTS incident_outbox_due ON incident_outbox (state, sink, due_at);
CREATE TABLE IF NOT EXISTS incident_notified (
    incident_id TEXT NOT NULL,
    sink        TEXT NOT NULL,
    PRIMARY KEY (incident_id, sink)
) STRICT;
CREATE TABLE IF NOT EXISTS incident_audit_queue (
    seq     INTEGER PRIMARY KEY,
    key     TEXT NOT NULL UNIQUE,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    digests TEXT NOT NULL
) STRICT;
";

/// Creates the tables if needed and checks the schema version of existing ones, inside the
/// caller's transaction (the registry's, or the store's own).
pub fn init_in(conn: &Connection) -> Result<(), IncidentError> {
    conn.execute_batch(SCHEMA)?;
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM incident_meta WHERE name = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match stored {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) => Err(IncidentError::Schema(format!(
            "schema version `{}`; this build reads {SCHEMA_VERSION}",
            shorten(&v)
        ))),
        None => {
            conn.execute(
                "INSERT INTO incident_meta (name, value) VALUES ('schema', ?1)",
                [SCHEMA_VERSION],
            )?;
            Ok(())
        }
    }
}

pub(super) fn rank(level: Level) -> i64 {
    match level {
        Level::VeryLow => 0,
        Level::Low => 1,
        Level::Medium => 2,
        Level::High => 3,
        Level::Critical => 4,
    }
}

pub(super) fn parse_level(s: &str) -> Result<Level, IncidentError> {
    Level::ALL
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| IncidentError::Corrupt(format!("level `{}`", shorten(s))))
}

fn parse_action(s: &str) -> Result<Action, IncidentError> {
    [
        Action::Allow,
        Action::Warn,
        Action::Quarantine,
        Action::Block,
    ]
    .into_iter()
    .find(|a| a.as_str() == s)
    .ok_or_else(|| IncidentError::Corrupt(format!("action `{}`", shorten(s))))
}

fn optional(column: String) -> Option<String> {
    Some(column).filter(|c| !c.is_empty())
}

fn json_column(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()))
}

pub(super) const INCIDENT_COLUMNS: &str = "seq, id, kind, tenant, subject, rule, level, status, \
    count, first_seen, last_seen, first_request, last_request, summary, assignee, \
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution, updated_at";

/// A row selected with [`INCIDENT_COLUMNS`], and its `seq`.
pub(super) fn incident_row(row: &Row<'_>) -> Result<(i64, Incident), IncidentError> {
    let status: String = row.get(7)?;
    let count: i64 = row.get(8)?;
    let level: String = row.get(6)?;
    Ok((
        row.get(0)?,
        Incident {
            id: row.get(1)?,
            kind: row.get(2)?,
            tenant: optional(row.get(3)?),
            subject: optional(row.get(4)?),
            rule: row.get(5)?,
            level: parse_level(&level)?,
            status: IncidentStatus::parse(&status)
                .ok_or_else(|| IncidentError::Corrupt(format!("status `{}`", shorten(&status))))?,
            count: u64::try_from(count)
                .map_err(|_| IncidentError::Corrupt(format!("count {count}")))?,
            first_seen: time_text(row.get(9)?),
            last_seen: time_text(row.get(10)?),
            first_request_id: row.get(11)?,
            last_request_id: row.get(12)?,
            summary: json_column(&row.get::<_, String>(13)?),
            assignee: row.get(14)?,
            acknowledged_at: row.get::<_, Option<i64>>(15)?.map(time_text),
            acknowledged_by: row.get(16)?,
            resolved_at: row.get::<_, Option<i64>>(17)?.map(time_text),
            resolved_by: row.get(18)?,
            resolution: row.get(19)?,
            updated_at: time_text(row.get(20)?),
        },
    ))
}

pub(super) const QUARANTINE_COLUMNS: &str = "seq, id, incident_id, tenant, subject, request_id, \
    level, action, held_at, status, context_sha256, summary, decided_at, decided_by, reason";

/// A row selected with [`QUARANTINE_COLUMNS`], and its `seq`.
pub(super) fn quarantine_row(row: &Row<'_>) -> Result<(i64, QuarantineItem), IncidentError> {
    let level: String = row.get(6)?;
    let action: String = row.get(7)?;
    let status: String = row.get(9)?;
    Ok((
        row.get(0)?,
        QuarantineItem {
            id: row.get(1)?,
            incident_id: row.get(2)?,
            tenant: optional(row.get(3)?),
            subject: optional(row.get(4)?),
            request_id: row.get(5)?,
            level: parse_level(&level)?,
            action: parse_action(&action)?,
            held_at: time_text(row.get(8)?),
            status: QuarantineStatus::parse(&status)
                .ok_or_else(|| IncidentError::Corrupt(format!("status `{}`", shorten(&status))))?,
            context_sha256: row.get(10)?,
            summary: json_column(&row.get::<_, String>(11)?),
            decided_at: row.get::<_, Option<i64>>(12)?.map(time_text),
            decided_by: row.get(13)?,
            reason: row.get(14)?,
        },
    ))
}

/// The incident with `id`.
pub(super) fn incident_by_id(conn: &Connection, id: &str) -> Result<Incident, IncidentError> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(incident_row(row)?.1),
        None => Err(IncidentError::NotFound(format!(
            "no incident `{}`",
            shorten(id)
        ))),
    }
}

/// Queues an audit entry for [`super::pending_audit`]; a later entry with the same `key`
/// replaces an earlier one not yet taken (a grouped incident's updates become one entry).
pub(super) fn queue_audit(
    conn: &Connection,
    key: &str,
    at: i64,
    kind: &str,
    subject: &str,
    digests: &BTreeMap<String, String>,
) -> Result<(), IncidentError> {
    let digests = serde_json::to_string(digests)
        .map_err(|e| IncidentError::Corrupt(format!("audit digests: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO incident_audit_queue (key, at, kind, subject, digests)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key) DO UPDATE SET at = excluded.at, subject = excluded.subject,
             digests = excluded.digests",
    )?
    .execute(params![key, at, kind, subject, digests])?;
    Ok(())
}

/// Counts at which a grouped incident notifies again: 10, 100, 1000, …
fn is_milestone(count: u64) -> bool {
    count >= 10 && {
        let mut n = count;
        while n % 10 == 0 {
            n /= 10;
        }
        n == 1
    }
}

/// Checks an occurrence before anything is written.
fn check(occurrence: &Occurrence) -> Result<String, IncidentError> {
    if let Some(tenant) = &occurrence.tenant {
        crate::store::check_tenant(tenant).map_err(|e| IncidentError::Invalid(e.to_string()))?;
    }
    if let Some(subject) = &occurrence.subject {
        crate::store::check_subject(subject).map_err(|e| IncidentError::Invalid(e.to_string()))?;
    }
    check_text_id(&occurrence.rule, "a rule")?;
    check_text_id(&occurrence.request_id, "a request id")?;
    if let OccurrenceKind::TemplateRefusal { code } = &occurrence.kind {
        check_text_id(code, "a refusal code")?;
    }
    let summary = serde_json::to_string(&occurrence.summary)
        .map_err(|e| IncidentError::Invalid(format!("summary: {e}")))?;
    if summary.len() > MAX_SUMMARY_BYTES {
        return Err(IncidentError::Invalid(format!(
            "the summary is {} bytes, over the {MAX_SUMMARY_BYTES}-byte limit",
            summary.len()
        )));
    }
    if let Some(sealed) = &occurrence.sealed {
        check_id_text(&sealed.item_id, "qtn")?;
        if sealed.len > MAX_CONTEXT_BYTES || !crate::vault::is_sealed(&sealed.sealed) {
            return Err(IncidentError::Invalid(
                "a sealed quarantine context is not the vault's, or too large".into(),
            ));
        }
    }
    Ok(summary)
}

fn check_id_text(id: &str, prefix: &str) -> Result<(), IncidentError> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(IncidentError::Invalid(format!(
            "`{}` is not a {prefix} id",
            shorten(id)
        )))
    }
}

/// [`super::IncidentStore::record`] inside the caller's transaction (which must be
/// `BEGIN IMMEDIATE`, or grouping could race another writer): events are queued for `sinks`.
/// Only contexts sealed already ([`Occurrence::sealed`]) are held; a plain one is not kept.
/// The tables must exist ([`init_in`]). Invalid occurrences get their error at their index and
/// are skipped; a storage error fails the whole call, and the caller rolls back.
pub fn record_in(
    conn: &Connection,
    batch: &[&Occurrence],
    window: Duration,
    sinks: &[String],
) -> Result<Vec<Result<Recorded, IncidentError>>, IncidentError> {
    if batch.len() > MAX_BATCH {
        return Err(IncidentError::Invalid(format!(
            "a batch holds at most {MAX_BATCH} occurrences, not {}",
            batch.len()
        )));
    }
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let mut results = Vec::with_capacity(batch.len());
    for occurrence in batch {
        match check(occurrence) {
            Ok(summary) => results.push(Ok(record_one(
                conn,
                occurrence,
                &summary,
                occurrence.sealed.as_ref(),
                window,
                sinks,
            )?)),
            Err(e) => results.push(Err(e)),
        }
    }
    Ok(results)
}

fn record_one(
    conn: &Connection,
    o: &Occurrence,
    summary: &str,
    context: Option<&SealedContext>,
    window: i64,
    sinks: &[String],
) -> Result<Recorded, IncidentError> {
    let at = o.at.unix_seconds();
    let tenant = o.tenant.as_deref().unwrap_or("");
    let subject = o.subject.as_deref().unwrap_or("");
    let kind = o.kind.as_str();
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents
         WHERE tenant = ?1 AND subject = ?2 AND rule = ?3 AND kind = ?4 AND status <> 'resolved'
           AND last_seen >= ?5 AND first_seen <= ?6
         ORDER BY last_seen DESC LIMIT 1"
    );
    let existing = {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            tenant,
            subject,
            o.rule,
            kind,
            at.saturating_sub(window),
            at.saturating_add(window)
        ])?;
        match rows.next()? {
            Some(row) => Some(incident_row(row)?.1),
            None => None,
        }
    };
    let rule_digest = BTreeMap::from([("rule".to_string(), sha256_hex(o.rule.as_bytes()))]);
    let mut events = Vec::new();
    let (incident, opened, level_raised) = match existing {
        Some(mut incident) => {
            let raised = o.level > incident.level;
            let latest = at >= parse_seen(&incident.last_seen)?;
            let count = incident.count.saturating_add(1);
            conn.prepare_cached(
                "UPDATE incidents SET count = ?1,
                     first_seen = MIN(first_seen, ?2), last_seen = MAX(last_seen, ?2),
                     level = CASE WHEN ?3 > rank THEN ?4 ELSE level END,
                     rank = MAX(rank, ?3),
                     last_request = CASE WHEN ?5 THEN ?6 ELSE last_request END,
                     summary = CASE WHEN ?5 THEN ?7 ELSE summary END,
                     updated_at = ?2
                 WHERE id = ?8",
            )?
            .execute(params![
                i64::try_from(count).unwrap_or(i64::MAX),
                at,
                rank(o.level),
                o.level.as_str(),
                latest,
                o.request_id,
                summary,
                incident.id
            ])?;
            incident = incident_by_id(conn, &incident.id)?;
            queue_audit(
                conn,
                &format!("update:{}", incident.id),
                at,
                "incident",
                &format!(
                    "incident {} updated: count {}, level {}",
                    incident.id,
                    incident.count,
                    incident.level.as_str()
                ),
                &rule_digest,
            )?;
            if raised {
                events.push(EventKind::Escalated);
            } else if is_milestone(incident.count) {
                events.push(EventKind::Repeated);
            }
            (incident, false, raised)
        }
        None => {
            let id = new_id("inc")?;
            conn.prepare_cached(
                "INSERT INTO incidents (id, kind, tenant, subject, rule, level, rank, status,
                     count, first_seen, last_seen, first_request, last_request, summary,
                     updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', 1, ?8, ?8, ?9, ?9, ?10, ?8)",
            )?
            .execute(params![
                id,
                kind,
                tenant,
                subject,
                o.rule,
                o.level.as_str(),
                rank(o.level),
                at,
                o.request_id,
                summary
            ])?;
            queue_audit(
                conn,
                &format!("open:{id}"),
                at,
                "incident",
                &format!("incident {id} opened: level {}", o.level.as_str()),
                &rule_digest,
            )?;
            events.push(EventKind::Opened);
            (incident_by_id(conn, &id)?, true, false)
        }
    };
    if let OccurrenceKind::TemplateRefusal { code } = &o.kind {
        let key = new_id("refusal")?;
        queue_audit(
            conn,
            &key,
            at,
            "refusal",
            &format!("template refused, incident {}", incident.id),
            &BTreeMap::from([
                ("code".to_string(), sha256_hex(code.as_bytes())),
                ("request".to_string(), sha256_hex(o.request_id.as_bytes())),
            ]),
        )?;
    }
    let quarantine_id = match context {
        Some(context) => Some(hold(conn, o, &incident.id, summary, context, at)?),
        None => None,
    };
    let created = now_ms();
    let mut event_ids = Vec::new();
    for kind in events {
        let event_id = new_id("evt")?;
        let body = outbox::event_body(&event_id, kind, &incident);
        for sink in sinks {
            outbox::insert(conn, &event_id, sink, &incident.id, kind, &body, created)?;
        }
        if !sinks.is_empty() {
            event_ids.push(event_id);
        }
    }
    Ok(Recorded {
        incident_id: incident.id,
        opened,
        count: incident.count,
        level: incident.level,
        level_raised,
        quarantine_id,
        events: event_ids,
    })
}

fn parse_seen(text: &str) -> Result<i64, IncidentError> {
    guard_core::time::Timestamp::parse(text)
        .map(|t| t.unix_seconds())
        .map_err(|e| IncidentError::Corrupt(e.to_string()))
}

fn hold(
    conn: &Connection,
    o: &Occurrence,
    incident_id: &str,
    summary: &str,
    context: &SealedContext,
    at: i64,
) -> Result<String, IncidentError> {
    let id = context.item_id.clone();
    let action = match &o.kind {
        OccurrenceKind::Assessment { action } => *action,
        OccurrenceKind::TemplateRefusal { .. } => Action::Block,
    };
    let digest = context.sha256.clone();
    let stored = &context.sealed;
    conn.prepare_cached(
        "INSERT INTO incident_quarantine (id, incident_id, tenant, subject, request_id, level,
             action, held_at, status, context, context_sha256, summary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'held', ?9, ?10, ?11)",
    )?
    .execute(params![
        id,
        incident_id,
        o.tenant.as_deref().unwrap_or(""),
        o.subject.as_deref().unwrap_or(""),
        o.request_id,
        o.level.as_str(),
        action.as_str(),
        at,
        stored,
        digest,
        summary
    ])?;
    queue_audit(
        conn,
        &format!("hold:{id}"),
        at,
        "quarantine",
        &format!("quarantine {id} held for incident {incident_id}"),
        &BTreeMap::from([("context".to_string(), digest)]),
    )?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_are_powers_of_ten() {
        let hits: Vec<u64> = (1..=2000).filter(|&n| is_milestone(n)).collect();
        assert_eq!(hits, vec![10, 100, 1000]);
    }
}
