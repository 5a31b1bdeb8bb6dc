//! The HTTP service: `POST /v1/scan`, `GET /healthz`.
//!
//! Handlers translate HTTP to guard calls; the guard decides. Errors are JSON
//! `{"error": {"code", "message"}}` and never carry internals. With a behaviour store
//! ([`AppState::with_behaviour`]) a request naming a user is assessed with the user's stored
//! profile, which is then updated ([`crate::store::assess_with_store`]).

use std::sync::Arc;

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use guard_core::{AssessmentInput, Context, Profile, Segment};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::engine::{EngineError, GuardEngine};
use crate::store::{assess_with_store, AssessError, Behaviour, StoreError};

/// Largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// How long a client may take to send its request body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<GuardEngine>,
    /// One permit per guard instance, so guard calls never outgrow the pool.
    guard_permits: Arc<Semaphore>,
    /// Bytes of request bodies that may be buffered at once, in KiB. A request takes its declared
    /// length (or the whole limit when it declares none) before reading, so memory stays bounded
    /// and clients that stall small bodies cannot hold the guard's instances.
    body_budget: Arc<Semaphore>,
    body_budget_kib: u32,
    clock: Arc<dyn Fn() -> String + Send + Sync>,
    max_body: usize,
    /// Where users' profiles are kept, when the service keeps them.
    behaviour: Option<Arc<Behaviour>>,
}

impl AppState {
    /// State around an engine, with the system clock and a body limit.
    pub fn new(engine: Arc<GuardEngine>, max_body: usize) -> Self {
        let instances = engine.limits().max_instances as usize;
        let max_body_kib = max_body.div_ceil(1024).max(1);
        // Room for every instance's worth of full-size bodies, and then some for small requests.
        let budget = u32::try_from(max_body_kib.saturating_mul(instances * 2))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        AppState {
            engine,
            guard_permits: Arc::new(Semaphore::new(instances)),
            body_budget: Arc::new(Semaphore::new(budget as usize)),
            body_budget_kib: budget,
            clock: Arc::new(crate::cli::now_utc),
            max_body,
            behaviour: None,
        }
    }
}

impl AppState {
    /// The same state with a fixed time for every request (for replaying traffic and for tests).
    pub fn with_fixed_now(mut self, now: String) -> Self {
        self.clock = Arc::new(move || now.clone());
        self
    }

    /// The same state keeping users' profiles and detections in a store: a request that names a
    /// user and carries no profile is assessed with the stored one, which is then updated.
    pub fn with_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = Some(Arc::new(behaviour));
        self
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

impl From<AssessError> for AppError {
    fn from(e: AssessError) -> Self {
        match e {
            AssessError::Engine(e) => e.into(),
            AssessError::Store(StoreError::InvalidKey(m)) => {
                AppError::new(StatusCode::BAD_REQUEST, "invalid_input", m)
            }
            AssessError::Store(e) => {
                eprintln!("behaviour store failed: {e}");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the behaviour store could not be used; the request was not assessed",
                )
            }
            other => {
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

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/scan", post(scan))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
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

/// The short form: one untrusted text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRequest {
    text: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// The contract's form, with `context` and `context.now` optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractRequest {
    segments: Vec<Segment>,
    #[serde(default)]
    context: Option<ContextRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextRequest {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

/// Which form a body is in; duplicate keys are refused here already.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

fn json_error(e: &serde_json::Error) -> AppError {
    let code = if e.is_data() {
        "invalid_input"
    } else {
        "invalid_json"
    };
    AppError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

fn too_large(limit: usize) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is over the {limit}-byte limit"),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // Clients that send no type are taken at their word that this is JSON.
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
        || (media.len() > 5
            && media
                .get(media.len() - 5..)
                .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Accepts the contract's `{segments, context}`, or `{text, user?, tenant?}` for one untrusted
/// segment. A missing `context.now` is filled from the server's clock.
async fn scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    if !is_json(&headers) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ));
    }
    let stopping = |_| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is stopping",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > state.max_body) {
        return Err(too_large(state.max_body));
    }
    let kib = declared
        .unwrap_or(state.max_body)
        .div_ceil(1024)
        .max(1)
        .min(state.body_budget_kib as usize);
    let _budget = state
        .body_budget
        .clone()
        .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
        .await
        .map_err(stopping)?;
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, state.max_body),
    )
    .await
    {
        Err(_) => {
            return Err(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ))
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                self::too_large(state.max_body)
            } else {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
            });
        }
        Ok(Ok(body)) => body,
    };
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
    let now = (state.clock)();
    let input = contract_request(text, now.clone())?;
    let _guard = state
        .guard_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(stopping)?;
    let engine = state.engine.clone();
    let behaviour = state.behaviour.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<String, AppError> {
        match behaviour {
            Some(behaviour) => {
                let now = guard_core::time::Timestamp::parse(&now).map_err(|e| {
                    AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?;
                Ok(assess_with_store(&engine, &behaviour, &input, now)?)
            }
            None => Ok(engine.assess_json(&encode(&input)?)?),
        }
    })
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

fn encode(input: &AssessmentInput) -> Result<String, AppError> {
    serde_json::to_string(input).map_err(|_| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "request could not be encoded",
        )
    })
}

/// Either accepted form as the contract's input. Errors point into the body as sent.
fn contract_request(body: &str, now: String) -> Result<AssessmentInput, AppError> {
    if !body.trim_start().starts_with('{') {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "the body must be a JSON object",
        ));
    }
    let shape: Shape<'_> = serde_json::from_str(body).map_err(|e| json_error(&e))?;
    let input = if shape.text.is_some() {
        let r: TextRequest = serde_json::from_str(body).map_err(|e| json_error(&e))?;
        AssessmentInput {
            segments: vec![Segment::untrusted(r.text)],
            context: Context {
                tenant: r.tenant,
                user: r.user,
                now,
                profile: None,
            },
        }
    } else {
        let r: ContractRequest = serde_json::from_str(body).map_err(|e| json_error(&e))?;
        let c = r.context.unwrap_or(ContextRequest {
            tenant: None,
            user: None,
            now: None,
            profile: None,
        });
        AssessmentInput {
            segments: r.segments,
            context: Context {
                tenant: c.tenant,
                user: c.user,
                now: c.now.unwrap_or(now),
                profile: c.profile,
            },
        }
    };
    Ok(input)
}
