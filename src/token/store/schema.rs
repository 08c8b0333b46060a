//! The database's schema and connections: the tables, opening a connection for writing
//! (WAL, synced commits, the schema created or checked) or reading, and how SQLite's
//! failures map to [`StoreError`]. The schema is documented in the `sqlite` module.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{atomic, StoreError};

/// The schema this build creates and reads (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: u16 = 2;
/// The first version with the `grants` table: an earlier database reads as having none.
pub(crate) const GRANTS_VERSION: i64 = 2;
/// The tables of version 1.
const SCHEMA_V1: &str = "
    CREATE TABLE token_sets (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE definitions (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;";
/// What version 2 adds to version 1: per-user grants, the expiry in clear for listings.
const SCHEMA_V2: &str = "
    CREATE TABLE grants (connection TEXT NOT NULL, subject TEXT NOT NULL, expires_at_ms INTEGER,
        sealed BLOB NOT NULL, PRIMARY KEY (connection, subject)) WITHOUT ROWID;";

/// Inserts or replaces the grant of (`?1` connection, `?2` subject): `?3` expiry, `?4` sealed.
pub(crate) const GRANT_UPSERT: &str =
    "INSERT INTO grants (connection, subject, expires_at_ms, sealed) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (connection, subject) \
     DO UPDATE SET expires_at_ms = excluded.expires_at_ms, sealed = excluded.sealed";
/// Deletes the grant of (`?1` connection, `?2` subject).
pub(crate) const GRANT_DELETE: &str = "DELETE FROM grants WHERE connection = ?1 AND subject = ?2";
/// Deletes every grant of the connection `?1`.
pub(crate) const GRANT_DELETE_ALL: &str = "DELETE FROM grants WHERE connection = ?1";
/// The sealed grant of (`?1` connection, `?2` subject).
pub(crate) const GRANT_SELECT: &str =
    "SELECT sealed FROM grants WHERE connection = ?1 AND subject = ?2";
/// Every grant, sealed (`tokenwarden check`).
pub(crate) const GRANT_SELECT_ALL: &str = "SELECT connection, subject, sealed FROM grants";
/// At most `?3` subjects (and expiries) of the connection `?1` after `?2`, ascending (the
/// primary key's order: BINARY collation, byte order).
pub(crate) const GRANT_PAGE: &str = "SELECT subject, expires_at_ms FROM grants \
     WHERE connection = ?1 AND subject > ?2 ORDER BY subject LIMIT ?3";
/// How many grants the connection `?1` has, and how many expired before `?2`.
pub(crate) const GRANT_COUNTS: &str = "SELECT count(*), \
     count(CASE WHEN expires_at_ms IS NOT NULL AND expires_at_ms < ?2 THEN 1 END) \
     FROM grants WHERE connection = ?1";
/// How long a statement waits for another connection's lock (a reader's checkpoint, an
/// operator's `sqlite3`) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection to the database is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Created if missing, WAL, synced commits, schema created or checked.
    Write,
    /// Never creates or changes anything (`tokenwarden check`).
    ReadOnly,
}

/// The two tables.
#[derive(Clone, Copy)]
pub(crate) enum Table {
    TokenSets,
    Definitions,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::TokenSets => "token_sets",
            Table::Definitions => "definitions",
        }
    }

    pub(crate) fn upsert(self) -> &'static str {
        match self {
            Table::TokenSets => {
                "INSERT INTO token_sets (connection, sealed) VALUES (?1, ?2) \
                 ON CONFLICT (connection) DO UPDATE SET sealed = excluded.sealed"
            }
            Table::Definitions => {
                "INSERT INTO definitions (connection, sealed) VALUES (?1, ?2) \
                 ON CONFLICT (connection) DO UPDATE SET sealed = excluded.sealed"
            }
        }
    }

    pub(crate) fn delete(self) -> &'static str {
        match self {
            Table::TokenSets => "DELETE FROM token_sets WHERE connection = ?1",
            Table::Definitions => "DELETE FROM definitions WHERE connection = ?1",
        }
    }

    pub(crate) fn select(self) -> &'static str {
        match self {
            Table::TokenSets => "SELECT connection, sealed FROM token_sets",
            Table::Definitions => "SELECT connection, sealed FROM definitions",
        }
    }

    /// [`Table::select`] of one connection's row (`?1`).
    pub(crate) fn select_one(self) -> &'static str {
        match self {
            Table::TokenSets => "SELECT connection, sealed FROM token_sets WHERE connection = ?1",
            Table::Definitions => {
                "SELECT connection, sealed FROM definitions WHERE connection = ?1"
            }
        }
    }
}

