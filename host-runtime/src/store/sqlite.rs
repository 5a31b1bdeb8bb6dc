//! The SQLite backend: tables prefixed `behaviour_`, by default in the same database file as the
//! registry and the audit log, with the log's durability (WAL, `synchronous=FULL`, one
//! transaction per write).

use std::path::{Path, PathBuf};

use guard_core::time::Timestamp;
use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use super::pool::{self, Pool};
use super::{
    detection_record, digests_json, findings_json, next_revision, profile_value, pseudonym_with,
    revision, stored_profile, tenant_from_column, time_text, update_with, DetectionRecord, Erased,
    Export, ExportedProfile, ProfileKey, ProfileStore, Purged, Retention, StoreError,
    StoredProfile, Update, UpdateFn, Updated,
};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS behaviour_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS behaviour_profiles (
    tenant   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    profile  TEXT NOT NULL,
    revision INTEGER NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, subject)
) STRICT;
CREATE INDEX IF NOT EXISTS behaviour_profiles_subject ON behaviour_profiles (subject);
CREATE INDEX IF NOT EXISTS behaviour_profiles_seen ON behaviour_profiles (seen_at);
CREATE TABLE IF NOT EXISTS behaviour_detections (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    tenant   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    level    TEXT NOT NULL,
    action   TEXT NOT NULL,
    score    REAL NOT NULL,
    findings TEXT NOT NULL,
    digests  TEXT NOT NULL,
    excerpt  TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS behaviour_detections_subject ON behaviour_detections (subject);
CREATE INDEX IF NOT EXISTS behaviour_detections_at ON behaviour_detections (at);
CREATE TABLE IF NOT EXISTS behaviour_subjects (
    subject       TEXT PRIMARY KEY,
    pseudonym_key BLOB NOT NULL
) STRICT;
";

struct Conn(Connection);

impl pool::Connection for Conn {}

/// Profiles and detections in a SQLite database.
pub struct SqliteStore {
    path: PathBuf,
    pool: Pool<Conn>,
    /// This process's writers take turns here rather than in SQLite's busy handler, which
    /// sleeps in steps of up to 100 ms: one writer at a time is all SQLite allows anyway.
    writer: std::sync::Mutex<()>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Opens a connection with the durability the store promises.
///
/// Profile updates are committed to the write-ahead log without waiting for the disk
/// (`synchronous=NORMAL`): an update survives a crash of the process, and only an operating
/// system crash or power loss can take back the last ones. A profile is a running summary, one
/// update per request, and waiting for the disk on every request would make the disk the speed
/// of the service. Erasures wait for the disk (a checkpoint after each), and the audit log,
/// incidents and outbox, in the same file or not, are committed with `synchronous=FULL` on their
/// own connections.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = crate::sqlite::open(path, true).map_err(|e| match e {
        crate::sqlite::OpenError::Sqlite(e) => StoreError::from(e),
        other => StoreError::Schema(other.to_string()),
    })?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    Ok(conn)
}

/// Creates the tables if needed, and checks the schema version of existing ones.
fn init(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    init_in(&tx)?;
    tx.commit()?;
    Ok(())
}

