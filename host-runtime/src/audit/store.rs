//! The SQL behind the audit log. Plain tables, integer keys and byte columns, so the same schema
//! moves to PostgreSQL (`BLOB` becomes `BYTEA`) when one machine is not enough.

use std::path::Path;

use guard_core::transparency::{leaf_hash, node_hash, Hash, NodeReader};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::{to_i64, Appended, AuditError, NewEntry};
use guard_core::transparency::AuditEntry;

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_entries (
    seq       BIGINT PRIMARY KEY,
    entry     BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    note      TEXT NOT NULL
);
";

/// Opens the database with the durability the log promises.
pub(super) fn open(path: &Path, create: bool) -> Result<Connection, AuditError> {
    crate::sqlite::open(path, create).map_err(|e| match e {
        crate::sqlite::OpenError::Sqlite(e) => AuditError::Store(e),
        other => AuditError::NotAnAuditLog(other.to_string()),
    })
}

/// Creates the tables if needed and returns the log's origin.
pub(super) fn init(
    conn: &Connection,
    origin: &str,
    must_match: bool,
) -> Result<String, AuditError> {
    conn.execute_batch(SCHEMA)?;
    let tx = conn.unchecked_transaction()?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM audit_meta WHERE name = 'origin'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let origin = match stored {
        Some(stored) if must_match && stored != origin => {
            return Err(AuditError::NotAnAuditLog(format!(
                "the log's origin is `{stored}`, not `{origin}`"
            )))
        }
        Some(stored) => stored,
        None => {
            // The origin is also the checkpoint key's name.
            if !guard_core::transparency::note::is_key_name(origin)
                || origin.len() > guard_core::transparency::MAX_ORIGIN_BYTES
            {
                return Err(AuditError::NotAnAuditLog(format!(
                    "origin `{origin}` must be 1 to 256 bytes with no spaces or `+`"
                )));
            }
            tx.execute(
                "INSERT INTO audit_meta (name, value) VALUES ('origin', ?1), ('schema', ?2)",
                params![origin, SCHEMA_VERSION],
            )?;
            origin.to_string()
        }
    };
    tx.commit()?;
    Ok(origin)
}

/// The origin of an existing log.
pub(super) fn origin(conn: &Connection) -> Result<String, AuditError> {
    let schema: Option<String> = conn
        .query_row(
            "SELECT value FROM audit_meta WHERE name = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => {
                AuditError::NotAnAuditLog("it has no audit tables".into())
            }
            other => AuditError::Store(other),
        })?;
    if schema.as_deref() != Some(SCHEMA_VERSION) {
        return Err(AuditError::NotAnAuditLog(format!(
            "schema version {schema:?}; this build reads {SCHEMA_VERSION}"
        )));
    }
    conn.query_row(
        "SELECT value FROM audit_meta WHERE name = 'origin'",
        [],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| AuditError::NotAnAuditLog("it has no origin".into()))
}

pub(super) fn next_seq(conn: &Connection) -> Result<u64, AuditError> {
    let next: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries",
        [],
        |r| r.get(0),
    )?;
    u64::try_from(next).map_err(|_| AuditError::Range("negative sequence number".into()))
}

fn to_hash(bytes: &[u8]) -> Option<Hash> {
    Hash::try_from(bytes).ok()
}

/// Reads stored subtree hashes for proofs.
pub(super) struct Nodes<'c>(pub &'c Connection);

impl NodeReader for Nodes<'_> {
    type Error = AuditError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
        let missing = AuditError::Node { level, index };
        let bytes: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT hash FROM audit_nodes WHERE level = ?1 AND idx = ?2")?
            .query_row(params![level, to_i64(index)?], |r| r.get(0))
            .optional()?;
        bytes.as_deref().and_then(to_hash).ok_or(missing)
    }
}

