//! How every SQLite database of the host is opened: write-ahead logging, commits on disk before
//! they return, deleted rows overwritten, and a new file readable by its owner only.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// Why a database could not be opened as the host needs it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The file cannot do write-ahead logging (a read-only or network file system).
    #[error("cannot use write-ahead logging (journal mode `{0}`)")]
    NoWal(String),
}

/// Opens (with `create`, creating) the database at `path`.
pub(crate) fn open(path: &Path, create: bool) -> Result<Connection, OpenError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        // User ids and the keys of people's pseudonyms live in these files: readable by the
        // owner only. SQLite gives its journal files the database's mode.
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt as _;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
        }
    }
    let conn = Connection::open_with_flags(path, flags)?;
    // Writers wait for each other instead of failing: every write is one short transaction.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: a commit is one append to the log file; FULL: it is on disk before commit returns,
    // so an acknowledged write survives a crash.
    // A new file being switched to WAL by another connection at the same moment answers
    // "locked" or its old mode without calling the busy handler: ask again, briefly.
    let mut mode = String::new();
    for attempt in 0..50u64 {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(m) if m.eq_ignore_ascii_case("wal") => return finish(conn),
            Ok(m) => mode = m,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    || e.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                mode = "locked".into();
            }
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(std::time::Duration::from_millis(2 + attempt));
    }
    Err(OpenError::NoWal(mode))
}

fn finish(conn: Connection) -> Result<Connection, OpenError> {
    // secure_delete: deleted rows (an erased user's) are overwritten, not left in free pages.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;")?;
    Ok(conn)
}
