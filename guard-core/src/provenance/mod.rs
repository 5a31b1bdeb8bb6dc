//! Template provenance: is this the template that was signed, by a key we pin?
//!
//! Order matters. The envelope is parsed, every signature is checked against the pinned key over
//! the DSSE pre-authentication encoding, and only a payload that verified is parsed as a
//! statement. The algorithm comes from the pinned key, never from the record. What comes out is a
//! [`VerifiedTemplate`], which nothing else can construct.

mod dsse;
mod statement;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use dsse::{pae, Envelope, EnvelopeSignature, PAYLOAD_TYPE};
pub use statement::{is_sha256_hex, is_template_id, Digest, Statement, StatementError};

use crate::time::Timestamp;

/// rsaEncryption, the usual algorithm of RSA public keys.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// id-RSASSA-PSS: an RSA key restricted to PSS signatures.
const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// Largest envelope accepted, in bytes of JSON.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Largest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 << 20;
/// Largest statement accepted, in bytes once decoded.
pub const MAX_STATEMENT_BYTES: usize = 64 << 10;

/// Signature schemes a pinned key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsassaPkcs1v15Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsassaPssSha256,
}

impl Scheme {
    /// The name used in keyrings.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::RsassaPkcs1v15Sha256 => "rsassa-pkcs1v15-sha256",
            Scheme::RsassaPssSha256 => "rsassa-pss-sha256",
        }
    }
}

/// A public key the verifier trusts, with the scheme it signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    key: RsaPublicKey,
    scheme: Scheme,
    fingerprint: String,
}

impl PinnedKey {
    /// From a SubjectPublicKeyInfo, DER or PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// RSA only, 2048 to 4096 bits, public exponent 65537.
    pub fn from_spki(spki: &[u8], scheme: Scheme) -> Result<Self, VerifyError> {
        use rsa::pkcs1::der::{Decode, Document};
        use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;

        let invalid = |m: String| VerifyError::InvalidKey(m);
        let pem_document;
        let der: &[u8] = match std::str::from_utf8(spki) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => {
                let (label, document) = Document::from_pem(text.trim())
                    .map_err(|e| invalid(format!("not a PEM public key ({e})")))?;
                if label != "PUBLIC KEY" {
                    return Err(invalid(format!(
                        "expected a `PUBLIC KEY` PEM block (SubjectPublicKeyInfo), found `{label}`"
                    )));
                }
                pem_document = document;
                pem_document.as_bytes()
            }
            _ => spki,
        };
        let info = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| invalid(format!("not a DER SubjectPublicKeyInfo ({e})")))?;
        let oid = info.algorithm.oid.to_string();
        match (oid.as_str(), scheme) {
            (RSA_ENCRYPTION, _) | (RSASSA_PSS, Scheme::RsassaPssSha256) => {}
            (RSASSA_PSS, Scheme::RsassaPkcs1v15Sha256) => {
                return Err(invalid(
                    "an RSASSA-PSS key cannot verify RSASSA-PKCS1-v1_5 signatures".into(),
                ))
            }
            (other, _) => {
                return Err(invalid(format!(
                    "not an RSA key (algorithm {other}); RSA 2048 to 4096 bits is required"
                )))
            }
        }
        let bits = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| invalid("public key bits are not whole bytes".into()))?;
        let parts = rsa::pkcs1::RsaPublicKey::from_der(bits)
            .map_err(|e| invalid(format!("not an RSA public key ({e})")))?;
        let n = parts.modulus.as_bytes();
        let size = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=4096).contains(&size) {
            return Err(invalid(format!(
                "RSA key has {size} bits; 2048 to 4096 are accepted"
            )));
        }
        let e = BigUint::from_bytes_be(parts.public_exponent.as_bytes());
        if e != BigUint::from(65_537u32) {
            return Err(invalid("public exponent must be 65537".into()));
        }
        let key =
            RsaPublicKey::new(BigUint::from_bytes_be(n), e).map_err(|e| invalid(e.to_string()))?;
        // The fingerprint is over the SubjectPublicKeyInfo as given: DER is canonical.
        Ok(PinnedKey {
            key,
            scheme,
            fingerprint: hex(&Sha256::digest(der)),
        })
    }

    /// Hex SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The scheme this key signs with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Modulus size in bytes: the length of every signature by this key.
    pub fn signature_len(&self) -> usize {
        self.key.size()
    }

    /// Whether `signature` is this key's signature over `message`, under its scheme.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifies(message, signature)
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self.scheme {
            Scheme::RsassaPkcs1v15Sha256 => {
                let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
                    return false;
                };
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(self.key.clone())
                    .verify(message, &sig)
                    .is_ok()
            }
            Scheme::RsassaPssSha256 => {
                let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                    return false;
                };
                rsa::pss::VerifyingKey::<Sha256>::new(self.key.clone())
                    .verify(message, &sig)
                    .is_ok()
            }
        }
    }
}

