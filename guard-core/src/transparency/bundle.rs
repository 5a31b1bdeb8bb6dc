//! The offline bundle: enough to check a template and its place in the log with no network.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::checkpoint::{parse_hash, verify_checkpoint, Checkpoint, CheckpointError};
use super::entry::{envelope_digest, AuditEntry, EntryError, EntryKind, ENVELOPE_DIGEST};
use super::merkle::{verify_inclusion, Hash, ProofError, MAX_INCLUSION_HASHES};
use super::note::NoteVerifier;
use crate::provenance::Envelope;

/// Largest bundle accepted, in bytes of JSON.
pub const MAX_BUNDLE_BYTES: usize = 2 << 20;

/// `{envelope, template_policy, log: {index, tree_size, inclusion_proof, checkpoint, entry}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineBundle {
    /// The signed template's DSSE envelope.
    pub envelope: Envelope,
    /// The template's policy record, as the host signed it (checked by the provenance verifier,
    /// not here).
    #[serde(default)]
    pub template_policy: serde_json::Value,
    /// Where the envelope is in the audit log.
    pub log: BundleLog,
}

/// The log part of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleLog {
    /// The entry's leaf index.
    pub index: u64,
    /// The size of the tree the proof is for; must be the checkpoint's.
    pub tree_size: u64,
    /// The audit path, leaf to root, each hash base64.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (a C2SP signed note).
    pub checkpoint: String,
    /// The `template.published` entry at `index`, whose leaf data is its serialization.
    pub entry: AuditEntry,
}

/// Why a bundle's log part does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not a bundle.
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    /// The checkpoint is refused.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The entry is refused.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The inclusion proof does not hold.
    #[error("inclusion proof: {0}")]
    Proof(#[from] ProofError),
    /// The proof is for another tree than the checkpoint's.
    #[error("proof is for a tree of {proof} leaves; the checkpoint has {checkpoint}")]
    TreeSizeMismatch {
        /// `log.tree_size`.
        proof: u64,
        /// The checkpoint's size.
        checkpoint: u64,
    },
    /// The entry does not record this envelope's publication at this index.
    #[error("log entry does not record this envelope: {0}")]
    EntryMismatch(&'static str),
}

/// A bundle whose log part verified: the envelope is in the log under a signed checkpoint. Only
/// [`OfflineBundle::verify_log`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedTemplate {
    checkpoint: Checkpoint,
    entry: AuditEntry,
}

impl LoggedTemplate {
    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The entry that records the publication.
    pub fn entry(&self) -> &AuditEntry {
        &self.entry
    }
}

/// Decodes base64 proof hashes, refusing an oversized proof before decoding any.
pub fn decode_proof(hashes: &[String], max: usize) -> Result<Vec<Hash>, ProofError> {
    if hashes.len() > max {
        return Err(ProofError::TooLong {
            len: hashes.len(),
            max,
        });
    }
    hashes
        .iter()
        .enumerate()
        .map(|(index, h)| parse_hash(h).ok_or(ProofError::MalformedHash { index }))
        .collect()
}

/// Encodes proof hashes as base64.
pub fn encode_proof(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

impl OfflineBundle {
    /// Parses a bundle.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::Malformed(format!(
                "{} bytes is over the {MAX_BUNDLE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))
    }

    /// Checks the log part: the checkpoint is signed by `log_key` (whose name is the log's
    /// origin), the entry records this envelope's publication at `index`, and its leaf is at
    /// `index` under the checkpoint's root.
    ///
    /// The envelope's own signature and the template policy are the provenance verifier's job;
    /// this says only that the envelope was published in the log, in public, where a monitor can
    /// see every template ever published.
    pub fn verify_log(&self, log_key: &NoteVerifier) -> Result<LoggedTemplate, BundleError> {
        let log = &self.log;
        let proof = decode_proof(&log.inclusion_proof, MAX_INCLUSION_HASHES)?;
        let checkpoint = verify_checkpoint(log.checkpoint.as_bytes(), log_key)?;
        // The size comes from the signed checkpoint: a proof for a smaller tree could present
        // an interior node as a leaf.
        if log.tree_size != checkpoint.size {
            return Err(BundleError::TreeSizeMismatch {
                proof: log.tree_size,
                checkpoint: checkpoint.size,
            });
        }
        let entry = &log.entry;
        if entry.seq != log.index {
            return Err(BundleError::EntryMismatch(
                "its sequence number is not the index",
            ));
        }
        if entry.kind != EntryKind::TemplatePublished {
            return Err(BundleError::EntryMismatch(
                "it is not a template.published entry",
            ));
        }
        if entry.digests.get(ENVELOPE_DIGEST) != Some(&envelope_digest(&self.envelope)?) {
            return Err(BundleError::EntryMismatch("its envelope digest differs"));
        }
        verify_inclusion(
            log.index,
            checkpoint.size,
            &entry.leaf_hash()?,
            &proof,
            &checkpoint.root,
        )?;
        Ok(LoggedTemplate {
            checkpoint,
            entry: entry.clone(),
        })
    }
}
