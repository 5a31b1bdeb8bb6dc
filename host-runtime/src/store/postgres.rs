//! The PostgreSQL backend, for several host instances sharing profiles. The same tables as the
//! SQLite backend; the compare-and-swap is an `UPDATE … WHERE revision = $read`, which under
//! `READ COMMITTED` waits for a concurrent writer of the row and then sees its revision, so one
//! of two racing writers always finds nothing to update and tries again.
//!
//! The client is `postgres` (synchronous; each connection drives its own small runtime), so the
//! store is called from blocking threads exactly like SQLite. Connections are made without TLS:
//! use a unix socket or a trusted network (see `docs/behaviour.md`).

use std::str::FromStr as _;

use guard_core::time::Timestamp;
use postgres::{Client, Config, NoTls};

use super::pool::{self, Pool};
use super::{
    detection_record, digests_json, findings_json, next_revision, profile_value, pseudonym_with,
    revision, stored_profile, tenant_from_column, time_text, update_with, DetectionRecord, Erased,
    Export, ExportedProfile, ProfileKey, ProfileStore, Purged, Retention, StoreError,
    StoredProfile, Update, UpdateFn, Updated,
};

const SCHEMA_VERSION: &str = "1";

/// Taken while the schema is created, so instances starting together do not race on it.
const SCHEMA_LOCK: i64 = 0x5167_696c_4268_7631;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS behaviour_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS behaviour_profiles (
    tenant   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    profile  TEXT NOT NULL,
    revision BIGINT NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject)
);
CREATE INDEX IF NOT EXISTS behaviour_profiles_subject ON behaviour_profiles (subject);
CREATE INDEX IF NOT EXISTS behaviour_profiles_seen ON behaviour_profiles (seen_at);
CREATE TABLE IF NOT EXISTS behaviour_detections (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT NOT NULL,
    tenant   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    level    TEXT NOT NULL,
    action   TEXT NOT NULL,
    score    DOUBLE PRECISION NOT NULL,
    findings TEXT NOT NULL,
    digests  TEXT NOT NULL,
    excerpt  TEXT
);
CREATE INDEX IF NOT EXISTS behaviour_detections_subject ON behaviour_detections (subject);
CREATE INDEX IF NOT EXISTS behaviour_detections_at ON behaviour_detections (at);
CREATE TABLE IF NOT EXISTS behaviour_subjects (
    subject       TEXT PRIMARY KEY,
    pseudonym_key BYTEA NOT NULL
);
";

struct Conn(Client);

impl pool::Connection for Conn {
    fn reusable(&mut self) -> bool {
        !self.0.is_closed()
    }
}

/// Profiles and detections in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool<Conn>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn init(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    let stored = tx
        .query_opt(
            "SELECT value FROM behaviour_meta WHERE name = 'schema'",
            &[],
        )?
        .map(|row| row.try_get::<_, String>(0))
        .transpose()?;
    if super::schema_is_new(stored, SCHEMA_VERSION)? {
        tx.execute(
            "INSERT INTO behaviour_meta (name, value) VALUES ('schema', $1)",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and creates the tables if needed.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config =
            Config::from_str(url).map_err(|e| super::spec_error(url, &e.to_string()))?;
        config.application_name("sigil");
        let mut first = config.connect(NoTls)?;
        init(&mut first)?;
        Ok(PostgresStore {
            pool: Pool::new(Conn(first), move || Ok(Conn(config.connect(NoTls)?))),
        })
    }
}

fn load_in(
    client: &mut Client,
    key: &ProfileKey,
) -> Result<Option<(String, i64, i64)>, StoreError> {
    let row = client.query_opt(
        "SELECT profile, revision, seen_at FROM behaviour_profiles
         WHERE tenant = $1 AND subject = $2",
        &[&key.tenant_column(), &key.subject()],
    )?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)),
        None => None,
    })
}

