//! The audit log: an append-only Merkle log (RFC 6962) in SQLite, with signed checkpoints.
//!
//! Each entry is a [`guard_core::transparency::AuditEntry`]; its leaf is the entry's one JSON
//! serialization, stored as the exact bytes that were hashed. Beside the entries the log keeps
//! the hash of every perfect subtree, so appending, a root, and an inclusion or consistency
//! proof each cost O(log n) rows, never a rehash of the tree. Checkpoints are C2SP signed notes
//! signed by a [`Signer`] under the log's origin (see `docs/audit.md`).
//!
//! Durability: the database is in WAL mode with `synchronous=FULL`, and each append is one
//! transaction, so an append that returned survives a crash or `kill -9`; one that did not return
//! left nothing. [`AuditLog::append_and_checkpoint`] signs the new checkpoint in the same
//! transaction, so every acknowledged entry is covered by a signed checkpoint.
//!
//! [`AuditLog::verify`] re-reads every entry and recomputes every leaf and root from the stored
//! bytes. What it can prove depends on what the verifier holds: see [`VerifyReport`].

mod store;

use std::collections::BTreeMap;
use std::path::Path;

use guard_core::provenance::{Envelope, Statement};
use guard_core::transparency::{
    self as tlog, encode_proof, envelope_digest, rsa_key_id, verify_checkpoint,
    verify_checkpoint_any, verify_consistency, AuditEntry, BundleLog, Checkpoint, CheckpointError,
    EntryError, EntryKind, Frontier, Hash, Note, NoteError, NoteSignature, NoteVerifier,
    OfflineBundle, ENVELOPE_DIGEST,
};
use guard_core::PinnedKey;
use rusqlite::Connection;

use crate::signer::{SignError, Signer};
use store::Nodes;

/// The origin (and checkpoint key name) of a log created without one.
pub const DEFAULT_ORIGIN: &str = "sigil.local/audit";

/// Why an audit log operation failed (tampering found by `verify` is a [`Problem`], not this).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database could not be opened, read or written.
    #[error("audit database: {0}")]
    Store(#[from] rusqlite::Error),
    /// The file is a database, but not an audit log of this version.
    #[error("not a Sigil audit log: {0}")]
    NotAnAuditLog(String),
    /// An entry to append is invalid.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Signing a checkpoint failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// A checkpoint could not be made or verified.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The index or sizes asked for are not in the log.
    #[error("{0}")]
    Range(String),
    /// A stored tree node is missing or malformed.
    #[error("tree node at level {level}, index {index} is missing or malformed")]
    Node {
        /// Its level.
        level: u32,
        /// Its index.
        index: u64,
    },
    /// An envelope could not be recorded or bundled.
    #[error("{0}")]
    Envelope(String),
    /// The log holds entries no signed checkpoint covers; nothing is appended on top of them.
    #[error("the log holds {size} entries but its latest signed checkpoint covers {signed}: run `sigil audit verify`")]
    Unsigned {
        /// Entries held.
        size: u64,
        /// Entries the latest checkpoint covers.
        signed: u64,
    },
}

impl From<NoteError> for AuditError {
    fn from(e: NoteError) -> Self {
        AuditError::Checkpoint(CheckpointError::Note(e))
    }
}

impl From<tlog::TreeError<AuditError>> for AuditError {
    fn from(e: tlog::TreeError<AuditError>) -> Self {
        match e {
            tlog::TreeError::Read(inner) => inner,
            tlog::TreeError::Range(m) => AuditError::Range(m),
            other => AuditError::Range(other.to_string()),
        }
    }
}

/// An entry to append; the log gives it its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// When, RFC 3339 UTC to the second.
    pub time: String,
    /// What happened.
    pub kind: EntryKind,
    /// `role:<role>` or a pseudonym from [`pseudonym`].
    pub actor: String,
    /// What it was about (a template id and version, a key fingerprint), never personal data.
    pub subject: Option<String>,
    /// Hex SHA-256 digests of the records involved, by name.
    pub digests: BTreeMap<String, String>,
}

