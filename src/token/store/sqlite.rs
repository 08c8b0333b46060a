//! [`SqliteStore`]: the default store — token sets, runtime-connection definitions and
//! per-user grants in an embedded SQLite database (`state/tokens.db`), one row per
//! connection (per connection and subject for grants).
//!
//! Schema version 2 (kept in `PRAGMA user_version`; a later version adds tables or columns
//! by migrating from the number it finds, and a build refuses a number newer than its own):
//!
//! ```sql
//! CREATE TABLE token_sets  (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
//! CREATE TABLE definitions (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
//! -- since version 2:
//! CREATE TABLE grants (connection TEXT NOT NULL, subject TEXT NOT NULL, expires_at_ms INTEGER,
//!     sealed BLOB NOT NULL, PRIMARY KEY (connection, subject)) WITHOUT ROWID;
//! ```
//!
//! `connection` is the connection key in plaintext, so an operator can list what is stored;
//! `sealed` is `key id (8) ‖ nonce (24) ‖ ciphertext and tag` (XChaCha20-Poly1305 with the
//! store key, see the `record` module): a token set bound to its connection exactly as the
//! file store bound it, a definition bound to its connection *as a definition*, a grant
//! bound to its connection *and* subject (the `binding` module), so none opens as another
//! or under another connection key or subject. A grant's `subject` (its end user, 1 to 256
//! bytes of visible ASCII) and `expires_at_ms` (Unix milliseconds; NULL: long-lived) are in
//! clear so that listing and counting a connection's grants never opens one.
//!
//! Migration: a version-1 database opened for writing gets the `grants` table and version
//! 2 in one immediate transaction; read-only (`tokenwarden check`), it is left as it is and
//! reads as having no grants.
//!
//! Durability: the journal is a write-ahead log (`journal_mode=WAL`) synced on every commit
//! (`synchronous=FULL`), and a call returns only once the transaction holding its change is
//! committed, so a process killed at any instant keeps every acknowledged change. The cost
//! of a change is one row, not the whole store. Writes go through one writing connection
//! on its own thread (the `commit` module): a write alone is a transaction of its own;
//! writes that arrive together share one transaction and one fsync (group commit).
//!
//! Locking budget: reads hold a mutex over a second, read-only connection for one query;
//! writes wait for their commit only. Across processes, the lock file (module `lock`) keeps
//! a second `run` out, while [`SqliteStore::verify`] (`tokenwarden check`) and `sqlite3`
//! read a consistent snapshot beside the writer — WAL readers do not block it, and a busy
//! timeout absorbs the short moments they must wait for one another. The tables and
//! connections are set up in the `schema` module.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use secrecy::SecretString;

use super::binding::Binding;
use super::commit::{Committer, Write};
use super::key::{key_file_path, read_key_file, KeySource, StoreKey};
use super::record::{self, SealedRecord};
use super::schema::{
    connect, sql_error, suffixed, user_version, Access, Table, GRANTS_VERSION, GRANT_COUNTS,
    GRANT_PAGE, GRANT_SELECT, GRANT_SELECT_ALL,
};
use super::{
    atomic, format, legacy, lock, migrate, DefinitionBytes, GrantCounts, GrantListing, StoreError,
    StoredToken, TokenStore,
};

/// Longest prefix of an offending connection key quoted in an error message.
const CONNECTION_DISPLAY_MAX: usize = 64;
/// Longest subject (a per-user grant's end user) stored, in bytes.
const MAX_SUBJECT_LEN: usize = 256;

