//! Checking an offline bundle with no network, as one JSON request every face takes: the log
//! part (the checkpoint signed by the log's key, the entry recording this envelope at its index,
//! the inclusion proof) and then the template itself, verified against the caller's keyring and
//! template policy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{BundleError, NoteVerifier, OfflineBundle};
use crate::provenance::{HighWater, PinnedKey, Scheme, VerificationReport, VerifyError};

/// `{bundle, template, keyring, log: {origin, spki, scheme}, template_policy?, template_id?,
/// version?, high_water?, now, max_skew_seconds?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleRequest {
    bundle: Box<RawValue>,
    template: String,
    keyring: Box<RawValue>,
    log: LogKey,
    #[serde(default)]
    template_policy: Option<Box<RawValue>>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    high_water: Option<HighWater>,
    now: String,
    #[serde(default)]
    max_skew_seconds: Option<u32>,
}

/// The log's checkpoint key: its origin (the key's name) and SubjectPublicKeyInfo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogKey {
    origin: String,
    /// SubjectPublicKeyInfo DER, base64.
    spki: String,
    scheme: Scheme,
}

/// Where in the log the template was found.
#[derive(Debug, Serialize)]
struct LogPosition {
    origin: String,
    index: u64,
    tree_size: u64,
    root: String,
    published_at: String,
}

#[derive(Debug, Serialize)]
struct BundleAnswer {
    template: VerificationReport,
    log: LogPosition,
}

/// Why an offline bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleCheckError {
    /// The request is not of the request's shape.
    #[error("bundle request is malformed: {0}")]
    InvalidRequest(String),
    /// The log part does not hold.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The template was refused.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl BundleCheckError {
    /// A stable snake-case code: `invalid_request`, `invalid_bundle`, or the verifier's code.
    pub fn code(&self) -> &'static str {
        match self {
            BundleCheckError::InvalidRequest(_) => "invalid_request",
            BundleCheckError::Bundle(_) => "invalid_bundle",
            BundleCheckError::Verify(e) => e.code(),
        }
    }
}

/// Checks an offline bundle and its template; returns `{template: <report>, log: {origin, index,
/// tree_size, root, published_at}}` as JSON.
pub fn verify_bundle_json(request: &[u8]) -> Result<String, BundleCheckError> {
    let request: BundleRequest = serde_json::from_slice(request)
        .map_err(|e| BundleCheckError::InvalidRequest(e.to_string()))?;
    let bundle = OfflineBundle::from_json(request.bundle.get().as_bytes())?;
    let der = STANDARD
        .decode(request.log.spki.as_bytes())
        .map_err(|e| BundleCheckError::InvalidRequest(format!("log.spki is not base64: {e}")))?;
    let key = PinnedKey::from_spki_der(&der, request.log.scheme)?;
    let verifier = NoteVerifier::new(&request.log.origin, key)
        .map_err(|e| BundleCheckError::InvalidRequest(format!("log key: {e}")))?;
    let logged = bundle.verify_log(&verifier)?;

    // The template as the bundle states it, verified as any other: the raw keyring is passed on
    // untouched so its strict parsing still sees every byte.
    let mut verify = String::with_capacity(request.template.len() + 4096);
    verify.push_str("{\"envelope\":");
    verify.push_str(&json(&bundle.envelope));
    verify.push_str(",\"template\":");
    verify.push_str(&json(&request.template));
    verify.push_str(",\"keyring\":");
    verify.push_str(request.keyring.get());
    // The policy is the caller's: the bundle's copy is not covered by the log entry or any
    // signature, so it could loosen what the caller requires.
    if let Some(policy) = &request.template_policy {
        verify.push_str(",\"template_policy\":");
        verify.push_str(policy.get());
    }
    if let Some(id) = &request.template_id {
        verify.push_str(",\"template_id\":");
        verify.push_str(&json(id));
    }
    if let Some(version) = request.version {
        verify.push_str(&format!(",\"version\":{version}"));
    }
    if let Some(high) = &request.high_water {
        verify.push_str(",\"high_water\":");
        verify.push_str(&json(high));
    }
    verify.push_str(",\"now\":");
    verify.push_str(&json(&request.now));
    if let Some(skew) = request.max_skew_seconds {
        verify.push_str(&format!(",\"max_skew_seconds\":{skew}"));
    }
    verify.push('}');
    let verified = crate::provenance::verify_request(verify.as_bytes())?;
    let checkpoint = logged.checkpoint();
    let answer = BundleAnswer {
        template: verified.report(),
        log: LogPosition {
            origin: checkpoint.origin.clone(),
            index: logged.entry().seq,
            tree_size: checkpoint.size,
            root: STANDARD.encode(checkpoint.root),
            published_at: logged.entry().time.clone(),
        },
    };
    serde_json::to_string(&answer).map_err(|e| BundleCheckError::InvalidRequest(e.to_string()))
}

/// Serialization of a piece spliced into the verification request: strings, a map of strings
/// and numbers, the envelope; none can fail to serialize.
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}
