//! Template provenance: is this the template that was approved, by keys trusted when it was
//! signed, in a version no older than the last one seen?
//!
//! Order matters. The envelope is parsed, every signature is checked against the keyring over
//! the DSSE pre-authentication encoding, and only a payload that verified is parsed as a
//! statement. The algorithm comes from the pinned key, never from the record. Then the digest,
//! the template asked for, the times, the signers' windows and revocations, the approvals the
//! template's policy requires, and the version against the policy and the high-water mark. What
//! comes out is a [`VerifiedTemplate`], which nothing else can construct.

mod dsse;
mod keyring;
pub(crate) mod request;
mod rsa_verify;
mod statement;
mod template_policy;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use dsse::{pae, Envelope, EnvelopeSignature, PAYLOAD_TYPE};
pub use keyring::{KeyRecord, Keyring, KeyringError, TrustedKey, MAX_KEYRING_KEYS};
pub use request::{verify_request, verify_request_json, VerifyRequest};
pub use statement::{is_sha256_hex, is_template_id, Digest, Statement, StatementError};
pub use template_policy::MAX_WITHDRAWN_VERSIONS;
pub use template_policy::{Approvals, HighWater, TemplatePolicy, TemplatePolicyError};

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
/// Most signatures an envelope may carry: bounds the RSA work one envelope can cause.
pub const MAX_ENVELOPE_SIGNATURES: usize = 16;
/// Most RSA verifications one envelope may cause: each signature is tried against the key its
/// `keyid` names first, so honest envelopes need one per signature.
pub const MAX_RSA_OPERATIONS: usize = 48;
/// Default tolerance, in seconds, for a `signed_at` ahead of the verifier's clock.
pub const DEFAULT_MAX_SKEW_SECONDS: u32 = 300;

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
    key: rsa_verify::RsaVerifier,
    scheme: Scheme,
    fingerprint: String,
}

impl PinnedKey {
    /// From a SubjectPublicKeyInfo, DER or PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// RSA only, 2048 to 4096 bits, public exponent 65537.
    pub fn from_spki(spki: &[u8], scheme: Scheme) -> Result<Self, VerifyError> {
        use rsa::pkcs1::der::Document;

        let invalid = |m: String| VerifyError::InvalidKey(m);
        match std::str::from_utf8(spki) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => {
                let (label, document) = Document::from_pem(text.trim())
                    .map_err(|e| invalid(format!("not a PEM public key ({e})")))?;
                if label != "PUBLIC KEY" {
                    return Err(invalid(format!(
                        "expected a `PUBLIC KEY` PEM block (SubjectPublicKeyInfo), found `{label}`"
                    )));
                }
                Self::from_spki_der(document.as_bytes(), scheme)
            }
            _ => Self::from_spki_der(spki, scheme),
        }
    }

    /// Whether both keys have the same modulus: one signer, whatever the encoding, scheme or
    /// fingerprint.
    pub fn same_modulus(&self, other: &PinnedKey) -> bool {
        self.key == other.key
    }

    /// From a SubjectPublicKeyInfo in DER, as keyrings hold it.
    pub fn from_spki_der(der: &[u8], scheme: Scheme) -> Result<Self, VerifyError> {
        use rsa::pkcs1::der::Decode;
        use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;

        let invalid = |m: String| VerifyError::InvalidKey(m);
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
        // DER integers are minimal, so 65537 has exactly these bytes.
        if parts.public_exponent.as_bytes() != [0x01, 0x00, 0x01] {
            return Err(invalid("public exponent must be 65537".into()));
        }
        let key = rsa_verify::RsaVerifier::new(n)
            .ok_or_else(|| invalid("the modulus is not an odd number".into()))?;
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
        self.key.len()
    }

    /// Whether `signature` is this key's signature over `message`, in the key's scheme.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self.scheme {
            Scheme::RsassaPkcs1v15Sha256 => self.key.verify_pkcs1v15_sha256(message, signature),
            Scheme::RsassaPssSha256 => self.key.verify_pss_sha256(message, signature),
        }
    }
}