/// A template whose signature, digest and validity were checked. Only [`verify_template`] makes
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTemplate {
    statement: Statement,
    text: String,
    key_fingerprint: String,
}

impl VerifiedTemplate {
    /// The statement that was signed.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The template text, exactly as signed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Fingerprint of the key whose signature verified.
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    /// What the verifier reports, as JSON.
    pub fn report(&self) -> VerificationReport {
        VerificationReport {
            verified: true,
            template_id: self.statement.template_id.clone(),
            version: self.statement.version,
            digest: self.statement.digest.sha256.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            signer: self.statement.signer.clone(),
            signed_at: self.statement.signed_at.clone(),
            not_after: self.statement.not_after.clone(),
            statement: self.statement.clone(),
        }
    }
}

/// The outcome of a successful verification, for callers and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationReport {
    /// Always true: failures are errors.
    pub verified: bool,
    /// Template id.
    pub template_id: String,
    /// Version.
    pub version: u64,
    /// Hex SHA-256 of the template.
    pub digest: String,
    /// Fingerprint of the key that verified.
    pub key_fingerprint: String,
    /// Who signed.
    pub signer: String,
    /// When.
    pub signed_at: String,
    /// Until when.
    pub not_after: String,
    /// The whole statement.
    pub statement: Statement,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The envelope is not a DSSE envelope.
    #[error("envelope is malformed: {0}")]
    MalformedEnvelope(String),
    /// The envelope carries something other than a template statement.
    #[error("payload type `{0}` is not a Sigil template statement")]
    PayloadType(String),
    /// The pinned key is unusable.
    #[error("public key is invalid: {0}")]
    InvalidKey(String),
    /// The envelope has no signatures.
    #[error("envelope has no signatures")]
    NoSignatures,
    /// A signature is not base64 or has the wrong length for the key.
    #[error("signature {index} is malformed: {reason}")]
    MalformedSignature {
        /// Position in the envelope.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// No signature verifies under the pinned key.
    #[error("no signature verifies under the pinned key `{fingerprint}`")]
    BadSignature {
        /// The pinned key's fingerprint.
        fingerprint: String,
    },
    /// The signed statement is invalid.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// The template is not the one that was signed.
    #[error("template digest `{actual}` does not match the signed digest `{signed}`")]
    DigestMismatch {
        /// Digest in the statement.
        signed: String,
        /// Digest of the template given.
        actual: String,
    },
    /// The template is not text.
    #[error("template is not valid UTF-8 (byte {0})")]
    TemplateNotUtf8(usize),
    /// The template is larger than any template may be.
    #[error("template is {0} bytes; the limit is {MAX_TEMPLATE_BYTES}")]
    TemplateTooLarge(usize),
    /// `now` is not a valid time.
    #[error("invalid time: {0}")]
    InvalidTime(String),
    /// `now` is before `signed_at`.
    #[error("statement is signed at `{signed_at}`, after now `{now}`")]
    NotYetValid {
        /// When it was signed.
        signed_at: String,
        /// The time given.
        now: String,
    },
    /// `now` is at or after `not_after`.
    #[error("statement expired at `{not_after}`; now is `{now}`")]
    Expired {
        /// When it expired.
        not_after: String,
        /// The time given.
        now: String,
    },
}

