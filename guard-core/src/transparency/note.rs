//! C2SP signed notes (<https://c2sp.org/signed-note>) carrying RSA signatures.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key ID || signature)>`. The signed message is the text, final newline
//! included.
//!
//! The spec assigns type bytes to Ed25519 and ECDSA, not RSA, and reserves `0xff` for types it
//! does not name, followed by a longer identifier. Sigil's keys are RSA (KMS, HSM or local), so:
//!
//! - the signature is the RSA signature over the note text, with the pinned key's scheme
//!   (RSASSA-PKCS1-v1_5-SHA256 or RSASSA-PSS-SHA256), exactly as long as the key's modulus;
//! - the key ID is the first four bytes, big-endian, of
//!   `SHA-256(key name || 0x0A || 0xFF || "sigil-rsa/" || scheme || 0x0A || SHA-256(SPKI DER))`,
//!   where `scheme` is `rsassa-pkcs1v15-sha256` or `rsassa-pss-sha256`. The key is named by its
//!   fingerprint (the keyring's), and the scheme is part of the ID, so one RSA key used with two
//!   schemes has two IDs and a signature is never checked under a scheme it was not made for.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::provenance::{PinnedKey, Scheme};

/// Largest note accepted, in bytes. Sixteen RSA-4096 signatures fit several times over.
pub const MAX_NOTE_BYTES: usize = 64 << 10;
/// Most signature lines accepted (the spec asks for at least 16).
pub const MAX_NOTE_SIGNATURES: usize = 32;
/// The signature type byte: "types without an identifier byte assigned by this specification".
pub const SIGNATURE_TYPE: u8 = 0xff;

const LINE_PREFIX: &str = "\u{2014} ";

