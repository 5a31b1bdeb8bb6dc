//! Incidents and quarantine: what the service records of `high` and `critical` calls and
//! template refusals, and the reviewers' endpoints over them.
//!
//! Occurrences are written through a [`Journal`]: each call that opens or updates an incident
//! waits until its occurrence (and the outbox events it starts) is committed, and every call
//! waiting at that moment shares the one commit. Reviewers' changes run in the registry's
//! transaction, so each is recorded in the audit log with the change itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Extension;
use guard_core::time::Timestamp;
use guard_core::{Action, Level};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::body::read_object;
use super::journal::{Journal, JournalError};
use super::outcome::{Call, Kept, Outcome};
use super::routes::Verb;
use super::{json_response, now_of, to_json, AppError, AppState};
use crate::incidents::{
    self, IncidentError, IncidentFilter, IncidentStore, Occurrence, OccurrenceKind,
    QuarantineFilter, Recorded,
};
use crate::registry::Session;
use crate::vault::{Vault, VaultError};

/// Occurrences committed together at most.
const MAX_BATCH: usize = 256;

/// Occurrences waiting at most before callers wait for room.
const QUEUE: usize = 4096;

/// The incident store as the service uses it.
pub struct IncidentDesk {
    store: Arc<IncidentStore>,
    journal: Journal<Occurrence, Result<Recorded, IncidentError>>,
    unsealable: Unsealable,
}

/// What a call does when the input it would quarantine cannot be stored encrypted (the key
/// backend is down and no cached key may be used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsealable {
    /// The call fails (503 `vault_unavailable`): the input is neither stored nor let through.
    #[default]
    Block,
    /// The call is answered; the incident is recorded without the input, which is not kept.
    Proceed,
}

impl std::fmt::Debug for IncidentDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentDesk").finish_non_exhaustive()
    }
}

impl IncidentDesk {
    /// The desk over `store`, grouping repeats within `window`; quarantined contexts are
    /// sealed in the store's vault, and `unsealable` says what a call does when that fails.
    pub fn new(
        store: Arc<IncidentStore>,
        window: Duration,
        unsealable: Unsealable,
    ) -> std::io::Result<Self> {
        let writer = store.clone();
        let journal = Journal::start(
            "sigil-incidents",
            QUEUE,
            MAX_BATCH,
            move |batch: Vec<Occurrence>| {
                let recorded = writer.record(&batch, window)?;
                writer.wake();
                Ok::<_, IncidentError>(recorded)
            },
        )?;
        Ok(IncidentDesk {
            store,
            journal,
            unsealable,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<IncidentStore> {
        &self.store
    }

    /// Takes no more occurrences and waits until those queued are stored.
    pub fn close(&self) {
        self.journal.close();
    }
}

impl From<IncidentError> for AppError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::NotFound(m) => AppError::not_found(m),
            IncidentError::Conflict(m) => AppError::new(StatusCode::CONFLICT, "conflict", m),
            IncidentError::Invalid(m) => AppError::bad_request("invalid_input", m),
            IncidentError::Registry(e) => e.into(),
            IncidentError::Vault(e) => vault_error(e),
            other => {
                tracing::error!(error = %other, "incident store failed");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "incidents_unavailable",
                    "the incident store could not be used; nothing was changed",
                )
            }
        }
    }
}

/// A vault failure as an answer; never with the record's content.
pub(super) fn vault_error(e: VaultError) -> AppError {
    match e {
        VaultError::Unavailable(_) | VaultError::NoKey(_) => {
            tracing::error!(error = %e, "the key backend is unavailable");
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_unavailable",
                "the key backend is unavailable; nothing was changed",
            )
        }
        VaultError::Shredded(_) => AppError::new(
            StatusCode::GONE,
            "erased",
            "the item's key was destroyed with the user it belonged to",
        ),
        VaultError::WrongContext(_) | VaultError::Corrupt(_) => {
            tracing::error!(error = %e, "a sealed record does not decrypt in its place");
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "record_tampered",
                "the stored item does not decrypt in its place: it was changed or moved",
            )
        }
        other => {
            tracing::error!(error = %other, "the vault failed");
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_unavailable",
                "the vault could not be used; nothing was changed",
            )
        }
    }
}