impl NewEntry {
    /// A `template.published` entry for a signed envelope: subject `<template_id>@<version>`,
    /// digests `envelope` ([`envelope_digest`]) and `template` (the signed template digest).
    pub fn template_published(
        envelope: &Envelope,
        actor: &str,
        time: &str,
    ) -> Result<Self, AuditError> {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope.payload.as_bytes())
            .map_err(|e| AuditError::Envelope(format!("envelope payload is not base64: {e}")))?;
        let statement = Statement::parse(&payload)
            .map_err(|e| AuditError::Envelope(format!("envelope statement: {e}")))?;
        let mut digests = BTreeMap::new();
        digests.insert(ENVELOPE_DIGEST.to_string(), envelope_digest(envelope)?);
        digests.insert("template".to_string(), statement.digest.sha256.clone());
        Ok(NewEntry {
            time: time.to_string(),
            kind: EntryKind::TemplatePublished,
            actor: actor.to_string(),
            subject: Some(format!("{}@{}", statement.template_id, statement.version)),
            digests,
        })
    }
}

/// A keyed pseudonym for a user: `psn:` and the first 16 bytes of HMAC-SHA256(`user_key`,
/// `user_id`), hex. Destroying the user's key makes every entry about them anonymous without
/// touching the log.
pub fn pseudonym(user_key: &[u8], user_id: &str) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, user_key),
        user_id.as_bytes(),
    );
    let bytes = tag.as_ref();
    format!(
        "psn:{}",
        guard_core::provenance::hex(bytes.get(..16).unwrap_or(bytes))
    )
}

/// What an append returned: the entry is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's sequence number, which is its leaf index.
    pub seq: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// The tree size after it.
    pub tree_size: u64,
}

/// A signed checkpoint as stored: the note and its parsed body (unverified until checked with a
/// [`NoteVerifier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// The C2SP signed note, as written.
    pub note: String,
}

