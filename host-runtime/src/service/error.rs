//! The service's one error type, and how every lower error maps onto it.
//!
//! Clients get `{"error": {"code", "message", ...details}}` with a status that says whose fault
//! it was; causes that would reveal internals stay in the server's log.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::registry::RegistryError;
use crate::store::{AssessError, StoreError, UsersError};
use crate::template::TemplateSignError;

/// An error answer.
#[derive(Debug)]
pub struct AppError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    message: String,
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl AppError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with one more field in its body.
    pub(super) fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details
            .get_or_insert_with(serde_json::Map::new)
            .insert(key.to_string(), value.into());
        self
    }

    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn internal(what: &str) -> Self {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            what.to_string(),
        )
    }

    pub(super) fn busy() -> Self {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the service is reading as many request bodies as its memory budget allows; retry shortly",
        )
    }

    pub(super) fn stopping() -> Self {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is stopping",
        )
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The status (for tests and metrics).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// For people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

fn guard_unavailable() -> AppError {
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "guard_unavailable",
        "the guard could not answer; the request was not assessed",
    )
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Input(m) => AppError::bad_request("invalid_input", m),
            EngineError::TooLarge { size, limit } => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "prompt_too_long",
                format!("the prompt is {size} bytes, over the guard's {limit}-byte limit"),
            ),
            other => {
                tracing::error!(error = %other, "guard call failed");
                guard_unavailable()
            }
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidKey(m) => AppError::bad_request("invalid_input", m),
            other => {
                tracing::error!(error = %other, "behaviour store failed");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the behaviour store could not be used; nothing was changed",
                )
            }
        }
    }
}

impl From<AssessError> for AppError {
    fn from(e: AssessError) -> Self {
        match e {
            AssessError::Engine(e) => e.into(),
            AssessError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "guard call failed");
                guard_unavailable()
            }
        }
    }
}

impl From<RegistryError> for AppError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unauthenticated(m) => {
                AppError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            e @ RegistryError::Forbidden { .. } => {
                AppError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            RegistryError::NotFound(m) => AppError::not_found(m),
            RegistryError::Conflict(m) => AppError::new(StatusCode::CONFLICT, "conflict", m),
            RegistryError::Invalid(m) => AppError::bad_request("invalid_input", m),
            RegistryError::Validation(report) => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "the validation pipeline refused the template; the report says why",
            )
            .with(
                "report",
                serde_json::to_value(&*report).unwrap_or(serde_json::Value::Null),
            ),
            RegistryError::Refused { code, message } => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "template_refused",
                message,
            )
            .with("refusal", code),
            RegistryError::Sign(e) => {
                tracing::error!(error = %e, "signing failed");
                AppError::new(
                    StatusCode::BAD_GATEWAY,
                    "signer_unavailable",
                    "the signing key could not be used; nothing was changed",
                )
            }
            RegistryError::Template(TemplateSignError::Sign(e)) => RegistryError::Sign(e).into(),
            RegistryError::Template(e) => AppError::bad_request("invalid_input", e.to_string()),
            RegistryError::Engine(e) => e.into(),
            other => {
                tracing::error!(error = %other, "registry failed");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry_unavailable",
                    "the registry could not be used; nothing was changed",
                )
            }
        }
    }
}

impl From<UsersError> for AppError {
    fn from(e: UsersError) -> Self {
        match e {
            UsersError::Registry(e) => e.into(),
            UsersError::Store(e) => e.into(),
            UsersError::Sealed(e) | UsersError::Keys(e) => super::incidents::vault_error(e),
            other => {
                tracing::error!(error = %other, "user request failed");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        if let Some(details) = self.details {
            error.extend(details);
        }
        let body = json!({ "error": error }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
