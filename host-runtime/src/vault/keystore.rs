//! The key store: tenant keys (wrapped by the master key) and subject keys (wrapped by a tenant
//! key), in a SQLite file of its own, apart from the data they protect, so it can have its own,
//! short backup retention. Deleted rows are overwritten (`secure_delete`) and the write-ahead
//! log is truncated after an erasure, so a destroyed key leaves no copy in the file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension as _};

use super::master::WrappedKey;
use super::VaultError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vault_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tenant_keys (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    wraps         INTEGER NOT NULL DEFAULT 0,
    retired       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS tenant_keys_tenant ON tenant_keys (tenant, retired);
CREATE INDEX IF NOT EXISTS tenant_keys_master ON tenant_keys (master_key_id);
CREATE TABLE IF NOT EXISTS subject_keys (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    tenant_key_id TEXT NOT NULL,
    wrapped       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (tenant, subject)
) STRICT;
CREATE INDEX IF NOT EXISTS subject_keys_subject ON subject_keys (subject);
";

const SCHEMA_VERSION: &str = "1";

/// A tenant key as stored.
#[derive(Debug, Clone)]
pub struct TenantKeyRow {
    /// `tk_` and 32 hex digits.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The key as the master key wrapped it.
    pub wrapped: WrappedKey,
    /// Subject keys wrapped under it so far (counted when it is chosen).
    pub wraps: u64,
}

/// A subject key as stored.
#[derive(Debug, Clone)]
pub struct SubjectKeyRow {
    /// `sk_` and 32 hex digits.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub subject: String,
    /// The tenant key it is wrapped under.
    pub tenant_key_id: String,
    /// AES-256-GCM nonce, ciphertext and tag of the key.
    pub wrapped: Vec<u8>,
}

/// The key store's SQLite database.
pub struct KeyStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl KeyStore {
    /// Whether the key store at `path` exists and holds tenant keys (read only; nothing is
    /// made).
    pub fn holds_keys(path: &Path) -> Result<bool, VaultError> {
        if !path.exists() {
            return Ok(false);
        }
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| VaultError::Config(format!("key store `{}`: {e}", path.display())))?;
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenant_keys')",
            [],
            |r| r.get(0),
        )?;
        if !has_table {
            return Ok(false);
        }
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM tenant_keys", [], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// The key store at `path`, made (readable by its owner only) when missing.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                VaultError::Config(format!("key store folder `{}`: {e}", dir.display()))
            })?;
        }
        // WAL, FULL (a lost key is lost data: every key write is on disk before it is used),
        // secure_delete, owner-only mode.
        let conn = crate::sqlite::open(path, true)
            .map_err(|e| VaultError::Config(format!("key store `{}`: {e}", path.display())))?;
        conn.execute_batch(SCHEMA)?;
        let stored: Option<String> = conn
            .query_row(
                "SELECT value FROM vault_meta WHERE name = 'schema'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match stored.as_deref() {
            None => {
                conn.execute(
                    "INSERT OR IGNORE INTO vault_meta (name, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(VaultError::Config(format!(
                    "key store `{}` has schema version {other}; this sigil reads {SCHEMA_VERSION}",
                    path.display()
                )))
            }
        }
        Ok(KeyStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// Where the key store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| VaultError::Config("the key store's lock is poisoned".into()))?;
        f(&mut conn)
    }

    /// The tenant's newest tenant key that is not retired.
    pub fn current_tenant_key(&self, tenant: &str) -> Result<Option<TenantKeyRow>, VaultError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT id, tenant, master_key_id, wrapped, wraps FROM tenant_keys
                 WHERE tenant = ?1 AND retired = 0 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            )?
            .query_row([tenant], tenant_row)
            .optional()?)
        })
    }

    /// The tenant key `id`.
    pub fn tenant_key(&self, id: &str) -> Result<Option<TenantKeyRow>, VaultError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT id, tenant, master_key_id, wrapped, wraps FROM tenant_keys WHERE id = ?1",
            )?
            .query_row([id], tenant_row)
            .optional()?)
        })
    }

    /// Stores a new tenant key.
    pub fn insert_tenant_key(&self, row: &TenantKeyRow) -> Result<(), VaultError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO tenant_keys (id, tenant, master_key_id, wrapped, created_at, wraps)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.id,
                    row.tenant,
                    row.wrapped.master_key_id,
                    row.wrapped.blob,
                    now_seconds(),
                    i64::try_from(row.wraps).unwrap_or(i64::MAX)
                ],
            )?;
            Ok(())
        })
    }

    /// Adds `n` to the number of subject keys wrapped under tenant key `id`.
    pub fn count_wraps(&self, id: &str, n: u64) -> Result<(), VaultError> {
        self.with(|c| {
            c.execute(
                "UPDATE tenant_keys SET wraps = wraps + ?1 WHERE id = ?2",
                params![i64::try_from(n).unwrap_or(i64::MAX), id],
            )?;
            Ok(())
        })
    }

    /// The user's subject key in `tenant`.
    pub fn subject_key(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Option<SubjectKeyRow>, VaultError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT id, tenant, subject, tenant_key_id, wrapped FROM subject_keys
                 WHERE tenant = ?1 AND subject = ?2",
            )?
            .query_row([tenant, subject], subject_row)
            .optional()?)
        })
    }

    /// The subject key `id`.
    pub fn subject_key_by_id(&self, id: &str) -> Result<Option<SubjectKeyRow>, VaultError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT id, tenant, subject, tenant_key_id, wrapped FROM subject_keys WHERE id = ?1",
            )?
            .query_row([id], subject_row)
            .optional()?)
        })
    }

    /// Whether the subject key `id` still exists.
    pub fn subject_key_exists(&self, id: &str) -> Result<bool, VaultError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM subject_keys WHERE id = ?1")?
                    .query_row([id], |_| Ok(()))
                    .optional()?
                    .is_some(),
            )
        })
    }

    /// Stores `row` unless the user has a key in the tenant already; answers the key that is
    /// stored (so two writers making the first key of one user agree on one).
    pub fn insert_subject_key(&self, row: &SubjectKeyRow) -> Result<SubjectKeyRow, VaultError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO subject_keys (id, tenant, subject, tenant_key_id, wrapped, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, subject) DO NOTHING",
                params![
                    row.id,
                    row.tenant,
                    row.subject,
                    row.tenant_key_id,
                    row.wrapped,
                    now_seconds()
                ],
            )?;
            let stored = tx.query_row(
                "SELECT id, tenant, subject, tenant_key_id, wrapped FROM subject_keys
                     WHERE tenant = ?1 AND subject = ?2",
                [&row.tenant, &row.subject],
                subject_row,
            )?;
            tx.commit()?;
            Ok(stored)
        })
    }

    /// Destroys the user's subject keys (in `tenant`, or in every tenant) and answers their
    /// ids. The freed pages are overwritten and the write-ahead log emptied before this
    /// returns, so the file keeps no copy.
    pub fn destroy_subject_keys(
        &self,
        subject: &str,
        tenant: Option<&str>,
    ) -> Result<Vec<String>, VaultError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM subject_keys WHERE subject = ?1 AND (?2 IS NULL OR tenant = ?2)",
                )?;
                let rows = stmt.query_map(params![subject, tenant], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            tx.execute(
                "DELETE FROM subject_keys WHERE subject = ?1 AND (?2 IS NULL OR tenant = ?2)",
                params![subject, tenant],
            )?;
            tx.commit()?;
            // TRUNCATE waits for readers and leaves an empty log: the old pages are gone.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(ids)
        })
    }

    /// Tenant keys not wrapped under `master_key_id`, oldest first, at most `limit`.
    pub fn tenant_keys_not_under(
        &self,
        master_key_id: &str,
        limit: u32,
    ) -> Result<Vec<TenantKeyRow>, VaultError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, tenant, master_key_id, wrapped, wraps FROM tenant_keys
                 WHERE master_key_id <> ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![master_key_id, limit], tenant_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Replaces the wrapped form of tenant key `id` if it is still `old` (a second rewrap
    /// running at once changes nothing twice). Each replacement commits on its own, so a
    /// rewrap stopped anywhere keeps what it did.
    pub fn replace_wrapped(
        &self,
        id: &str,
        old: &WrappedKey,
        new: &WrappedKey,
    ) -> Result<bool, VaultError> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE tenant_keys SET master_key_id = ?1, wrapped = ?2
                 WHERE id = ?3 AND master_key_id = ?4 AND wrapped = ?5",
                params![new.master_key_id, new.blob, id, old.master_key_id, old.blob],
            )?;
            Ok(changed == 1)
        })
    }

    /// Every tenant key.
    pub fn tenant_keys(&self) -> Result<Vec<TenantKeyRow>, VaultError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, tenant, master_key_id, wrapped, wraps FROM tenant_keys ORDER BY rowid",
            )?;
            let rows = stmt.query_map([], tenant_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every subject key.
    pub fn subject_keys(&self) -> Result<Vec<SubjectKeyRow>, VaultError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, tenant, subject, tenant_key_id, wrapped FROM subject_keys ORDER BY rowid",
            )?;
            let rows = stmt.query_map([], subject_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// How many tenant keys each master key (version) wraps.
    pub fn tenant_keys_by_master(&self) -> Result<Vec<(String, u64)>, VaultError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT master_key_id, COUNT(*) FROM tenant_keys GROUP BY master_key_id ORDER BY 1",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// How many subject keys there are.
    pub fn subject_key_count(&self) -> Result<u64, VaultError> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM subject_keys", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantKeyRow> {
    Ok(TenantKeyRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        wrapped: WrappedKey {
            master_key_id: r.get(2)?,
            blob: r.get(3)?,
        },
        wraps: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
    })
}

fn subject_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubjectKeyRow> {
    Ok(SubjectKeyRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        subject: r.get(2)?,
        tenant_key_id: r.get(3)?,
        wrapped: r.get(4)?,
    })
}
