//! Reading request bodies within the service's memory budget and time limit.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use serde::de::{Deserialize, DeserializeOwned};
use tokio::sync::OwnedSemaphorePermit;

use super::{AppError, AppState, BODY_READ_TIMEOUT};

/// How long a body waits for its share of the memory budget before it is answered 503: the
/// budget is spent only by bodies really arriving, so a longer wait would only queue callers.
const BUDGET_WAIT: Duration = Duration::from_secs(2);

fn too_large(limit: usize) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is over the {limit}-byte limit"),
    )
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
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

/// A JSON body as UTF-8 text. Memory for the body is taken from the shared budget as its
/// bytes arrive (never for bytes merely announced), so clients that announce large bodies and
/// send nothing hold nothing; a body that cannot get its share within [`BUDGET_WAIT`] is
/// answered 503, and the whole body must arrive within [`BODY_READ_TIMEOUT`].
pub(super) async fn read_text(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, AppError> {
    if !is_json(headers) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ));
    }
    let max_body = state.limits.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(too_large(max_body));
    }
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let timed_out = || {
        AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )
    };
    let mut body = body;
    let mut bytes: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(64 << 10));
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_kib = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(AppError::bad_request(
                    "invalid_body",
                    "the request body could not be read",
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = bytes.len().saturating_add(data.len());
        if total > max_body {
            return Err(too_large(max_body));
        }
        let need_kib = total
            .div_ceil(1024)
            .min(state.body_budget_kib as usize)
            .saturating_sub(held_kib);
        if need_kib > 0 {
            let wanted = u32::try_from(need_kib).unwrap_or(u32::MAX);
            let wait = deadline.min(tokio::time::Instant::now() + BUDGET_WAIT);
            let permit = match tokio::time::timeout_at(
                wait,
                state.body_budget.clone().acquire_many_owned(wanted),
            )
            .await
            {
                Err(_) => return Err(AppError::busy()),
                Ok(Err(_)) => return Err(AppError::stopping()),
                Ok(Ok(permit)) => permit,
            };
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            held_kib += need_kib;
        }
        bytes.extend_from_slice(&data);
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        AppError::bad_request(
            "invalid_utf8",
            format!(
                "body is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

pub(super) fn json_error(e: &serde_json::Error) -> AppError {
    let code = if e.is_data() {
        "invalid_input"
    } else {
        "invalid_json"
    };
    AppError::bad_request(code, e.to_string())
}

/// A body that must be one JSON object of `T`'s shape (unknown fields are `T`'s to refuse).
pub(super) fn parse_object<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, AppError> {
    if !text.trim_start().starts_with('{') {
        return Err(AppError::bad_request(
            "invalid_input",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_str(text).map_err(|e| json_error(&e))
}

/// Reads and parses a JSON object body.
pub(super) async fn read_object<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, AppError> {
    let text = read_text(state, headers, body).await?;
    parse_object(&text)
}