/// [`init`] inside the caller's transaction.
pub(crate) fn init_in(tx: &Connection) -> Result<(), StoreError> {
    tx.execute_batch(SCHEMA)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM behaviour_meta WHERE name = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if super::schema_is_new(stored, SCHEMA_VERSION)? {
        tx.execute(
            "INSERT INTO behaviour_meta (name, value) VALUES ('schema', ?1)",
            [SCHEMA_VERSION],
        )?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens the database at `path`, creating it and its tables if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut first = connect(path)?;
        init(&mut first)?;
        let owned = path.to_path_buf();
        Ok(SqliteStore {
            path: path.to_path_buf(),
            pool: Pool::new(Conn(first), move || connect(&owned).map(Conn)),
            writer: std::sync::Mutex::new(()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn load_in(conn: &Connection, key: &ProfileKey) -> Result<Option<(String, i64, i64)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT profile, revision, seen_at FROM behaviour_profiles
             WHERE tenant = ?1 AND subject = ?2",
            params![key.tenant_column(), key.subject()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// One compare-and-swap write; `None` when the profile moved on since `read`.
fn write_in(
    conn: &mut Connection,
    key: &ProfileKey,
    now: i64,
    read: Option<i64>,
    update: &Update,
) -> Result<Option<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (changed, new_revision) = match read {
        Some(rev) => (
            tx.execute(
                "UPDATE behaviour_profiles SET profile = ?1, revision = ?2, seen_at = ?3
                 WHERE tenant = ?4 AND subject = ?5 AND revision = ?6",
                params![
                    update.profile,
                    next_revision(rev)?,
                    now,
                    key.tenant_column(),
                    key.subject(),
                    rev
                ],
            )?,
            next_revision(rev)?,
        ),
        None => (
            tx.execute(
                "INSERT INTO behaviour_profiles (tenant, subject, profile, revision, seen_at)
                 VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT DO NOTHING",
                params![key.tenant_column(), key.subject(), update.profile, now],
            )?,
            1,
        ),
    };
    if changed == 0 {
        // Dropping the transaction rolls it back.
        return Ok(None);
    }
    // The subject's pseudonym key, made on every write rather than only the first: a purge
    // that raced the first write may have removed it.
    tx.execute(
        "INSERT INTO behaviour_subjects (subject, pseudonym_key) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
        params![key.subject(), super::new_pseudonym_key()?.as_slice()],
    )?;
    if let Some(d) = &update.detection {
        tx.execute(
            "INSERT INTO behaviour_detections
                 (at, tenant, subject, level, action, score, findings, digests, excerpt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                now,
                key.tenant_column(),
                key.subject(),
                d.level.as_str(),
                d.action.as_str(),
                d.score,
                findings_json(&d.findings),
                digests_json(&d.digests),
                d.excerpt,
            ],
        )?;
    }
    tx.commit()?;
    Ok(Some(new_revision))
}

fn key_in(conn: &Connection, subject: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT pseudonym_key FROM behaviour_subjects WHERE subject = ?1",
            [subject],
            |r| r.get(0),
        )
        .optional()?)
}

/// Erases inside the caller's transaction (the registry's, so that its audit entry commits with
/// the erasure). The tables must exist ([`init`]).
pub(crate) fn erase_in(
    conn: &Connection,
    subject: &str,
    tenant: Option<&str>,
) -> Result<Erased, StoreError> {
    let pseudonym = pseudonym_with(key_in(conn, subject)?.as_deref(), subject)?;
    let (profiles, detections) = match tenant {
        Some(t) => (
            conn.execute(
                "DELETE FROM behaviour_profiles WHERE subject = ?1 AND tenant = ?2",
                params![subject, t],
            )?,
            conn.execute(
                "DELETE FROM behaviour_detections WHERE subject = ?1 AND tenant = ?2",
                params![subject, t],
            )?,
        ),
        None => (
            conn.execute(
                "DELETE FROM behaviour_profiles WHERE subject = ?1",
                [subject],
            )?,
            conn.execute(
                "DELETE FROM behaviour_detections WHERE subject = ?1",
                [subject],
            )?,
        ),
    };
    // The key goes with the last of the subject's rows.
    let remaining: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM behaviour_profiles WHERE subject = ?1)
              + (SELECT COUNT(*) FROM behaviour_detections WHERE subject = ?1)",
        [subject],
        |r| r.get(0),
    )?;
    let key_destroyed = remaining == 0;
    if key_destroyed {
        conn.execute(
            "DELETE FROM behaviour_subjects WHERE subject = ?1",
            [subject],
        )?;
    }
    Ok(Erased {
        profiles: profiles as u64,
        detections: detections as u64,
        pseudonym,
        key_destroyed,
    })
}

fn export_in(conn: &Connection, subject: &str, tenant: Option<&str>) -> Result<Export, StoreError> {
    let filter = tenant.unwrap_or("");
    let all = tenant.is_none();
    let mut statement = conn.prepare(
        "SELECT tenant, profile, revision, seen_at FROM behaviour_profiles
         WHERE subject = ?1 AND (?2 OR tenant = ?3) ORDER BY tenant",
    )?;
    let profiles = statement
        .query_map(params![subject, all, filter], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(tenant, profile, rev, seen)| {
            Ok(ExportedProfile {
                tenant: tenant_from_column(tenant),
                profile: profile_value(&profile),
                revision: revision(rev)?,
                seen_at: time_text(seen),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut statement = conn.prepare(
        "SELECT at, tenant, subject, level, action, score, findings, digests, excerpt
         FROM behaviour_detections WHERE subject = ?1 AND (?2 OR tenant = ?3) ORDER BY id",
    )?;
    let rows = statement
        .query_map(params![subject, all, filter], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, f64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let detections = rows
        .into_iter()
        .map(
            |(at, t, s, level, action, score, findings, digests, excerpt)| {
                detection_record(at, t, s, level, action, score, &findings, &digests, excerpt)
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Export {
        subject: subject.to_string(),
        tenant: tenant.map(str::to_string),
        profiles,
        detections,
    })
}

impl ProfileStore for SqliteStore {
    fn load(&self, key: &ProfileKey) -> Result<Option<StoredProfile>, StoreError> {
        self.pool
            .with(|c| load_in(&c.0, key)?.map(stored_profile).transpose())
    }

    fn update(
        &self,
        key: &ProfileKey,
        now: Timestamp,
        f: &mut UpdateFn<'_>,
    ) -> Result<Updated, StoreError> {
        self.pool.with(|c| {
            // Read outside a transaction: the caller's function (a guard call) never holds the
            // database's write lock.
            let conn = std::cell::RefCell::new(&mut c.0);
            update_with(
                f,
                || load_in(&conn.borrow(), key),
                |read, update| {
                    let _turn = self
                        .writer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    write_in(
                        &mut conn.borrow_mut(),
                        key,
                        now.unix_seconds(),
                        read,
                        update,
                    )
                },
            )
        })
    }

    fn erase(&self, subject: &str, tenant: Option<&str>) -> Result<Erased, StoreError> {
        self.pool.with(|c| {
            let tx =
                c.0.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let erased = erase_in(&tx, subject, tenant)?;
            tx.commit()?;
            checkpoint(&c.0)?;
            Ok(erased)
        })
    }

    fn export(&self, subject: &str, tenant: Option<&str>) -> Result<Export, StoreError> {
        self.pool.with(|c| {
            // One snapshot, so profiles and detections agree.
            let tx = c.0.transaction()?;
            let export = export_in(&tx, subject, tenant)?;
            tx.commit()?;
            Ok(export)
        })
    }

    fn pseudonym(&self, subject: &str) -> Result<String, StoreError> {
        self.pool
            .with(|c| pseudonym_with(key_in(&c.0, subject)?.as_deref(), subject))
    }

    fn purge(&self, now: Timestamp, retention: Retention) -> Result<Purged, StoreError> {
        let (detections_before, profiles_before) = retention.cutoffs(now);
        self.pool.with(|c| {
            let tx =
                c.0.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let detections = tx.execute(
                "DELETE FROM behaviour_detections WHERE at < ?1",
                [detections_before],
            )?;
            let profiles = tx.execute(
                "DELETE FROM behaviour_profiles WHERE seen_at < ?1",
                [profiles_before],
            )?;
            let subjects = tx.execute(
                "DELETE FROM behaviour_subjects
                 WHERE subject NOT IN (SELECT subject FROM behaviour_profiles)
                   AND subject NOT IN (SELECT subject FROM behaviour_detections)",
                [],
            )?;
            tx.commit()?;
            Ok(Purged {
                detections: detections as u64,
                profiles: profiles as u64,
                subjects: subjects as u64,
            })
        })
    }

    fn detections_since(
        &self,
        since: Timestamp,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, DetectionRecord)>, StoreError> {
        self.pool.with(|c| {
            let mut statement = c.0.prepare_cached(
                "SELECT id, at, tenant, subject, level, action, score, findings, digests, excerpt
                 FROM behaviour_detections WHERE at >= ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = statement
                .query_map(params![since.unix_seconds(), after, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        (
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, f64>(6)?,
                            r.get::<_, String>(7)?,
                            r.get::<_, String>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(
                    |(id, (at, t, s, level, action, score, findings, digests, excerpt))| {
                        Ok((
                            id,
                            detection_record(
                                at, t, s, level, action, score, &findings, &digests, excerpt,
                            )?,
                        ))
                    },
                )
                .collect()
        })
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

/// Moves the write-ahead log into the database and empties it: after an erasure, the log's
/// copies of the deleted pages go too.
pub(crate) fn checkpoint(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
