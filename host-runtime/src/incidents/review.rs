//! What reviewers do, as functions over a connection: each runs inside the caller's
//! transaction (the registry's, which authorized the reviewer) and returns what it changed and
//! the audit entries to record with it. Listings and counts are reads.

use std::collections::BTreeMap;

use guard_core::provenance::sha256_hex;
use guard_core::time::Timestamp;
use guard_core::transparency::EntryKind;
use guard_core::Level;
use rusqlite::{params, Connection, OptionalExtension as _};
use serde::Serialize;
use serde_json::value::RawValue;

use super::seal;
use super::store::{
    incident_by_id, incident_row, quarantine_row, rank, INCIDENT_COLUMNS, QUARANTINE_COLUMNS,
};
use super::{
    check_note, check_text_id, shorten, time_text, Comment, Incident, IncidentDetail,
    IncidentError, IncidentFilter, IncidentStatus, Page, QuarantineFilter, QuarantineItem,
    QuarantineStatus, DEFAULT_PAGE, MAX_PAGE,
};
use crate::audit::NewEntry;
use crate::registry::{Recorded, Registry, Role, Session};
use crate::signer::Signer;
use crate::vault::Vault;

/// Who acts: the name kept on the incident (what the console shows) and the audit actor
/// (`role:<role>` or the identity's keyed pseudonym, as the registry gives it).
#[derive(Debug, Clone, Copy)]
pub struct Reviewer<'a> {
    /// The identity's name.
    pub name: &'a str,
    /// The audit log's actor for it.
    pub actor: &'a str,
}

/// A released item: the item and the decision context it was held with.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    /// The item, now `released`.
    pub item: QuarantineItem,
    /// The context handed over when it was held (request, rendered prompt, the guard's answer),
    /// as the exact JSON stored: never parsed again, so no depth limit can refuse it.
    pub context: Box<RawValue>,
}

/// Figures for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Incidents not resolved, by level (every level present, zero or not).
    pub open_by_level: BTreeMap<String, u64>,
    /// Incidents still `open` (nobody acknowledged them).
    pub unacknowledged: u64,
    /// Seconds since the first occurrence of the oldest unacknowledged incident, at `now`.
    pub oldest_unacknowledged_seconds: Option<u64>,
    /// Items held in quarantine.
    pub quarantine_held: u64,
    /// Outbox rows waiting for delivery.
    pub outbox_pending: u64,
    /// Outbox rows given up on (kept for inspection).
    pub outbox_dead: u64,
    /// Outbox rows delivered.
    pub outbox_delivered: u64,
    /// Pending rows by sink.
    pub outbox_pending_by_sink: BTreeMap<String, u64>,
    /// Dead rows by sink.
    pub outbox_dead_by_sink: BTreeMap<String, u64>,
    /// Automatic changes waiting for [`pending_audit`].
    pub audit_pending: u64,
}

fn entry(now: Timestamp, kind: EntryKind, actor: &str, subject: String) -> NewEntry {
    NewEntry {
        // The log's times are to the second.
        time: time_text(now.unix_seconds()),
        kind,
        actor: actor.to_string(),
        subject: Some(subject),
        digests: BTreeMap::new(),
    }
}

fn check_id(id: &str, prefix: &str, what: &str) -> Result<(), IncidentError> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(IncidentError::NotFound(format!(
            "no {what} `{}`",
            shorten(id)
        )))
    }
}

fn check_actor(by: &Reviewer<'_>) -> Result<(), IncidentError> {
    check_text_id(by.name, "a reviewer's name")?;
    if !guard_core::transparency::is_actor(by.actor) {
        return Err(IncidentError::Invalid(
            "the audit actor must be `role:<role>` or a `psn:` pseudonym".into(),
        ));
    }
    Ok(())
}

fn open_incident(conn: &Connection, id: &str) -> Result<Incident, IncidentError> {
    check_id(id, "inc", "incident")?;
    incident_by_id(conn, id)
}