/// Inserts the entry, its leaf and every subtree it completes. The caller commits.
pub(super) fn append(
    tx: &rusqlite::Transaction<'_>,
    new: NewEntry,
) -> Result<Appended, AuditError> {
    let seq = next_seq(tx)?;
    let entry = AuditEntry {
        seq,
        time: new.time,
        kind: new.kind,
        actor: new.actor,
        subject: new.subject,
        digests: new.digests,
    };
    let bytes = entry.to_leaf_bytes()?;
    let leaf = leaf_hash(&bytes);
    tx.prepare_cached("INSERT INTO audit_entries (seq, entry, leaf_hash) VALUES (?1, ?2, ?3)")?
        .execute(params![to_i64(seq)?, bytes, leaf.as_slice()])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO audit_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    let (mut level, mut index, mut hash) = (0u32, seq, leaf);
    insert.execute(params![level, to_i64(index)?, hash.as_slice()])?;
    // A right child completes its parent; climb while that is so.
    while index % 2 == 1 {
        let left = Nodes(tx).node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index /= 2;
        insert.execute(params![level, to_i64(index)?, hash.as_slice()])?;
    }
    Ok(Appended {
        seq,
        leaf_hash: leaf,
        tree_size: seq + 1,
    })
}

pub(super) fn checkpoint_at(conn: &Connection, size: u64) -> Result<Option<String>, AuditError> {
    Ok(conn
        .prepare_cached("SELECT note FROM audit_checkpoints WHERE tree_size = ?1")?
        .query_row(params![to_i64(size)?], |r| r.get(0))
        .optional()?)
}

pub(super) fn latest_checkpoint(conn: &Connection) -> Result<Option<(u64, String)>, AuditError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(size, note)| u64::try_from(size).ok().map(|s| (s, note))))
}

/// Every stored checkpoint; a note that is not text is kept as its lossy text so it fails
/// verification rather than the read.
pub(super) fn all_checkpoints(conn: &Connection) -> Result<Vec<(u64, String)>, AuditError> {
    let mut stmt =
        conn.prepare("SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size")?;
    let rows = stmt.query_map([], |r| {
        let size: i64 = r.get(0)?;
        let note = match r.get_ref(1)? {
            ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        };
        Ok((size, note))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (size, note) = row?;
        out.push((u64::try_from(size).unwrap_or(u64::MAX), note));
    }
    Ok(out)
}

pub(super) fn insert_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    size: u64,
    note: &str,
) -> Result<(), AuditError> {
    tx.prepare_cached("INSERT INTO audit_checkpoints (tree_size, note) VALUES (?1, ?2)")?
        .execute(params![to_i64(size)?, note])?;
    Ok(())
}

/// Deletes checkpoints of trees smaller than `below`, except those whose size is a multiple of
/// `every`.
pub(super) fn prune_checkpoints(
    tx: &rusqlite::Transaction<'_>,
    below: u64,
    every: u64,
) -> Result<(), AuditError> {
    tx.prepare_cached(
        "DELETE FROM audit_checkpoints WHERE tree_size < ?1 AND tree_size % ?2 <> 0",
    )?
    .execute(params![to_i64(below)?, to_i64(every.max(1))?])?;
    Ok(())
}

pub(super) fn entry_bytes(conn: &Connection, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    Ok(conn
        .prepare_cached("SELECT entry FROM audit_entries WHERE seq = ?1")?
        .query_row(params![to_i64(seq)?], |r| Ok(value_bytes(r.get_ref(0)?)))
        .optional()?)
}

/// Column bytes whatever their storage class: an entry edited into TEXT or a number is still
/// read, and fails as an entry, not as a read.
fn value_bytes(value: ValueRef<'_>) -> Vec<u8> {
    match value {
        ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Null => Vec::new(),
    }
}

/// Up to `limit` entries from `from` on, in order: sequence number and stored bytes.
pub(super) fn entries_page(
    conn: &Connection,
    from: u64,
    limit: u64,
) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, entry FROM audit_entries WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![to_i64(from)?, to_i64(limit)?])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let seq = u64::try_from(seq)
            .map_err(|_| AuditError::Range(format!("negative sequence number {seq}")))?;
        out.push((seq, value_bytes(row.get_ref(1)?)));
    }
    Ok(out)
}

pub(super) fn for_each_entry(
    conn: &Connection,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    for_each_row(conn, |seq, bytes, _| match seq {
        Ok(seq) => f(seq, bytes),
        Err(found) => Err(AuditError::Range(format!(
            "a row's sequence number is {found}; run `sigil audit verify`"
        ))),
    })
}