/// The embedded database store (see the module doc).
pub struct SqliteStore {
    path: PathBuf,
    key: StoreKey,
    /// The read-only connection reads go through.
    reader: Mutex<Connection>,
    /// The writing connection's thread; dropped (joined, closed) before the lock.
    writer: Committer,
    /// The exclusive lock, held while the store is open.
    _lock: fs::File,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("key_id", &self.key.id.to_string())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600, in a directory created with
    /// mode 0700) if missing, and migrating an earlier version's store file into it first
    /// (the rule is in the `migrate` module). `key`: 32 bytes, base64; with `None`, the key
    /// file `<path>.key` beside it, generated if missing (a warning names its path).
    /// Refuses with [`StoreError::Locked`] while another process holds the store.
    pub fn open(path: &Path, key: Option<&SecretString>) -> Result<SqliteStore, StoreError> {
        atomic::ensure_dir(atomic::parent_dir(path))?;
        let lock = lock::lock(path)?;
        let store_key = match key {
            Some(text) => StoreKey::parse(text, path)?,
            None => {
                let key_path = key_file_path(path);
                let (store_key, source) = StoreKey::load_or_generate(&key_path)?;
                warn_generated_key(&key_path, source);
                store_key
            }
        };
        if let Some(done) = migrate::migrate(path, key, &store_key)? {
            tracing::info!(
                token_sets = done.token_sets,
                from = %done.from.display(),
                backup = %done.backup.display(),
                database = %path.display(),
                "migrated the token store file into the database; the old file is kept as a backup"
            );
        }
        let writer = Committer::start(connect(path, Access::Write)?, path)?;
        let reader = connect(path, Access::ReadOnly)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            key: store_key,
            reader: Mutex::new(reader),
            writer,
            _lock: lock,
        })
    }

    /// What [`SqliteStore::open`] and the loads would refuse, found read-only (SQLite's
    /// reader may create an empty log and index beside an idle database, nothing else) and
    /// without the lock, so it runs beside the `run` holding the store
    /// (`tokenwarden check`): an unusable key, a database the key does not open (wrong key,
    /// a record that fails authentication, a newer schema, not a database), and an
    /// earlier-format file still to migrate that its key does not open.
    pub fn verify(path: &Path, key: Option<&SecretString>) -> Result<(), StoreError> {
        if let Some(old) = migrate::source(path) {
            return legacy::read(&old, key).map(drop);
        }
        let key = match key {
            Some(text) => StoreKey::parse(text, path)?,
            None => match read_key_file(&key_file_path(path))? {
                Some(key) => key,
                // `run` generates a key: fine for a new store, not for an existing one.
                None if path.exists() => {
                    return Err(StoreError::BadKey {
                        path: key_file_path(path),
                        reason: "the store exists but neither store.key nor its key file does; \
                                 a generated key could not open it"
                            .into(),
                    })
                }
                None => return Ok(()),
            },
        };
        if !path.exists() {
            return Ok(());
        }
        let db = connect(path, Access::ReadOnly)?;
        read_tokens(&db, path, &key)?;
        read_definitions(&db, path, &key, None)?;
        check_grants(&db, path, &key)
    }

    /// Moves the database at `path` (and its write-ahead log and index, if any) aside to
    /// `<path>.unreadable-<suffix>`, for `store.on_unreadable: start_unauthorized`; returns
    /// the new name. The store must not be open.
    pub fn set_aside(path: &Path, suffix: &str) -> Result<PathBuf, StoreError> {
        let aside = path.with_extension(format!("unreadable-{suffix}"));
        for (from, to) in [
            (suffixed(path, "-wal"), suffixed(&aside, "-wal")),
            (suffixed(path, "-shm"), suffixed(&aside, "-shm")),
        ] {
            if from.exists() {
                fs::rename(&from, &to).map_err(|e| StoreError::io(&from, "moving aside", e))?;
            }
        }
        fs::rename(path, &aside).map_err(|e| StoreError::io(path, "moving aside", e))?;
        Ok(aside)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The read connection; after a panic in another read, the same connection (a read
    /// leaves nothing behind).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|poisoned| {
            self.reader.clear_poison();
            poisoned.into_inner()
        })
    }

    fn unstorable(&self, connection: &str, reason: String) -> StoreError {
        StoreError::Unstorable {
            path: self.path.clone(),
            connection: shown(connection),
            reason,
        }
    }

    /// Writes the sealed row of `connection` in `table`, durably.
    fn upsert(
        &self,
        table: Table,
        connection: &str,
        sealed: &SealedRecord,
    ) -> Result<(), StoreError> {
        self.writer
            .write(Write::Upsert {
                table,
                connection: connection.to_owned(),
                sealed: sealed.to_bytes(),
            })
            .map(drop)
    }
}