/// The incident `id` as it is now, with the audit entry of `by`'s change to it.
fn changed(
    conn: &Connection,
    id: &str,
    now: Timestamp,
    by: &Reviewer<'_>,
    what: String,
) -> Result<(Incident, Vec<NewEntry>), IncidentError> {
    Ok((
        incident_by_id(conn, id)?,
        vec![entry(now, EntryKind::Incident, by.actor, what)],
    ))
}

/// Acknowledges an open incident. Conflict when it is already acknowledged or resolved.
pub fn acknowledge(
    conn: &Connection,
    id: &str,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Incident, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    let incident = open_incident(conn, id)?;
    if incident.status != IncidentStatus::Open {
        return Err(IncidentError::Conflict(format!(
            "incident {id} is {}, not open",
            incident.status.as_str()
        )));
    }
    conn.execute(
        "UPDATE incidents SET status = 'acknowledged', acknowledged_at = ?1,
             acknowledged_by = ?2, updated_at = ?1
         WHERE id = ?3 AND status = 'open'",
        params![now.unix_seconds(), by.name, id],
    )?;
    changed(conn, id, now, &by, format!("incident {id} acknowledged"))
}

/// Assigns an incident that is not resolved to `assignee` (or unassigns it with `None`).
/// The audit entry says it was assigned, not to whom (a person's name is not for the log).
pub fn assign(
    conn: &Connection,
    id: &str,
    assignee: Option<&str>,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Incident, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if let Some(assignee) = assignee {
        check_text_id(assignee, "an assignee")?;
    }
    let incident = open_incident(conn, id)?;
    if incident.status == IncidentStatus::Resolved {
        return Err(IncidentError::Conflict(format!(
            "incident {id} is resolved"
        )));
    }
    conn.execute(
        "UPDATE incidents SET assignee = ?1, updated_at = ?2 WHERE id = ?3",
        params![assignee, now.unix_seconds(), id],
    )?;
    let what = if assignee.is_some() {
        "assigned"
    } else {
        "unassigned"
    };
    changed(conn, id, now, &by, format!("incident {id} {what}"))
}

/// Resolves an incident that is open or acknowledged, with an optional note, and queues an
/// `incident.resolved` event for the sinks told of it (PagerDuty closes its alert). Conflict
/// when it is resolved already. A repeat after this opens a new incident.
pub fn resolve(
    conn: &Connection,
    id: &str,
    resolution: Option<&str>,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Incident, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if let Some(note) = resolution {
        check_note(note, "the resolution")?;
    }
    let incident = open_incident(conn, id)?;
    if incident.status == IncidentStatus::Resolved {
        return Err(IncidentError::Conflict(format!(
            "incident {id} is resolved already"
        )));
    }
    conn.execute(
        "UPDATE incidents SET status = 'resolved', resolved_at = ?1, resolved_by = ?2,
             resolution = ?3, updated_at = ?1
         WHERE id = ?4 AND status <> 'resolved'",
        params![now.unix_seconds(), by.name, resolution, id],
    )?;
    let mut e = entry(
        now,
        EntryKind::Incident,
        by.actor,
        format!("incident {id} resolved"),
    );
    if let Some(note) = resolution {
        e.digests
            .insert("resolution".into(), sha256_hex(note.as_bytes()));
    }
    let incident = incident_by_id(conn, id)?;
    super::outbox::queue_resolved(conn, &incident)?;
    Ok((incident, vec![e]))
}