/// Refusals of the values a caller sent, not of the template: they open no incident.
const VALUE_REFUSALS: [&str; 4] = [
    "missing_variable",
    "unknown_variable",
    "invalid_value",
    "invalid_request",
];

/// The occurrence a call makes, if it makes one: `high` and `critical` assessments and every
/// refusal of the template itself (its signature, digest, keys, version).
fn occurrence(outcome: &Outcome<'_>) -> Result<Option<Occurrence>, AppError> {
    let at = Timestamp::parse(&outcome.now).map_err(|e| AppError::internal(&e.to_string()))?;
    Ok(match &outcome.call {
        Call::Assessed {
            assessment,
            template,
            context,
        } => {
            if assessment.level < Level::High {
                return Ok(None);
            }
            // The heaviest finding names the incident; repeats of it group together.
            let rule = assessment
                .findings
                .iter()
                .max_by(|a, b| a.weight.total_cmp(&b.weight))
                .map_or_else(|| "score".to_string(), |f| f.id.clone());
            let findings: Vec<serde_json::Value> = assessment
                .findings
                .iter()
                .map(|f| json!({"id": f.id, "category": f.category, "source": f.source, "weight": f.weight}))
                .collect();
            let held = matches!(assessment.action, Action::Quarantine | Action::Block);
            Some(Occurrence {
                kind: OccurrenceKind::Assessment {
                    action: assessment.action,
                },
                tenant: outcome.tenant.clone(),
                subject: outcome.subject.clone(),
                rule,
                level: assessment.level,
                at,
                request_id: outcome.request_id.clone(),
                summary: json!({
                    "endpoint": outcome.endpoint.as_str(),
                    "score": assessment.score,
                    "findings": findings,
                    "template": template.map(|(id, version)| json!({"id": id, "version": version})),
                }),
                quarantine: held.then(|| context.clone()),
                sealed: None,
            })
        }
        // The caller's own values not fitting the schema are input errors, answered 422 and
        // counted by code; an incident (and a page) is for a template that failed verification.
        Call::Refused { code, .. } if VALUE_REFUSALS.contains(code) => None,
        Call::Refused {
            code,
            template_id,
            version,
        } => Some(Occurrence {
            kind: OccurrenceKind::TemplateRefusal {
                code: code.to_string(),
            },
            tenant: outcome.tenant.clone(),
            subject: outcome.subject.clone(),
            rule: code.to_string(),
            level: Level::Critical,
            at,
            request_id: outcome.request_id.clone(),
            summary: json!({
                "endpoint": outcome.endpoint.as_str(),
                "template": {"id": template_id, "version": version},
                "refusal": code,
            }),
            quarantine: None,
            sealed: None,
        }),
    })
}

/// Records the call's occurrence, if any, and answers once it is stored.
pub(super) async fn record(
    desk: &Arc<IncidentDesk>,
    metrics: &crate::telemetry::Metrics,
    outcome: &Outcome<'_>,
) -> Result<Kept, AppError> {
    let Some(mut occurrence) = occurrence(outcome)? else {
        return Ok(Kept::default());
    };
    if occurrence.quarantine.is_some() && desk.store.vault().is_some() {
        // Sealed here, on the call's own blocking thread: a key-backend call (rare, with a
        // warm cache) waits for this call only, never inside the journal's transaction.
        let sealer = desk.clone();
        let (sealed, result) = tokio::task::spawn_blocking(move || {
            let result = sealer.store.seal(&mut occurrence);
            (occurrence, result)
        })
        .await
        .map_err(|_| AppError::internal("sealing the quarantined input failed"))?;
        occurrence = sealed;
        if let Err(e) = result {
            metrics.vault_write_failed();
            tracing::error!(error = %e, "a quarantined input could not be stored encrypted");
            occurrence.quarantine = None;
            if let Some(summary) = occurrence.summary.as_object_mut() {
                summary.insert("input_kept".into(), json!(false));
            }
            if desk.unsealable == Unsealable::Block {
                // The incident is still recorded (it holds no user text); the call is not
                // answered, so nothing unstored is let through.
                let _ = desk.journal.write(occurrence).await;
                return Err(AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "vault_unavailable",
                    "the input was to be quarantined but cannot be stored encrypted now (the key backend is unavailable); nothing was stored and the call is blocked",
                ));
            }
        }
    }
    match desk.journal.write(occurrence).await {
        Ok(Ok(recorded)) => Ok(Kept {
            incident_id: Some(recorded.incident_id),
            quarantine_id: recorded.quarantine_id,
        }),
        Ok(Err(e)) => Err(e.into()),
        Err(JournalError::Stopped) => Err(AppError::stopping()),
        Err(JournalError::Failed(m)) => {
            tracing::error!(error = %m, "incidents could not be stored");
            Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "incidents_unavailable",
                "the incident could not be stored, so the call was not answered",
            ))
        }
    }
}

