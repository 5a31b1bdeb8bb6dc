//! Checkpoints (<https://c2sp.org/tlog-checkpoint>): a log's signed tree head as note text.
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <root hash, base64>
//! [<extension line>...]
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::merkle::Hash;
use super::note::{Note, NoteError, NoteVerifier};

/// Longest origin line accepted, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// Why a checkpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signed note around it is refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The text is not a checkpoint body.
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    /// Signed by the right key, but for another log.
    #[error("checkpoint is for origin `{found}`, not `{expected}`")]
    OriginMismatch {
        /// The verifier's name.
        expected: String,
        /// The checkpoint's origin.
        found: String,
    },
}

/// A tree head: which log, how many leaves, and their root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity; also the name of the key that signs it.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root of those leaves.
    pub root: Hash,
    /// Opaque extension lines, each non-empty (not recommended; Sigil writes none).
    pub extensions: Vec<String>,
}

fn malformed(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(reason.into())
}

/// A tree size: ASCII digits, no sign, no leading zero except `0` itself, within `u64`.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("tree size is not a decimal number"));
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(malformed("tree size has a leading zero"));
    }
    line.parse()
        .map_err(|_| malformed("tree size does not fit in 64 bits"))
}

/// A 32-byte hash in standard, padded base64.
pub fn parse_hash(text: &str) -> Option<Hash> {
    // 44 characters encode 32 bytes; longer input is refused before decoding.
    if text.len() != 44 {
        return None;
    }
    let bytes = STANDARD.decode(text).ok()?;
    Hash::try_from(bytes.as_slice()).ok()
}

impl Checkpoint {
    /// Parses the note text of a checkpoint.
    ///
    /// ```
    /// use guard_core::transparency::{empty_root, Checkpoint};
    /// let cp = Checkpoint::parse(b"example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").unwrap();
    /// assert_eq!((cp.size, cp.root), (0, empty_root()));
    /// assert!(Checkpoint::parse(b"example.com/log\n00\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").is_err());
    /// ```
    pub fn parse(text: &[u8]) -> Result<Self, CheckpointError> {
        if text.len() > super::note::MAX_NOTE_BYTES {
            return Err(malformed("checkpoint is too large"));
        }
        let text = std::str::from_utf8(text)
            .map_err(|e| malformed(format!("not valid UTF-8 (byte {})", e.valid_up_to())))?;
        if let Some(at) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
            return Err(malformed(format!("control character at byte {at}")));
        }
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let mut next = |what: &str| {
            lines
                .next()
                .filter(|line| !line.is_empty())
                .ok_or_else(|| malformed(format!("{what} line is missing or empty")))
        };
        let origin = next("origin")?;
        let size = next("tree size")?;
        let root = next("root hash")?;
        let mut extensions = Vec::new();
        for line in lines {
            if line.is_empty() {
                return Err(malformed("an extension line is empty"));
            }
            extensions.push(line.to_string());
        }
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(malformed("origin is too long"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size: parse_size(size)?,
            root: parse_hash(root)
                .ok_or_else(|| malformed("root hash is not 32 bytes of base64"))?,
            extensions,
        })
    }

    /// The note text: the lines, each ending in a newline.
    pub fn to_text(&self) -> Result<String, CheckpointError> {
        let mut text = String::new();
        for (what, line) in [("origin", &self.origin)]
            .into_iter()
            .chain(self.extensions.iter().map(|e| ("extension", e)))
        {
            if line.is_empty() || line.contains('\n') || line.bytes().any(|b| b < 0x20) {
                return Err(malformed(format!(
                    "{what} line is empty or has a control character"
                )));
            }
        }
        text.push_str(&self.origin);
        text.push('\n');
        text.push_str(&self.size.to_string());
        text.push('\n');
        text.push_str(&STANDARD.encode(self.root));
        text.push('\n');
        for extension in &self.extensions {
            text.push_str(extension);
            text.push('\n');
        }
        Ok(text)
    }
}

/// Verifies a signed checkpoint: the note's signature by `verifier`, whose name must be the
/// checkpoint's origin, then the body. Only then is the tree head to be trusted.
///
/// Lines by other keys are ignored, so witnesses' cosignatures may be present.
pub fn verify_checkpoint(
    note: &[u8],
    verifier: &NoteVerifier,
) -> Result<Checkpoint, CheckpointError> {
    verify_checkpoint_any(note, std::slice::from_ref(verifier))
}

/// As [`verify_checkpoint`], with any of several log keys (the current one and those it
/// replaced): one whose name is the origin must have signed, and none of them may have signed
/// badly.
pub fn verify_checkpoint_any(
    note: &[u8],
    verifiers: &[NoteVerifier],
) -> Result<Checkpoint, CheckpointError> {
    let note = Note::parse(note)?;
    let signed_by = note.verify(verifiers)?;
    let checkpoint = Checkpoint::parse(note.text().as_bytes())?;
    if !signed_by.contains(&checkpoint.origin) {
        return Err(CheckpointError::OriginMismatch {
            expected: signed_by
                .join(", ")
                .chars()
                .take(MAX_ORIGIN_BYTES)
                .collect(),
            found: checkpoint.origin.chars().take(MAX_ORIGIN_BYTES).collect(),
        });
    }
    Ok(checkpoint)
}
