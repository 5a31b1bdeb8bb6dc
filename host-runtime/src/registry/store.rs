//! The registry's tables, beside the audit log's in the same SQLite database.
//!
//! Append-only is enforced by the database itself: triggers refuse deleting a version, changing
//! its text, schema, digest or publisher, changing the envelope of a version that is no longer
//! pending, and moving a state backwards. Identities and keys are never deleted either.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension as _};

use super::roles::{roles_from_text, roles_to_text, Role};
use super::{RegistryError, VersionState};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registry_principals (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    roles         TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    pseudonym_key BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    disabled_at   TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS registry_keys (
    fingerprint TEXT PRIMARY KEY,
    spki        BLOB NOT NULL,
    scheme      TEXT NOT NULL,
    owner       INTEGER NOT NULL REFERENCES registry_principals(id),
    valid_from  TEXT NOT NULL,
    valid_until TEXT,
    revoked_at  TEXT,
    added_at    TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS registry_policies (
    template_id TEXT PRIMARY KEY,
    policy      TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS registry_versions (
    template_id      TEXT NOT NULL,
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'withdrawn')),
    template         BLOB NOT NULL,
    variables_schema TEXT NOT NULL,
    digest           TEXT NOT NULL,
    envelope         TEXT NOT NULL,
    report_digest    TEXT,
    publisher        INTEGER NOT NULL REFERENCES registry_principals(id),
    submitted_at     TEXT NOT NULL,
    approved_at      TEXT,
    withdrawn_at     TEXT,
    published_seq    INTEGER,
    PRIMARY KEY (template_id, version)
) STRICT;
CREATE TABLE IF NOT EXISTS registry_signatures (
    template_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    principal   INTEGER NOT NULL REFERENCES registry_principals(id),
    fingerprint TEXT NOT NULL,
    signed_at   TEXT NOT NULL,
    audit_seq   INTEGER NOT NULL,
    PRIMARY KEY (template_id, version, principal),
    UNIQUE (template_id, version, fingerprint)
) STRICT;
CREATE TABLE IF NOT EXISTS registry_reports (
    digest TEXT PRIMARY KEY,
    report TEXT NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS registry_versions_no_delete
BEFORE DELETE ON registry_versions
BEGIN SELECT RAISE(ABORT, 'template versions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS registry_versions_fixed
BEFORE UPDATE ON registry_versions
WHEN NEW.template_id IS NOT OLD.template_id OR NEW.version IS NOT OLD.version
  OR NEW.template IS NOT OLD.template OR NEW.variables_schema IS NOT OLD.variables_schema
  OR NEW.digest IS NOT OLD.digest OR NEW.publisher IS NOT OLD.publisher
  OR NEW.submitted_at IS NOT OLD.submitted_at OR NEW.report_digest IS NOT OLD.report_digest
  OR (OLD.state <> 'pending' AND NEW.envelope IS NOT OLD.envelope)
  OR (OLD.state = 'withdrawn' AND NEW.state <> 'withdrawn')
  OR (OLD.state = 'approved' AND NEW.state = 'pending')
BEGIN SELECT RAISE(ABORT, 'a template version only moves from pending to approved to withdrawn'); END;
CREATE TRIGGER IF NOT EXISTS registry_signatures_no_change
BEFORE UPDATE ON registry_signatures
BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS registry_signatures_no_delete
BEFORE DELETE ON registry_signatures
BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS registry_principals_no_delete
BEFORE DELETE ON registry_principals
BEGIN SELECT RAISE(ABORT, 'identities are disabled, never deleted'); END;
CREATE TRIGGER IF NOT EXISTS registry_keys_no_delete
BEFORE DELETE ON registry_keys
BEGIN SELECT RAISE(ABORT, 'keys are revoked or retired, never deleted'); END;
CREATE TRIGGER IF NOT EXISTS registry_keys_fixed
BEFORE UPDATE ON registry_keys
WHEN NEW.spki IS NOT OLD.spki OR NEW.scheme IS NOT OLD.scheme OR NEW.owner IS NOT OLD.owner
  OR NEW.valid_from IS NOT OLD.valid_from
  OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at)
BEGIN SELECT RAISE(ABORT, 'a key record only gains an end or a revocation'); END;
CREATE TRIGGER IF NOT EXISTS registry_reports_fixed
BEFORE UPDATE ON registry_reports
BEGIN SELECT RAISE(ABORT, 'validation reports are append-only'); END;
";

pub(super) fn init(conn: &Connection) -> Result<(), RegistryError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// One identity row.
#[derive(Debug, Clone)]
pub(super) struct PrincipalRow {
    pub id: i64,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub pseudonym_key: Vec<u8>,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

const PRINCIPAL_COLUMNS: &str = "id, name, roles, pseudonym_key, created_at, disabled_at";

fn principal_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(PrincipalRow, String)> {
    Ok((
        PrincipalRow {
            id: row.get(0)?,
            name: row.get(1)?,
            roles: BTreeSet::new(),
            pseudonym_key: row.get(3)?,
            created_at: row.get(4)?,
            disabled_at: row.get(5)?,
        },
        row.get(2)?,
    ))
}

fn with_roles((mut row, roles): (PrincipalRow, String)) -> Result<PrincipalRow, RegistryError> {
    row.roles = roles_from_text(&roles)
        .ok_or_else(|| RegistryError::Corrupt(format!("identity `{}` has bad roles", row.name)))?;
    Ok(row)
}

pub(super) fn principal_by_token(
    conn: &Connection,
    token_sha256: &str,
) -> Result<Option<PrincipalRow>, RegistryError> {
    conn.query_row(
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM registry_principals WHERE token_sha256 = ?1"),
        [token_sha256],
        principal_row,
    )
    .optional()?
    .map(with_roles)
    .transpose()
}

pub(super) fn principal_by_id(
    conn: &Connection,
    id: i64,
) -> Result<Option<PrincipalRow>, RegistryError> {
    conn.query_row(
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM registry_principals WHERE id = ?1"),
        [id],
        principal_row,
    )
    .optional()?
    .map(with_roles)
    .transpose()
}

pub(super) fn principal_by_name(
    conn: &Connection,
    name: &str,
) -> Result<Option<PrincipalRow>, RegistryError> {
    conn.query_row(
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM registry_principals WHERE name = ?1"),
        [name],
        principal_row,
    )
    .optional()?
    .map(with_roles)
    .transpose()
}

pub(super) fn principals(conn: &Connection) -> Result<Vec<PrincipalRow>, RegistryError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM registry_principals ORDER BY name"
    ))?;
    let rows = statement
        .query_map([], principal_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(with_roles).collect()
}

pub(super) fn principal_count(conn: &Connection) -> Result<u64, RegistryError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM registry_principals", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn insert_principal(
    conn: &Connection,
    name: &str,
    roles: &BTreeSet<Role>,
    token_sha256: &str,
    pseudonym_key: &[u8],
    now: &str,
) -> Result<i64, RegistryError> {
    conn.execute(
        "INSERT INTO registry_principals (name, roles, token_sha256, pseudonym_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, roles_to_text(roles), token_sha256, pseudonym_key, now],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn set_roles(
    conn: &Connection,
    id: i64,
    roles: &BTreeSet<Role>,
) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE registry_principals SET roles = ?2 WHERE id = ?1",
        params![id, roles_to_text(roles)],
    )?;
    Ok(())
}