/// The handler of an incident or quarantine route, if this module serves it.
pub(super) fn handler(verb: Verb, path: &str) -> Option<MethodRouter<AppState>> {
    Some(match (verb, path) {
        (Verb::Get, "/v1/incidents") => get(list_incidents),
        (Verb::Get, "/v1/incidents/{id}") => get(show_incident),
        (Verb::Post, "/v1/incidents/{id}/acknowledge") => post(acknowledge),
        (Verb::Post, "/v1/incidents/{id}/assign") => post(assign),
        (Verb::Post, "/v1/incidents/{id}/resolve") => post(resolve),
        (Verb::Post, "/v1/incidents/{id}/comments") => post(comment),
        (Verb::Get, "/v1/quarantine") => get(list_quarantine),
        (Verb::Post, "/v1/quarantine/{id}/view") => post(view),
        (Verb::Post, "/v1/quarantine/{id}/release") => post(release),
        (Verb::Post, "/v1/quarantine/{id}/reject") => post(reject),
        _ => return None,
    })
}

fn desk(state: &AppState) -> Result<Arc<IncidentDesk>, AppError> {
    state
        .incidents
        .clone()
        .ok_or_else(|| AppError::not_found("this service keeps no incidents"))
}

async fn blocking(
    f: impl FnOnce() -> Result<serde_json::Value, AppError> + Send + 'static,
) -> Result<Response, AppError> {
    let value = tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| AppError::internal("incident call failed"))??;
    Ok(json_response(StatusCode::OK, value.to_string()))
}

/// Runs a reviewer's change in the registry's transaction, recorded in the audit log, and
/// wakes the delivery worker for any event it queued.
async fn reviewed(
    state: &AppState,
    session: Session,
    action: &'static str,
    f: impl FnOnce(
            &rusqlite::Connection,
            incidents::Reviewer<'_>,
            Timestamp,
            Option<&Vault>,
        ) -> Result<(serde_json::Value, Vec<crate::audit::NewEntry>), IncidentError>
        + Send
        + 'static,
) -> Result<Response, AppError> {
    let desk = desk(state)?;
    let now = now_of(state)?;
    let access = state.access.clone();
    let woken = desk.clone();
    let response = blocking(move || {
        access.with_registry(|registry, signer| {
            let key = desk.store.vault();
            let (value, recorded) =
                incidents::reviewed(registry, &session, now, signer, action, |conn, by| {
                    incidents::init_in(conn)?;
                    f(conn, by, now, key)
                })?;
            let mut value = value;
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "audit".into(),
                    json!(recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>()),
                );
            }
            Ok(value)
        })
    })
    .await;
    woken.store.wake();
    response
}

fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    id.map(|Path(id)| id)
        .map_err(|e| AppError::bad_request("invalid_path", e.body_text()))
}

async fn list_incidents(
    State(state): State<AppState>,
    query: Result<Query<IncidentFilter>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(filter) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let desk = desk(&state)?;
    blocking(move || {
        let page = desk
            .store
            .with_conn(|conn| incidents::list_incidents(conn, &filter))?;
        to_json(&page)
    })
    .await
}