/// A template whose signatures, digest, times, approvals and version were checked. Only the
/// verifier ([`verify`], [`verify_template`]) makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTemplate {
    statement: Statement,
    text: String,
    approvals: Vec<String>,
    high_water: HighWater,
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

    /// Fingerprint of the first key whose signature counted.
    pub fn key_fingerprint(&self) -> &str {
        self.approvals.first().map_or("", String::as_str)
    }

    /// Fingerprints of the keys whose signatures counted, one per distinct signer.
    pub fn approvals(&self) -> &[String] {
        &self.approvals
    }

    /// The high-water mark to keep for this template from now on.
    pub fn high_water(&self) -> &HighWater {
        &self.high_water
    }

    /// What the verifier reports, as JSON.
    pub fn report(&self) -> VerificationReport {
        VerificationReport {
            verified: true,
            template_id: self.statement.template_id.clone(),
            version: self.statement.version,
            digest: self.statement.digest.sha256.clone(),
            key_fingerprint: self.key_fingerprint().to_string(),
            signer: self.statement.signer.clone(),
            signed_at: self.statement.signed_at.clone(),
            not_after: self.statement.not_after.clone(),
            approvals: self.approvals.clone(),
            high_water: self.high_water.clone(),
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
    /// Fingerprint of the first key whose signature counted.
    pub key_fingerprint: String,
    /// Who signed.
    pub signer: String,
    /// When.
    pub signed_at: String,
    /// Until when.
    pub not_after: String,
    /// Fingerprints of the keys whose signatures counted, one per distinct signer.
    pub approvals: Vec<String>,
    /// The high-water mark to keep for this template from now on.
    pub high_water: HighWater,
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
    /// The keyring is unusable.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The template policy is unusable.
    #[error(transparent)]
    TemplatePolicy(#[from] TemplatePolicyError),
    /// The verification request is not of the request's shape.
    #[error("verification request is malformed: {0}")]
    InvalidRequest(String),
    /// The envelope has no signatures.
    #[error("envelope has no signatures")]
    NoSignatures,
    /// The envelope has more signatures than any envelope may carry.
    #[error("envelope has {0} signatures; at most {MAX_ENVELOPE_SIGNATURES} are accepted")]
    TooManySignatures(usize),
    /// A signature is not base64 or has the wrong length for every key.
    #[error("signature {index} is malformed: {reason}")]
    MalformedSignature {
        /// Position in the envelope.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The signatures name keys the keyring does not hold, and none verifies.
    #[error("signed by unknown key `{keyid}`; no signature verifies under the keyring's keys")]
    UnknownKey {
        /// The first unknown key id hint.
        keyid: String,
    },
    /// No signature verifies under any pinned key.
    #[error("no signature verifies under the pinned keys ({keys} in the keyring)")]
    BadSignature {
        /// How many keys were tried.
        keys: usize,
    },
    /// The only keys that signed are revoked.
    #[error("signed by key `{fingerprint}`, revoked at `{revoked_at}`")]
    RevokedKey {
        /// The revoked key.
        fingerprint: String,
        /// Since when.
        revoked_at: String,
    },
    /// The only keys that signed are past their validity window.
    #[error("signed by key `{fingerprint}`, retired at `{valid_until}`")]
    ExpiredKey {
        /// The retired key.
        fingerprint: String,
        /// When it was retired.
        valid_until: String,
    },
    /// The only keys that signed were not allowed to sign at `signed_at`.
    #[error("key `{fingerprint}` may sign within {window}, but the statement is signed at `{signed_at}`")]
    OutsideKeyWindow {
        /// The key.
        fingerprint: String,
        /// Its window.
        window: String,
        /// When the statement says it was signed.
        signed_at: String,
    },
    /// Fewer distinct approvers signed than the template's policy requires.
    #[error(
        "{have} of the {need} required approvals verify (distinct signers among the policy's keys)"
    )]
    NotEnoughApprovals {
        /// Distinct signers whose signatures counted.
        have: usize,
        /// The policy's threshold.
        need: usize,
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
    /// The envelope is for another template than the one asked for.
    #[error("envelope is for template `{found}`, not `{expected}`")]
    WrongTemplate {
        /// The template asked for.
        expected: String,
        /// The template signed.
        found: String,
    },
    /// The envelope is for another version than the one pinned.
    #[error("envelope is version {found}, but version {expected} was asked for")]
    WrongVersion {
        /// The version asked for.
        expected: u64,
        /// The version signed.
        found: u64,
    },
    /// The version is below the template policy's minimum.
    #[error("version {version} is below the template's minimum version {min_version}")]
    BelowMinVersion {
        /// The version signed.
        version: u64,
        /// The policy's minimum.
        min_version: u64,
    },
    /// The version was withdrawn.
    #[error("version {0} was withdrawn")]
    Withdrawn(u64),
    /// An older version offered as the active one.
    #[error("version {version} is older than version {highest}, already accepted as active")]
    Rollback {
        /// The version offered.
        version: u64,
        /// The highest version accepted.
        highest: u64,
    },
    /// A second, different template signed under a version already accepted.
    #[error("version {version} was accepted with digest `{accepted}`; this one has `{offered}`")]
    Equivocation {
        /// The version.
        version: u64,
        /// The digest accepted before.
        accepted: String,
        /// The digest offered now.
        offered: String,
    },
    /// The statement's `prev_digest` is not the version accepted before it.
    #[error("version {version} follows `{prev_digest}`, but version {previous} was accepted with `{accepted}`")]
    HistoryMismatch {
        /// The version offered.
        version: u64,
        /// Its `prev_digest`.
        prev_digest: String,
        /// The version before it.
        previous: u64,
        /// That version's digest as accepted.
        accepted: String,
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
    /// `signed_at` is ahead of now by more than the allowed skew.
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
            VerifyError::Keyring(_) => "invalid_keyring",
            VerifyError::TemplatePolicy(_) => "invalid_template_policy",
            VerifyError::InvalidRequest(_) => "invalid_request",
            VerifyError::NoSignatures => "no_signatures",
            VerifyError::TooManySignatures(_) => "too_many_signatures",
            VerifyError::MalformedSignature { .. } => "malformed_signature",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::RevokedKey { .. } => "revoked_key",
            VerifyError::ExpiredKey { .. } => "expired_key",
            VerifyError::OutsideKeyWindow { .. } => "outside_key_window",
            VerifyError::NotEnoughApprovals { .. } => "not_enough_approvals",
            VerifyError::Statement(_) => "malformed_statement",
            VerifyError::DigestMismatch { .. } => "digest_mismatch",
            VerifyError::WrongTemplate { .. } => "wrong_template",
            VerifyError::WrongVersion { .. } => "wrong_version",
            VerifyError::BelowMinVersion { .. } => "below_min_version",
            VerifyError::Withdrawn(_) => "withdrawn",
            VerifyError::Rollback { .. } => "rollback",
            VerifyError::Equivocation { .. } => "equivocation",
            VerifyError::HistoryMismatch { .. } => "history_mismatch",
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

/// What a template is checked against.
#[derive(Debug, Clone, Copy)]
pub struct TemplateCheck<'a> {
    /// The template asked for; `None` accepts whichever the envelope names.
    pub template_id: Option<&'a str>,
    /// A pinned version; `None` asks for the active one, which may not fall below `high_water`.
    pub version: Option<u64>,
    /// The keys trusted to sign.
    pub keyring: &'a Keyring,
    /// The template's policy: minimum version, withdrawn versions, approvals.
    pub policy: &'a TemplatePolicy,
    /// The highest version accepted before, as the last verification returned it.
    pub high_water: Option<&'a HighWater>,
    /// Now: what expiry, revocation, key windows and skew are judged against.
    pub now: Timestamp,
    /// How far ahead of `now` a `signed_at` may be, for clocks that disagree.
    pub max_skew_seconds: u32,
}

impl<'a> TemplateCheck<'a> {
    /// A check against `keyring` and `policy` at `now`: any template id, the active version, no
    /// high-water mark, the default skew.
    pub fn new(keyring: &'a Keyring, policy: &'a TemplatePolicy, now: Timestamp) -> Self {
        TemplateCheck {
            template_id: None,
            version: None,
            keyring,
            policy,
            high_water: None,
            now,
            max_skew_seconds: DEFAULT_MAX_SKEW_SECONDS,
        }
    }
}

/// Verifies a signed template against one pinned key, at `now` (RFC 3339 UTC; required, the
/// refusal is `invalid_time` without it).
///
/// The simple form of [`verify`]: any template id, the active version, no high-water mark, and
/// one signature by `key` (valid at every time) enough.
pub fn verify_template(
    envelope_json: &[u8],
    template: &[u8],
    key: &PinnedKey,
    now: Option<&str>,
) -> Result<VerifiedTemplate, VerifyError> {
    // Without a time nothing about expiry or revocation can be said: refuse rather than skip.
    let now = now.ok_or_else(|| {
        VerifyError::InvalidTime("a time to verify at (`now`) is required".into())
    })?;
    let now = Timestamp::parse(now).map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
    let keyring = Keyring::single(key.clone());
    let policy = TemplatePolicy::default();
    let mut check = TemplateCheck::new(&keyring, &policy, now);
    check.max_skew_seconds = 0;
    verify(envelope_json, template, &check)
}

/// A signature that verified, and the key it verified under.
struct Verified {
    key: usize,
}

/// Verifies a signed template: signatures first, then the statement, then everything it claims.
pub fn verify(
    envelope_json: &[u8],
    template: &[u8],
    check: &TemplateCheck<'_>,
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
    check.policy.check()?;
    let now = check.now;
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
    if envelope.signatures.len() > MAX_ENVELOPE_SIGNATURES {
        return Err(VerifyError::TooManySignatures(envelope.signatures.len()));
    }

    let message = pae(&envelope.payload_type, &payload);
    let verified = verify_signatures(&envelope, &message, check.keyring)?;

    // Only now is the payload trusted enough to parse.
    let statement = Statement::parse(&payload)?;
    let actual = sha256_hex(template);
    if actual != statement.digest.sha256 {
        return Err(VerifyError::DigestMismatch {
            signed: statement.digest.sha256.clone(),
            actual,
        });
    }
    if let Some(expected) = check.template_id {
        if expected != statement.template_id {
            return Err(VerifyError::WrongTemplate {
                expected: expected.chars().take(128).collect(),
                found: statement.template_id.clone(),
            });
        }
    }
    if let Some(expected) = check.version {
        if expected != statement.version {
            return Err(VerifyError::WrongVersion {
                expected,
                found: statement.version,
            });
        }
    }
    // Both parsed already by Statement::check.
    let signed_at = Timestamp::parse(&statement.signed_at)
        .map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
    {
        let not_after = Timestamp::parse(&statement.not_after)
            .map_err(|e| VerifyError::InvalidTime(e.to_string()))?;
        if signed_at > now.saturating_add_seconds(i64::from(check.max_skew_seconds)) {
            return Err(VerifyError::NotYetValid {
                signed_at: statement.signed_at.clone(),
                now: now.to_string(),
            });
        }
        if now >= not_after {
            return Err(VerifyError::Expired {
                not_after: statement.not_after.clone(),
                now: now.to_string(),
            });
        }
    }
    let approvals = count_approvals(&verified, signed_at, check)?;
    let high_water = check_version(&statement, check)?;
    let text = String::from_utf8(template.to_vec())
        .map_err(|e| VerifyError::TemplateNotUtf8(e.utf8_error().valid_up_to()))?;
    Ok(VerifiedTemplate {
        statement,
        text,
        approvals,
        high_water,
    })
}

/// Each signature against the keys of its length, the key its `keyid` names first. Returns the
/// signatures that verified; fails when none did.
fn verify_signatures(
    envelope: &Envelope,
    message: &[u8],
    keyring: &Keyring,
) -> Result<Vec<Verified>, VerifyError> {
    let keys = keyring.keys();
    let mut verified = Vec::new();
    let mut first_malformed = None;
    let mut any_well_formed = false;
    let mut unknown_hint = None;
    let mut operations = 0;
    for (index, signature) in envelope.signatures.iter().enumerate() {
        let bytes = match STANDARD.decode(signature.sig.as_bytes()) {
            Ok(bytes) => bytes,
            Err(e) => {
                first_malformed.get_or_insert(VerifyError::MalformedSignature {
                    index,
                    reason: format!("not base64: {e}"),
                });
                continue;
            }
        };
        let hinted = keys
            .iter()
            .position(|k| k.key.fingerprint() == signature.keyid);
        let candidates: Vec<usize> = hinted
            .into_iter()
            .chain((0..keys.len()).filter(|&i| Some(i) != hinted))
            .filter(|&i| {
                keys.get(i)
                    .is_some_and(|k| k.key.signature_len() == bytes.len())
            })
            .collect();
        if candidates.is_empty() {
            let sizes: Vec<String> = keys
                .iter()
                .map(|k| k.key.signature_len().to_string())
                .collect();
            first_malformed.get_or_insert(VerifyError::MalformedSignature {
                index,
                reason: format!(
                    "{} bytes, but the pinned keys' signatures are {} bytes: truncated, or made by a key of another size",
                    bytes.len(),
                    if sizes.is_empty() { "no".to_string() } else { sizes.join(" or ") }
                ),
            });
            continue;
        }
        any_well_formed = true;
        // Only a hint written as a fingerprint says which key signed; others (a KMS alias, a
        // name) say nothing a failed signature could be blamed on.
        if hinted.is_none() && is_sha256_hex(&signature.keyid) {
            unknown_hint.get_or_insert_with(|| signature.keyid.chars().take(100).collect());
        }
        // An envelope is unauthenticated input: the RSA work one may cause is bounded.
        let budget = MAX_RSA_OPERATIONS.saturating_sub(operations);
        operations += candidates.len().min(budget);
        if let Some(key) = candidates
            .into_iter()
            .take(budget)
            .find(|&i| keys.get(i).is_some_and(|k| k.key.verifies(message, &bytes)))
        {
            verified.push(Verified { key });
        }
    }
    if !verified.is_empty() {
        return Ok(verified);
    }
    // A malformed entry is the answer only when every entry is malformed; otherwise a
    // well-formed signature failed, and that is what the caller must hear.
    Err(match (first_malformed, unknown_hint) {
        (Some(malformed), _) if !any_well_formed => malformed,
        (_, Some(keyid)) => VerifyError::UnknownKey { keyid },
        _ => VerifyError::BadSignature { keys: keys.len() },
    })
}

/// The distinct signers whose signatures count: not revoked, signing within their window, and
/// among the policy's approvers. Fails below the policy's threshold.
fn count_approvals(
    verified: &[Verified],
    signed_at: Timestamp,
    check: &TemplateCheck<'_>,
) -> Result<Vec<String>, VerifyError> {
    let now = check.now;
    let approvers = check.policy.distinct_approvers();
    let mut signers: Vec<usize> = Vec::new();
    let mut approvals = Vec::new();
    let mut refusal = None;
    for v in verified {
        let Some(key) = check.keyring.keys().get(v.key) else {
            continue;
        };
        let fingerprint = key.key.fingerprint();
        // Revoking a key revokes it under every record that holds its modulus.
        let revoked = check
            .keyring
            .keys()
            .iter()
            .filter(|k| k.signer == key.signer)
            .find(|k| k.is_revoked_at(now));
        if let Some(revoked) = revoked {
            refusal.get_or_insert_with(|| VerifyError::RevokedKey {
                fingerprint: revoked.key.fingerprint().to_string(),
                revoked_at: revoked
                    .revoked_at
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            });
            continue;
        }
        if !key.may_sign_at(signed_at) {
            refusal.get_or_insert_with(|| VerifyError::OutsideKeyWindow {
                fingerprint: fingerprint.to_string(),
                window: key.window(),
                signed_at: signed_at.to_string(),
            });
            continue;
        }
        // A key past its window is retired: what it signed is refused from then on, whatever
        // `signed_at` claims, since a retired key is no longer guarded as one in service.
        if let Some(until) = key.valid_until.filter(|until| now >= *until) {
            refusal.get_or_insert_with(|| VerifyError::ExpiredKey {
                fingerprint: fingerprint.to_string(),
                valid_until: until.to_string(),
            });
            continue;
        }
        if check.policy.approvals.is_some() && !approvers.contains(&fingerprint) {
            continue;
        }
        // One signer, one approval: the same modulus under two fingerprints counts once.
        if !signers.contains(&key.signer) {
            signers.push(key.signer);
            approvals.push(fingerprint.to_string());
        }
    }
    let need = check.policy.threshold();
    if approvals.len() >= need {
        return Ok(approvals);
    }
    Err(match refusal {
        Some(refusal) if approvals.is_empty() => refusal,
        _ => VerifyError::NotEnoughApprovals {
            have: approvals.len(),
            need,
        },
    })
}

/// The version against the policy and the high-water mark; returns the new mark.
fn check_version(
    statement: &Statement,
    check: &TemplateCheck<'_>,
) -> Result<HighWater, VerifyError> {
    let version = statement.version;
    let digest = &statement.digest.sha256;
    if version < check.policy.min_version {
        return Err(VerifyError::BelowMinVersion {
            version,
            min_version: check.policy.min_version,
        });
    }
    if check.policy.withdrawn.contains(&version) {
        return Err(VerifyError::Withdrawn(version));
    }
    let this = HighWater {
        version,
        digest: digest.clone(),
    };
    let Some(high) = check.high_water else {
        return Ok(this);
    };
    if version == high.version && *digest != high.digest {
        return Err(VerifyError::Equivocation {
            version,
            accepted: high.digest.clone(),
            offered: digest.clone(),
        });
    }
    if version < high.version {
        // An older version only when asked for by number; the mark stays where it was.
        return match check.version {
            Some(_) => Ok(high.clone()),
            None => Err(VerifyError::Rollback {
                version,
                highest: high.version,
            }),
        };
    }
    if version == high.version.saturating_add(1)
        && statement.prev_digest.as_ref() != Some(&high.digest)
    {
        return Err(VerifyError::HistoryMismatch {
            version,
            prev_digest: statement.prev_digest.clone().unwrap_or_default(),
            previous: high.version,
            accepted: high.digest.clone(),
        });
    }
    Ok(this)
}