/// Why a note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes; the limit is {MAX_NOTE_BYTES}")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("note is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    /// A control character other than newline (a carriage return, a tab, a NUL).
    #[error("note has a control character at byte {0}")]
    ControlCharacter(usize),
    /// The text does not end in a newline, or there is no blank line before the signatures.
    #[error("note is malformed: {0}")]
    Malformed(&'static str),
    /// A signature line is not `— name base64`.
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignature {
        /// 1-based, among the signature lines.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than [`MAX_NOTE_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_NOTE_SIGNATURES} signatures")]
    TooManySignatures,
    /// A key name is empty or has a space or a `+`.
    #[error("key name `{0}` is empty or has a space or `+`")]
    InvalidKeyName(String),
    /// The pinned key cannot name itself (its fingerprint is not SHA-256 hex).
    #[error("pinned key is unusable: {0}")]
    InvalidKey(&'static str),
    /// No signature is by a key the verifier knows.
    #[error("no signature is by a known key")]
    UnknownSigners,
    /// A signature by a known key does not verify; the whole note is refused.
    #[error("the signature by `{name}` does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
    },
}

/// Whether `name` can be a note key name.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The key ID of an RSA key under Sigil's note signature type (see the module docs).
pub fn rsa_key_id(name: &str, scheme: Scheme, spki_der: &[u8]) -> u32 {
    key_id_from_fingerprint(name, scheme, &Sha256::digest(spki_der).into())
}

fn key_id_from_fingerprint(name: &str, scheme: Scheme, fingerprint: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0x0a, SIGNATURE_TYPE]);
    hasher.update(b"sigil-rsa/");
    hasher.update(scheme.as_str().as_bytes());
    hasher.update([0x0a]);
    hasher.update(fingerprint);
    let digest = hasher.finalize();
    let mut id = [0u8; 4];
    for (out, byte) in id.iter_mut().zip(digest.iter()) {
        *out = *byte;
    }
    u32::from_be_bytes(id)
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature by the key `name` with ID `key_id`.
    pub fn new(name: &str, key_id: u32, signature: Vec<u8>) -> Result<Self, NoteError> {
        if !is_key_name(name) {
            return Err(NoteError::InvalidKeyName(name.chars().take(100).collect()));
        }
        Ok(NoteSignature {
            name: name.to_string(),
            key_id,
            signature,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes (after the key ID).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line, newline included.
    pub fn line(&self) -> String {
        let mut blob = self.key_id.to_be_bytes().to_vec();
        blob.extend_from_slice(&self.signature);
        format!("{LINE_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A signed note, parsed but not verified: its text must not be used before [`Note::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks size, UTF-8 and control characters.
fn check_text(bytes: &[u8]) -> Result<&str, NoteError> {
    if bytes.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| NoteError::NotUtf8(e.valid_up_to()))?;
    if let Some(at) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter(at));
    }
    Ok(text)
}

impl Note {
    /// A note of `text` (which must end in a newline) and signatures.
    pub fn new(text: &str, signatures: Vec<NoteSignature>) -> Result<Self, NoteError> {
        check_text(text.as_bytes())?;
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("text does not end in a newline"));
        }
        if signatures.len() > MAX_NOTE_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// Parses a note.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let all = check_text(bytes)?;
        if !all.ends_with('\n') {
            return Err(NoteError::Malformed("note does not end in a newline"));
        }
        // The text ends at the last blank line: text may hold blank lines, signatures cannot.
        let split = all
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (Some(text), Some(block)) = (all.get(..split + 1), all.get(split + 2..)) else {
            return Err(NoteError::Malformed("no blank line before the signatures"));
        };
        let mut signatures = Vec::new();
        for (n, line) in block.split_terminator('\n').enumerate() {
            let line_no = n + 1;
            if signatures.len() == MAX_NOTE_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let bad = |reason| NoteError::MalformedSignature {
                line: line_no,
                reason,
            };
            let rest = line
                .strip_prefix(LINE_PREFIX)
                .ok_or(bad("does not start with an em dash and a space"))?;
            let (name, encoded) = rest
                .split_once(' ')
                .ok_or(bad("no space between key name and signature"))?;
            if !is_key_name(name) {
                return Err(bad("key name is empty or has a space or `+`"));
            }
            let blob = STANDARD
                .decode(encoded)
                .map_err(|_| bad("signature is not base64"))?;
            let (Some(id), Some(signature)) = (blob.get(..4), blob.get(4..)) else {
                return Err(bad("signature is shorter than its key ID"));
            };
            if signature.is_empty() {
                return Err(bad("signature is empty"));
            }
            let mut id_bytes = [0u8; 4];
            id_bytes.copy_from_slice(id);
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: u32::from_be_bytes(id_bytes),
                signature: signature.to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signature lines"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The text, unverified. Use only after [`Note::verify`] succeeded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The note as it is written: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
        }
        out
    }

    /// Checks the signatures by known keys. Lines by unknown keys are ignored (they may be
    /// witnesses or a rotated key); one failing signature by a known key refuses the note; at
    /// least one must verify. Returns the names of the keys that verified.
    pub fn verify(&self, verifiers: &[NoteVerifier]) -> Result<Vec<String>, NoteError> {
        let mut verified = Vec::new();
        for signature in &self.signatures {
            for verifier in verifiers
                .iter()
                .filter(|v| v.name == signature.name && v.key_id == signature.key_id)
            {
                if signature.signature.len() != verifier.key.signature_len()
                    || !verifier
                        .key
                        .verifies(self.text.as_bytes(), &signature.signature)
                {
                    return Err(NoteError::BadSignature {
                        name: signature.name.clone(),
                    });
                }
                verified.push(signature.name.clone());
            }
        }
        if verified.is_empty() {
            return Err(NoteError::UnknownSigners);
        }
        Ok(verified)
    }
}

/// A key trusted to sign notes under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: PinnedKey,
}

impl NoteVerifier {
    /// The pinned `key`, signing under `name` (for a log, its origin).
    pub fn new(name: &str, key: PinnedKey) -> Result<Self, NoteError> {
        if !is_key_name(name) {
            return Err(NoteError::InvalidKeyName(name.chars().take(100).collect()));
        }
        let fingerprint = decode_hex32(key.fingerprint()).ok_or(NoteError::InvalidKey(
            "its fingerprint is not 32 bytes of hex",
        ))?;
        Ok(NoteVerifier {
            name: name.to_string(),
            key_id: key_id_from_fingerprint(name, key.scheme(), &fingerprint),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID signature lines must carry.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The pinned key.
    pub fn key(&self) -> &PinnedKey {
        &self.key
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (out, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        let digit = |b: u8| char::from(b).to_digit(16);
        let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
            return None;
        };
        *out = u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?;
    }
    Some(out)
}
