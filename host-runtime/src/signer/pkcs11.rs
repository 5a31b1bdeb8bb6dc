//! HSMs and tokens over PKCS#11 (`cryptoki`, which loads the token's module at run time).
//!
//! The token signs with `CKM_SHA256_RSA_PKCS` or `CKM_SHA256_RSA_PKCS_PSS` (it hashes the
//! message itself) when it offers them; otherwise with the bare `CKM_RSA_PKCS` over the SHA-256
//! DigestInfo, or `CKM_RSA_PKCS_PSS` over the digest. `CKM_RSA_PKCS` pads whatever it is given:
//! without the DigestInfo prefix its signatures would verify nowhere, so the prefix is added here.
//!
//! A module is loaded and initialized once per process and never finalized: PKCS#11 allows one
//! `C_Initialize` per process, and a finalize would pull the module from under every other signer.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::Error as P11Error;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::Ulong;
use guard_core::Scheme;

use super::{check_public_key, check_signature_len, der, fingerprint, sha256, SignError, Signer};
pub use crate::pkcs11_token::PinSource;
use crate::pkcs11_token::{self, TokenAccess, TokenError};

/// The DER prefix of a SHA-256 DigestInfo (RFC 8017, 9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Which signing mechanisms to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs11Mechanism {
    /// The hashing mechanisms when the token offers them, else the bare ones.
    Auto,
    /// `CKM_SHA256_RSA_PKCS` / `CKM_SHA256_RSA_PKCS_PSS`: the token hashes the message.
    Sha256Rsa,
    /// `CKM_RSA_PKCS` over the DigestInfo / `CKM_RSA_PKCS_PSS` over the digest.
    Rsa,
}

/// Which key on which token.
#[derive(Debug, Clone)]
pub struct Pkcs11Options {
    /// The token's PKCS#11 library.
    pub module: PathBuf,
    /// Token label; without it (and without `slot`), the module's only token.
    pub token: Option<String>,
    /// Slot id, for modules whose tokens share a label.
    pub slot: Option<u64>,
    /// The private key's CKA_LABEL.
    pub key_label: Option<String>,
    /// The private key's CKA_ID.
    pub key_id: Option<Vec<u8>>,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// The scheme to sign with.
    pub scheme: Scheme,
    /// Which mechanisms to use.
    pub mechanism: Pkcs11Mechanism,
}

/// A private key on a PKCS#11 token, in a logged-in session.
pub struct Pkcs11Signer {
    // A session may not be used from two threads at once.
    session: Mutex<Session>,
    key: ObjectHandle,
    public_der: Vec<u8>,
    scheme: Scheme,
    hashing: bool,
    name: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("key", &self.name)
            .field("fingerprint", &fingerprint(&self.public_der))
            .field("scheme", &self.scheme)
            .field("hashing", &self.hashing)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the module, finds the token, logs in with the PIN, finds the private key, reads its
    /// public key, and chooses the mechanism.
    pub fn open(options: &Pkcs11Options) -> Result<Self, SignError> {
        let pkcs11_token::OpenToken {
            pkcs11,
            slot,
            label: token,
            session,
        } = pkcs11_token::open_session(
            &TokenAccess {
                module: &options.module,
                token: options.token.as_deref(),
                slot: options.slot,
                pin: &options.pin,
            },
            false,
        )?;
        let name = match (&options.key_label, &options.key_id) {
            (Some(label), _) => format!("`{label}` on token `{token}`"),
            (None, Some(id)) => {
                format!("id {} on token `{token}`", guard_core::provenance::hex(id))
            }
            (None, None) => return Err(SignError::Config("name the key: a label or an id".into())),
        };
        let key = find_one(&session, ObjectClass::PRIVATE_KEY, options)
            .map_err(|e| with_name(e, &name))?
            .ok_or_else(|| SignError::NotFound(format!("no private key {name}")))?;
        let public_der = public_key(&session, key, options).map_err(|e| with_name(e, &name))?;
        check_public_key(&public_der, options.scheme)
            .map_err(|e| SignError::Key(format!("{name}: {e}")))?;
        let hashing = choose_mechanism(&pkcs11, slot, options)?;
        Ok(Pkcs11Signer {
            session: Mutex::new(session),
            key,
            public_der,
            scheme: options.scheme,
            hashing,
            name,
        })
    }

    /// Whether the token hashes the message (`CKM_SHA256_RSA_PKCS*`) rather than being handed
    /// the digest (`CKM_RSA_PKCS*`).
    pub fn hashes_on_token(&self) -> bool {
        self.hashing
    }
}