impl TokenStore for SqliteStore {
    fn load_all(&self) -> Result<HashMap<String, StoredToken>, StoreError> {
        read_tokens(&self.reader(), &self.path, &self.key)
    }

    fn put(&self, connection: &str, token: &StoredToken) -> Result<(), StoreError> {
        format::validate_connection(connection).map_err(|r| self.unstorable(connection, r))?;
        let sealed = record::seal(&self.key, &Binding::file(connection), token)
            .map_err(|r| self.unstorable(connection, r))?;
        self.upsert(Table::TokenSets, connection, &sealed)
    }

    fn remove(&self, connection: &str) -> Result<(), StoreError> {
        self.writer
            .write(Write::Delete {
                table: Table::TokenSets,
                connection: connection.to_owned(),
            })
            .map(drop)
    }

    fn load_definitions(&self) -> Result<Vec<(String, DefinitionBytes)>, StoreError> {
        read_definitions(&self.reader(), &self.path, &self.key, None)
    }

    fn read_definition(&self, connection: &str) -> Result<Option<DefinitionBytes>, StoreError> {
        let found = read_definitions(&self.reader(), &self.path, &self.key, Some(connection))?;
        Ok(found.into_iter().next().map(|(_, d)| d))
    }

    fn put_definition(&self, connection: &str, definition: &[u8]) -> Result<(), StoreError> {
        format::validate_connection(connection).map_err(|r| self.unstorable(connection, r))?;
        let sealed = record::seal_definition(&self.key, connection, definition)
            .map_err(|r| self.unstorable(connection, r))?;
        self.upsert(Table::Definitions, connection, &sealed)
    }

    fn remove_definition(&self, connection: &str) -> Result<(), StoreError> {
        self.writer
            .write(Write::DeleteConnection {
                connection: connection.to_owned(),
            })
            .map(drop)
    }

    fn read_grant(
        &self,
        connection: &str,
        subject: &str,
    ) -> Result<Option<StoredToken>, StoreError> {
        let bytes = {
            let db = self.reader();
            if !has_grants(&db, &self.path)? {
                return Ok(None);
            }
            db.prepare_cached(GRANT_SELECT)
                .and_then(|mut s| s.query_row([connection, subject], |r| r.get(0)).optional())
                .map_err(sql_error(&self.path, "reading the database"))?
        };
        bytes
            .map(|bytes: Vec<u8>| open_grant(&self.path, &self.key, connection, subject, &bytes))
            .transpose()
    }

    fn put_grant(
        &self,
        connection: &str,
        subject: &str,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        format::validate_connection(connection)
            .and_then(|()| validate_subject(subject))
            .map_err(|r| self.unstorable(connection, r))?;
        let sealed = record::seal(&self.key, &Binding::file_grant(connection, subject), token)
            .map_err(|r| self.unstorable(connection, r))?;
        self.writer
            .write(Write::UpsertGrant {
                connection: connection.to_owned(),
                subject: subject.to_owned(),
                expires_at_ms: token.expires_at_ms.map(sql_ms),
                sealed: sealed.to_bytes(),
            })
            .map(drop)
    }

    fn remove_grant(&self, connection: &str, subject: &str) -> Result<bool, StoreError> {
        let deleted = self.writer.write(Write::DeleteGrant {
            connection: connection.to_owned(),
            subject: subject.to_owned(),
        })?;
        Ok(deleted > 0)
    }

