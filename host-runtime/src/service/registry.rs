//! The registry's HTTP face: templates, keys and the audit log, and users' data.
//!
//! Each handler runs the registry operation the CLI runs, as the identity whose key called; the
//! registry checks that identity's roles again inside its own transaction. Publishing and
//! approving take signatures made by the caller's own key, never the service's: a publisher asks
//! for a draft (`POST …/drafts`), signs the pre-authentication encoding it returns with their key
//! (in their KMS or HSM), and sends the signature with the same template
//! (`POST …/versions`); a reviewer signs the pending version's envelope encoding.

use std::sync::Mutex;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Extension;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use guard_core::provenance::hex;
use guard_core::time::Timestamp;
use guard_core::{PinnedKey, Scheme};
use serde::Deserialize;
use serde_json::json;

use super::body::read_object;
use super::routes::Verb;
use super::{json_response, now_of, to_json, AppError, AppState};
use crate::registry::{PublishRequest, Registry, RegistryError, Session};
use crate::signer::{SignError, Signer};
use crate::store::{erase_user, export_user, EraseTarget, ProfileKey};
use crate::template::TemplateSignError;
use crate::validate::{ValidationOptions, DEFAULT_MAX_TEMPLATE_BYTES};

/// The handler of a registry route, if this module serves it.
pub(super) fn handler(verb: Verb, path: &str) -> Option<MethodRouter<AppState>> {
    Some(match (verb, path) {
        (Verb::Get, "/v1/templates") => get(list_templates),
        (Verb::Get, "/v1/templates/{id}") => get(template_history),
        (Verb::Get, "/v1/templates/{id}/versions/{version}") => get(show_version),
        (Verb::Get, "/v1/templates/{id}/versions/{version}/bundle") => get(bundle),
        (Verb::Post, "/v1/templates/{id}/drafts") => post(draft),
        (Verb::Post, "/v1/templates/{id}/versions") => post(publish),
        (Verb::Post, "/v1/templates/{id}/versions/{version}/approvals") => post(approve),
        (Verb::Post, "/v1/templates/{id}/verify") => post(verify),
        (Verb::Get, "/v1/keys") => get(list_keys),
        (Verb::Post, "/v1/keys") => post(add_key),
        (Verb::Post, "/v1/keys/{fingerprint}/rotate") => post(rotate_key),
        (Verb::Post, "/v1/keys/{fingerprint}/revoke") => post(revoke_key),
        (Verb::Get, "/v1/audit/checkpoint") => get(checkpoint),
        (Verb::Get, "/v1/audit/entries/{seq}") => get(audit_entry),
        (Verb::Get, "/v1/audit/proofs/consistency") => get(consistency),
        (Verb::Post, "/v1/audit/verify") => post(audit_verify),
        (Verb::Get, "/v1/users/{id}") => get(user_profile),
        (Verb::Get, "/v1/users/{id}/export") => get(user_export),
        (Verb::Delete, "/v1/users/{id}") => delete(user_erase),
        _ => return None,
    })
}

/// Runs `f` with the registry on a blocking thread and answers its value as JSON.
async fn with_registry(
    state: &AppState,
    f: impl FnOnce(&mut Registry, &dyn Signer, &AppState) -> Result<serde_json::Value, AppError>
        + Send
        + 'static,
) -> Result<Response, AppError> {
    let worker = state.clone();
    let value = tokio::task::spawn_blocking(move || {
        let inner = worker.clone();
        worker
            .access
            .with_registry(|registry, signer| f(registry, signer, &inner))
    })
    .await
    .map_err(|_| AppError::internal("registry call failed"))??;
    Ok(json_response(StatusCode::OK, value.to_string()))
}

fn path_error(e: PathRejection) -> AppError {
    AppError::bad_request("invalid_path", e.body_text())
}

fn query_error(e: QueryRejection) -> AppError {
    AppError::bad_request("invalid_query", e.body_text())
}

fn parse_version(text: &str) -> Result<u64, AppError> {
    text.parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| AppError::bad_request("invalid_path", "a version is an integer from 1"))
}

