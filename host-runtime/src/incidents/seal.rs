//! Quarantined contexts sealed at rest: AES-256-GCM under the service's quarantine key, bound
//! to the item's id, so the database alone (a backup, a copied file) does not give away what
//! users wrote; a reviewer's view or release opens them.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::IncidentError;

/// What a sealed context starts with (a JSON value never does).
const PREFIX: &str = "sealed:v1:";

/// The key quarantined contexts are sealed with. Its id (the first 16 hex digits of the
/// SHA-256 of the key) is stored with each sealed context, so a wrong key is named, not tried.
pub struct QuarantineKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for QuarantineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuarantineKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl QuarantineKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IncidentError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| IncidentError::Config("not an AES-256 key".into()))?;
        let digest = guard_core::provenance::sha256_hex(bytes);
        Ok(QuarantineKey {
            id: digest.get(..16).unwrap_or(&digest).to_string(),
            key: LessSafeKey::new(key),
        })
    }

    /// A new random key and its 32 bytes (to keep).
    pub fn generate() -> Result<(Self, [u8; 32]), IncidentError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes)?;
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// The key in `path` (its 32 bytes in base64), made (readable by its owner only) when the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IncidentError> {
        let config = |what: String| IncidentError::Config(format!("`{}`: {what}", path.display()));
        match std::fs::read(path) {
            Ok(text) => {
                let text = text.get(..text.len().min(256)).unwrap_or_default();
                let bytes = STANDARD
                    .decode(String::from_utf8_lossy(text).trim())
                    .map_err(|_| config("not a quarantine key (base64 of 32 bytes)".into()))?;
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| config("not a quarantine key (base64 of 32 bytes)".into()))?;
                Self::from_bytes(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                let (key, bytes) = Self::generate()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    options.mode(0o600);
                }
                let mut file = options
                    .open(path)
                    .map_err(|e| config(format!("cannot create: {e}")))?;
                writeln!(file, "{}", STANDARD.encode(bytes))
                    .and_then(|()| file.sync_all())
                    .map_err(|e| config(format!("cannot write: {e}")))?;
                Ok(key)
            }
            Err(e) => Err(config(format!("cannot read: {e}"))),
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `context` sealed for the item `item_id`.
    pub(super) fn seal(&self, item_id: &str, context: &str) -> Result<String, IncidentError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce)?;
        let mut data = context.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(item_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| IncidentError::Random)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}:{}", self.id, STANDARD.encode(sealed)))
    }
}

/// The JSON of a stored context: as stored, or opened with `key`.
pub(super) fn open(
    stored: String,
    item_id: &str,
    key: Option<&QuarantineKey>,
) -> Result<String, IncidentError> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Ok(stored);
    };
    let (key_id, sealed) = rest
        .split_once(':')
        .ok_or_else(|| IncidentError::Corrupt(format!("the sealed context of {item_id}")))?;
    let key = key.ok_or_else(|| {
        IncidentError::Invalid(format!(
            "item {item_id} is sealed; opening it needs the quarantine key {key_id}"
        ))
    })?;
    if key.id != key_id {
        return Err(IncidentError::Invalid(format!(
            "item {item_id} is sealed under key {key_id}, not {}",
            key.id
        )));
    }
    let bytes = STANDARD
        .decode(sealed)
        .map_err(|_| IncidentError::Corrupt(format!("the sealed context of {item_id}")))?;
    if bytes.len() < NONCE_LEN {
        return Err(IncidentError::Corrupt(format!(
            "the sealed context of {item_id}"
        )));
    }
    let (nonce, data) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| IncidentError::Corrupt(format!("the sealed context of {item_id}")))?;
    let mut data = data.to_vec();
    let plain = key
        .key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(item_id.as_bytes()),
            &mut data,
        )
        .map_err(|_| {
            IncidentError::Corrupt(format!(
                "the sealed context of {item_id} does not open: it was changed or moved"
            ))
        })?;
    String::from_utf8(plain.to_vec())
        .map_err(|_| IncidentError::Corrupt(format!("the context of {item_id} is not text")))
}