/// One sign of tampering found by [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Sequence numbers skip: rows were deleted.
    #[error("entries {expected} to {} are missing", found.saturating_sub(1))]
    Gap {
        /// The next sequence number expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// An entry's bytes are not a valid entry.
    #[error("entry {seq} is not a valid entry: {reason}")]
    InvalidEntry {
        /// Its row.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// An entry says it is at another position: rows were swapped or moved.
    #[error("row {row} holds the entry numbered {entry}")]
    SequenceMismatch {
        /// The row's sequence number.
        row: u64,
        /// The entry's own.
        entry: u64,
    },
    /// The stored leaf hash is not the hash of the stored bytes: the entry was changed.
    #[error("entry {seq} does not match its stored leaf hash")]
    LeafHashMismatch {
        /// Its row.
        seq: u64,
    },
    /// The stored subtree hashes do not give the root of the entries: proofs would be wrong.
    #[error("stored tree nodes do not match the entries")]
    NodesMismatch,
    /// A stored checkpoint does not verify under the log key.
    #[error("checkpoint at size {size} does not verify: {reason}")]
    InvalidCheckpoint {
        /// Its row's tree size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// A signed root is not the root of the entries: an entry was changed, reordered or removed.
    #[error("checkpoint at size {size} was signed over other entries")]
    CheckpointMismatch {
        /// Its tree size.
        size: u64,
    },
    /// A checkpoint covers more entries than the log holds: the log was truncated.
    #[error("a checkpoint covers {size} entries but the log holds {entries}")]
    Truncated {
        /// The checkpoint's size.
        size: u64,
        /// Entries present.
        entries: u64,
    },
    /// Entries and no checkpoint at all: checkpoints were deleted.
    #[error("the log holds {entries} entries and no valid checkpoint")]
    NoCheckpoint {
        /// Entries present.
        entries: u64,
    },
    /// The caller's checkpoint is not consistent with the log: history was rewritten.
    #[error("the external checkpoint at size {size} is not consistent with the log")]
    ExternalMismatch {
        /// Its tree size.
        size: u64,
    },
    /// Entries no signed checkpoint covers. Every append through the log signs its checkpoint
    /// in the same transaction, so these were written some other way (a bulk import not yet
    /// signed, or a forgery).
    #[error("{entries} entries after the latest signed checkpoint (size {size}) are not signed")]
    UnsignedEntries {
        /// The latest signed checkpoint's size.
        size: u64,
        /// Entries past it.
        entries: u64,
    },
    /// A row whose sequence number is not a sequence number.
    #[error("a row's sequence number is not a whole number from 0: {reason}")]
    InvalidRow {
        /// What was found.
        reason: String,
    },
}

/// Most problems a report lists; past that they are counted in [`VerifyReport::omitted`].
pub const MAX_PROBLEMS: usize = 1000;

/// Checkpoints kept besides every [`KEEP_EVERY`]th: the most recent ones.
pub const KEEP_RECENT: u64 = 16;
/// Tree sizes whose checkpoints are kept for good (multiples of this), so old trees can still
/// be proved against.
pub const KEEP_EVERY: u64 = 1024;

/// What [`AuditLog::verify`] found.
///
/// Without an external checkpoint it proves every entry up to the latest signed checkpoint is
/// the one that was signed, in order, none removed, and no stored checkpoint was cut off. It cannot
/// see the newest entries removed together with their checkpoints (the log then looks like an
/// older, intact log), nor a log replaced wholesale by someone who holds the signing key. A
/// checkpoint kept elsewhere (published, or held by a monitor) closes the first gap: a log
/// shorter than it, or not consistent with it, is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// Stored checkpoints that verified.
    pub checkpoints: u64,
    /// The latest valid stored checkpoint's size.
    pub latest_checkpoint: Option<u64>,
    /// The root of all entries read.
    pub root: Hash,
    /// Entries after the latest checkpoint, not yet signed (appended without a checkpoint, not
    /// tampering in themselves).
    pub unsigned_tail: u64,
    /// The external checkpoint's size, when one was given.
    pub external_checkpoint: Option<u64>,
    /// Signs of tampering, the first [`MAX_PROBLEMS`]; empty when the log is intact.
    pub problems: Vec<Problem>,
    /// Problems found past [`MAX_PROBLEMS`].
    pub omitted: u64,
}

impl VerifyReport {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An audit log in one SQLite database.
#[derive(Debug)]
pub struct AuditLog {
    conn: Connection,
    origin: String,
}

fn to_i64(n: u64) -> Result<i64, AuditError> {
    i64::try_from(n).map_err(|_| AuditError::Range(format!("{n} is too large for the store")))
}

impl AuditLog {
    /// Opens the log at `path`, creating it (origin [`DEFAULT_ORIGIN`]) if there is none.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with_origin(path, None)
    }

    /// Opens or creates the log at `path`; a new log gets `origin`, an existing one must have
    /// it.
    pub fn open_with_origin(path: &Path, origin: Option<&str>) -> Result<Self, AuditError> {
        let conn = store::open(path, true)?;
        let origin = store::init(&conn, origin.unwrap_or(DEFAULT_ORIGIN), origin.is_some())?;
        Ok(AuditLog { conn, origin })
    }

    /// Opens an existing log; never creates one (for `verify`, `show`, `proof`).
    pub fn open_existing(path: &Path) -> Result<Self, AuditError> {
        if !path.is_file() {
            return Err(AuditError::NotAnAuditLog(format!(
                "`{}` does not exist",
                path.display()
            )));
        }
        let conn = store::open(path, false)?;
        let origin = store::origin(&conn)?;
        Ok(AuditLog { conn, origin })
    }

    /// The log's origin: the first line of its checkpoints and the name of its signing key.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A verifier for this log's checkpoints under a pinned public key.
    pub fn verifier(&self, key: PinnedKey) -> Result<NoteVerifier, AuditError> {
        Ok(NoteVerifier::new(&self.origin, key)?)
    }

    /// The number of entries (the next sequence number).
    pub fn size(&self) -> Result<u64, AuditError> {
        store::next_seq(&self.conn)
    }

    /// Appends an entry in one durable transaction; O(log n).
    pub fn append(&mut self, entry: NewEntry) -> Result<Appended, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let appended = store::append(&tx, entry)?;
        tx.commit()?;
        Ok(appended)
    }

    /// Appends entries in one durable transaction (a bulk import): all or none.
    pub fn append_batch(
        &mut self,
        entries: impl IntoIterator<Item = NewEntry>,
    ) -> Result<Vec<Appended>, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let appended = entries
            .into_iter()
            .map(|entry| store::append(&tx, entry))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(appended)
    }

    /// Appends an entry and signs the checkpoint of the new tree, both in one transaction: when
    /// this returns the entry is durable and covered by a signed checkpoint; if signing fails,
    /// nothing was appended.
    pub fn append_and_checkpoint(
        &mut self,
        entry: NewEntry,
        signer: &dyn Signer,
    ) -> Result<(Appended, SignedCheckpoint), AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut appended, signed) = record_in(&tx, &self.origin, vec![entry], signer)?;
        tx.commit()?;
        let appended = appended
            .pop()
            .ok_or_else(|| AuditError::Range("nothing was appended".into()))?;
        Ok((appended, signed))
    }

    /// The database, for stores that keep their records beside the log and append to it in
    /// their own transactions ([`record_in`]).
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The database, for reading.
    pub(crate) fn connection_ref(&self) -> &Connection {
        &self.conn
    }

    /// Signs and stores the checkpoint of the whole log (or returns the stored one at this size).
    pub fn sign_checkpoint(&mut self, signer: &dyn Signer) -> Result<SignedCheckpoint, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let signed = checkpoint_in(&tx, &self.origin, signer)?;
        tx.commit()?;
        Ok(signed)
    }

    /// The stored checkpoint of the largest tree, unverified.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        match store::latest_checkpoint(&self.conn)? {
            Some((_, note)) => Ok(Some(parse_stored(&note)?)),
            None => Ok(None),
        }
    }

    /// The stored checkpoint at exactly `size`, unverified.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, AuditError> {
        match store::checkpoint_at(&self.conn, size)? {
            Some(note) => Ok(Some(parse_stored(&note)?)),
            None => Ok(None),
        }
    }

    /// The stored bytes of entry `seq`.
    pub fn entry_bytes(&self, seq: u64) -> Result<Vec<u8>, AuditError> {
        store::entry_bytes(&self.conn, seq)?
            .ok_or_else(|| AuditError::Range(format!("no entry {seq}")))
    }

    /// Entry `seq`, parsed strictly.
    pub fn entry(&self, seq: u64) -> Result<AuditEntry, AuditError> {
        Ok(AuditEntry::from_leaf_bytes(&self.entry_bytes(seq)?)?)
    }

    /// Up to `limit` entries from sequence number `from` on, in order, as stored bytes (a page
    /// for listing; rows deleted by tampering are simply absent).
    pub fn entries(&self, from: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        store::entries_page(&self.conn, from, limit)
    }

    /// Calls `f` with each entry's sequence number and stored bytes, in order.
    pub fn for_each_entry(
        &self,
        f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        store::for_each_entry(&self.conn, f)
    }

    /// The root of the first `size` entries, from stored nodes: O(log n).
    pub fn root(&self, size: u64) -> Result<Hash, AuditError> {
        self.check_size(size)?;
        Ok(tlog::root(&Nodes(&self.conn), size)?)
    }

    /// The inclusion proof of entry `index` in the tree of the first `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size)?;
        Ok(tlog::inclusion_proof(&Nodes(&self.conn), index, size)?)
    }

    /// The consistency proof from the tree of the first `first` entries to the first `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(second)?;
        Ok(tlog::consistency_proof(&Nodes(&self.conn), first, second)?)
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let entries = self.size()?;
        if size > entries {
            return Err(AuditError::Range(format!(
                "tree size {size} is larger than the log ({entries} entries)"
            )));
        }
        Ok(())
    }

    /// An offline bundle for the `template.published` entry `seq` of `envelope`, proved under
    /// the latest stored checkpoint.
    pub fn offline_bundle(
        &self,
        seq: u64,
        envelope: &Envelope,
        template_policy: serde_json::Value,
    ) -> Result<OfflineBundle, AuditError> {
        let entry = self.entry(seq)?;
        if entry.kind != EntryKind::TemplatePublished
            || entry.digests.get(ENVELOPE_DIGEST) != Some(&envelope_digest(envelope)?)
        {
            return Err(AuditError::Envelope(format!(
                "entry {seq} does not record the publication of this envelope"
            )));
        }
        let signed = self
            .latest_checkpoint()?
            .filter(|s| s.checkpoint.size > seq)
            .ok_or_else(|| {
                AuditError::Range(format!("no checkpoint covers entry {seq} yet; sign one"))
            })?;
        let size = signed.checkpoint.size;
        Ok(OfflineBundle {
            envelope: envelope.clone(),
            template_policy,
            log: BundleLog {
                index: seq,
                tree_size: size,
                inclusion_proof: encode_proof(&self.inclusion_proof(seq, size)?),
                checkpoint: signed.note,
                entry,
            },
        })
    }

    /// Re-reads every entry, recomputes leaves and roots from the stored bytes, and checks them
    /// against every stored checkpoint (signed by `key`) and, when given, a checkpoint the caller
    /// kept elsewhere. Tampering is reported in the [`VerifyReport`]; an error means the log or
    /// the external checkpoint could not be read at all.
    pub fn verify(
        &self,
        key: &NoteVerifier,
        external: Option<&[u8]>,
    ) -> Result<VerifyReport, AuditError> {
        self.verify_with_keys(std::slice::from_ref(key), external)
    }

    /// As [`AuditLog::verify`], accepting checkpoints by any of `keys` (the current log key and
    /// those it replaced, so checkpoints kept from before a rotation still verify).
    pub fn verify_with_keys(
        &self,
        keys: &[NoteVerifier],
        external: Option<&[u8]>,
    ) -> Result<VerifyReport, AuditError> {
        let external = external
            .map(|note| verify_checkpoint_any(note, keys))
            .transpose()?;
        let mut problems = Vec::new();

        // Stored checkpoints first, so their roots can be checked while entries stream by.
        let mut checkpoints: BTreeMap<u64, Checkpoint> = BTreeMap::new();
        for (size, note) in store::all_checkpoints(&self.conn)? {
            match verify_checkpoint_any(note.as_bytes(), keys) {
                Ok(cp) if cp.size == size => {
                    checkpoints.insert(size, cp);
                }
                Ok(cp) => problems.push(Problem::InvalidCheckpoint {
                    size,
                    reason: format!("its note is for size {}", cp.size),
                }),
                Err(e) => problems.push(Problem::InvalidCheckpoint {
                    size,
                    reason: e.to_string(),
                }),
            }
        }
        // The prefix sizes whose roots are compared with a signed one.
        let wanted: std::collections::BTreeSet<u64> = checkpoints
            .values()
            .chain(external.iter())
            .map(|cp| cp.size)
            .collect();

        let mut frontier = Frontier::new();
        let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
        roots.insert(0, frontier.root());
        let mut expected = 0u64;
        let mut stored_leaf_mismatch = Vec::new();
        store::for_each_row(&self.conn, |seq, bytes, stored_leaf| {
            let seq = match seq {
                Ok(seq) => seq,
                Err(reason) => {
                    problems.push(Problem::InvalidRow { reason });
                    return Ok(());
                }
            };
            if seq != expected {
                problems.push(Problem::Gap {
                    expected,
                    found: seq,
                });
            }
            expected = seq + 1;
            let leaf = tlog::leaf_hash(bytes);
            match AuditEntry::from_leaf_bytes(bytes) {
                Ok(entry) if entry.seq != seq => problems.push(Problem::SequenceMismatch {
                    row: seq,
                    entry: entry.seq,
                }),
                Ok(_) => {}
                Err(e) => problems.push(Problem::InvalidEntry {
                    seq,
                    reason: e.to_string(),
                }),
            }
            if stored_leaf != Some(leaf) {
                stored_leaf_mismatch.push(seq);
            }
            frontier.push(leaf);
            if wanted.contains(&frontier.size()) {
                roots.insert(frontier.size(), frontier.root());
            }
            Ok(())
        })?;
        problems.extend(
            stored_leaf_mismatch
                .into_iter()
                .map(|seq| Problem::LeafHashMismatch { seq }),
        );
        let entries = frontier.size();
        let root = frontier.root();

        for (&size, cp) in &checkpoints {
            match roots.get(&size) {
                None => problems.push(Problem::Truncated { size, entries }),
                Some(r) if *r != cp.root => problems.push(Problem::CheckpointMismatch { size }),
                Some(_) => {}
            }
        }
        if entries > 0 && checkpoints.is_empty() {
            problems.push(Problem::NoCheckpoint { entries });
        }
        // The stored nodes are what proofs are made from: every one must be what the entries
        // give, or a proof made from it would not lead to a signed root.
        let stored_size = self.size()?;
        if stored_size == entries {
            let root_ok = matches!(self.root(entries), Ok(r) if r == root);
            if !root_ok || store::check_nodes(&self.conn, entries)?.is_some() {
                problems.push(Problem::NodesMismatch);
            }
        }
        let latest = checkpoints.values().next_back();
        if let Some(ext) = &external {
            match roots.get(&ext.size) {
                None => problems.push(Problem::Truncated {
                    size: ext.size,
                    entries,
                }),
                Some(r) if *r != ext.root => {
                    problems.push(Problem::ExternalMismatch { size: ext.size })
                }
                Some(_) => {
                    // What a monitor holding only checkpoints would check: the log's latest
                    // signed tree extends the external one.
                    if let Some(latest) = latest.filter(|l| l.size >= ext.size) {
                        let consistent = self
                            .consistency_proof(ext.size, latest.size)
                            .map(|proof| {
                                verify_consistency(
                                    ext.size,
                                    latest.size,
                                    &proof,
                                    &ext.root,
                                    &latest.root,
                                )
                                .is_ok()
                            })
                            .unwrap_or(false);
                        if !consistent {
                            problems.push(Problem::NodesMismatch);
                        }
                    }
                }
            }
        }
        problems.dedup();
        let omitted = problems.len().saturating_sub(MAX_PROBLEMS) as u64;
        problems.truncate(MAX_PROBLEMS);
        let latest_checkpoint = latest.map(|c| c.size);
        let unsigned = entries.saturating_sub(latest_checkpoint.unwrap_or(0));
        if unsigned > 0 && latest_checkpoint.is_some() {
            problems.push(Problem::UnsignedEntries {
                size: latest_checkpoint.unwrap_or(0),
                entries: unsigned,
            });
        }
        Ok(VerifyReport {
            entries,
            checkpoints: checkpoints.len() as u64,
            latest_checkpoint,
            root,
            unsigned_tail: unsigned,
            external_checkpoint: external.map(|c| c.size),
            problems,
            omitted,
        })
    }
}