/// Adds a comment to an incident in any state.
pub fn comment(
    conn: &Connection,
    id: &str,
    body: &str,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Comment, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if body.trim().is_empty() {
        return Err(IncidentError::Invalid("a comment cannot be empty".into()));
    }
    check_note(body, "the comment")?;
    open_incident(conn, id)?;
    conn.execute(
        "INSERT INTO incident_comments (incident_id, at, author, body) VALUES (?1, ?2, ?3, ?4)",
        params![id, now.unix_seconds(), by.name, body],
    )?;
    conn.execute(
        "UPDATE incidents SET updated_at = ?1 WHERE id = ?2",
        params![now.unix_seconds(), id],
    )?;
    let mut e = entry(
        now,
        EntryKind::Incident,
        by.actor,
        format!("incident {id} commented"),
    );
    e.digests
        .insert("comment".into(), sha256_hex(body.as_bytes()));
    Ok((
        Comment {
            at: time_text(now.unix_seconds()),
            author: by.name.to_string(),
            body: body.to_string(),
        },
        vec![e],
    ))
}

/// An incident with its comments and quarantined items.
pub fn get_incident(conn: &Connection, id: &str) -> Result<IncidentDetail, IncidentError> {
    let incident = open_incident(conn, id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT at, author, body FROM incident_comments WHERE incident_id = ?1
         ORDER BY seq LIMIT ?2",
    )?;
    let comments = stmt
        .query_map(params![id, MAX_PAGE], |r| {
            Ok(Comment {
                at: time_text(r.get(0)?),
                author: r.get(1)?,
                body: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let sql = format!(
        "SELECT {QUARANTINE_COLUMNS} FROM incident_quarantine WHERE incident_id = ?1
         ORDER BY seq LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id, MAX_PAGE])?;
    let mut quarantine = Vec::new();
    while let Some(row) = rows.next()? {
        quarantine.push(quarantine_row(row)?.1);
    }
    Ok(IncidentDetail {
        incident,
        comments,
        quarantine,
    })
}

fn page_limit(limit: Option<u32>) -> Result<u32, IncidentError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(IncidentError::Invalid(format!(
            "limit must be 1 to {MAX_PAGE}, not {n}"
        ))),
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<i64, IncidentError> {
    match cursor {
        None => Ok(i64::MAX),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0 && c.len() <= 19 && c.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                IncidentError::Invalid(format!(
                    "cursor `{}` is not one this service gave",
                    shorten(c)
                ))
            }),
    }
}

fn check_filter_text(value: Option<&str>, what: &str) -> Result<(), IncidentError> {
    match value {
        Some(v)
            if v.is_empty()
                || v.len() > crate::store::MAX_SUBJECT_BYTES
                || v.chars().any(char::is_control) =>
        {
            Err(IncidentError::Invalid(format!(
                "{what} filter must be 1 to {} bytes without control characters",
                crate::store::MAX_SUBJECT_BYTES
            )))
        }
        _ => Ok(()),
    }
}

/// Incidents matching `filter`, newest first.
pub fn list_incidents(
    conn: &Connection,
    filter: &IncidentFilter,
) -> Result<Page<Incident>, IncidentError> {
    let limit = page_limit(filter.limit)?;
    let before = parse_cursor(filter.cursor.as_deref())?;
    check_filter_text(filter.tenant.as_deref(), "the tenant")?;
    check_filter_text(filter.subject.as_deref(), "the subject")?;
    check_filter_text(filter.rule.as_deref(), "the rule")?;
    check_filter_text(filter.assignee.as_deref(), "the assignee")?;
    let since = filter
        .since
        .as_deref()
        .map(|s| {
            Timestamp::parse(s)
                .map(|t| t.unix_seconds())
                .map_err(|e| IncidentError::Invalid(e.to_string()))
        })
        .transpose()?;
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents
         WHERE seq < ?1
           AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR level = ?3)
           AND (?4 IS NULL OR rank >= ?4)
           AND (?5 IS NULL OR tenant = ?5)
           AND (?6 IS NULL OR subject = ?6)
           AND (?7 IS NULL OR rule = ?7)
           AND (?8 IS NULL OR assignee = ?8)
           AND (?9 IS NULL OR last_seen >= ?9)
         ORDER BY seq DESC LIMIT ?10"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        before,
        filter.status.map(IncidentStatus::as_str),
        filter.level.map(Level::as_str),
        filter.min_level.map(rank),
        filter.tenant,
        filter.subject,
        filter.rule,
        filter.assignee,
        since,
        i64::from(limit) + 1,
    ])?;
    let mut items = Vec::new();
    let mut last_seq = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() == limit as usize {
            more = true;
            break;
        }
        let (seq, incident) = incident_row(row)?;
        last_seq = Some(seq);
        items.push(incident);
    }
    Ok(Page {
        items,
        next_cursor: last_seq.filter(|_| more).map(|s| s.to_string()),
    })
}