pub(super) fn disable_principal(
    conn: &Connection,
    id: i64,
    now: &str,
) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE registry_principals SET disabled_at = ?2 WHERE id = ?1 AND disabled_at IS NULL",
        params![id, now],
    )?;
    Ok(())
}

pub(super) fn set_token(
    conn: &Connection,
    id: i64,
    token_sha256: &str,
) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE registry_principals SET token_sha256 = ?2 WHERE id = ?1",
        params![id, token_sha256],
    )?;
    Ok(())
}

/// Active identities holding `role`.
pub(super) fn count_with_role(conn: &Connection, role: Role) -> Result<usize, RegistryError> {
    Ok(principals(conn)?
        .iter()
        .filter(|p| p.disabled_at.is_none() && p.roles.contains(&role))
        .count())
}

/// One key row.
#[derive(Debug, Clone)]
pub(super) struct KeyRow {
    pub fingerprint: String,
    pub spki: Vec<u8>,
    pub scheme: String,
    pub owner: i64,
    pub valid_from: String,
    pub valid_until: Option<String>,
    pub revoked_at: Option<String>,
    pub added_at: String,
}

const KEY_COLUMNS: &str =
    "fingerprint, spki, scheme, owner, valid_from, valid_until, revoked_at, added_at";

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        fingerprint: row.get(0)?,
        spki: row.get(1)?,
        scheme: row.get(2)?,
        owner: row.get(3)?,
        valid_from: row.get(4)?,
        valid_until: row.get(5)?,
        revoked_at: row.get(6)?,
        added_at: row.get(7)?,
    })
}

