//! Signing backends behind one trait. The local backend is for development; KMS and PKCS#11
//! backends sign the same envelopes.

mod local;

pub use local::LocalSigner;

use guard_core::Scheme;

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key could not be read or is not an acceptable RSA key.
    #[error("signing key is unusable: {0}")]
    Key(String),
    /// The backend refused or failed to sign.
    #[error("signing failed: {0}")]
    Backend(String),
    /// Reading or writing key files failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A key that signs DSSE pre-authentication encodings.
pub trait Signer: Send + Sync {
    /// The key's SubjectPublicKeyInfo, DER.
    fn public_key_der(&self) -> &[u8];
    /// The scheme its signatures use.
    fn scheme(&self) -> Scheme;
    /// A hint for the envelope's `keyid` (verifiers match by fingerprint, not by this).
    fn key_id(&self) -> String {
        fingerprint(self.public_key_der())
    }
    /// Signs `message`. Backends that sign digests (KMS, HSM) sign its SHA-256.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Hex SHA-256 of a SubjectPublicKeyInfo DER: the key's fingerprint in keyrings.
pub fn fingerprint(spki_der: &[u8]) -> String {
    guard_core::provenance::sha256_hex(spki_der)
}