impl VerifyError {
    /// A stable snake-case code for each kind of refusal.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MalformedEnvelope(_) => "malformed_envelope",
            VerifyError::PayloadType(_) => "payload_type",
            VerifyError::InvalidKey(_) => "invalid_key",
            VerifyError::NoSignatures => "no_signatures",
            VerifyError::MalformedSignature { .. } => "malformed_signature",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::Statement(_) => "malformed_statement",
            VerifyError::DigestMismatch { .. } => "digest_mismatch",
            VerifyError::TemplateNotUtf8(_) => "template_not_utf8",
            VerifyError::TemplateTooLarge(_) => "template_too_large",
            VerifyError::InvalidTime(_) => "invalid_time",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::Expired { .. } => "expired",
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0xf));
    }
    out
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Verifies a signed template.
///
/// `now` (RFC 3339 UTC), when given, must fall within `[signed_at, not_after)`.
pub fn verify_template(
    envelope_json: &[u8],
    template: &[u8],
    key: &PinnedKey,
    now: Option<&str>,
) -> Result<VerifiedTemplate, VerifyError> {
    if envelope_json.len() > MAX_ENVELOPE_BYTES {
        return Err(VerifyError::MalformedEnvelope(format!(
            "{} bytes is over the {MAX_ENVELOPE_BYTES}-byte limit",
            envelope_json.len()
        )));
    }
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(VerifyError::TemplateTooLarge(template.len()));
    }
    let envelope: Envelope = serde_json::from_slice(envelope_json)
        .map_err(|e| VerifyError::MalformedEnvelope(e.to_string()))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType(
            envelope.payload_type.chars().take(100).collect(),
        ));
    }
    if envelope.payload.len() > MAX_STATEMENT_BYTES * 4 / 3 + 4 {
        return Err(VerifyError::MalformedEnvelope(
            "payload is over the statement size limit".into(),
        ));
    }
    let payload = STANDARD
        .decode(envelope.payload.as_bytes())
        .map_err(|e| VerifyError::MalformedEnvelope(format!("payload is not base64: {e}")))?;
    if envelope.signatures.is_empty() {
        return Err(VerifyError::NoSignatures);
    }

    let message = pae(&envelope.payload_type, &payload);
    // Any one signature by the pinned key is enough; a malformed one is reported only if none
    // verifies, so one bad entry cannot veto a good one.
    let mut first_malformed = None;
    let mut any_well_formed = false;
    let mut verified = false;
    for (index, signature) in envelope.signatures.iter().enumerate() {
        let bytes = match STANDARD.decode(signature.sig.as_bytes()) {
            Ok(bytes) if bytes.len() == key.signature_len() => bytes,
            Ok(bytes) => {
                first_malformed.get_or_insert(VerifyError::MalformedSignature {
                    index,
                    reason: format!(
                        "{} bytes, but the pinned key's signatures are {} bytes: truncated, or made by a key of another size",
                        bytes.len(),
                        key.signature_len()
                    ),
                });
                continue;
            }
            Err(e) => {
                first_malformed.get_or_insert(VerifyError::MalformedSignature {
                    index,
                    reason: format!("not base64: {e}"),
                });
                continue;
            }
        };
        any_well_formed = true;
        if key.verifies(&message, &bytes) {
            verified = true;
            break;
        }
    }
    if !verified {
        // Only when every entry is malformed is that the answer; otherwise a well-formed
        // signature failed, and that is what the caller must hear.
        return Err(match first_malformed {
            Some(malformed) if !any_well_formed => malformed,
            _ => VerifyError::BadSignature {
                fingerprint: key.fingerprint.clone(),
            },
        });
    }

    // Only now is the payload trusted enough to parse.
    let statement = Statement::parse(&payload)?;
    let actual = sha256_hex(template);
    if actual != statement.digest.sha256 {
        return Err(VerifyError::DigestMismatch {
            signed: statement.digest.sha256.clone(),
            actual,
        });
    }
    if let Some(now) = now {
        let now_ts = Timestamp::parse(now).map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
        // Both parsed already in Statement::check.
        let signed_at = Timestamp::parse(&statement.signed_at)
            .map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
        let not_after = Timestamp::parse(&statement.not_after)
            .map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
        if now_ts < signed_at {
            return Err(VerifyError::NotYetValid {
                signed_at: statement.signed_at.clone(),
                now: now_ts.to_string(),
            });
        }
        if now_ts >= not_after {
            return Err(VerifyError::Expired {
                not_after: statement.not_after.clone(),
                now: now_ts.to_string(),
            });
        }
    }
    let text = String::from_utf8(template.to_vec())
        .map_err(|e| VerifyError::TemplateNotUtf8(e.utf8_error().valid_up_to()))?;
    Ok(VerifiedTemplate {
        statement,
        text,
        key_fingerprint: key.fingerprint.clone(),
    })
}