impl Signer for Pkcs11Signer {
    fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    fn scheme(&self) -> Scheme {
        self.scheme
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let pss = |hash_alg| {
            let s_len = Ulong::try_from(32usize)
                .map_err(|e| SignError::Backend(format!("salt length: {e}")))?;
            Ok::<_, SignError>(PkcsPssParams {
                hash_alg,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len,
            })
        };
        let digest = sha256(message);
        let (mechanism, data) = match (self.hashing, self.scheme) {
            (true, Scheme::RsassaPkcs1v15Sha256) => (Mechanism::Sha256RsaPkcs, message.to_vec()),
            (true, Scheme::RsassaPssSha256) => (
                Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256)?),
                message.to_vec(),
            ),
            (false, Scheme::RsassaPkcs1v15Sha256) => {
                let mut info = SHA256_DIGEST_INFO.to_vec();
                info.extend_from_slice(&digest);
                (Mechanism::RsaPkcs, info)
            }
            (false, Scheme::RsassaPssSha256) => (
                Mechanism::RsaPkcsPss(pss(MechanismType::SHA256)?),
                digest.to_vec(),
            ),
        };
        let session = self.session.lock().map_err(|_| {
            SignError::Backend(format!("the session of {} was poisoned", self.name))
        })?;
        let signature = session
            .sign(&mechanism, self.key, &data)
            .map_err(|e| p11_error(&format!("the token cannot sign with {}", self.name), e))?;
        check_signature_len(signature, &self.public_der, self.scheme)
    }
}

/// The one RSA object of `class` with the key's label and id; `None` when there is none.
fn find_one(
    session: &Session,
    class: ObjectClass,
    options: &Pkcs11Options,
) -> Result<Option<ObjectHandle>, SignError> {
    let mut template = vec![Attribute::Class(class), Attribute::KeyType(KeyType::RSA)];
    if let Some(label) = &options.key_label {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &options.key_id {
        template.push(Attribute::Id(id.clone()));
    }
    let objects = session
        .find_objects(&template)
        .map_err(|e| p11_error("cannot search the token", e))?;
    match objects.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(SignError::Config(format!(
            "{} keys match; name one with both `key=` and `id=`",
            many.len()
        ))),
    }
}

/// The SPKI of the key: from its public-key object, or from the private key's own modulus and
/// exponent when the token keeps no public object.
fn public_key(
    session: &Session,
    private: ObjectHandle,
    options: &Pkcs11Options,
) -> Result<Vec<u8>, SignError> {
    let object = find_one(session, ObjectClass::PUBLIC_KEY, options)?.unwrap_or(private);
    let attributes = session
        .get_attributes(
            object,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| p11_error("cannot read the public key", e))?;
    let (mut modulus, mut exponent) = (None, None);
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    match (modulus, exponent) {
        (Some(n), Some(e)) => Ok(der::rsa_spki(&n, &e)),
        _ => Err(SignError::Key(
            "the token does not reveal the key's modulus and public exponent".into(),
        )),
    }
}

/// Whether to use the hashing mechanisms, as asked and as the token offers.
fn choose_mechanism(
    pkcs11: &Pkcs11,
    slot: Slot,
    options: &Pkcs11Options,
) -> Result<bool, SignError> {
    let offered = pkcs11
        .get_mechanism_list(slot)
        .map_err(|e| p11_error("cannot list the token's mechanisms", e))?;
    let (hashing, bare) = match options.scheme {
        Scheme::RsassaPkcs1v15Sha256 => (MechanismType::SHA256_RSA_PKCS, MechanismType::RSA_PKCS),
        Scheme::RsassaPssSha256 => (
            MechanismType::SHA256_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
        ),
    };
    let has = |m: MechanismType| offered.contains(&m);
    match options.mechanism {
        Pkcs11Mechanism::Auto if has(hashing) => Ok(true),
        Pkcs11Mechanism::Auto if has(bare) => Ok(false),
        Pkcs11Mechanism::Sha256Rsa if has(hashing) => Ok(true),
        Pkcs11Mechanism::Rsa if has(bare) => Ok(false),
        _ => Err(SignError::Config(format!(
            "the token offers no mechanism for {} ({} / {} wanted)",
            options.scheme.as_str(),
            hashing,
            bare
        ))),
    }
}

fn with_name(error: SignError, name: &str) -> SignError {
    match error {
        SignError::Config(m) => SignError::Config(format!("{name}: {m}")),
        SignError::Key(m) => SignError::Key(format!("{name}: {m}")),
        other => other,
    }
}

/// A PKCS#11 failure, sorted by what the operator has to do about it.
fn p11_error(what: &str, error: P11Error) -> SignError {
    pkcs11_token::classify(what, error).into()
}

impl From<TokenError> for SignError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Module(m) | TokenError::Config(m) => SignError::Config(m),
            TokenError::PinFile { context, source } => SignError::Io { context, source },
            TokenError::NoToken(m) | TokenError::NotFound(m) => SignError::NotFound(m),
            TokenError::Denied(m) => SignError::Denied(m),
            TokenError::Key(m) => SignError::Key(m),
            TokenError::Unavailable(m) => SignError::Unavailable(m),
            TokenError::Backend(m) => SignError::Backend(m),
        }
    }
}
