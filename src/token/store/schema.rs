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
pub(crate) const SCHEMA_VERSION: u16 = 1;
/// The tables of [`SCHEMA_VERSION`].
const SCHEMA: &str = "
    CREATE TABLE token_sets (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE definitions (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;";
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

/// Creates the tables of a new database; refuses a schema newer than this build's. Read-only,
/// a database without tables is left as it is (it reads as empty).
pub(crate) fn prepare_schema(
    db: &mut Connection,
    path: &Path,
    access: Access,
) -> Result<(), StoreError> {
    let failed = sql_error(path, "reading the schema version");
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&failed)?;
    match version {
        0 if access == Access::Write => {
            let tx = db
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&failed)?;
            // Another process may have created them while this one waited for the lock.
            let again: i64 = tx
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(&failed)?;
            if again == 0 {
                tx.execute_batch(SCHEMA)
                    .map_err(sql_error(path, "creating the tables"))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(sql_error(path, "creating the tables"))?;
            }
            tx.commit().map_err(sql_error(path, "creating the tables"))
        }
        0 => Ok(()),
        v if v == i64::from(SCHEMA_VERSION) => Ok(()),
        other => Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: u16::try_from(other).unwrap_or(u16::MAX),
            supported: SCHEMA_VERSION,
        }),
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
