//! Sensitive data at rest, encrypted under keys the customer owns.
//!
//! Three layers of keys, so that no KMS call sits on the guarded-call path and erasing a user
//! destroys every copy of what they sent:
//!
//! 1. The **master key** lives in AWS KMS, an HSM over PKCS#11, or (for development) a local
//!    key file ([`MasterKey`]). It only ever wraps tenant keys.
//! 2. A **tenant key** is a data key from the master key (`GenerateDataKey`), bound to the
//!    tenant in the KMS encryption context, stored wrapped in the key store and cached in
//!    memory for a bounded time and number of uses. It wraps subject keys.
//! 3. A **subject key** is one user's own key, stored (wrapped by a tenant key) in the key
//!    store, a database kept apart from the data. Deleting it is the crypto-shredding of
//!    `sigil users erase`.
//!
//! Each record gets a fresh data key, wrapped under the subject key and stored beside the
//! record's AES-256-GCM ciphertext; both are bound to the record's context (tenant, user,
//! record kind, record id) as associated data, so a ciphertext moved to another row or tenant
//! does not decrypt.

pub mod master;

pub use master::{context_bytes, DataKeyBytes, KeyContext, MasterKey, NewDataKey, WrappedKey};

/// Why the vault could not encrypt, decrypt or manage keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The key backend cannot be reached (network, region outage, token missing). Nothing was
    /// stored in the clear.
    #[error("the key backend is unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the credentials or the operation.
    #[error("the key backend refused: {0}")]
    Denied(String),
    /// The master key (version) is disabled, retired or pending deletion.
    #[error("the master key is disabled: {0}")]
    Disabled(String),
    /// The named key does not exist.
    #[error("key not found: {0}")]
    NotFound(String),
    /// The key was destroyed with the user it belonged to: what it protected is gone for good.
    #[error("the key of this record was destroyed (the user was erased): {0}")]
    Shredded(String),
    /// A ciphertext or wrapped key does not open with the context it is read with: it was
    /// changed, or moved to another row, user or tenant.
    #[error("does not decrypt: {0}")]
    WrongContext(String),
    /// Stored data is not in the vault's format.
    #[error("corrupt sealed data: {0}")]
    Corrupt(String),
    /// A write would need a new key while the backend is down and the cached keys are spent.
    #[error("no usable data key: {0}")]
    NoKey(String),
    /// The vault or its backend is configured wrongly.
    #[error("vault configuration: {0}")]
    Config(String),
    /// The operation is not allowed (retiring the current key, a bad id).
    #[error("{0}")]
    Invalid(String),
    /// The key store failed.
    #[error("key store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

impl From<aws_lc_rs::error::Unspecified> for VaultError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        VaultError::Random
    }
}