fn parse_time(text: &str, what: &str) -> Result<Timestamp, AppError> {
    Timestamp::parse(text)
        .map_err(|e| AppError::bad_request("invalid_input", format!("`{what}`: {e}")))
}

fn parse_scheme(text: &str) -> Result<Scheme, AppError> {
    match text {
        "rsassa-pkcs1v15-sha256" => Ok(Scheme::RsassaPkcs1v15Sha256),
        "rsassa-pss-sha256" => Ok(Scheme::RsassaPssSha256),
        _ => Err(AppError::bad_request(
            "invalid_input",
            "`scheme` is rsassa-pkcs1v15-sha256 or rsassa-pss-sha256",
        )),
    }
}

fn decode_b64(text: &str, what: &str) -> Result<Vec<u8>, AppError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| AppError::bad_request("invalid_input", format!("`{what}` is not base64")))
}

fn version_json(stored: &crate::registry::StoredVersion) -> Result<serde_json::Value, AppError> {
    let schema: serde_json::Value = serde_json::from_str(&stored.variables_schema)
        .map_err(|_| AppError::internal("a stored schema is not JSON"))?;
    Ok(json!({
        "info": to_json(&stored.info)?,
        "template": String::from_utf8_lossy(&stored.template),
        "variables_schema": schema,
        "envelope": to_json(&stored.envelope)?,
    }))
}