async fn show_incident(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let id = path_id(id)?;
    let desk = desk(&state)?;
    blocking(move || {
        to_json(
            &desk
                .store
                .with_conn(|conn| incidents::get_incident(conn, &id))?,
        )
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteRequest {
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    assignee: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentRequest {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonRequest {
    reason: String,
}

/// A reviewer's action on the item `id` with a body of `B`'s shape.
type ReviewerAction<B> =
    fn(
        &rusqlite::Connection,
        incidents::Reviewer<'_>,
        Timestamp,
        Option<&Vault>,
        &str,
        B,
    ) -> Result<(serde_json::Value, Vec<crate::audit::NewEntry>), IncidentError>;

/// Reads the path's id and the body, then runs `act` as a reviewer's change.
async fn act<B: DeserializeOwned + Send + 'static>(
    state: AppState,
    session: Session,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
    action: &'static str,
    act: ReviewerAction<B>,
) -> Result<Response, AppError> {
    let id = path_id(id)?;
    let request: B = read_object(&state, &headers, body).await?;
    reviewed(&state, session, action, move |conn, by, now, key| {
        act(conn, by, now, key, &id, request)
    })
    .await
}

fn value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The parameters every reviewer action takes.
type Params = (
    State<AppState>,
    Extension<Session>,
    Result<Path<String>, PathRejection>,
    HeaderMap,
);

async fn acknowledge(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "acknowledge incidents",
        |conn, by, now, _, id, _: NoteRequest| {
            let (incident, entries) = incidents::acknowledge(conn, id, by, now)?;
            Ok((value(&incident), entries))
        },
    )
    .await
}

async fn assign(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "assign incidents",
        |conn, by, now, _, id, r: AssignRequest| {
            let (incident, entries) = incidents::assign(conn, id, r.assignee.as_deref(), by, now)?;
            Ok((value(&incident), entries))
        },
    )
    .await
}

async fn resolve(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "resolve incidents",
        |conn, by, now, _, id, r: NoteRequest| {
            let (incident, entries) = incidents::resolve(conn, id, r.note.as_deref(), by, now)?;
            Ok((value(&incident), entries))
        },
    )
    .await
}

async fn comment(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "comment on incidents",
        |conn, by, now, _, id, r: CommentRequest| {
            let (comment, entries) = incidents::comment(conn, id, &r.text, by, now)?;
            Ok((value(&comment), entries))
        },
    )
    .await
}

async fn list_quarantine(
    State(state): State<AppState>,
    query: Result<Query<QuarantineFilter>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(filter) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let desk = desk(&state)?;
    blocking(move || {
        let page = desk
            .store
            .with_conn(|conn| incidents::list_quarantine(conn, &filter))?;
        to_json(&page)
    })
    .await
}

fn raw_json(raw: &serde_json::value::RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
}

async fn view(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "read quarantined content",
        |conn, by, now, key, id, r: ReasonRequest| {
            let (context, entries) =
                incidents::view_quarantined(conn, id, &r.reason, key, by, now)?;
            Ok((json!({"id": id, "context": raw_json(&context)}), entries))
        },
    )
    .await
}

async fn release(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "release quarantined items",
        |conn, by, now, key, id, r: ReasonRequest| {
            let (released, entries) = incidents::release(conn, id, Some(&r.reason), key, by, now)?;
            Ok((
                json!({"item": value(&released.item), "context": raw_json(&released.context)}),
                entries,
            ))
        },
    )
    .await
}

async fn reject(
    (State(state), Extension(session), id, headers): Params,
    body: Body,
) -> Result<Response, AppError> {
    act(
        state,
        session,
        id,
        headers,
        body,
        "reject quarantined items",
        |conn, by, now, _, id, r: ReasonRequest| {
            let (item, entries) = incidents::reject(conn, id, Some(&r.reason), by, now)?;
            Ok((value(&item), entries))
        },
    )
    .await
}
