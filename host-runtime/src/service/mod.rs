//! The HTTP service: `POST /v1/scan`, `GET /healthz`.
//!
//! Handlers translate HTTP to guard calls; the guard decides. Errors are JSON
//! `{"error": {"code", "message"}}` and never carry internals.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::engine::{EngineError, GuardEngine};

/// Largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<GuardEngine>,
    /// One permit per guard instance, so concurrent calls never outgrow the pool.
    permits: Arc<Semaphore>,
    clock: Arc<dyn Fn() -> String + Send + Sync>,
}

impl AppState {
    /// State around an engine, with the system clock.
    pub fn new(engine: Arc<GuardEngine>) -> Self {
        let permits = Arc::new(Semaphore::new(engine.limits().max_instances as usize));
        AppState {
            engine,
            permits,
            clock: Arc::new(crate::cli::now_utc),
        }
    }
}

/// The one error type of the service.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Input(m) => AppError::new(StatusCode::BAD_REQUEST, "invalid_input", m),
            EngineError::TooLarge { .. } => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "input_too_large",
                e.to_string(),
            ),
            other => {
                // The cause stays in the server's log, not in the answer.
                eprintln!("guard call failed: {other}");
                AppError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "guard_unavailable",
                    "the guard could not answer; the request was not assessed",
                )
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}}).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// The router, with a body-size limit.
pub fn app(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/scan", post(scan))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Result<Response, AppError> {
    let engine = state.engine.clone();
    let rules = tokio::task::spawn_blocking(move || engine.rule_count())
        .await
        .map_err(|_| {
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "health check failed",
            )
        })??;
    Ok(json_response(
        StatusCode::OK,
        json!({"status": "ok", "rules": rules}).to_string(),
    ))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Accepts the contract's `{segments, context}`, or `{text, user?, tenant?}` for one untrusted
/// segment. A missing `context.now` is filled from the server's clock.
async fn scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, AppError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.body_text(),
            )
        } else {
            AppError::new(e.status(), "invalid_body", e.body_text())
        }
    })?;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default();
        if !kind.starts_with("application/json") {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json",
            ));
        }
    }
    let text = std::str::from_utf8(&body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
            format!(
                "body is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let mut request: Value = serde_json::from_str(text)
        .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    let now = (state.clock)();
    let request = normalize_request(&mut request, now)?;

    let _permit = state.permits.clone().acquire_owned().await.map_err(|_| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is stopping",
        )
    })?;
    let engine = state.engine.clone();
    let answer = tokio::task::spawn_blocking(move || engine.assess_json(&request))
        .await
        .map_err(|_| {
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "guard call failed",
            )
        })??;
    Ok(json_response(StatusCode::OK, answer))
}

/// Turns either accepted shape into the contract's JSON text.
fn normalize_request(request: &mut Value, now: String) -> Result<String, AppError> {
    let bad = |m: &str| AppError::new(StatusCode::BAD_REQUEST, "invalid_input", m);
    let Value::Object(object) = request else {
        return Err(bad("the body must be a JSON object"));
    };
    if let Some(text) = object.remove("text") {
        if object.contains_key("segments") {
            return Err(bad("send `text` or `segments`, not both"));
        }
        let Value::String(text) = text else {
            return Err(bad("`text` must be a string"));
        };
        let mut context = serde_json::Map::new();
        for key in ["user", "tenant"] {
            match object.remove(key) {
                Some(Value::String(v)) => {
                    context.insert(key.into(), Value::String(v));
                }
                Some(Value::Null) | None => {}
                Some(_) => return Err(bad("`user` and `tenant` must be strings")),
            }
        }
        if let Some(key) = object.keys().next() {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("unknown field `{key}`"),
            ));
        }
        context.insert("now".into(), Value::String(now));
        return Ok(json!({
            "segments": [{"text": text, "trust": "untrusted"}],
            "context": context,
        })
        .to_string());
    }
    match object.get_mut("context") {
        Some(Value::Object(context)) => {
            context.entry("now").or_insert(Value::String(now));
        }
        None => {
            object.insert("context".into(), json!({"now": now}));
        }
        Some(_) => return Err(bad("`context` must be an object")),
    }
    Ok(request.to_string())
}
