//! One verification as JSON, so every face (the component, the npm package, the filter) takes
//! and answers the same shape.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    verify, HighWater, Keyring, TemplateCheck, TemplatePolicy, VerifyError,
    DEFAULT_MAX_SKEW_SECONDS, MAX_ENVELOPE_BYTES, MAX_TEMPLATE_BYTES,
};
use crate::time::Timestamp;

/// Largest request accepted: a template of the largest size, escaped, and an envelope.
const MAX_REQUEST_BYTES: usize = MAX_TEMPLATE_BYTES * 2 + MAX_ENVELOPE_BYTES * 2;

/// `{envelope, template, keyring, template_policy?, template_id?, version?, high_water?, now,
/// max_skew_seconds?}`. The envelope is the DSSE object itself (or its JSON text as a string);
/// requests that carry it elsewhere (an offline bundle) leave it out.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct VerifyRequest {
    #[serde(default)]
    envelope: Option<Box<RawValue>>,
    template: String,
    keyring: Box<RawValue>,
    #[serde(default)]
    template_policy: Option<TemplatePolicy>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    high_water: Option<HighWater>,
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    max_skew_seconds: Option<u32>,
}

thread_local! {
    /// The last keyring parsed on this thread, by its exact JSON text: callers send the same
    /// keyring with every request, and parsing it (base64, DER, Montgomery constants) costs more
    /// than a verification. Only identical bytes hit, so answers are the same either way.
    static LAST_KEYRING: std::cell::RefCell<Option<(String, std::rc::Rc<Keyring>)>> =
        const { std::cell::RefCell::new(None) };
}

fn keyring_for(json: &str) -> Result<std::rc::Rc<Keyring>, VerifyError> {
    let cached = LAST_KEYRING.with(|last| {
        last.borrow()
            .as_ref()
            .filter(|(text, _)| text == json)
            .map(|(_, ring)| ring.clone())
    });
    if let Some(ring) = cached {
        return Ok(ring);
    }
    let ring = std::rc::Rc::new(Keyring::from_json(json.as_bytes())?);
    LAST_KEYRING.with(|last| *last.borrow_mut() = Some((json.to_string(), ring.clone())));
    Ok(ring)
}

/// Verifies the template a JSON request describes; returns the report as JSON.
pub fn verify_request_json(request: &[u8]) -> Result<String, VerifyError> {
    let verified = verify_request(request)?;
    serde_json::to_string(&verified.report())
        .map_err(|e| VerifyError::InvalidRequest(format!("report: {e}")))
}

/// Verifies the template a JSON request describes.
pub fn verify_request(request: &[u8]) -> Result<super::VerifiedTemplate, VerifyError> {
    verify_request_with(request, None, None)
}

/// Like [`verify_request`] for requests inside other requests: `envelope` is the envelope when
/// it travels outside the request (then the request must not hold one), `default_now` the time
/// when the request names none.
pub(crate) fn verify_request_with(
    request: &[u8],
    envelope: Option<&[u8]>,
    default_now: Option<&str>,
) -> Result<super::VerifiedTemplate, VerifyError> {
    if request.len() > MAX_REQUEST_BYTES {
        return Err(VerifyError::InvalidRequest(format!(
            "{} bytes is over the {MAX_REQUEST_BYTES}-byte limit",
            request.len()
        )));
    }
    let request: VerifyRequest =
        serde_json::from_slice(request).map_err(|e| VerifyError::InvalidRequest(e.to_string()))?;
    let keyring = keyring_for(request.keyring.get())?;
    let policy = request.template_policy.unwrap_or_default();
    let now = request
        .now
        .as_deref()
        .or(default_now)
        .ok_or_else(|| VerifyError::InvalidRequest("missing field `now`".into()))?;
    let now = Timestamp::parse(now).map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
    // An envelope given as a string is its JSON text; as an object, the object's own bytes.
    let text;
    let envelope =
        match (&request.envelope, envelope) {
            (Some(raw), None) if raw.get().starts_with('"') => {
                text = serde_json::from_str::<String>(raw.get())
                    .map_err(|e| VerifyError::InvalidRequest(format!("envelope: {e}")))?;
                text.as_bytes()
            }
            (Some(raw), None) => raw.get().as_bytes(),
            (None, Some(given)) => given,
            (None, None) => {
                return Err(VerifyError::InvalidRequest(
                    "missing field `envelope`".into(),
                ))
            }
            (Some(_), Some(_)) => return Err(VerifyError::InvalidRequest(
                "`envelope` is given by the bundle; the verification request must not repeat it"
                    .into(),
            )),
        };
    let check = TemplateCheck {
        template_id: request.template_id.as_deref(),
        version: request.version,
        keyring: &keyring,
        policy: &policy,
        high_water: request.high_water.as_ref(),
        now,
        max_skew_seconds: request.max_skew_seconds.unwrap_or(DEFAULT_MAX_SKEW_SECONDS),
    };
    verify(envelope, request.template.as_bytes(), &check)
}

crate::json::objects_only_deserialize!(VerifyRequest);