/// Quarantined items matching `filter`, newest first, without their context.
pub fn list_quarantine(
    conn: &Connection,
    filter: &QuarantineFilter,
) -> Result<Page<QuarantineItem>, IncidentError> {
    let limit = page_limit(filter.limit)?;
    let before = parse_cursor(filter.cursor.as_deref())?;
    check_filter_text(filter.tenant.as_deref(), "the tenant")?;
    check_filter_text(filter.subject.as_deref(), "the subject")?;
    if let Some(id) = &filter.incident_id {
        check_id(id, "inc", "incident").map_err(|_| {
            IncidentError::Invalid(format!("`{}` is not an incident id", shorten(id)))
        })?;
    }
    let sql = format!(
        "SELECT {QUARANTINE_COLUMNS} FROM incident_quarantine
         WHERE seq < ?1
           AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR tenant = ?3)
           AND (?4 IS NULL OR subject = ?4)
           AND (?5 IS NULL OR incident_id = ?5)
         ORDER BY seq DESC LIMIT ?6"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        before,
        filter.status.map(QuarantineStatus::as_str),
        filter.tenant,
        filter.subject,
        filter.incident_id,
        i64::from(limit) + 1,
    ])?;
    let mut items = Vec::new();
    let mut last_seq = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() == limit as usize {
            more = true;
            break;
        }
        let (seq, item) = quarantine_row(row)?;
        last_seq = Some(seq);
        items.push(item);
    }
    Ok(Page {
        items,
        next_cursor: last_seq.filter(|_| more).map(|s| s.to_string()),
    })
}

fn quarantine_item(conn: &Connection, id: &str) -> Result<QuarantineItem, IncidentError> {
    check_id(id, "qtn", "quarantined item")?;
    let sql = format!("SELECT {QUARANTINE_COLUMNS} FROM incident_quarantine WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(quarantine_row(row)?.1),
        None => Err(IncidentError::NotFound(format!(
            "no quarantined item `{}`",
            shorten(id)
        ))),
    }
}