async fn list_templates(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, AppError> {
    with_registry(&state, move |registry, _, _| {
        Ok(json!({"templates": to_json(&registry.list(&session)?)?}))
    })
    .await
}

async fn template_history(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    with_registry(&state, move |registry, _, _| {
        let history = registry.history(&session, &id)?;
        let summary = registry
            .list(&session)?
            .into_iter()
            .find(|t| t.template_id == id);
        Ok(json!({"summary": to_json(&summary)?, "versions": to_json(&history)?}))
    })
    .await
}

async fn show_version(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let Path((id, version)) = params.map_err(path_error)?;
    let version = parse_version(&version)?;
    with_registry(&state, move |registry, _, _| {
        version_json(&registry.show(&session, &id, Some(version))?)
    })
    .await
}

async fn bundle(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let Path((id, version)) = params.map_err(path_error)?;
    let version = parse_version(&version)?;
    with_registry(&state, move |registry, _, _| {
        to_json(&registry.bundle(&session, &id, Some(version))?)
    })
    .await
}

/// A signature made elsewhere by the caller's own key. Signing with it checks that the
/// signature covers exactly what the registry asks to sign; without one, it keeps what the
/// registry asked for and refuses, so a draft can show it.
#[derive(Debug)]
struct PresentedSignature {
    spki: Vec<u8>,
    scheme: Scheme,
    signature: Option<Vec<u8>>,
    asked: Mutex<Option<Vec<u8>>>,
}

/// The refusal a draft ends with once the registry has asked for its signature.
const DRAFT_ONLY: &str = "draft: nothing is signed";

impl Signer for PresentedSignature {
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn scheme(&self) -> Scheme {
        self.scheme
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        if let Ok(mut asked) = self.asked.lock() {
            *asked = Some(message.to_vec());
        }
        let Some(signature) = &self.signature else {
            return Err(SignError::Config(DRAFT_ONLY.into()));
        };
        let key = PinnedKey::from_spki(&self.spki, self.scheme)
            .map_err(|e| SignError::Key(e.to_string()))?;
        if !key.verifies(message, signature) {
            return Err(SignError::Denied(
                "the signature does not cover what the registry signs: ask for a new draft".into(),
            ));
        }
        Ok(signature.clone())
    }
}

/// The caller's key named by fingerprint, as the registry keeps it.
fn callers_key(
    registry: &Registry,
    session: &Session,
    keyid: &str,
) -> Result<(Vec<u8>, Scheme), AppError> {
    let record = registry
        .keyring(session)?
        .into_iter()
        .find(|k| k.fingerprint == keyid.trim())
        .ok_or_else(|| {
            AppError::bad_request("invalid_input", "`keyid` is not a key of the keyring")
        })?;
    Ok((decode_b64(&record.spki, "spki")?, record.scheme))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftRequest {
    template: String,
    #[serde(default)]
    variables_schema: Option<serde_json::Value>,
    keyid: String,
    #[serde(default)]
    valid_days: Option<u32>,
    #[serde(default)]
    allow_personal_data: bool,
    /// With a signature: the draft's `signed_at`.
    #[serde(default)]
    signed_at: Option<String>,
    /// The publisher's signature (base64) over the draft's `pae`.
    #[serde(default)]
    signature: Option<String>,
}

/// How far a signed draft's time may be from the service's clock.
const DRAFT_PAST_SECONDS: i64 = 15 * 60;
const DRAFT_FUTURE_SECONDS: i64 = 60;

fn publish_with(
    registry: &mut Registry,
    log_signer: &dyn Signer,
    state: &AppState,
    session: &Session,
    id: &str,
    request: &DraftRequest,
    signature: Option<Vec<u8>>,
) -> Result<serde_json::Value, AppError> {
    let clock = now_of(state)?;
    let now = match (&request.signed_at, &signature) {
        (Some(at), Some(_)) => {
            let at = parse_time(at, "signed_at")?;
            let earliest = clock.saturating_add_seconds(-DRAFT_PAST_SECONDS);
            let latest = clock.saturating_add_seconds(DRAFT_FUTURE_SECONDS);
            if at < earliest || at > latest {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "stale_draft",
                    "the draft is too old (or dated ahead); ask for a new one",
                ));
            }
            at
        }
        (None, Some(_)) => {
            return Err(AppError::bad_request(
                "invalid_input",
                "a signature comes with its draft's `signed_at`",
            ))
        }
        _ => clock,
    };
    let (spki, scheme) = callers_key(registry, session, &request.keyid)?;
    let signer = PresentedSignature {
        spki,
        scheme,
        signature,
        asked: Mutex::new(None),
    };
    let schema = request
        .variables_schema
        .clone()
        .unwrap_or_else(|| json!({}))
        .to_string();
    let publish = PublishRequest {
        template_id: id,
        template: request.template.as_bytes(),
        variables_schema: schema.as_bytes(),
        valid_days: request.valid_days.unwrap_or(365),
        validation: ValidationOptions {
            max_template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            allow_personal_data: request.allow_personal_data,
            now,
        },
    };
    let engine = state.engine.clone();
    match registry.publish(session, &publish, &signer, log_signer, &engine) {
        Ok(publication) => {
            state.templates.clear();
            Ok(json!({
                "template_id": publication.template_id,
                "version": publication.version,
                "state": publication.state,
                "envelope": to_json(&publication.envelope)?,
                "waiting_for": publication.waiting_for,
                "report": publication.report.as_ref().map(to_json).transpose()?,
                "audit": publication.recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            }))
        }
        Err(RegistryError::Template(TemplateSignError::Sign(SignError::Config(m))))
            if m == DRAFT_ONLY =>
        {
            let asked = signer
                .asked
                .lock()
                .ok()
                .and_then(|a| a.clone())
                .ok_or_else(|| AppError::internal("the draft was not made"))?;
            Ok(json!({
                "template_id": id,
                "signed_at": now.to_string(),
                "keyid": request.keyid.trim(),
                "pae": STANDARD.encode(&asked),
                "pae_sha256": hex(&crate::signer::sha256(&asked)),
            }))
        }
        Err(e) => Err(presented_error(e)),
    }
}

/// A presented signature that does not verify is the caller's mistake, not the signer's.
fn presented_error(e: RegistryError) -> AppError {
    match e {
        RegistryError::Sign(SignError::Denied(m))
        | RegistryError::Template(TemplateSignError::Sign(SignError::Denied(m))) => {
            AppError::bad_request("bad_signature", m)
        }
        other => other.into(),
    }
}

async fn draft(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let request: DraftRequest = read_object(&state, &headers, body).await?;
    if request.signature.is_some() || request.signed_at.is_some() {
        return Err(AppError::bad_request(
            "invalid_input",
            "a draft has no signature yet: send it to `…/versions`",
        ));
    }
    with_registry(&state, move |registry, log_signer, state| {
        publish_with(registry, log_signer, state, &session, &id, &request, None)
    })
    .await
}

