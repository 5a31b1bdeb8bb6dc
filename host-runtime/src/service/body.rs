//! Reading request bodies within the service's memory budget and time limit.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::{Deserialize, DeserializeOwned};

use super::{AppError, AppState, BODY_READ_TIMEOUT};

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

/// A JSON body as UTF-8 text. The body takes its declared length (or the whole limit when it
/// declares none) from the shared budget while it is read, so memory stays bounded and slow
/// clients cannot hold more than their share.
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
    let kib = declared
        .unwrap_or(max_body)
        .div_ceil(1024)
        .max(1)
        .min(state.body_budget_kib as usize);
    let _budget = state
        .body_budget
        .clone()
        .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
        .await
        .map_err(|_| AppError::stopping())?;
    let bytes =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max_body)).await {
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
                let over = std::error::Error::source(&e)
                    .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
                return Err(if over {
                    too_large(max_body)
                } else {
                    AppError::bad_request("invalid_body", "the request body could not be read")
                });
            }
            Ok(Ok(bytes)) => bytes,
        };
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
