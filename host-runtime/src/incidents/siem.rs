//! The SIEM export: incidents and detections as JSON Lines with OCSF-style fields (class
//! "Detection Finding"), one object a line. The mapping is documented in `docs/incidents.md`.

use std::io::Write;

use guard_core::time::Timestamp;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::store::{incident_row, INCIDENT_COLUMNS};
use super::{Incident, IncidentError, IncidentStatus};
use crate::store::{DetectionRecord, ProfileStore};

/// The OCSF schema version the export follows.
pub const OCSF_VERSION: &str = "1.1.0";

/// Rows read per page while exporting.
const PAGE: u32 = 500;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Incident lines.
    pub incidents: u64,
    /// Detection lines.
    pub detections: u64,
}

fn severity(level: &str) -> (u8, &'static str) {
    match level {
        "very_low" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

fn disposition(action: &str) -> (u8, &'static str) {
    match action {
        "allow" => (1, "Allowed"),
        "block" => (2, "Blocked"),
        "quarantine" => (3, "Quarantined"),
        "warn" => (99, "Warned"),
        _ => (0, "Unknown"),
    }
}

fn millis(text: &str) -> i64 {
    Timestamp::parse(text).map_or(0, |t| t.unix_seconds().saturating_mul(1000))
}

fn metadata(uid: &str, log_name: &str) -> Value {
    json!({
        "version": OCSF_VERSION,
        "uid": uid,
        "log_name": log_name,
        "product": {
            "name": "Sigil",
            "vendor_name": "Sigil",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

fn actor(subject: Option<&str>, tenant: Option<&str>) -> Value {
    let mut user = serde_json::Map::new();
    if let Some(s) = subject {
        user.insert("uid".into(), json!(s));
    }
    if let Some(t) = tenant {
        user.insert("org".into(), json!({"uid": t}));
    }
    json!({"user": user})
}

/// An incident as an OCSF Detection Finding.
pub(super) fn incident_event(incident: &Incident) -> Value {
    let (severity_id, severity) = severity(incident.level.as_str());
    let (activity_id, activity, status_id, status) = match incident.status {
        IncidentStatus::Open if incident.count <= 1 => (1, "Create", 1, "New"),
        IncidentStatus::Open => (2, "Update", 1, "New"),
        IncidentStatus::Acknowledged => (2, "Update", 2, "In Progress"),
        IncidentStatus::Resolved => (3, "Close", 4, "Resolved"),
    };
    let mut event = json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 200_400 + activity_id,
        "type_name": format!("Detection Finding: {activity}"),
        "time": millis(&incident.updated_at),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "count": incident.count,
        "message": format!("{} incident on rule {} ({} occurrences)",
            incident.level.as_str(), incident.rule, incident.count),
        "metadata": metadata(&incident.id, "incidents"),
        "finding_info": {
            "uid": incident.id,
            "title": format!("Sigil {}: {}", incident.kind, incident.rule),
            "types": [incident.kind, incident.rule],
            "created_time": millis(&incident.first_seen),
            "first_seen_time": millis(&incident.first_seen),
            "last_seen_time": millis(&incident.last_seen),
            "modified_time": millis(&incident.updated_at),
            "analytic": {"uid": incident.rule, "name": incident.rule, "type_id": 1, "type": "Rule"},
        },
        "actor": actor(incident.subject.as_deref(), incident.tenant.as_deref()),
        "unmapped": {
            "tenant": incident.tenant,
            "assignee": incident.assignee,
            "first_request_id": incident.first_request_id,
            "last_request_id": incident.last_request_id,
            "summary": incident.summary,
        },
    });
    if let (Some(resolved), Some(object)) = (&incident.resolved_at, event.as_object_mut()) {
        object.insert("end_time".into(), json!(millis(resolved)));
    }
    event
}

/// A detection record as an OCSF Detection Finding.
pub(super) fn detection_event(backend: &str, id: i64, d: &DetectionRecord) -> Value {
    let (severity_id, severity) = severity(&d.level);
    let (disposition_id, disposition) = disposition(&d.action);
    let uid = format!("det_{backend}_{id}");
    let mut types: Vec<&str> = d.findings.iter().map(|f| f.category.as_str()).collect();
    types.dedup();
    let time = millis(&d.time);
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200_401,
        "type_name": "Detection Finding: Create",
        "time": time,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "disposition_id": disposition_id,
        "disposition": disposition,
        "action": d.action,
        "risk_score": (d.score * 100.0).round(),
        "message": format!("{} assessment, action {}", d.level, d.action),
        "metadata": metadata(&uid, "detections"),
        "finding_info": {
            "uid": uid,
            "title": format!("Sigil detection: {}", d.level),
            "types": types,
            "created_time": time,
            "analytic": d.findings.first().map(|f| json!({
                "uid": f.id, "name": f.id, "type_id": 1, "type": "Rule"
            })),
        },
        "actor": actor(Some(&d.subject), d.tenant.as_deref()),
        "unmapped": {
            "tenant": d.tenant,
            "score": d.score,
            "findings": d.findings,
            "digests": d.digests,
            // A sealed excerpt stays in the store, under the user's key that erasure
            // destroys: user text sent to a SIEM could not be erased with them.
            "excerpt": d.excerpt.as_deref().filter(|e| !crate::vault::is_sealed(e)),
            "excerpt_sealed": d.excerpt.as_deref().is_some_and(crate::vault::is_sealed),
        },
    })
}

/// Writes incidents changed at or after `since` (all without it), then, with a behaviour store,
/// its detections recorded at or after `since`, as JSON Lines to `out`. Reads page by page, so
/// memory stays bounded however much is exported.
pub fn export_jsonl(
    conn: &Connection,
    detections: Option<&dyn ProfileStore>,
    since: Option<Timestamp>,
    out: &mut dyn Write,
) -> Result<ExportCounts, IncidentError> {
    let since_s = since.map_or(i64::MIN, Timestamp::unix_seconds);
    let mut counts = ExportCounts::default();
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE updated_at >= ?1 AND seq > ?2
         ORDER BY seq LIMIT ?3"
    );
    let mut after = 0i64;
    loop {
        let mut page = Vec::new();
        {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![since_s, after, PAGE])?;
            while let Some(row) = rows.next()? {
                page.push(incident_row(row)?);
            }
        }
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (_, incident) in &page {
            writeln!(out, "{}", incident_event(incident))?;
            counts.incidents += 1;
        }
    }
    if let Some(store) = detections {
        let since = since.unwrap_or(Timestamp::from_unix_seconds(i64::MIN / 2));
        let mut after = 0i64;
        loop {
            let page = store.detections_since(since, after, PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = *last;
            for (id, d) in &page {
                writeln!(out, "{}", detection_event(store.backend(), *id, d))?;
                counts.detections += 1;
            }
        }
    }
    out.flush()?;
    Ok(counts)
}
