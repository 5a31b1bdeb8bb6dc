//! Signing backends behind one trait: a local key file for development and tests
//! ([`LocalSigner`]), AWS KMS ([`AwsKmsSigner`]) and HSMs over PKCS#11 ([`Pkcs11Signer`]).
//!
//! Every backend signs the DSSE pre-authentication encoding of an envelope with RSASSA-PKCS1-v1_5
//! or RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt), so one verifier checks them all. KMS and
//! HSM backends are handed the SHA-256 of that encoding (or hash it on the token), never the
//! encoding itself, so no template size meets a backend's message limit. A backend is named by a
//! [`SignerSpec`] and opened with [`open`]:
//!
//! ```no_run
//! use host_runtime::signer::{self, Signer, SignerSpec};
//!
//! let spec: SignerSpec = "aws-kms:alias/sigil-templates;region=eu-west-1".parse()?;
//! let signer = signer::open(&spec)?;
//! let signature = signer.sign(b"the DSSE pre-authentication encoding")?;
//! assert_eq!(signer.key_id(), signer::fingerprint(signer.public_key_der()));
//! # Ok::<(), host_runtime::signer::SignError>(())
//! ```
//!
//! Opening a backend checks its public key with the verifier's own rules
//! ([`guard_core::PinnedKey::from_spki`]: RSA 2048 to 4096 bits, exponent 65537), so a key the
//! guard would refuse is refused before anything is signed with it.

mod aws_kms;
mod der;
mod local;
mod pkcs11;
pub(crate) mod spec;

pub use aws_kms::{AwsKmsSigner, KmsKey, KmsOptions, KmsReplica, KmsRotation};
pub use local::{public_pem, KeyFiles, LocalSigner};
pub use pkcs11::{PinSource, Pkcs11Mechanism, Pkcs11Options, Pkcs11Signer};
pub use spec::{SignerSpec, DEFAULT_PIN_ENV};

use guard_core::Scheme;
use sha2::{Digest as _, Sha256};

/// Why signing, or opening a signer, failed.
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
    /// A signer spec (`--signer`) cannot be parsed.
    #[error("signer spec is invalid: {0}")]
    Spec(String),
    /// The backend is not configured well enough to be used (no region, no module, no PIN).
    #[error("signer is not configured: {0}")]
    Config(String),
    /// The named key, alias or token does not exist.
    #[error("signing key not found: {0}")]
    NotFound(String),
    /// The key exists but may not sign now (disabled, pending deletion, not a signing key).
    #[error("signing key is disabled: {0}")]
    Disabled(String),
    /// The backend refused the credentials (wrong PIN, access denied, invalid AWS credentials).
    #[error("signer refused the credentials: {0}")]
    Denied(String),
    /// The backend could not be reached in time.
    #[error("signer is unreachable: {0}")]
    Unavailable(String),
}

/// A key that signs DSSE pre-authentication encodings.
///
/// Implementations are synchronous and may block on a network or a token: async code (the HTTP
/// service) calls them through `tokio::task::spawn_blocking`. None of them panics or deadlocks
/// when called from inside a tokio runtime.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// The key's SubjectPublicKeyInfo, DER.
    fn public_key_der(&self) -> &[u8];
    /// The scheme its signatures use.
    fn scheme(&self) -> Scheme;
    /// A hint for the envelope's `keyid` (verifiers match by fingerprint, not by this).
    fn key_id(&self) -> String {
        fingerprint(self.public_key_der())
    }
    /// Signs `message` under [`Signer::scheme`]. Backends that sign digests (KMS, HSM) sign its
    /// SHA-256; the signature is the same kind either way and verifies over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Hex SHA-256 of a SubjectPublicKeyInfo DER: the key's fingerprint in keyrings.
pub fn fingerprint(spki_der: &[u8]) -> String {
    guard_core::provenance::sha256_hex(spki_der)
}

/// Opens the backend a spec names: reads the key file, asks KMS for the public key, or logs in to
/// the token, and checks the key as the verifier would.
pub fn open(spec: &SignerSpec) -> Result<Box<dyn Signer>, SignError> {
    Ok(match spec {
        SignerSpec::Local { path, scheme } => {
            Box::new(LocalSigner::from_pem_file(path)?.with_scheme(*scheme)?)
        }
        SignerSpec::AwsKms(options) => Box::new(AwsKmsSigner::open(options)?),
        SignerSpec::Pkcs11(options) => Box::new(Pkcs11Signer::open(options)?),
    })
}

/// The SHA-256 of a message: what digest-signing backends are handed.
pub(crate) fn sha256(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

/// Checks a backend's public key as the verifier would and returns the key's size in bits.
pub(crate) fn check_public_key(spki_der: &[u8], scheme: Scheme) -> Result<usize, SignError> {
    let pinned = guard_core::PinnedKey::from_spki(spki_der, scheme)
        .map_err(|e| SignError::Key(format!("the verifier would refuse this key: {e}")))?;
    Ok(pinned.signature_len() * 8)
}

/// A signature must be exactly as long as the modulus; anything else would be refused later.
pub(crate) fn check_signature_len(
    signature: Vec<u8>,
    spki_der: &[u8],
    scheme: Scheme,
) -> Result<Vec<u8>, SignError> {
    let expected = check_public_key(spki_der, scheme)? / 8;
    if signature.len() != expected {
        return Err(SignError::Backend(format!(
            "the backend returned a {}-byte signature; the key's signatures are {expected} bytes",
            signature.len()
        )));
    }
    Ok(signature)
}