fn held_context(
    conn: &Connection,
    item: &QuarantineItem,
    vault: Option<&Vault>,
) -> Result<Box<RawValue>, IncidentError> {
    if item.status != QuarantineStatus::Held {
        return Err(IncidentError::Conflict(format!(
            "item {} is {} already",
            item.id,
            item.status.as_str()
        )));
    }
    let text: Option<String> = conn
        .query_row(
            "SELECT context FROM incident_quarantine WHERE id = ?1",
            [&item.id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let text = text
        .ok_or_else(|| IncidentError::Corrupt(format!("held item {} has no context", item.id)))?;
    let text = seal::open(
        &text,
        &item.id,
        item.tenant.as_deref().unwrap_or(""),
        item.subject.as_deref().unwrap_or(""),
        vault,
    )?;
    if sha256_hex(text.as_bytes()) != item.context_sha256 {
        return Err(IncidentError::Corrupt(format!(
            "the context of item {} does not match its digest",
            item.id
        )));
    }
    RawValue::from_string(text)
        .map_err(|e| IncidentError::Corrupt(format!("context of item {}: {e}", item.id)))
}

fn decide(
    conn: &Connection,
    item: &QuarantineItem,
    status: QuarantineStatus,
    reason: Option<&str>,
    by: &Reviewer<'_>,
    now: Timestamp,
) -> Result<(QuarantineItem, Vec<NewEntry>), IncidentError> {
    // The context goes once decided: released, it was handed back; rejected, nobody needs it.
    let changed = conn.execute(
        "UPDATE incident_quarantine SET status = ?1, decided_at = ?2, decided_by = ?3,
             reason = ?4, context = NULL
         WHERE id = ?5 AND status = 'held'",
        params![
            status.as_str(),
            now.unix_seconds(),
            by.name,
            reason,
            item.id
        ],
    )?;
    if changed == 0 {
        return Err(IncidentError::Conflict(format!(
            "item {} is not held",
            item.id
        )));
    }
    let mut e = entry(
        now,
        EntryKind::Quarantine,
        by.actor,
        format!("quarantine {} {}", item.id, status.as_str()),
    );
    e.digests
        .insert("context".into(), item.context_sha256.clone());
    if let Some(reason) = reason {
        e.digests
            .insert("reason".into(), sha256_hex(reason.as_bytes()));
    }
    Ok((quarantine_item(conn, &item.id)?, vec![e]))
}

/// Releases a held item and hands back the decision context it was held with (opened with
/// `key` when it was sealed; without the right key, invalid and nothing changes). Conflict when
/// it was released or rejected already.
pub fn release(
    conn: &Connection,
    id: &str,
    reason: Option<&str>,
    vault: Option<&Vault>,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Released, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if let Some(reason) = reason {
        check_note(reason, "the reason")?;
    }
    let item = quarantine_item(conn, id)?;
    let context = held_context(conn, &item, vault)?;
    let (item, entries) = decide(conn, &item, QuarantineStatus::Released, reason, &by, now)?;
    Ok((Released { item, context }, entries))
}

/// Rejects a held item; its context is erased. Conflict when it was decided already.
pub fn reject(
    conn: &Connection,
    id: &str,
    reason: Option<&str>,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(QuarantineItem, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if let Some(reason) = reason {
        check_note(reason, "the reason")?;
    }
    let item = quarantine_item(conn, id)?;
    if item.status != QuarantineStatus::Held {
        return Err(IncidentError::Conflict(format!(
            "item {id} is {} already",
            item.status.as_str()
        )));
    }
    decide(conn, &item, QuarantineStatus::Rejected, reason, &by, now)
}

/// A held item's context (opened with `key` when it was sealed), for a reviewer who gives a
/// reason; the reading is audited.
pub fn view_quarantined(
    conn: &Connection,
    id: &str,
    reason: &str,
    vault: Option<&Vault>,
    by: Reviewer<'_>,
    now: Timestamp,
) -> Result<(Box<RawValue>, Vec<NewEntry>), IncidentError> {
    check_actor(&by)?;
    if reason.trim().is_empty() {
        return Err(IncidentError::Invalid(
            "reading a quarantined item needs a reason".into(),
        ));
    }
    check_note(reason, "the reason")?;
    let item = quarantine_item(conn, id)?;
    let context = held_context(conn, &item, vault)?;
    let mut e = entry(
        now,
        EntryKind::Quarantine,
        by.actor,
        format!("quarantine {id} viewed"),
    );
    e.digests
        .insert("context".into(), item.context_sha256.clone());
    e.digests
        .insert("reason".into(), sha256_hex(reason.as_bytes()));
    Ok((context, vec![e]))
}

/// Up to `limit` automatic changes not yet audited (incidents opened or grouped, items held,
/// template refusals), oldest first, as entries by `role:system` dated `now` (the log is in time
/// order; the incident keeps its own times), and marks them audited. Run it in the
/// transaction that records the entries, so they are taken exactly when they are recorded.
pub fn pending_audit(
    conn: &Connection,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<NewEntry>, IncidentError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, subject, digests FROM incident_audit_queue ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit.min(10_000)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut last = None;
    for (seq, kind, subject, digests) in rows {
        let kind = match kind.as_str() {
            "incident" => EntryKind::Incident,
            "quarantine" => EntryKind::Quarantine,
            "refusal" => EntryKind::Refusal,
            other => {
                return Err(IncidentError::Corrupt(format!(
                    "audit queue kind `{}`",
                    shorten(other)
                )))
            }
        };
        let digests: BTreeMap<String, String> = serde_json::from_str(&digests)
            .map_err(|e| IncidentError::Corrupt(format!("audit queue digests: {e}")))?;
        let mut e = entry(now, kind, "role:system", subject);
        e.digests = digests;
        entries.push(e);
        last = Some(seq);
    }
    if let Some(last) = last {
        conn.execute("DELETE FROM incident_audit_queue WHERE seq <= ?1", [last])?;
    }
    Ok(entries)
}

/// Opens every held context in the store with `vault` (the check at the end of a rewrap) and
/// answers how many there were; the first that does not open is the error.
pub fn check_sealed(conn: &Connection, vault: &Vault) -> Result<u64, IncidentError> {
    let mut stmt = conn.prepare(
        "SELECT id, tenant, subject, context FROM incident_quarantine WHERE context IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    let mut checked = 0u64;
    while let Some(row) = rows.next()? {
        let (id, tenant, subject, context): (String, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        seal::open(&context, &id, &tenant, &subject, Some(vault)).map_err(|e| {
            IncidentError::Corrupt(format!("quarantined item {id} does not open: {e}"))
        })?;
        checked += 1;
    }
    Ok(checked)
}

/// What [`erase_subject_in`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErasedSubject {
    /// Incidents that no longer name the user.
    pub incidents: u64,
    /// Quarantined items that no longer name the user; held ones were rejected and their
    /// context erased.
    pub quarantined: u64,
}

/// For a user's erasure, inside the transaction that erases their behaviour data: incidents and
/// quarantined items of `subject` (in every tenant, or in `tenant`) stop naming them, and items
/// still held are rejected with their context erased (what they held was the user's input).
/// Incidents are kept, as the security record they are; escalation events and audit entries
/// never named the user.
pub fn erase_subject_in(
    conn: &Connection,
    subject: &str,
    tenant: Option<&str>,
    now: Timestamp,
) -> Result<ErasedSubject, IncidentError> {
    crate::store::check_subject(subject).map_err(|e| IncidentError::Invalid(e.to_string()))?;
    let all = tenant.is_none();
    let tenant = tenant.unwrap_or("");
    let quarantined = conn.execute(
        "UPDATE incident_quarantine SET subject = '', context = NULL,
             status = CASE WHEN status = 'held' THEN 'rejected' ELSE status END,
             decided_at = CASE WHEN status = 'held' THEN ?1 ELSE decided_at END,
             decided_by = CASE WHEN status = 'held' THEN 'system' ELSE decided_by END,
             reason = CASE WHEN status = 'held' THEN 'the user was erased' ELSE reason END
         WHERE subject = ?2 AND (?3 OR tenant = ?4)",
        params![now.unix_seconds(), subject, all, tenant],
    )?;
    let incidents = conn.execute(
        "UPDATE incidents SET subject = '', updated_at = ?1
         WHERE subject = ?2 AND (?3 OR tenant = ?4)",
        params![now.unix_seconds(), subject, all, tenant],
    )?;
    Ok(ErasedSubject {
        incidents: incidents as u64,
        quarantined: quarantined as u64,
    })
}

fn count(conn: &Connection, sql: &str) -> Result<u64, IncidentError> {
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn grouped(conn: &Connection, sql: &str) -> Result<BTreeMap<String, u64>, IncidentError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (k, n) = row?;
        out.insert(k, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

/// Figures for metrics at `now`.
pub fn counts(conn: &Connection, now: Timestamp) -> Result<Counts, IncidentError> {
    let mut open_by_level: BTreeMap<String, u64> = Level::ALL
        .iter()
        .map(|l| (l.as_str().to_string(), 0))
        .collect();
    open_by_level.extend(grouped(
        conn,
        "SELECT level, COUNT(*) FROM incidents WHERE status <> 'resolved' GROUP BY level",
    )?);
    let oldest: Option<i64> = conn.query_row(
        "SELECT MIN(first_seen) FROM incidents WHERE status = 'open'",
        [],
        |r| r.get(0),
    )?;
    Ok(Counts {
        open_by_level,
        unacknowledged: count(conn, "SELECT COUNT(*) FROM incidents WHERE status = 'open'")?,
        oldest_unacknowledged_seconds: oldest
            .map(|first| u64::try_from(now.unix_seconds().saturating_sub(first)).unwrap_or(0)),
        quarantine_held: count(
            conn,
            "SELECT COUNT(*) FROM incident_quarantine WHERE status = 'held'",
        )?,
        outbox_pending: count(
            conn,
            "SELECT COUNT(*) FROM incident_outbox WHERE state = 'pending'",
        )?,
        outbox_dead: count(
            conn,
            "SELECT COUNT(*) FROM incident_outbox WHERE state = 'dead'",
        )?,
        outbox_delivered: count(
            conn,
            "SELECT COUNT(*) FROM incident_outbox WHERE state = 'delivered'",
        )?,
        outbox_pending_by_sink: grouped(
            conn,
            "SELECT sink, COUNT(*) FROM incident_outbox WHERE state = 'pending' GROUP BY sink",
        )?,
        outbox_dead_by_sink: grouped(
            conn,
            "SELECT sink, COUNT(*) FROM incident_outbox WHERE state = 'dead' GROUP BY sink",
        )?,
        audit_pending: count(conn, "SELECT COUNT(*) FROM incident_audit_queue")?,
    })
}

/// Runs a reviewer operation of this module in the registry's transaction: the session must
/// hold the reviewer role (checked against the stored identity, inside the transaction), `f`
/// gets the reviewer (the identity's name and audit pseudonym), and the change commits with its
/// audit entries and a signed checkpoint, or not at all.
///
/// ```no_run
/// # fn demo(registry: &mut host_runtime::registry::Registry,
/// #         session: &host_runtime::registry::Session,
/// #         signer: &dyn host_runtime::signer::Signer,
/// #         now: guard_core::time::Timestamp) -> Result<(), host_runtime::incidents::IncidentError> {
/// use host_runtime::incidents;
/// let (incident, recorded) = incidents::reviewed(registry, session, now, signer,
///     "acknowledge incidents", |conn, by| incidents::acknowledge(conn, "inc_…", by, now))?;
/// # Ok(()) }
/// ```
pub fn reviewed<T>(
    registry: &mut Registry,
    session: &Session,
    now: Timestamp,
    log_signer: &dyn Signer,
    action: &'static str,
    f: impl FnOnce(&Connection, Reviewer<'_>) -> Result<(T, Vec<NewEntry>), IncidentError>,
) -> Result<(T, Recorded), IncidentError> {
    let name = session.name().to_string();
    registry.change_with(
        session,
        Role::Reviewer,
        action,
        now,
        log_signer,
        |tx, actor| {
            f(
                tx,
                Reviewer {
                    name: &name,
                    actor: &actor,
                },
            )
        },
    )
}

/// Records up to `limit` automatic changes waiting for the audit log ([`pending_audit`]) in
/// one registry transaction, dated `now` and signed by `log_signer`; returns how many. The
/// service runs it periodically; nothing is signed when nothing waits.
pub fn record_pending_audit(
    registry: &mut Registry,
    now: Timestamp,
    log_signer: &dyn Signer,
    limit: u32,
) -> Result<usize, IncidentError> {
    let (taken, _) = registry.record_unattended(now, log_signer, |tx| {
        let entries = pending_audit(tx, now, limit)?;
        Ok::<_, IncidentError>((entries.len(), entries))
    })?;
    Ok(taken)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use guard_core::{Action, PinnedKey};

    use super::*;
    use crate::incidents::{IncidentStore, Occurrence, OccurrenceKind};
    use crate::registry::RegistryError;
    use crate::signer::LocalSigner;

    #[test]
    fn reviewer_changes_and_the_pump_land_in_the_signed_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sigil.db");
        let log_signer = LocalSigner::generate(2048).unwrap();
        let now = Timestamp::parse("2026-12-03T12:00:00Z").unwrap();
        let mut registry = Registry::open(&db).unwrap();
        let admin_token = registry.bootstrap("admin", now, &log_signer).unwrap();
        let admin = registry.authenticate(&admin_token).unwrap();
        let token = registry
            .add_identity(
                &admin,
                "rita",
                &BTreeSet::from([Role::Reviewer]),
                now,
                &log_signer,
            )
            .unwrap();
        let rita = registry.authenticate(&token).unwrap();

        let store = IncidentStore::open(&db).unwrap();
        let recorded = store
            .record(
                &[Occurrence {
                    kind: OccurrenceKind::Assessment {
                        action: Action::Quarantine,
                    },
                    tenant: None,
                    subject: Some("alice@example.com".into()),
                    rule: "inj.ignore".into(),
                    level: Level::High,
                    at: now,
                    request_id: "req-1".into(),
                    summary: serde_json::json!({"score": 0.8}),
                    quarantine: None,
                    sealed: None,
                }],
                Duration::from_secs(3600),
            )
            .unwrap();
        let id = recorded[0].as_ref().unwrap().incident_id.clone();

        let size = registry.audit_log().size().unwrap();
        assert_eq!(
            record_pending_audit(&mut registry, now, &log_signer, 100).unwrap(),
            1
        );
        assert_eq!(
            record_pending_audit(&mut registry, now, &log_signer, 100).unwrap(),
            0
        );
        assert_eq!(registry.audit_log().size().unwrap(), size + 1);

        let (incident, recorded) = reviewed(
            &mut registry,
            &rita,
            now,
            &log_signer,
            "acknowledge incidents",
            |c, by| acknowledge(c, &id, by, now),
        )
        .unwrap();
        assert_eq!(incident.acknowledged_by.as_deref(), Some("rita"));
        assert_eq!(recorded.entries.len(), 1);
        let entry = registry.audit_log().entry(recorded.entries[0].seq).unwrap();
        assert!(entry.actor.starts_with("psn:"), "{}", entry.actor);
        assert_eq!(entry.kind, EntryKind::Incident);

        // Without the reviewer role, refused; a refused transition records nothing.
        let size = registry.audit_log().size().unwrap();
        let forbidden = reviewed(
            &mut registry,
            &admin,
            now,
            &log_signer,
            "resolve incidents",
            |c, by| resolve(c, &id, None, by, now),
        );
        assert!(matches!(
            forbidden,
            Err(IncidentError::Registry(RegistryError::Forbidden { .. }))
        ));
        let again = reviewed(
            &mut registry,
            &rita,
            now,
            &log_signer,
            "acknowledge incidents",
            |c, by| acknowledge(c, &id, by, now),
        );
        assert!(matches!(again, Err(IncidentError::Conflict(_))));
        assert_eq!(registry.audit_log().size().unwrap(), size);
        let still = store.with_conn(|c| get_incident(c, &id)).unwrap().incident;
        assert_eq!(still.status, IncidentStatus::Acknowledged);

        let key = PinnedKey::from_spki(log_signer.public_key_der(), log_signer.scheme()).unwrap();
        let verifier = registry.audit_log().verifier(key).unwrap();
        let report = registry.audit_log().verify(&verifier, None).unwrap();
        assert!(report.intact(), "{:?}", report.problems);
    }
}