async fn publish(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let request: DraftRequest = read_object(&state, &headers, body).await?;
    let signature = decode_b64(
        request.signature.as_deref().ok_or_else(|| {
            AppError::bad_request(
                "invalid_input",
                "`signature` is the publisher's signature over the draft's `pae`",
            )
        })?,
        "signature",
    )?;
    with_registry(&state, move |registry, log_signer, state| {
        publish_with(
            registry,
            log_signer,
            state,
            &session,
            &id,
            &request,
            Some(signature),
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    keyid: String,
    /// The reviewer's signature (base64) over the pending envelope's pre-authentication
    /// encoding.
    signature: String,
}

async fn approve(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    params: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path((id, version)) = params.map_err(path_error)?;
    let version = parse_version(&version)?;
    let request: ApproveRequest = read_object(&state, &headers, body).await?;
    let signature = decode_b64(&request.signature, "signature")?;
    with_registry(&state, move |registry, log_signer, state| {
        let (spki, scheme) = callers_key(registry, &session, &request.keyid)?;
        let signer = PresentedSignature {
            spki,
            scheme,
            signature: Some(signature),
            asked: Mutex::new(None),
        };
        let engine = state.engine.clone();
        let publication = registry
            .approve(
                &session,
                &id,
                version,
                &signer,
                log_signer,
                &engine,
                now_of(state)?,
            )
            .map_err(presented_error)?;
        state.templates.clear();
        Ok(json!({
            "template_id": publication.template_id,
            "version": publication.version,
            "state": publication.state,
            "envelope": to_json(&publication.envelope)?,
            "waiting_for": publication.waiting_for,
            "audit": publication.recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    template: String,
    envelope: serde_json::Value,
    #[serde(default)]
    version: Option<u64>,
}

/// Verifies a template and envelope the caller holds against the registry's keyring and the
/// template's policy, in the guard.
async fn verify(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let request: VerifyRequest = read_object(&state, &headers, body).await?;
    with_registry(&state, move |registry, _, state| {
        let now = now_of(state)?;
        let keys = registry.keyring(&session)?;
        let policy = registry.template_policy(&session, &id)?;
        let verification = json!({
            "envelope": request.envelope,
            "template": request.template,
            "keyring": {"keys": to_json(&keys)?},
            "template_policy": to_json(&policy)?,
            "template_id": id,
            "version": request.version,
            "now": now.to_string(),
        });
        match state.engine.verify_json(&verification.to_string())? {
            Ok(report) => Ok(json!({
                "verified": true,
                "report": serde_json::from_str::<serde_json::Value>(&report).unwrap_or_default(),
            })),
            Err(refusal) => Ok(json!({
                "verified": false,
                "refusal": refusal.code,
                "message": refusal.message,
            })),
        }
    })
    .await
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, AppError> {
    with_registry(&state, move |registry, _, _| {
        Ok(json!({"keys": to_json(&registry.keys(&session)?)?}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKeyRequest {
    owner: String,
    /// The SubjectPublicKeyInfo DER, base64.
    spki: String,
    scheme: String,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
}

async fn add_key(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let request: AddKeyRequest = read_object(&state, &headers, body).await?;
    let spki = decode_b64(&request.spki, "spki")?;
    let scheme = parse_scheme(&request.scheme)?;
    with_registry(&state, move |registry, log_signer, state| {
        let now = now_of(state)?;
        let from = request
            .valid_from
            .as_deref()
            .map(|t| parse_time(t, "valid_from"))
            .transpose()?
            .unwrap_or(now);
        let until = request
            .valid_until
            .as_deref()
            .map(|t| parse_time(t, "valid_until"))
            .transpose()?;
        let fingerprint = registry.add_key(
            &session,
            &request.owner,
            &spki,
            scheme,
            from,
            until,
            now,
            log_signer,
        )?;
        state.templates.clear();
        Ok(json!({"fingerprint": fingerprint}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    spki: String,
    scheme: String,
    #[serde(default)]
    retire_old_at: Option<String>,
}

async fn rotate_key(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    fingerprint: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path(fingerprint) = fingerprint.map_err(path_error)?;
    let request: RotateRequest = read_object(&state, &headers, body).await?;
    let spki = decode_b64(&request.spki, "spki")?;
    let scheme = parse_scheme(&request.scheme)?;
    with_registry(&state, move |registry, log_signer, state| {
        let retire = request
            .retire_old_at
            .as_deref()
            .map(|t| parse_time(t, "retire_old_at"))
            .transpose()?;
        let new = registry.rotate_key(
            &session,
            &fingerprint,
            &spki,
            scheme,
            retire,
            now_of(state)?,
            log_signer,
        )?;
        state.templates.clear();
        Ok(json!({"fingerprint": new, "replaces": fingerprint}))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    at: Option<String>,
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    fingerprint: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Path(fingerprint) = fingerprint.map_err(path_error)?;
    let request: RevokeRequest = read_object(&state, &headers, body).await?;
    with_registry(&state, move |registry, log_signer, state| {
        let now = now_of(state)?;
        let at = request
            .at
            .as_deref()
            .map(|t| parse_time(t, "at"))
            .transpose()?
            .unwrap_or(now);
        let recorded = registry.revoke_key(&session, &fingerprint, at, now, log_signer)?;
        state.templates.clear();
        Ok(json!({
            "fingerprint": fingerprint,
            "revoked_at": at.to_string(),
            "audit": recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        }))
    })
    .await
}

fn checkpoint_json(signed: &crate::audit::SignedCheckpoint) -> serde_json::Value {
    json!({
        "origin": signed.checkpoint.origin,
        "size": signed.checkpoint.size,
        "root": hex(&signed.checkpoint.root),
        "note": signed.note,
    })
}

async fn checkpoint(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
) -> Result<Response, AppError> {
    with_registry(&state, move |registry, _, _| {
        let latest = registry
            .audit_log()
            .latest_checkpoint()
            .map_err(|e| AppError::internal(&e.to_string()))?
            .ok_or_else(|| AppError::not_found("the log has no checkpoint yet"))?;
        Ok(checkpoint_json(&latest))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeQuery {
    #[serde(default)]
    size: Option<u64>,
}

async fn audit_entry(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
    seq: Result<Path<u64>, PathRejection>,
    query: Result<Query<SizeQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(seq) = seq.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    with_registry(&state, move |registry, _, _| {
        let log = registry.audit_log();
        let internal = |e: crate::audit::AuditError| AppError::internal(&e.to_string());
        let latest = log
            .latest_checkpoint()
            .map_err(internal)?
            .ok_or_else(|| AppError::not_found("the log has no checkpoint yet"))?;
        let size = query.size.unwrap_or(latest.checkpoint.size);
        if size > latest.checkpoint.size {
            // A tree larger than any signed one is a bad query, not a missing entry.
            return Err(AppError::bad_request(
                "invalid_query",
                format!(
                    "size {size} is beyond the signed size {}",
                    latest.checkpoint.size
                ),
            ));
        }
        if seq >= size {
            return Err(AppError::not_found(format!(
                "no entry {seq} in a log of {size} (signed size {})",
                latest.checkpoint.size
            )));
        }
        let entry = log.entry(seq).map_err(internal)?;
        let proof = log.inclusion_proof(seq, size).map_err(internal)?;
        let signed = log.checkpoint_at(size).map_err(internal)?;
        Ok(json!({
            "entry": to_json(&entry)?,
            "tree_size": size,
            "inclusion_proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "checkpoint": signed.as_ref().map(checkpoint_json),
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    #[serde(default)]
    to: Option<u64>,
}

async fn consistency(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(query_error)?;
    with_registry(&state, move |registry, _, _| {
        let log = registry.audit_log();
        let internal = |e: crate::audit::AuditError| AppError::internal(&e.to_string());
        let latest = log
            .latest_checkpoint()
            .map_err(internal)?
            .ok_or_else(|| AppError::not_found("the log has no checkpoint yet"))?;
        let to = query.to.unwrap_or(latest.checkpoint.size);
        if query.from == 0 || query.from > to || to > latest.checkpoint.size {
            return Err(AppError::bad_request(
                "invalid_query",
                format!(
                    "sizes run 1 <= from <= to <= {} (the signed size)",
                    latest.checkpoint.size
                ),
            ));
        }
        let proof = log.consistency_proof(query.from, to).map_err(internal)?;
        Ok(json!({
            "from": query.from,
            "to": to,
            "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "from_root": hex(&log.root(query.from).map_err(internal)?),
            "to_root": hex(&log.root(to).map_err(internal)?),
        }))
    })
    .await
}

async fn audit_verify(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
) -> Result<Response, AppError> {
    with_registry(&state, move |registry, log_signer, _| {
        let internal = |e: crate::audit::AuditError| AppError::internal(&e.to_string());
        let key = PinnedKey::from_spki(log_signer.public_key_der(), log_signer.scheme())
            .map_err(|e| AppError::internal(&e.to_string()))?;
        let log = registry.audit_log();
        let verifier = log.verifier(key).map_err(internal)?;
        let report = log.verify(&verifier, None).map_err(internal)?;
        let registry_problems = registry.check()?;
        Ok(json!({
            "intact": report.intact() && registry_problems.is_empty(),
            "entries": report.entries,
            "checkpoints": report.checkpoints,
            "latest_checkpoint": report.latest_checkpoint,
            "root": hex(&report.root),
            "unsigned_tail": report.unsigned_tail,
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "registry_problems": registry_problems,
        }))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    #[serde(default)]
    tenant: Option<String>,
}

fn behaviour_of(state: &AppState) -> Result<std::sync::Arc<crate::store::Behaviour>, AppError> {
    state.behaviour.clone().ok_or_else(|| {
        AppError::not_found("this service keeps no behaviour profiles (no store is configured)")
    })
}

async fn user_profile(
    State(state): State<AppState>,
    Extension(_session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let behaviour = behaviour_of(&state)?;
    let value = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, AppError> {
        let key = ProfileKey::new(query.tenant.as_deref(), &id)?;
        let stored = behaviour
            .store
            .load(&key)?
            .ok_or_else(|| AppError::not_found("no profile is kept for this user"))?;
        let profile: serde_json::Value = serde_json::from_str(&stored.profile)
            .map_err(|_| AppError::internal("a stored profile is not JSON"))?;
        Ok(json!({
            "user": id,
            "tenant": query.tenant,
            "profile": profile,
            "revision": stored.revision,
            "seen_at": stored.seen_at.to_string(),
        }))
    })
    .await
    .map_err(|_| AppError::internal("profile lookup failed"))??;
    Ok(json_response(StatusCode::OK, value.to_string()))
}

async fn user_export(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let behaviour = behaviour_of(&state)?;
    with_registry(&state, move |registry, log_signer, state| {
        let (export, recorded) = export_user(
            registry,
            &session,
            behaviour.store.as_ref(),
            behaviour.vault.as_deref(),
            &id,
            query.tenant.as_deref(),
            now_of(state)?,
            log_signer,
        )?;
        let mut value = to_json(&export)?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "audit".into(),
                json!(recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>()),
            );
        }
        Ok(value)
    })
    .await
}

async fn user_erase(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let behaviour = behaviour_of(&state)?;
    with_registry(&state, move |registry, log_signer, state| {
        let target = if state.behaviour_in_registry {
            EraseTarget::RegistryDatabase
        } else {
            EraseTarget::Store(behaviour.store.as_ref())
        };
        let vault = state
            .incidents
            .as_ref()
            .and_then(|desk| desk.store().vault());
        let (erased, recorded) = erase_user(
            registry,
            &session,
            target,
            vault,
            &id,
            query.tenant.as_deref(),
            now_of(state)?,
            log_signer,
        )?;
        Ok(json!({
            "user": erased.pseudonym,
            "profiles": erased.profiles,
            "detections": erased.detections,
            "audit": recorded.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        }))
    })
    .await
}
