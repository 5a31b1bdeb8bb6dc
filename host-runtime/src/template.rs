//! Making signed template envelopes (the format of `DESIGN.md`, "Formats").

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use guard_core::provenance::{pae, sha256_hex, Digest, EnvelopeSignature, PAYLOAD_TYPE};
use guard_core::time::Timestamp;
use guard_core::{Envelope, Statement};

use crate::signer::{SignError, Signer};

/// What to sign.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// Template slug.
    pub template_id: &'a str,
    /// Version, from 1.
    pub version: u64,
    /// The exact template bytes.
    pub template: &'a [u8],
    /// The variable schema (JSON); `{}` when the template has none.
    pub variables_schema: &'a serde_json::Value,
    /// Digest of the previous version's template (required after version 1).
    pub prev_digest: Option<String>,
    /// Who signs.
    pub signer: &'a str,
    /// When.
    pub signed_at: Timestamp,
    /// Until when the signature is good.
    pub not_after: Timestamp,
    /// Digest of the validation report, if a pipeline ran.
    pub validation_digest: Option<String>,
}

/// Why a template could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateSignError {
    /// The statement would be invalid.
    #[error(transparent)]
    Statement(#[from] guard_core::provenance::StatementError),
    /// The template cannot be signed as it is.
    #[error("template {0}")]
    Template(String),
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Canonical JSON of a variable schema: object keys sorted, no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order`), so compact output is canonical.
    value.to_string()
}

/// The statement for a request.
pub fn statement(request: &SignRequest<'_>) -> Result<Statement, TemplateSignError> {
    // What the verifier would refuse is refused here, so no envelope is made that cannot verify.
    if let Err(e) = std::str::from_utf8(request.template) {
        return Err(TemplateSignError::Template(format!(
            "is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    if request.template.len() > guard_core::provenance::MAX_TEMPLATE_BYTES {
        return Err(TemplateSignError::Template(format!(
            "is {} bytes; the limit is {}",
            request.template.len(),
            guard_core::provenance::MAX_TEMPLATE_BYTES
        )));
    }
    let statement = Statement {
        template_id: request.template_id.to_string(),
        version: request.version,
        digest: Digest {
            sha256: sha256_hex(request.template),
        },
        variables_digest: sha256_hex(canonical_json(request.variables_schema).as_bytes()),
        prev_digest: request.prev_digest.clone(),
        signer: request.signer.to_string(),
        signed_at: request.signed_at.to_string(),
        not_after: request.not_after.to_string(),
        validation_digest: request.validation_digest.clone(),
    };
    statement.check()?;
    Ok(statement)
}

/// Signs a template: the statement, base64, signed over the DSSE pre-authentication encoding.
pub fn sign_template(
    request: &SignRequest<'_>,
    signer: &dyn Signer,
) -> Result<Envelope, TemplateSignError> {
    let statement = statement(request)?;
    let payload = serde_json::to_vec(&statement).map_err(|e| SignError::Backend(e.to_string()))?;
    let signature = signer.sign(&pae(PAYLOAD_TYPE, &payload))?;
    Ok(Envelope {
        payload_type: PAYLOAD_TYPE.to_string(),
        payload: STANDARD.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: signer.key_id(),
            sig: STANDARD.encode(signature),
        }],
    })
}