/// Every entry row in order: sequence number, stored bytes, stored leaf hash.
pub(super) fn for_each_row(
    conn: &Connection,
    mut f: impl FnMut(Result<u64, String>, &[u8], Option<Hash>) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut stmt = conn.prepare("SELECT seq, entry, leaf_hash FROM audit_entries ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        // A row someone rewrote may hold anything in its sequence column: that is tampering to
        // report, not an error that stops the check.
        let seq = match row.get_ref(0)? {
            ValueRef::Integer(n) => u64::try_from(n).map_err(|_| format!("{n}")),
            ValueRef::Real(x) => Err(format!("{x}")),
            ValueRef::Text(t) => Err(format!(
                "`{}`",
                String::from_utf8_lossy(t)
                    .chars()
                    .take(40)
                    .collect::<String>()
            )),
            ValueRef::Blob(_) => Err("a blob".to_string()),
            ValueRef::Null => Err("null".to_string()),
        };
        let bytes = value_bytes(row.get_ref(1)?);
        let leaf = match row.get_ref(2)? {
            ValueRef::Blob(b) => to_hash(b),
            _ => None,
        };
        f(seq, &bytes, leaf)?;
    }
    Ok(())
}

/// Checks every stored subtree hash, for a log of `entries` entries: each leaf node is its
/// entry's leaf hash, each interior node the hash of its two children, and every node the tree
/// needs is there and no other. Returns the first node found wrong, as (level, index).
pub(super) fn check_nodes(
    conn: &Connection,
    entries: u64,
) -> Result<Option<(u32, u64)>, AuditError> {
    let as_position = |level: i64, idx: i64| {
        (
            u32::try_from(level).unwrap_or(u32::MAX),
            u64::try_from(idx).unwrap_or(u64::MAX),
        )
    };
    // Leaves.
    let mut leaves = conn.prepare(
        "SELECT n.idx, n.hash, e.leaf_hash FROM audit_nodes n
         LEFT JOIN audit_entries e ON e.seq = n.idx WHERE n.level = 0 ORDER BY n.idx",
    )?;
    let mut rows = leaves.query([])?;
    while let Some(row) = rows.next()? {
        let idx: i64 = row.get(0)?;
        let node = value_bytes(row.get_ref(1)?);
        let leaf = match row.get_ref(2)? {
            ValueRef::Null => None,
            value => Some(value_bytes(value)),
        };
        if leaf.as_deref() != Some(node.as_slice()) {
            return Ok(Some(as_position(0, idx)));
        }
    }
    // Interior nodes against their children.
    let mut interior = conn.prepare(
        "SELECT p.level, p.idx, p.hash, l.hash, r.hash FROM audit_nodes p
         LEFT JOIN audit_nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx
         LEFT JOIN audit_nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1
         WHERE p.level > 0 ORDER BY p.level, p.idx",
    )?;
    let mut rows = interior.query([])?;
    while let Some(row) = rows.next()? {
        let (level, idx): (i64, i64) = (row.get(0)?, row.get(1)?);
        let parent = to_hash(&value_bytes(row.get_ref(2)?));
        let children = match (row.get_ref(3)?, row.get_ref(4)?) {
            (ValueRef::Null, _) | (_, ValueRef::Null) => None,
            (l, r) => to_hash(&value_bytes(l)).zip(to_hash(&value_bytes(r))),
        };
        let expected = children.map(|(l, r)| node_hash(&l, &r));
        if parent.is_none() || parent != expected {
            return Ok(Some(as_position(level, idx)));
        }
    }
    // As many nodes on each level as the tree has, no more and no fewer.
    let mut counts =
        conn.prepare("SELECT level, COUNT(*), MAX(idx) FROM audit_nodes GROUP BY level")?;
    let mut rows = counts.query([])?;
    let mut levels_seen = 0u32;
    while let Some(row) = rows.next()? {
        let (level, count, max): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let Ok(level_u) = u32::try_from(level) else {
            return Ok(Some(as_position(level, max)));
        };
        let want = entries.checked_shr(level_u).unwrap_or(0);
        if u64::try_from(count).ok() != Some(want) || u64::try_from(max).ok() != want.checked_sub(1)
        {
            return Ok(Some(as_position(level, max)));
        }
        levels_seen += 1;
    }
    let levels_needed = if entries == 0 {
        0
    } else {
        64 - entries.leading_zeros()
    };
    if levels_seen != levels_needed {
        return Ok(Some((levels_seen, 0)));
    }
    Ok(None)
}