/// Opens a connection to the database at `path` (see [`Access`]).
pub(crate) fn connect(path: &Path, access: Access) -> Result<Connection, StoreError> {
    let flags = match access {
        Access::Write => {
            create_private(path)?;
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    };
    let mut db = Connection::open_with_flags(path, flags)
        .map_err(sql_error(path, "opening the database"))?;
    db.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_error(path, "configuring the database"))?;
    if access == Access::Write {
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sql_error(path, "opening the database"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::corrupt(
                path,
                format!("the database refuses write-ahead logging (journal mode {mode})"),
            ));
        }
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error(path, "configuring the database"))?;
    }
    prepare_schema(&mut db, path, access)?;
    Ok(db)
}

/// Creates the tables of a new database and migrates an earlier version's in place;
/// refuses a schema newer than this build's. Read-only, a database without tables, or of
/// an earlier version, is left as it is (it reads as empty, or as having no grants).
pub(crate) fn prepare_schema(
    db: &mut Connection,
    path: &Path,
    access: Access,
) -> Result<(), StoreError> {
    match user_version(db, path)? {
        v if v == i64::from(SCHEMA_VERSION) => Ok(()),
        0..GRANTS_VERSION if access == Access::Write => upgrade(db, path),
        0..GRANTS_VERSION => Ok(()),
        other => Err(unsupported(path, other)),
    }
}

/// Brings the database to [`SCHEMA_VERSION`] in one immediate transaction: the tables a
/// new database lacks, then each later version's additions.
fn upgrade(db: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let failed = sql_error(path, "creating the tables");
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&failed)?;
    // Another process may have created or migrated them while this one waited for the lock.
    let again = user_version(&tx, path)?;
    if again > i64::from(SCHEMA_VERSION) {
        return Err(unsupported(path, again));
    }
    if again == 0 {
        tx.execute_batch(SCHEMA_V1).map_err(&failed)?;
    }
    if again < GRANTS_VERSION {
        tx.execute_batch(SCHEMA_V2).map_err(&failed)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&failed)?;
    }
    tx.commit().map_err(&failed)?;
    if again != 0 && again < GRANTS_VERSION {
        tracing::info!(
            database = %path.display(),
            from = again,
            to = SCHEMA_VERSION,
            "migrated the token store database's schema"
        );
    }
    Ok(())
}

/// The database's schema version (`PRAGMA user_version`; 0 before any tables).
pub(crate) fn user_version(db: &Connection, path: &Path) -> Result<i64, StoreError> {
    db.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_error(path, "reading the schema version"))
}

/// The refusal of a schema version this build does not know.
fn unsupported(path: &Path, found: i64) -> StoreError {
    StoreError::UnsupportedVersion {
        path: path.to_path_buf(),
        found: u16::try_from(found).unwrap_or(u16::MAX),
        supported: SCHEMA_VERSION,
    }
}

/// Creates an empty file at `path` with mode 0600 if there is none (SQLite gives its log and
/// index the database file's mode).
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(atomic::FILE_MODE)
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::io(path, "creating the database", e))
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`, `-shm`, `-journal`).
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Maps a SQLite failure to the store error callers act on: damage is
/// [`StoreError::Corrupt`], anything else (busy, I/O, full disk) [`StoreError::Io`].
/// SQLite's messages name files, tables and columns, never bound values.
pub(crate) fn sql_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::corrupt(path, format!("{action}: {e}"))
        }
        // A value of another type than the schema's (the message names the column only).
        _ if matches!(e, rusqlite::Error::InvalidColumnType(..)) => {
            StoreError::corrupt(path, format!("{action}: {e}"))
        }
        _ => StoreError::io(path, action, std::io::Error::other(e)),
    }
}
