//! The keyring: pinned public keys, each with the window in which it may sign.
//!
//! Keys are identified by the SHA-256 of their SubjectPublicKeyInfo DER. A record's `keyid` is
//! only a hint for which key to try first. Two records holding one RSA modulus (say, under the
//! rsaEncryption and the RSASSA-PSS algorithm ids) are one signer: approvals count signers, not
//! fingerprints.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{is_sha256_hex, PinnedKey, Scheme};
use crate::time::Timestamp;

/// Most keys a keyring may hold; each signature is tried against at most this many.
pub const MAX_KEYRING_KEYS: usize = 64;
/// Largest keyring accepted, in bytes of JSON.
pub const MAX_KEYRING_BYTES: usize = 1 << 20;

/// Why a keyring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// Not JSON of the keyring's shape.
    #[error("keyring is malformed: {0}")]
    Malformed(String),
    /// One key record is unusable.
    #[error("keyring key {index} is invalid: {reason}")]
    Key {
        /// Position in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Too many keys.
    #[error("keyring has {0} keys; at most {MAX_KEYRING_KEYS} are accepted")]
    TooManyKeys(usize),
}

/// One key record as written in a keyring file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct KeyRecord {
    /// Hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub fingerprint: String,
    /// The SubjectPublicKeyInfo DER, base64.
    pub spki: String,
    /// The scheme the key signs with.
    pub scheme: Scheme,
    /// From when its signatures count (RFC 3339 UTC).
    pub valid_from: String,
    /// Until when it may sign; statements signed at or after this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// From when it is revoked: from then on none of its signatures counts, whenever made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
struct KeyringFile {
    keys: Vec<KeyRecord>,
}

/// A pinned key with its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub(super) key: PinnedKey,
    pub(super) valid_from: Option<Timestamp>,
    pub(super) valid_until: Option<Timestamp>,
    pub(super) revoked_at: Option<Timestamp>,
    /// Index of the first key in the ring with the same modulus: the signer's identity.
    pub(super) signer: usize,
}

impl TrustedKey {
    /// The pinned key.
    pub fn key(&self) -> &PinnedKey {
        &self.key
    }

    /// Whether the key is revoked at `now`.
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Whether a statement signed at `signed_at` falls within the key's window.
    pub fn may_sign_at(&self, signed_at: Timestamp) -> bool {
        self.valid_from.is_none_or(|from| from <= signed_at)
            && self.valid_until.is_none_or(|until| signed_at < until)
    }

    /// The window, for messages.
    pub(super) fn window(&self) -> String {
        let show = |t: Option<Timestamp>| t.map_or_else(|| "…".to_string(), |t| t.to_string());
        format!("[{}, {})", show(self.valid_from), show(self.valid_until))
    }
}

/// The keys a verifier trusts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
}

impl Keyring {
    /// One key, valid at every time and never revoked: the single pinned key of simple set-ups.
    pub fn single(key: PinnedKey) -> Self {
        Keyring {
            keys: vec![TrustedKey {
                key,
                valid_from: None,
                valid_until: None,
                revoked_at: None,
                signer: 0,
            }],
        }
    }

    /// Parses a keyring: `{keys: [{fingerprint, spki, scheme, valid_from, valid_until?,
    /// revoked_at?}]}`. Every fingerprint must be the SHA-256 of its key, and no key may appear
    /// twice.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyringError> {
        if bytes.len() > MAX_KEYRING_BYTES {
            return Err(KeyringError::Malformed(format!(
                "{} bytes is over the {MAX_KEYRING_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let file: KeyringFile =
            serde_json::from_slice(bytes).map_err(|e| KeyringError::Malformed(e.to_string()))?;
        Self::from_records(&file.keys)
    }

    /// A keyring from its records, checked as [`Keyring::from_json`] checks them.
    pub fn from_records(records: &[KeyRecord]) -> Result<Self, KeyringError> {
        if records.len() > MAX_KEYRING_KEYS {
            return Err(KeyringError::TooManyKeys(records.len()));
        }
        let mut keys: Vec<TrustedKey> = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let fail = |reason: String| KeyringError::Key { index, reason };
            if !is_sha256_hex(&record.fingerprint) {
                return Err(fail(
                    "`fingerprint` must be 64 lower-case hex digits".into(),
                ));
            }
            let der = STANDARD
                .decode(record.spki.as_bytes())
                .map_err(|e| fail(format!("`spki` is not base64 DER: {e}")))?;
            let key = PinnedKey::from_spki_der(&der, record.scheme)
                .map_err(|e| fail(format!("`spki`: {e}")))?;
            if key.fingerprint() != record.fingerprint {
                return Err(fail(format!(
                    "`fingerprint` `{}` is not the SHA-256 of its key (`{}`)",
                    record.fingerprint,
                    key.fingerprint()
                )));
            }
            if keys
                .iter()
                .any(|k| k.key.fingerprint() == key.fingerprint())
            {
                return Err(fail(format!(
                    "key `{}` is listed twice",
                    record.fingerprint
                )));
            }
            let time = |field: &str, value: &str| {
                Timestamp::parse(value).map_err(|e| fail(format!("`{field}`: {e}")))
            };
            let valid_from = time("valid_from", &record.valid_from)?;
            let valid_until = match &record.valid_until {
                Some(v) => Some(time("valid_until", v)?),
                None => None,
            };
            if valid_until.is_some_and(|until| until <= valid_from) {
                return Err(fail("`valid_until` must be later than `valid_from`".into()));
            }
            let revoked_at = match &record.revoked_at {
                Some(v) => Some(time("revoked_at", v)?),
                None => None,
            };
            let signer = keys
                .iter()
                .find(|k| k.key.key == key.key)
                .map_or(index, |k| k.signer);
            keys.push(TrustedKey {
                key,
                valid_from: Some(valid_from),
                valid_until,
                revoked_at,
                signer,
            });
        }
        Ok(Keyring { keys })
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The key with this fingerprint.
    pub fn get(&self, fingerprint: &str) -> Option<&TrustedKey> {
        self.keys
            .iter()
            .find(|k| k.key.fingerprint() == fingerprint)
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

crate::json::objects_only!(KeyRecord);

crate::json::objects_only_deserialize!(KeyringFile);
