//! Master keys: what wraps the data keys the vault encrypts with. A master key never leaves its
//! backend (AWS KMS, an HSM over PKCS#11); only the local development backend holds one in a
//! file. Every data key is wrapped with a context (the KMS encryption context) that must be
//! given again to unwrap it, so a wrapped key moved to another tenant does not unwrap.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::VaultError;

/// What a data key is bound to: the KMS encryption context, and the associated data of the
/// wrap on backends that do the wrapping themselves (in the canonical form of
/// [`context_bytes`]).
pub type KeyContext = BTreeMap<String, String>;

/// The 32 bytes of an AES-256 data key, zeroed when dropped.
pub type DataKeyBytes = Zeroizing<[u8; 32]>;

/// A data key as its master key wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The master key (or key version) that wrapped it: a KMS key ARN, an HSM key's label and
    /// version, a local key's id.
    pub master_key_id: String,
    /// The backend's ciphertext of the key.
    pub blob: Vec<u8>,
}

/// A new data key: its bytes, to use now, and its wrapped form, to store.
pub struct NewDataKey {
    /// The key itself.
    pub plaintext: DataKeyBytes,
    /// The key wrapped under the current master key.
    pub wrapped: WrappedKey,
}

impl std::fmt::Debug for NewDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDataKey")
            .field("wrapped", &self.wrapped)
            .finish_non_exhaustive()
    }
}

/// A backend that wraps and unwraps data keys under a customer master key.
///
/// Implementations are synchronous and may block on a network or a token (async code calls
/// them from blocking threads). None of them panics; a backend that cannot be reached answers
/// [`VaultError::Unavailable`], so callers can tell an outage from a refusal.
pub trait MasterKey: Send + Sync + std::fmt::Debug {
    /// What the key is, for logs and `sigil keys status`: backend and key, never secrets.
    fn describe(&self) -> String;

    /// The id new data keys are wrapped under now (what [`WrappedKey::master_key_id`] of a
    /// fresh key will be).
    fn current_key_id(&self) -> Result<String, VaultError>;

    /// A new random data key, wrapped under the current master key with `context`
    /// (`GenerateDataKey` on KMS).
    fn generate_data_key(&self, context: &KeyContext) -> Result<NewDataKey, VaultError>;

    /// The data key `wrapped` holds, if it was wrapped with this same `context`.
    fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError>;

    /// `wrapped` wrapped again under the current master key, with the same context, without
    /// the key leaving the backend where the backend allows it (`ReEncrypt` on KMS). The data
    /// it protects is not touched.
    fn rewrap(&self, wrapped: &WrappedKey, context: &KeyContext) -> Result<WrappedKey, VaultError>;

    /// Makes a new master key (version) current and returns its id. Keys wrapped under the
    /// previous one still unwrap until it is retired.
    fn rotate(&self) -> Result<String, VaultError>;

    /// Retires the master key (version) `key_id`: nothing wrapped under it unwraps afterwards
    /// (KMS: the key is disabled; HSM and local: the version is removed). The current key
    /// cannot be retired.
    fn retire(&self, key_id: &str) -> Result<(), VaultError>;

    /// How many calls this backend has made to a KMS or token since it was opened (for the
    /// benchmark's calls per thousand guarded calls); `0` for the local key file.
    fn backend_calls(&self) -> u64 {
        0
    }

    /// How many times the backend switched region (to a replica, or back to the primary)
    /// since it was opened; `0` for single-region backends.
    fn failovers(&self) -> u64 {
        0
    }
}

/// `context` in one canonical byte form, used as associated data where a backend wraps with
/// AES-GCM itself (HSM, local key): each name and value length-prefixed, in name order, so no
/// two contexts share a form.
pub fn context_bytes(context: &KeyContext) -> Vec<u8> {
    let mut out = b"sigil-key-context-v1".to_vec();
    for (name, value) in context {
        for part in [name.as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_forms_are_unambiguous() {
        let a: KeyContext = [("ab".to_string(), "c".to_string())].into();
        let b: KeyContext = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(context_bytes(&a), context_bytes(&b));
        assert_ne!(context_bytes(&a), context_bytes(&KeyContext::new()));
    }
}
