//! Audit log entries: what a leaf of the log holds.
//!
//! A leaf's data is the entry serialized as compact JSON with fields in declaration order and
//! digests sorted by name (serde's output for this type), so it is one exact byte string; the leaf
//! hash is `SHA-256(0x00 || those bytes)`. Entries hold digests, role names and keyed pseudonyms,
//! never personal data, so erasing a user (destroying their pseudonym key) never requires changing
//! the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merkle::{leaf_hash, Hash};
use crate::provenance::{is_sha256_hex, sha256_hex, Envelope};
use crate::time::Timestamp;

/// Largest entry accepted, in bytes of JSON.
pub const MAX_ENTRY_BYTES: usize = 16 << 10;
/// Most digests one entry may carry.
pub const MAX_DIGESTS: usize = 16;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// The digest name under which a `template.published` entry names its envelope.
pub const ENVELOPE_DIGEST: &str = "envelope";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EntryKind {
    /// A signed template became available; digests name its envelope.
    #[serde(rename = "template.published")]
    TemplatePublished,
    /// A version was signed by its publisher and waits for the approvals its policy requires;
    /// digests name its envelope so far.
    #[serde(rename = "template.submitted")]
    TemplateSubmitted,
    /// A signing key was added, rotated or revoked.
    #[serde(rename = "key.rotated")]
    KeyRotated,
    /// A reviewer approved a template (their signature over its envelope).
    #[serde(rename = "approval")]
    Approval,
    /// The guard refused a template or a call.
    #[serde(rename = "refusal")]
    Refusal,
    /// An item was quarantined, released or rejected.
    #[serde(rename = "quarantine")]
    Quarantine,
    /// An incident was opened or updated.
    #[serde(rename = "incident")]
    Incident,
    /// An administrative change (roles, configuration).
    #[serde(rename = "admin")]
    Admin,
}

impl EntryKind {
    /// The name written in entries.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::TemplatePublished => "template.published",
            EntryKind::TemplateSubmitted => "template.submitted",
            EntryKind::KeyRotated => "key.rotated",
            EntryKind::Approval => "approval",
            EntryKind::Refusal => "refusal",
            EntryKind::Quarantine => "quarantine",
            EntryKind::Incident => "incident",
            EntryKind::Admin => "admin",
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0: the leaf index.
    pub seq: u64,
    /// When, RFC 3339 UTC to the second (`2026-12-03T12:00:00Z`).
    pub time: String,
    /// What happened.
    pub kind: EntryKind,
    /// Who: `role:<role>` (`admin`, `publisher`, `reviewer`, `scanner`, `auditor`, `system`) or a
    /// keyed pseudonym `psn:<32 hex digits>`.
    pub actor: String,
    /// What it was about, when that is not personal: a template id and version, a key
    /// fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Hex SHA-256 digests of the records involved, by name (`envelope`, `template`, ...).
    pub digests: BTreeMap<String, String>,
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Not JSON of the entry's shape.
    #[error("entry is malformed: {0}")]
    Malformed(String),
    /// A field has a value entries may not hold.
    #[error("entry field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Valid, but not in the one serialization leaves use.
    #[error("entry is not in canonical form")]
    NotCanonical,
}

const ROLES: [&str; 6] = [
    "admin",
    "publisher",
    "reviewer",
    "scanner",
    "auditor",
    "system",
];

/// Whether `actor` is a role name or a keyed pseudonym.
pub fn is_actor(actor: &str) -> bool {
    if let Some(role) = actor.strip_prefix("role:") {
        return ROLES.contains(&role);
    }
    actor
        .strip_prefix("psn:")
        .is_some_and(|p| p.len() == 32 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn is_digest_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
}

impl AuditEntry {
    /// Checks every field.
    pub fn check(&self) -> Result<(), EntryError> {
        let invalid = |field, reason: &str| EntryError::Invalid {
            field,
            reason: reason.to_string(),
        };
        match Timestamp::parse(&self.time) {
            Ok(t) if t.to_string() == self.time => {}
            _ => return Err(invalid("time", "not RFC 3339 UTC to the second")),
        }
        if !is_actor(&self.actor) {
            return Err(invalid(
                "actor",
                "not `role:<role>` or `psn:<32 hex digits>`",
            ));
        }
        if let Some(subject) = &self.subject {
            if subject.is_empty()
                || subject.len() > MAX_SUBJECT_BYTES
                || !subject.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(invalid(
                    "subject",
                    "must be 1 to 256 printable ASCII characters",
                ));
            }
        }
        if self.digests.len() > MAX_DIGESTS {
            return Err(invalid("digests", "more than 16"));
        }
        for (name, value) in &self.digests {
            if !is_digest_name(name) || !is_sha256_hex(value) {
                return Err(invalid(
                    "digests",
                    "names are 1 to 32 of `a-z0-9_.-`, values lowercase hex SHA-256",
                ));
            }
        }
        Ok(())
    }

    /// The leaf data: the entry's one serialization.
    pub fn to_leaf_bytes(&self) -> Result<Vec<u8>, EntryError> {
        self.check()?;
        let bytes = serde_json::to_vec(self).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::Malformed(format!(
                "{} bytes is over the {MAX_ENTRY_BYTES}-byte limit",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Parses leaf data, which must be exactly the entry's serialization.
    pub fn from_leaf_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::Malformed(format!(
                "{} bytes is over the {MAX_ENTRY_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let entry: AuditEntry =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if entry.to_leaf_bytes()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The leaf hash: `SHA-256(0x00 || leaf data)`.
    pub fn leaf_hash(&self) -> Result<Hash, EntryError> {
        Ok(leaf_hash(&self.to_leaf_bytes()?))
    }
}

/// The digest a `template.published` entry records for an envelope: hex SHA-256 of the
/// envelope's compact JSON (`payloadType`, `payload`, `signatures` in that order, as this crate
/// serializes an [`Envelope`]), so a pretty-printed copy of the same envelope has the same digest.
pub fn envelope_digest(envelope: &Envelope) -> Result<String, EntryError> {
    let bytes = serde_json::to_vec(envelope).map_err(|e| EntryError::Malformed(e.to_string()))?;
    Ok(sha256_hex(&bytes))
}
