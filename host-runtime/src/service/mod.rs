//! The HTTP service: the guarded call, scanning, the registry's HTTP face, incidents,
//! quarantine, users' data, health and metrics.
//!
//! Handlers translate HTTP to guard and store calls; the guard decides. Every endpoint but
//! `/healthz` and `/readyz` needs an API key whose identity holds one of the endpoint's roles
//! ([`routes::ROUTES`]). Errors are JSON `{"error": {"code", "message"}}` and never carry
//! internals.

mod access;
mod assess;
mod body;
mod error;
mod incidents;
pub mod journal;
mod outcome;
mod registry;
pub mod routes;
mod server;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::Semaphore;

pub use access::{Access, SESSION_TTL};
pub use error::AppError;
pub use incidents::{IncidentDesk, Unsealable};
pub use outcome::{Call, Endpoint, Kept, Outcome};
pub use server::{serve, ServerLimits};
pub use templates::TEMPLATE_TTL;

use crate::engine::{EngineError, GuardEngine};
use crate::store::Behaviour;
use crate::telemetry::{Assessed, Exhaustion, LabelLimits, Metrics};
use templates::TemplateCache;

/// Largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// Largest prompt (the untrusted text of one call) accepted by default.
pub const DEFAULT_MAX_PROMPT: usize = 1 << 20;

/// Most texts in one `/v1/scan/batch` request by default.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// How long a client may take to send its request body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Size limits of requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, bytes.
    pub max_body: usize,
    /// Largest prompt of one call, bytes (413 is the body, 422 the prompt).
    pub max_prompt_bytes: usize,
    /// Most items in one batch.
    pub max_batch: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body: DEFAULT_MAX_BODY,
            max_prompt_bytes: DEFAULT_MAX_PROMPT,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<GuardEngine>,
    access: Arc<Access>,
    /// One permit per guard instance, so guard calls never outgrow the pool.
    guard_permits: Arc<Semaphore>,
    /// Bytes of request bodies that may be buffered at once, in KiB. A request takes its declared
    /// length (or the whole limit when it declares none) before reading, so memory stays bounded
    /// and clients that stall small bodies cannot hold the guard's instances.
    body_budget: Arc<Semaphore>,
    body_budget_kib: u32,
    clock: Arc<dyn Fn() -> String + Send + Sync>,
    limits: RequestLimits,
    /// Where users' profiles are kept, when the service keeps them.
    behaviour: Option<Arc<Behaviour>>,
    /// Whether the behaviour tables are in the registry's own database, so an erasure and its
    /// audit entry commit together.
    behaviour_in_registry: bool,
    templates: Arc<TemplateCache>,
    metrics: Arc<Metrics>,
    /// Where incidents and quarantined items are kept, when the service keeps them.
    incidents: Option<Arc<IncidentDesk>>,
}

impl AppState {
    /// State around an engine and the registry whose keys and templates it serves, with the
    /// system clock.
    pub fn new(engine: Arc<GuardEngine>, access: Access, limits: RequestLimits) -> Self {
        let instances = engine.limits().max_instances as usize;
        let max_body_kib = limits.max_body.div_ceil(1024).max(1);
        // Room for every instance's worth of full-size bodies, and then some for small requests.
        let budget = u32::try_from(max_body_kib.saturating_mul(instances * 2))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        AppState {
            engine,
            access: Arc::new(access),
            guard_permits: Arc::new(Semaphore::new(instances)),
            body_budget: Arc::new(Semaphore::new(budget as usize)),
            body_budget_kib: budget,
            clock: Arc::new(crate::cli::now_utc),
            limits,
            behaviour: None,
            behaviour_in_registry: false,
            templates: Arc::new(TemplateCache::default()),
            metrics: Arc::new(Metrics::new(LabelLimits::default())),
            incidents: None,
        }
    }

    /// The same state opening incidents for `high` and `critical` calls and template refusals,
    /// and holding quarantined items for review.
    pub fn with_incidents(mut self, desk: Arc<IncidentDesk>) -> Self {
        self.incidents = Some(desk);
        self
    }

    /// The same state counting into `metrics` (shared with an EMF writer, say).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry and keys the service answers for.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// The metrics the service counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts a guard call cut short by one of its limits.
    pub(crate) fn note_engine_error(&self, error: &EngineError) {
        if let EngineError::Trap(message) = error {
            let kind = if message.contains("interrupt") {
                Exhaustion::Deadline
            } else if message.contains("memory") {
                Exhaustion::Memory
            } else if message.contains("fuel") {
                Exhaustion::Fuel
            } else {
                return;
            };
            self.metrics.guard_exhausted(kind);
        }
    }

    /// The same state with a fixed time for every request (for replaying traffic and for tests).
    pub fn with_fixed_now(mut self, now: String) -> Self {
        self.clock = Arc::new(move || now.clone());
        self
    }

    /// The same state keeping users' profiles and detections in a store: a request that names a
    /// user and carries no profile is assessed with the stored one, which is then updated.
    pub fn with_behaviour(mut self, behaviour: Behaviour, in_registry_database: bool) -> Self {
        self.behaviour = Some(Arc::new(behaviour));
        self.behaviour_in_registry = in_registry_database;
        self
    }