pub(super) fn keys(conn: &Connection) -> Result<Vec<KeyRow>, RegistryError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM registry_keys ORDER BY added_at, fingerprint"
    ))?;
    let rows = statement
        .query_map([], key_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn key(conn: &Connection, fingerprint: &str) -> Result<Option<KeyRow>, RegistryError> {
    Ok(conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM registry_keys WHERE fingerprint = ?1"),
            [fingerprint],
            key_row,
        )
        .optional()?)
}

pub(super) fn insert_key(conn: &Connection, key: &KeyRow) -> Result<(), RegistryError> {
    conn.execute(
        &format!(
            "INSERT INTO registry_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            key.fingerprint,
            key.spki,
            key.scheme,
            key.owner,
            key.valid_from,
            key.valid_until,
            key.revoked_at,
            key.added_at
        ],
    )?;
    Ok(())
}

pub(super) fn set_key_end(
    conn: &Connection,
    fingerprint: &str,
    valid_until: Option<&str>,
    revoked_at: Option<&str>,
) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE registry_keys SET valid_until = ?2, revoked_at = ?3 WHERE fingerprint = ?1",
        params![fingerprint, valid_until, revoked_at],
    )?;
    Ok(())
}

pub(super) fn policy(
    conn: &Connection,
    template_id: &str,
) -> Result<Option<String>, RegistryError> {
    Ok(conn
        .query_row(
            "SELECT policy FROM registry_policies WHERE template_id = ?1",
            [template_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub(super) fn set_policy(
    conn: &Connection,
    template_id: &str,
    policy: &str,
) -> Result<(), RegistryError> {
    conn.execute(
        "INSERT INTO registry_policies (template_id, policy) VALUES (?1, ?2)
         ON CONFLICT (template_id) DO UPDATE SET policy = excluded.policy",
        params![template_id, policy],
    )?;
    Ok(())
}

/// One version row.
#[derive(Debug, Clone)]
pub(super) struct VersionRow {
    pub template_id: String,
    pub version: u64,
    pub state: VersionState,
    pub template: Vec<u8>,
    pub variables_schema: String,
    pub digest: String,
    pub envelope: String,
    pub report_digest: Option<String>,
    pub publisher: i64,
    pub submitted_at: String,
    pub approved_at: Option<String>,
    pub withdrawn_at: Option<String>,
    pub published_seq: Option<u64>,
}

const VERSION_COLUMNS: &str = "template_id, version, state, template, variables_schema, digest, \
     envelope, report_digest, publisher, submitted_at, approved_at, withdrawn_at, published_seq";

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(VersionRow, String, i64)> {
    Ok((
        VersionRow {
            template_id: row.get(0)?,
            version: 0,
            state: VersionState::Pending,
            template: row.get(3)?,
            variables_schema: row.get(4)?,
            digest: row.get(5)?,
            envelope: row.get(6)?,
            report_digest: row.get(7)?,
            publisher: row.get(8)?,
            submitted_at: row.get(9)?,
            approved_at: row.get(10)?,
            withdrawn_at: row.get(11)?,
            published_seq: row
                .get::<_, Option<i64>>(12)?
                .and_then(|s| u64::try_from(s).ok()),
        },
        row.get(2)?,
        row.get(1)?,
    ))
}

fn finish_version(
    (mut row, state, version): (VersionRow, String, i64),
) -> Result<VersionRow, RegistryError> {
    row.state = match state.as_str() {
        "pending" => VersionState::Pending,
        "approved" => VersionState::Approved,
        "withdrawn" => VersionState::Withdrawn,
        other => return Err(RegistryError::Corrupt(format!("version state `{other}`"))),
    };
    row.version = u64::try_from(version)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| RegistryError::Corrupt(format!("version {version}")))?;
    Ok(row)
}

pub(super) fn versions(
    conn: &Connection,
    template_id: &str,
) -> Result<Vec<VersionRow>, RegistryError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM registry_versions WHERE template_id = ?1 ORDER BY version"
    ))?;
    let rows = statement
        .query_map([template_id], version_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(finish_version).collect()
}

pub(super) fn template_ids(conn: &Connection) -> Result<Vec<String>, RegistryError> {
    let mut statement = conn.prepare(
        "SELECT DISTINCT template_id FROM registry_versions
         UNION SELECT template_id FROM registry_policies ORDER BY 1",
    )?;
    let rows = statement
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn insert_version(conn: &Connection, row: &VersionRow) -> Result<(), RegistryError> {
    conn.execute(
        &format!(
            "INSERT INTO registry_versions ({VERSION_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            row.template_id,
            to_i64(row.version)?,
            row.state.as_str(),
            row.template,
            row.variables_schema,
            row.digest,
            row.envelope,
            row.report_digest,
            row.publisher,
            row.submitted_at,
            row.approved_at,
            row.withdrawn_at,
            row.published_seq.map(to_i64).transpose()?,
        ],
    )?;
    Ok(())
}

/// Writes what may change on a version: its state, envelope and the times and entry that
/// go with them (the triggers refuse anything else).
pub(super) fn update_version(conn: &Connection, row: &VersionRow) -> Result<(), RegistryError> {
    conn.execute(
        "UPDATE registry_versions SET state = ?3, envelope = ?4, approved_at = ?5,
             withdrawn_at = ?6, published_seq = ?7
         WHERE template_id = ?1 AND version = ?2",
        params![
            row.template_id,
            to_i64(row.version)?,
            row.state.as_str(),
            row.envelope,
            row.approved_at,
            row.withdrawn_at,
            row.published_seq.map(to_i64).transpose()?,
        ],
    )?;
    Ok(())
}

/// One signature row: who signed a version with which key.
#[derive(Debug, Clone)]
pub(super) struct SignatureRow {
    pub principal: i64,
    pub fingerprint: String,
    pub signed_at: String,
    pub audit_seq: u64,
}

pub(super) fn signatures(
    conn: &Connection,
    template_id: &str,
    version: u64,
) -> Result<Vec<SignatureRow>, RegistryError> {
    let mut statement = conn.prepare(
        "SELECT principal, fingerprint, signed_at, audit_seq FROM registry_signatures
         WHERE template_id = ?1 AND version = ?2 ORDER BY audit_seq",
    )?;
    let rows = statement
        .query_map(params![template_id, to_i64(version)?], |r| {
            Ok(SignatureRow {
                principal: r.get(0)?,
                fingerprint: r.get(1)?,
                signed_at: r.get(2)?,
                audit_seq: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn insert_signature(
    conn: &Connection,
    template_id: &str,
    version: u64,
    row: &SignatureRow,
) -> Result<(), RegistryError> {
    conn.execute(
        "INSERT INTO registry_signatures
             (template_id, version, principal, fingerprint, signed_at, audit_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            template_id,
            to_i64(version)?,
            row.principal,
            row.fingerprint,
            row.signed_at,
            to_i64(row.audit_seq)?
        ],
    )?;
    Ok(())
}

pub(super) fn insert_report(
    conn: &Connection,
    digest: &str,
    report: &str,
) -> Result<(), RegistryError> {
    conn.execute(
        "INSERT INTO registry_reports (digest, report) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![digest, report],
    )?;
    Ok(())
}

pub(super) fn report(conn: &Connection, digest: &str) -> Result<Option<String>, RegistryError> {
    Ok(conn
        .query_row(
            "SELECT report FROM registry_reports WHERE digest = ?1",
            [digest],
            |r| r.get(0),
        )
        .optional()?)
}

fn to_i64(n: u64) -> Result<i64, RegistryError> {
    i64::try_from(n).map_err(|_| RegistryError::Invalid(format!("{n} is too large")))
}