fn parse_stored(note: &str) -> Result<SignedCheckpoint, AuditError> {
    let parsed = Note::parse(note.as_bytes())?;
    Ok(SignedCheckpoint {
        checkpoint: Checkpoint::parse(parsed.text().as_bytes())?,
        note: note.to_string(),
    })
}

/// Signs the checkpoint of the whole tree inside `tx` and stores it.
/// The number of entries (the sequence number of the next), read through any connection or
/// transaction on the log's database.
pub(crate) fn next_seq_in(conn: &Connection) -> Result<u64, AuditError> {
    store::next_seq(conn)
}

/// Entry `seq`, parsed strictly, read through any connection to the log's database.
pub(crate) fn entry_in(conn: &Connection, seq: u64) -> Result<AuditEntry, AuditError> {
    let bytes = store::entry_bytes(conn, seq)?
        .ok_or_else(|| AuditError::Range(format!("no entry {seq}")))?;
    Ok(AuditEntry::from_leaf_bytes(&bytes)?)
}

/// Appends `entries` and signs the checkpoint of the new tree inside the caller's transaction,
/// so records kept beside the log commit together with their entries, or not at all.
pub(crate) fn record_in(
    tx: &rusqlite::Transaction<'_>,
    origin: &str,
    entries: Vec<NewEntry>,
    signer: &dyn Signer,
) -> Result<(Vec<Appended>, SignedCheckpoint), AuditError> {
    // What was signed last must be the whole log, or this checkpoint would sign entries
    // nobody appended through it.
    let size = store::next_seq(tx)?;
    let signed_size = store::latest_checkpoint(tx)?.map_or(0, |(size, _)| size);
    if size != signed_size {
        return Err(AuditError::Unsigned {
            size,
            signed: signed_size,
        });
    }
    let appended = entries
        .into_iter()
        .map(|entry| store::append(tx, entry))
        .collect::<Result<Vec<_>, _>>()?;
    let signed = checkpoint_in(tx, origin, signer)?;
    Ok((appended, signed))
}