fn write_in(
    client: &mut Client,
    key: &ProfileKey,
    now: i64,
    read: Option<i64>,
    update: &Update,
) -> Result<Option<i64>, StoreError> {
    let mut tx = client.transaction()?;
    let (changed, new_revision) = match read {
        Some(rev) => {
            let next = next_revision(rev)?;
            (
                tx.execute(
                    "UPDATE behaviour_profiles SET profile = $1, revision = $2, seen_at = $3
                     WHERE tenant = $4 AND subject = $5 AND revision = $6",
                    &[
                        &update.profile,
                        &next,
                        &now,
                        &key.tenant_column(),
                        &key.subject(),
                        &rev,
                    ],
                )?,
                next,
            )
        }
        None => (
            tx.execute(
                "INSERT INTO behaviour_profiles (tenant, subject, profile, revision, seen_at)
                 VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING",
                &[&key.tenant_column(), &key.subject(), &update.profile, &now],
            )?,
            1,
        ),
    };
    if changed == 0 {
        tx.rollback()?;
        return Ok(None);
    }
    // The subject's pseudonym key, made on every write rather than only the first: a purge
    // that raced the first write may have removed it.
    let key_bytes = super::new_pseudonym_key()?.to_vec();
    tx.execute(
        "INSERT INTO behaviour_subjects (subject, pseudonym_key) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        &[&key.subject(), &key_bytes],
    )?;
    if let Some(d) = &update.detection {
        tx.execute(
            "INSERT INTO behaviour_detections
                 (at, tenant, subject, level, action, score, findings, digests, excerpt)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &now,
                &key.tenant_column(),
                &key.subject(),
                &d.level.as_str(),
                &d.action.as_str(),
                &d.score,
                &findings_json(&d.findings),
                &digests_json(&d.digests),
                &d.excerpt,
            ],
        )?;
    }
    tx.commit()?;
    Ok(Some(new_revision))
}

fn key_in(
    client: &mut impl postgres::GenericClient,
    subject: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT pseudonym_key FROM behaviour_subjects WHERE subject = $1",
            &[&subject],
        )?
        .map(|row| row.try_get(0))
        .transpose()?)
}

impl ProfileStore for PostgresStore {
    fn load(&self, key: &ProfileKey) -> Result<Option<StoredProfile>, StoreError> {
        self.pool
            .with(|c| load_in(&mut c.0, key)?.map(stored_profile).transpose())
    }

