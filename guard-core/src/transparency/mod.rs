//! The audit log's cryptography: RFC 6962 hashing, proofs, checkpoints and offline bundles.
//!
//! The log itself is kept by the host; everything here is pure, so the npm package and the Envoy
//! filter check a bundle with the same code the host uses to verify its own log.
//!
//! - **Hashing** ([`leaf_hash`], [`node_hash`], [`root_of`]): RFC 6962 / RFC 9162, SHA-256 with a
//!   `0x00` prefix for leaves and `0x01` for interior nodes.
//! - **Proofs** ([`verify_inclusion`], [`verify_consistency`]): the RFC 9162 section 2.1.3.2 and
//!   2.1.4.2 algorithms, with proofs longer than any tree can need refused before hashing.
//!   [`inclusion_proof`] and [`consistency_proof`] make them from stored subtree hashes behind
//!   [`NodeReader`], O(log n) reads each.
//! - **Checkpoints** ([`Checkpoint`], [`verify_checkpoint`]): the C2SP tlog-checkpoint body in a
//!   C2SP signed note ([`Note`]). RSA note signatures use type byte `0xff` with the identifier
//!   `sigil-rsa/<scheme>` and a key ID over the key's SPKI fingerprint; see [`note`].
//! - **Entries** ([`AuditEntry`]): a leaf's data is the entry's one JSON serialization.
//! - **Bundles** ([`OfflineBundle`]): envelope, template policy, and the log part (index, tree
//!   size, inclusion proof, checkpoint, and the entry that records the publication).
//!
//! ```
//! use guard_core::transparency::{
//!     inclusion_proof, leaf_hash, verify_inclusion, MemoryTree,
//! };
//! let tree = MemoryTree::from_leaves([b"A", b"B", b"C"].map(|d| leaf_hash(d)));
//! let proof = inclusion_proof(&tree, 2, 3).unwrap();
//! assert!(verify_inclusion(2, 3, &leaf_hash(b"C"), &proof, &tree.root()).is_ok());
//! ```

mod bundle;
mod checkpoint;
mod entry;
mod merkle;
pub mod note;
mod request;
mod tree;

pub use bundle::{
    decode_proof, encode_proof, BundleError, BundleLog, LoggedTemplate, OfflineBundle,
    MAX_BUNDLE_BYTES,
};
pub use checkpoint::{
    parse_hash, verify_checkpoint, verify_checkpoint_any, Checkpoint, CheckpointError,
    MAX_ORIGIN_BYTES,
};
pub use entry::{
    envelope_digest, is_actor, AuditEntry, EntryError, EntryKind, ENVELOPE_DIGEST, MAX_DIGESTS,
    MAX_ENTRY_BYTES, MAX_SUBJECT_BYTES,
};
pub use merkle::{
    empty_root, leaf_hash, node_hash, root_from_inclusion, root_of, verify_consistency,
    verify_inclusion, Hash, ProofError, MAX_CONSISTENCY_HASHES, MAX_INCLUSION_HASHES,
};
pub use note::{rsa_key_id, Note, NoteError, NoteSignature, NoteVerifier};
pub use request::{verify_bundle_json, BundleCheckError};
pub use tree::{
    consistency_proof, inclusion_proof, root, subtree_root, Frontier, MemoryTree, MissingNode,
    NodeReader, TreeError,
};
