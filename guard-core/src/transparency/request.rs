//! Checking an offline bundle with no network, as one JSON request every face takes: the log
//! part (the checkpoint signed by the log's key, the entry recording this envelope at its index,
//! the inclusion proof) and then the template itself, verified against the caller's keyring and
//! template policy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{BundleError, NoteVerifier, OfflineBundle};
use crate::provenance::{PinnedKey, Scheme, VerificationReport, VerifyError};

/// `{bundle, log: {origin, spki, scheme}, template: <verification request without its
/// envelope>}`: the envelope is the bundle's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleRequest {
    bundle: Box<RawValue>,
    log: LogKey,
    template: Box<RawValue>,
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
///
/// The request is `{bundle, log: {origin, spki, scheme}, template}`, where `template` is a
/// verification request (`provenance::verify_request_json`) without its `envelope`.
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

    // The template verified as any other, with the bundle's envelope. The policy is the
    // caller's: the bundle's copy is covered by no signature or log entry.
    let envelope = serde_json::to_vec(&bundle.envelope)
        .map_err(|e| BundleCheckError::InvalidRequest(e.to_string()))?;
    let verified = crate::provenance::request::verify_request_with(
        request.template.get().as_bytes(),
        Some(&envelope),
        None,
    )?;
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