    fn update(
        &self,
        key: &ProfileKey,
        now: Timestamp,
        f: &mut UpdateFn<'_>,
    ) -> Result<Updated, StoreError> {
        self.pool.with(|c| {
            // Updaters of one profile take turns (an advisory lock per key, across every host
            // sharing the database) instead of racing: each would otherwise re-run the guard on
            // every lost race. The revision check stays, for writers that do not take the lock.
            let lock = format!("{}\u{1f}{}", key.tenant_column(), key.subject());
            c.0.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&lock])?;
            let result = {
                let conn = std::cell::RefCell::new(&mut c.0);
                update_with(
                    f,
                    || load_in(&mut conn.borrow_mut(), key),
                    |read, update| {
                        write_in(
                            &mut conn.borrow_mut(),
                            key,
                            now.unix_seconds(),
                            read,
                            update,
                        )
                    },
                )
            };
            // Released on every path; a connection that died released it with itself.
            let unlocked = c.0.execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                &[&lock],
            );
            let updated = result?;
            unlocked?;
            Ok(updated)
        })
    }

    fn erase(&self, subject: &str, tenant: Option<&str>) -> Result<Erased, StoreError> {
        self.pool.with(|c| {
            let mut tx = c.0.transaction()?;
            // Lock the subject's key row first, so a concurrent first write of the subject
            // cannot slip a new key in between the count and the delete below.
            let pseudonym = pseudonym_with(
                tx.query_opt(
                    "SELECT pseudonym_key FROM behaviour_subjects WHERE subject = $1 FOR UPDATE",
                    &[&subject],
                )?
                .map(|row| row.try_get::<_, Vec<u8>>(0))
                .transpose()?
                .as_deref(),
                subject,
            )?;
            let (profiles, detections) = match tenant {
                Some(t) => (
                    tx.execute(
                        "DELETE FROM behaviour_profiles WHERE subject = $1 AND tenant = $2",
                        &[&subject, &t],
                    )?,
                    tx.execute(
                        "DELETE FROM behaviour_detections WHERE subject = $1 AND tenant = $2",
                        &[&subject, &t],
                    )?,
                ),
                None => (
                    tx.execute(
                        "DELETE FROM behaviour_profiles WHERE subject = $1",
                        &[&subject],
                    )?,
                    tx.execute(
                        "DELETE FROM behaviour_detections WHERE subject = $1",
                        &[&subject],
                    )?,
                ),
            };
            let remaining: i64 = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM behaviour_profiles WHERE subject = $1)
                          + (SELECT COUNT(*) FROM behaviour_detections WHERE subject = $1)",
                    &[&subject],
                )?
                .try_get(0)?;
            let key_destroyed = remaining == 0;
            if key_destroyed {
                tx.execute(
                    "DELETE FROM behaviour_subjects WHERE subject = $1",
                    &[&subject],
                )?;
            }
            tx.commit()?;
            // Dead row versions stay in the table files until vacuumed; this makes their space
            // reusable at once (it does not overwrite it: see docs/behaviour.md).
            c.0.batch_execute(
                "VACUUM behaviour_profiles, behaviour_detections, behaviour_subjects",
            )?;
            Ok(Erased {
                profiles,
                detections,
                pseudonym,
                key_destroyed,
            })
        })
    }

    fn export(&self, subject: &str, tenant: Option<&str>) -> Result<Export, StoreError> {
        self.pool.with(|c| {
            // One snapshot, so profiles and detections agree.
            let mut tx =
                c.0.build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
            let all = tenant.is_none();
            let filter = tenant.unwrap_or("");
            let profiles = tx
                .query(
                    "SELECT tenant, profile, revision, seen_at FROM behaviour_profiles
                     WHERE subject = $1 AND ($2 OR tenant = $3) ORDER BY tenant",
                    &[&subject, &all, &filter],
                )?
                .into_iter()
                .map(|row| {
                    let profile: String = row.try_get(1)?;
                    Ok(ExportedProfile {
                        tenant: tenant_from_column(row.try_get(0)?),
                        profile: profile_value(&profile),
                        revision: revision(row.try_get(2)?)?,
                        seen_at: time_text(row.try_get(3)?),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let detections = tx
                .query(
                    "SELECT at, tenant, subject, level, action, score, findings, digests, excerpt
                     FROM behaviour_detections WHERE subject = $1 AND ($2 OR tenant = $3)
                     ORDER BY id",
                    &[&subject, &all, &filter],
                )?
                .into_iter()
                .map(|row| {
                    let findings: String = row.try_get(6)?;
                    let digests: String = row.try_get(7)?;
                    detection_record(
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                        row.try_get(5)?,
                        &findings,
                        &digests,
                        row.try_get(8)?,
                    )
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit()?;
            Ok(Export {
                subject: subject.to_string(),
                tenant: tenant.map(str::to_string),
                profiles,
                detections,
            })
        })
    }

    fn pseudonym(&self, subject: &str) -> Result<String, StoreError> {
        self.pool
            .with(|c| pseudonym_with(key_in(&mut c.0, subject)?.as_deref(), subject))
    }

    fn purge(&self, now: Timestamp, retention: Retention) -> Result<Purged, StoreError> {
        let (detections_before, profiles_before) = retention.cutoffs(now);
        self.pool.with(|c| {
            let mut tx = c.0.transaction()?;
            let detections = tx.execute(
                "DELETE FROM behaviour_detections WHERE at < $1",
                &[&detections_before],
            )?;
            let profiles = tx.execute(
                "DELETE FROM behaviour_profiles WHERE seen_at < $1",
                &[&profiles_before],
            )?;
            let subjects = tx.execute(
                "DELETE FROM behaviour_subjects s
                 WHERE NOT EXISTS (SELECT 1 FROM behaviour_profiles p WHERE p.subject = s.subject)
                   AND NOT EXISTS (SELECT 1 FROM behaviour_detections d WHERE d.subject = s.subject)",
                &[],
            )?;
            tx.commit()?;
            Ok(Purged {
                detections,
                profiles,
                subjects,
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
            c.0.query(
                "SELECT id, at, tenant, subject, level, action, score, findings, digests, excerpt
                 FROM behaviour_detections WHERE at >= $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&since.unix_seconds(), &after, &i64::from(limit)],
            )?
            .into_iter()
            .map(|row| {
                let findings: String = row.try_get(7)?;
                let digests: String = row.try_get(8)?;
                Ok((
                    row.try_get(0)?,
                    detection_record(
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                        row.try_get(5)?,
                        row.try_get(6)?,
                        &findings,
                        &digests,
                        row.try_get(9)?,
                    )?,
                ))
            })
            .collect()
        })
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