    fn grant_page(
        &self,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantListing>, StoreError> {
        let db = self.reader();
        if limit == 0 || !has_grants(&db, &self.path)? {
            return Ok(Vec::new());
        }
        let failed = sql_error(&self.path, "reading the database");
        let mut statement = db.prepare_cached(GRANT_PAGE).map_err(&failed)?;
        // Every stored subject is non-empty, so "after the empty string" is from the first.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![connection, after.unwrap_or(""), limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .map_err(&failed)?;
        rows.map(|row| {
            let (subject, expires_at_ms) = row.map_err(&failed)?;
            let expires_at_ms = match expires_at_ms.map(u64::try_from).transpose() {
                Ok(ms) => ms,
                Err(_) => return Err(negative_expiry(&self.path, connection, &subject)),
            };
            Ok(GrantListing {
                subject,
                expires_at_ms,
            })
        })
        .collect()
    }

    fn grant_counts(&self, connection: &str, now_ms: u64) -> Result<GrantCounts, StoreError> {
        let db = self.reader();
        if !has_grants(&db, &self.path)? {
            return Ok(GrantCounts::default());
        }
        let (total, expired): (i64, i64) = db
            .prepare_cached(GRANT_COUNTS)
            .and_then(|mut s| {
                s.query_row(params![connection, sql_ms(now_ms)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .map_err(sql_error(&self.path, "reading the database"))?;
        // Counts are never negative.
        Ok(GrantCounts {
            total: u64::try_from(total).unwrap_or_default(),
            expired: u64::try_from(expired).unwrap_or_default(),
        })
    }
}

/// Every row of `table`, still sealed; a value too short to be a sealed record is corrupt.
fn read_rows(
    db: &Connection,
    path: &Path,
    table: Table,
    only: Option<&str>,
) -> Result<Vec<(String, SealedRecord)>, StoreError> {
    if user_version(db, path)? == 0 {
        return Ok(Vec::new()); // read-only, before any `run` created the tables
    }
    let failed = sql_error(path, "reading the database");
    let row = |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?));
    let rows: Vec<rusqlite::Result<(String, Vec<u8>)>> = match only {
        Some(connection) => {
            let mut statement = db.prepare_cached(table.select_one()).map_err(&failed)?;
            let rows = statement.query_map([connection], row).map_err(&failed)?;
            rows.collect()
        }
        None => {
            let mut statement = db.prepare_cached(table.select()).map_err(&failed)?;
            let rows = statement.query_map([], row).map_err(&failed)?;
            rows.collect()
        }
    };
    let mut out = Vec::new();
    for row in rows {
        let (connection, bytes) = row.map_err(&failed)?;
        let sealed = SealedRecord::from_bytes(&bytes).ok_or_else(|| {
            StoreError::corrupt(
                path,
                format!(
                    "the {} row of connection {:?} is too short to be a sealed record",
                    table.name(),
                    shown(&connection)
                ),
            )
        })?;
        out.push((connection, sealed));
    }
    Ok(out)
}

/// Every token set, opened (a key mismatch is reported before any failed authentication).
fn read_tokens(
    db: &Connection,
    path: &Path,
    key: &StoreKey,
) -> Result<HashMap<String, StoredToken>, StoreError> {
    record::open_all(
        path,
        key,
        false,
        read_rows(db, path, Table::TokenSets, None)?,
    )
}

/// Every definition, opened; an error names the connection, never the content.
fn read_definitions(
    db: &Connection,
    path: &Path,
    key: &StoreKey,
    only: Option<&str>,
) -> Result<Vec<(String, DefinitionBytes)>, StoreError> {
    let rows = read_rows(db, path, Table::Definitions, only)?;
    if let Some((_, foreign)) = rows.iter().find(|(_, r)| r.key_id != key.id) {
        return Err(wrong_key(path, foreign, key));
    }
    rows.into_iter()
        .map(|(connection, sealed)| {
            let opened = record::open_definition(key, &connection, &sealed).map_err(|_| {
                StoreError::corrupt(
                    path,
                    format!(
                        "definition of connection {:?} failed authentication \
                         (modified, or moved from another connection or record)",
                        shown(&connection)
                    ),
                )
            })?;
            Ok((connection, opened))
        })
        .collect()
}

/// Whether the database has the `grants` table (schema version 2; an earlier database
/// read-only has none).
fn has_grants(db: &Connection, path: &Path) -> Result<bool, StoreError> {
    Ok(user_version(db, path)? >= GRANTS_VERSION)
}

/// Opens the sealed grant `bytes` of `subject` under `connection`. A value too short, sealed
/// with another key, or failing authentication under that binding (modified, or another
/// user's or connection's row) is an error: never another user's token set.
fn open_grant(
    path: &Path,
    key: &StoreKey,
    connection: &str,
    subject: &str,
    bytes: &[u8],
) -> Result<StoredToken, StoreError> {
    let place = || {
        format!(
            "the grant of subject {:?} of connection {:?}",
            shown(subject),
            shown(connection)
        )
    };
    let sealed = SealedRecord::from_bytes(bytes).ok_or_else(|| {
        StoreError::corrupt(
            path,
            format!("{} is too short to be a sealed record", place()),
        )
    })?;
    if sealed.key_id != key.id {
        return Err(wrong_key(path, &sealed, key));
    }
    record::open(key, &Binding::file_grant(connection, subject), &sealed)
        .map_err(|reason| StoreError::corrupt(path, format!("{}: {reason}", place())))
}

/// Opens every grant, one row at a time (`tokenwarden check`); none before version 2.
fn check_grants(db: &Connection, path: &Path, key: &StoreKey) -> Result<(), StoreError> {
    if !has_grants(db, path)? {
        return Ok(());
    }
    let failed = sql_error(path, "reading the database");
    let mut statement = db.prepare(GRANT_SELECT_ALL).map_err(&failed)?;
    let mut rows = statement.query([]).map_err(&failed)?;
    while let Some(row) = rows.next().map_err(&failed)? {
        let connection: String = row.get(0).map_err(&failed)?;
        let subject: String = row.get(1).map_err(&failed)?;
        let bytes: Vec<u8> = row.get(2).map_err(&failed)?;
        open_grant(path, key, &connection, &subject, &bytes)?;
    }
    Ok(())
}

/// Whether `subject` can be stored: 1 to [`MAX_SUBJECT_LEN`] bytes of visible ASCII
/// (0x21..=0x7E). The caller validates it too; the reason never quotes it.
fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        Err("subject is empty".into())
    } else if subject.len() > MAX_SUBJECT_LEN {
        Err(format!("subject is longer than {MAX_SUBJECT_LEN} bytes"))
    } else if !subject.bytes().all(|b| b.is_ascii_graphic()) {
        Err("subject holds a byte other than visible ASCII".into())
    } else {
        Ok(())
    }
}

/// Unix milliseconds as SQLite's integer (beyond `i64::MAX`, millions of years away, clamped).
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The error for a listed grant whose clear expiry is negative (edited by hand).
fn negative_expiry(path: &Path, connection: &str, subject: &str) -> StoreError {
    StoreError::corrupt(
        path,
        format!(
            "the grant of subject {:?} of connection {:?} has a negative expiry",
            shown(subject),
            shown(connection)
        ),
    )
}

/// The refusal of a record sealed with another key than `key`.
fn wrong_key(path: &Path, found: &SealedRecord, key: &StoreKey) -> StoreError {
    StoreError::WrongKey {
        path: path.to_path_buf(),
        stored_key_id: found.key_id.to_string(),
        configured_key_id: key.id.to_string(),
    }
}

/// A connection key as quoted in errors: at most [`CONNECTION_DISPLAY_MAX`] characters.
fn shown(connection: &str) -> String {
    connection.chars().take(CONNECTION_DISPLAY_MAX).collect()
}

/// Warns that the store is protected only by a key file lying beside it.
fn warn_generated_key(key_path: &Path, source: KeySource) {
    match source {
        KeySource::Generated => tracing::warn!(
            key_file = %key_path.display(),
            "generated a new token store key; configure an explicit key kept apart from the store"
        ),
        KeySource::KeyFile => tracing::warn!(
            key_file = %key_path.display(),
            "token store uses a generated key file; configure an explicit key kept apart from the store"
        ),
    }
}
