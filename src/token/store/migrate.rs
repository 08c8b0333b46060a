//! Migration of an earlier version's store file (the `legacy` format) into the database, on
//! the first start of [`SqliteStore`](super::SqliteStore).
//!
//! The old file (the *source*) is, for a database path `P`:
//!
//! * `P` itself, when that file begins with the old format's magic — a config that names its
//!   store explicitly kept its path (`path: /var/lib/tokenwarden/tokens.bin`): the database
//!   takes the old file's place, under the same name;
//! * `tokens.bin` beside `P`, when `P` is named `tokens.db` (the default) and does not exist —
//!   a config that kept the default path, which was `state/tokens.bin`.
//!
//! Nothing else is migrated: once a database is in place, an old file beside it is ignored.
//! The source is opened with `store.key`, or else its own key file `<source>.key`.
//!
//! Steps, each durable before the next:
//!
//! 1. read and open every token set of the source (under its lock, when it is another file,
//!    so an old version still running on it is refused);
//! 2. write them all into a new database `<P>.migrating`, in one transaction, synced;
//! 3. hard-link the source as `<source>.migrated-backup`;
//! 4. rename the new database to `P` (over the source, in the first case) and sync the
//!    directory — the commit point;
//! 5. in the second case, remove the name `tokens.bin` (the backup keeps the file).
//!
//! A crash before step 4 leaves the source where it was: the next start removes the partial
//! database and starts over. A crash after it leaves the finished database, and the source
//! at most under both names. The store logs one info line with the count and the backup path.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use secrecy::SecretString;

use super::binding::Binding;
use super::key::StoreKey;
use super::schema::{self, sql_error, suffixed, Access, Table};
use super::{atomic, legacy, lock, record, StoreError, StoredToken};

/// File name of the default database; only beside it is the old default looked for.
const DEFAULT_DATABASE_NAME: &str = "tokens.db";
/// File name of the old default store file.
const OLD_DEFAULT_NAME: &str = "tokens.bin";
/// Suffix of the database being written (step 2).
const TEMP_SUFFIX: &str = ".migrating";
/// Suffix of the backup of the source (step 3).
const BACKUP_SUFFIX: &str = ".migrated-backup";

/// What a finished migration did (logged by the store).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Migrated {
    /// The old file.
    pub(crate) from: PathBuf,
    /// Where it is kept.
    pub(crate) backup: PathBuf,
    /// How many token sets it held, now in the database.
    pub(crate) token_sets: usize,
}

/// A point between two steps, where a test stops the migration as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// After step 2: the new database is written, nothing else changed.
    Written,
    /// After step 3: the backup link exists.
    BackedUp,
    /// After step 4: the database is in place; the old name beside it not yet removed.
    Renamed,
}

/// The earlier-format file to migrate into the database at `path`, if any (the rule in the
/// module doc).
pub(crate) fn source(path: &Path) -> Option<PathBuf> {
    if legacy::is_legacy(path) {
        return Some(path.to_path_buf());
    }
    if path.file_name()? != DEFAULT_DATABASE_NAME || path.exists() {
        return None;
    }
    let old = path.with_file_name(OLD_DEFAULT_NAME);
    old.exists().then_some(old)
}

/// `<source>.migrated-backup`: where the source is kept.
pub(crate) fn backup_path(source: &Path) -> PathBuf {
    suffixed(source, BACKUP_SUFFIX)
}

/// Migrates the source of `path` into a new database sealed with `new_key`, if there is one;
/// `old_key` is the configured key (None: the source's key file). The caller holds the
/// database's lock. Removes what an interrupted migration left.
pub(crate) fn migrate(
    path: &Path,
    old_key: Option<&SecretString>,
    new_key: &StoreKey,
) -> Result<Option<Migrated>, StoreError> {
    migrate_until(path, old_key, new_key, None)
}

/// [`migrate`], stopping after `stop` as if the process died there (tests).
pub(crate) fn migrate_until(
    path: &Path,
    old_key: Option<&SecretString>,
    new_key: &StoreKey,
    stop: Option<Step>,
) -> Result<Option<Migrated>, StoreError> {
    let temp = suffixed(path, TEMP_SUFFIX);
    for stale in [suffixed(&temp, "-journal"), temp.clone()] {
        match fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::io(
                    &stale,
                    "removing an interrupted migration",
                    e,
                ))
            }
            _ => {}
        }
    }
    let Some(source) = source(path) else {
        return Ok(None);
    };
    let _source_lock = if source == path {
        None
    } else {
        Some(lock::lock(&source)?)
    };
    let tokens = legacy::read(&source, old_key)?;
    write_database(&temp, new_key, &tokens)?;
    if stop == Some(Step::Written) {
        return Ok(None);
    }
    let backup = backup_path(&source);
    match fs::remove_file(&backup) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::io(&backup, "replacing an earlier backup", e))
        }
        _ => {}
    }
    // Some filesystems cannot hard-link: a synced copy keeps the same bytes.
    fs::hard_link(&source, &backup)
        .or_else(|_| {
            fs::copy(&source, &backup)?;
            fs::File::open(&backup)?.sync_all()
        })
        .map_err(|e| StoreError::io(&backup, "keeping the old store as a backup", e))?;
    atomic::sync_dir(path)?;
    if stop == Some(Step::BackedUp) {
        return Ok(None);
    }
    fs::rename(&temp, path)
        .map_err(|e| StoreError::io(path, "moving the migrated database into place", e))?;
    atomic::sync_dir(path)?;
    if stop == Some(Step::Renamed) {
        return Ok(None);
    }
    if source != path {
        fs::remove_file(&source)
            .map_err(|e| StoreError::io(&source, "removing the migrated store's old name", e))?;
        atomic::sync_dir(path)?;
    }
    Ok(Some(Migrated {
        from: source,
        backup,
        token_sets: tokens.len(),
    }))
}

/// Writes a new database at `temp` holding `tokens`, in one transaction, and syncs it.
fn write_database(
    temp: &Path,
    key: &StoreKey,
    tokens: &HashMap<String, StoredToken>,
) -> Result<(), StoreError> {
    schema::create_private(temp)?;
    let mut db = Connection::open(temp).map_err(sql_error(temp, "creating the database"))?;
    db.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_error(temp, "configuring the database"))?;
    schema::prepare_schema(&mut db, temp, Access::Write)?;
    let failed = sql_error(temp, "writing the migrated token sets");
    let tx = db.transaction().map_err(&failed)?;
    {
        let mut insert = tx.prepare(Table::TokenSets.upsert()).map_err(&failed)?;
        for (connection, token) in tokens {
            let sealed =
                record::seal(key, &Binding::file(connection), token).map_err(|reason| {
                    StoreError::Unstorable {
                        path: temp.to_path_buf(),
                        connection: connection.chars().take(64).collect(),
                        reason,
                    }
                })?;
            insert
                .execute(rusqlite::params![connection, sealed.to_bytes()])
                .map_err(&failed)?;
        }
    }
    tx.commit().map_err(&failed)?;
    db.close().map_err(|(_, e)| failed(e))?;
    fs::File::open(temp)
        .and_then(|file| file.sync_all())
        .map_err(|e| StoreError::io(temp, "syncing the migrated database", e))
}
