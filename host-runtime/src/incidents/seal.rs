//! Quarantined contexts at rest: sealed by the [`Vault`] under the user's own key, bound to the
//! item (tenant, user, `quarantine`, item id), so the database alone (a backup, a dump, a
//! copied file) gives away nothing users wrote, a context moved to another row does not open,
//! and erasing the user makes every copy unreadable. A reviewer's view or release opens them.

use guard_core::provenance::sha256_hex;

use super::IncidentError;
use crate::vault::{RecordContext, Vault, VaultError};

/// The record kind quarantined contexts are sealed as.
pub const QUARANTINE_KIND: &str = "quarantine";

/// A quarantined context, sealed before it reaches the incident database (and before its
/// transaction, so no key backend call holds the database's write lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedContext {
    /// The quarantined item's id (`qtn_…`), chosen when sealing: the id is part of what the
    /// ciphertext is bound to.
    pub item_id: String,
    /// The vault's sealed record.
    pub sealed: String,
    /// SHA-256 of the context's JSON, kept in the clear for the audit log.
    pub sha256: String,
    /// The context's length in bytes.
    pub len: usize,
}

impl From<VaultError> for IncidentError {
    fn from(e: VaultError) -> Self {
        IncidentError::Vault(e)
    }
}

/// `context` (JSON text) sealed for a new item of `tenant` and `subject`.
pub fn seal_context(
    vault: &Vault,
    tenant: &str,
    subject: &str,
    context: &str,
) -> Result<SealedContext, IncidentError> {
    let item_id = super::new_id("qtn")?;
    let sealed = vault.seal(
        &RecordContext {
            tenant,
            subject,
            kind: QUARANTINE_KIND,
            id: &item_id,
        },
        context.as_bytes(),
    )?;
    Ok(SealedContext {
        item_id,
        sealed,
        sha256: sha256_hex(context.as_bytes()),
        len: context.len(),
    })
}

/// The JSON of a stored context, opened with `vault`.
pub(super) fn open(
    stored: &str,
    item_id: &str,
    tenant: &str,
    subject: &str,
    vault: Option<&Vault>,
) -> Result<String, IncidentError> {
    let vault = vault.ok_or_else(|| {
        IncidentError::Invalid(format!(
            "item {item_id} is sealed; opening it needs the service's vault"
        ))
    })?;
    let text = vault.open_text(
        &RecordContext {
            tenant,
            subject,
            kind: QUARANTINE_KIND,
            id: item_id,
        },
        stored,
    )?;
    Ok(text.as_str().to_string())
}