fn checkpoint_in(
    tx: &rusqlite::Transaction<'_>,
    origin: &str,
    signer: &dyn Signer,
) -> Result<SignedCheckpoint, AuditError> {
    let size = store::next_seq(tx)?;
    if let Some(note) = store::checkpoint_at(tx, size)? {
        return parse_stored(&note);
    }
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        size,
        root: tlog::root(&Nodes(tx), size)?,
        extensions: Vec::new(),
    };
    let text = checkpoint.to_text()?;
    let signature = signer.sign(text.as_bytes())?;
    let key_id = rsa_key_id(origin, signer.scheme(), signer.public_key_der());
    let note = Note::new(&text, vec![NoteSignature::new(origin, key_id, signature)?])?.to_text();
    // A backend that signs with another key than it reports is caught before anything is kept.
    let key = PinnedKey::from_spki(signer.public_key_der(), signer.scheme())
        .map_err(|e| SignError::Key(e.to_string()))?;
    verify_checkpoint(note.as_bytes(), &NoteVerifier::new(origin, key)?)?;
    store::insert_checkpoint(tx, size, &note)?;
    // The latest checkpoint covers every older tree (consistency), so older ones are kept only
    // sparsely: storage stays a fraction of the entries', and verify checks few signatures.
    store::prune_checkpoints(tx, size.saturating_sub(KEEP_RECENT), KEEP_EVERY)?;
    Ok(SignedCheckpoint { checkpoint, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_and_well_formed() {
        let a = pseudonym(b"key one", "alice@example.com");
        assert!(guard_core::transparency::is_actor(&a), "{a}");
        assert_ne!(a, pseudonym(b"key two", "alice@example.com"));
        assert_ne!(a, pseudonym(b"key one", "bob@example.com"));
        assert!(!a.contains("alice"));
    }
}