    /// Acts on one call's outcome: metrics, and what it kept goes back to the caller.
    pub async fn record(&self, outcome: Outcome<'_>) -> Result<Kept, AppError> {
        if let Some(verify) = outcome.verify_time {
            self.metrics.observe_verify(verify);
        }
        if let Some(assess) = outcome.assess_time {
            self.metrics.observe_assess(assess);
        }
        match &outcome.call {
            Call::Assessed { assessment, .. } => {
                let mut rules: Vec<&str> = Vec::new();
                let mut model_hit = false;
                for finding in &assessment.findings {
                    match finding.source {
                        guard_core::FindingSource::Rule
                            if !rules.contains(&finding.id.as_str()) =>
                        {
                            rules.push(&finding.id);
                        }
                        guard_core::FindingSource::Model => model_hit = true,
                        _ => {}
                    }
                }
                self.metrics.record_assessment(
                    outcome.endpoint,
                    outcome.tenant.as_deref(),
                    Assessed {
                        action: assessment.action,
                        level: assessment.level,
                    },
                    &rules,
                    model_hit,
                );
            }
            Call::Refused { code, .. } => self.metrics.template_refused(code),
        }
        match &self.incidents {
            Some(desk) => incidents::record(desk, &self.metrics, &outcome).await,
            None => Ok(Kept::default()),
        }
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    router_of(state, |_| true)
}

/// The router of a listener of its own for `/metrics`: that route alone, with the same keys,
/// so opening the port to a monitoring network opens nothing else.
pub fn metrics_app(state: AppState) -> Router {
    router_of(state, |route| route.path == "/metrics")
}

fn router_of(state: AppState, serves: impl Fn(&routes::Route) -> bool) -> Router {
    use routes::Verb;
    let mut router = Router::new();
    for route in routes::ROUTES.iter().filter(|r| serves(r)) {
        let method = match (route.verb, route.path) {
            (Verb::Get, "/healthz") => get(healthz),
            (Verb::Get, "/readyz") => get(readyz),
            (Verb::Get, "/openapi.json") => get(openapi),
            (Verb::Get, "/metrics") => get(metrics),
            (Verb::Post, "/v1/scan") => post(assess::scan),
            (Verb::Post, "/v1/scan/batch") => post(assess::scan_batch),
            (Verb::Post, "/v1/guard") => post(assess::guard),
            (verb, path) => {
                match registry::handler(verb, path).or_else(|| incidents::handler(verb, path)) {
                    Some(handler) => handler,
                    None => match verb {
                        // Listed but not served: the table and the router disagree, and the
                        // route answers 501 rather than being left out silently.
                        Verb::Get => get(not_implemented),
                        Verb::Post => post(not_implemented),
                        Verb::Delete => delete(not_implemented),
                    },
                }
            }
        };
        router = router.route(route.path, method);
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_key,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_implemented() -> AppError {
    AppError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "this endpoint is not served by this build",
    )
}

async fn not_found() -> AppError {
    AppError::not_found("no such endpoint")
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}).to_string())
}

/// Ready when the guard answers and the stores can be read.
async fn readyz(State(state): State<AppState>) -> Response {
    let checked = tokio::task::spawn_blocking(move || -> Result<u32, String> {
        let rules = state
            .engine
            .rule_count()
            .map_err(|e| format!("guard: {e}"))?;
        state
            .access
            .with_registry(|registry, _| {
                registry
                    .audit_log()
                    .size()
                    .map_err(|e| AppError::internal(&e.to_string()))
            })
            .map_err(|e| format!("registry: {}", e.code()))?;
        if let Some(behaviour) = &state.behaviour {
            behaviour
                .store
                .pseudonym("readiness-check")
                .map_err(|e| format!("behaviour store: {e}"))?;
        }
        Ok(rules)
    })
    .await;
    match checked {
        Ok(Ok(rules)) => json_response(
            StatusCode::OK,
            json!({"status": "ready", "rules": rules}).to_string(),
        ),
        Ok(Err(problem)) => {
            tracing::warn!(problem = %problem, "not ready");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "problem": problem}).to_string(),
            )
        }
        Err(_) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready"}).to_string(),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.set_guard_instances(
        state
            .engine
            .stats()
            .created
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(
                state
                    .engine
                    .stats()
                    .discarded
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
    );
    let mut out = String::with_capacity(32 << 10);
    state.metrics.render_prometheus(&mut out);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)],
        out,
    )
        .into_response()
}

/// Counts every answer of the assessing endpoints, with its status and the call's whole time.
async fn count_responses(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = match request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
    {
        Some("/v1/scan") | Some("/v1/scan/batch") => Some(Endpoint::Scan),
        Some("/v1/guard") => Some(Endpoint::Guard),
        _ => None,
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(endpoint) = endpoint {
        state
            .metrics
            .record_response(endpoint, response.status().as_u16(), started.elapsed());
    }
    response
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, routes::openapi().to_string())
}

/// The service's time now (its clock, or the fixed time it was given).
pub(crate) fn now_of(state: &AppState) -> Result<guard_core::time::Timestamp, AppError> {
    guard_core::time::Timestamp::parse(&(state.clock)())
        .map_err(|e| AppError::internal(&e.to_string()))
}

/// A value as JSON for an answer.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(value).map_err(|_| AppError::internal("the answer could not be encoded"))
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The caller's `x-request-id` when it is a short token, else a new random id.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    if let Some(given) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        if (1..=64).contains(&given.len())
            && given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return given.to_string();
        }
    }
    let mut bytes = [0u8; 12];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return "unknown".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AppError {
    /// The error's JSON body, for an item of a batch.
    pub(crate) fn body_json(&self) -> String {
        json!({"error": {"code": self.code, "message": self.message()}}).to_string()
    }
}
