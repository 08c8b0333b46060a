//! Tests of the migration of an earlier version's store file into the database: both places
//! the old file is found, the backup, and a crash between any two steps.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::key::StoreKey;
use super::legacy_tests::{key, write_old_file};
use super::migrate::{backup_path, migrate, migrate_until, Migrated, Step};
use super::test_support::{same_token, sample_token};
use super::{SqliteStore, StoreError, StoredToken, TokenStore, KEY_LEN};

fn old_tokens() -> Vec<(&'static str, StoredToken)> {
    vec![("alpha", sample_token("a")), ("bravo", sample_token("bb"))]
}

/// Asserts the database at `path` holds exactly [`old_tokens`] and is a SQLite file.
fn assert_migrated(store: &SqliteStore, path: &Path) {
    let loaded = store.load_all().unwrap();
    assert_eq!(loaded.len(), 2);
    for (connection, token) in old_tokens() {
        assert!(same_token(&loaded[connection], &token), "{connection}");
    }
    assert!(fs::read(path).unwrap().starts_with(b"SQLite format 3\0"));
}

/// Files in `dir` whose name contains `needle`.
fn named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(needle))
        .collect()
}

#[test]
fn an_old_file_at_the_configured_path_becomes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    write_old_file(&path, &key(1), &old_tokens());
    let before = fs::read(&path).unwrap();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    assert!(matches!(
        SqliteStore::verify(&path, Some(&key(2))),
        Err(StoreError::WrongKey { .. })
    ));

    let new_key = StoreKey::parse(&key(1), &path).unwrap();
    let done = migrate(&path, Some(&key(1)), &new_key).unwrap();
    let backup = backup_path(&path);
    assert_eq!(
        done,
        Some(Migrated {
            from: path.clone(),
            backup: backup.clone(),
            token_sets: 2
        })
    );
    assert_eq!(fs::read(&backup).unwrap(), before, "the old file, kept");
    assert!(named(dir.path(), "migrating").is_empty());
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_migrated(&store, &path);
    // Once the database is in place there is nothing more to migrate.
    assert_eq!(migrate(&path, Some(&key(1)), &new_key).unwrap(), None);
}

#[test]
fn the_old_default_beside_the_new_default_is_migrated_with_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = (dir.path().join("tokens.db"), dir.path().join("tokens.bin"));
    write_old_file(&old, &key(7), &old_tokens());
    let key_text = base64::engine::general_purpose::STANDARD.encode([7u8; KEY_LEN]);
    fs::write(dir.path().join("tokens.bin.key"), key_text).unwrap();
    SqliteStore::verify(&path, None).unwrap();

    let store = SqliteStore::open(&path, None).unwrap();
    assert_migrated(&store, &path);
    assert!(!old.exists(), "the old name is gone");
    assert!(
        backup_path(&old).exists(),
        "the old file is kept as a backup"
    );
    // Written again, the database stays the truth; an old file put back beside is ignored.
    store.put("alpha", &sample_token("new")).unwrap();
    drop(store);
    write_old_file(&old, &key(7), &old_tokens());
    let store = SqliteStore::open(&path, None).unwrap();
    assert!(same_token(
        &store.load_all().unwrap()["alpha"],
        &sample_token("new")
    ));
}

#[test]
fn an_unreadable_old_file_stops_the_start_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = (dir.path().join("tokens.db"), dir.path().join("tokens.bin"));
    write_old_file(&old, &key(1), &old_tokens());
    let before = fs::read(&old).unwrap();
    for err in [
        SqliteStore::verify(&path, Some(&key(2))).err().unwrap(),
        SqliteStore::open(&path, Some(&key(2))).err().unwrap(),
    ] {
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    }
    assert_eq!(fs::read(&old).unwrap(), before);
    assert!(!path.exists() && !backup_path(&old).exists());
    assert!(named(dir.path(), "migrating").is_empty());
}

/// A crash between any two steps, in both cases: the next start finishes with every token
/// set, the backup, and no partial database left behind.
#[test]
fn a_crash_at_any_step_leaves_a_retryable_old_file_or_the_finished_database() {
    for beside in [false, true] {
        for stop in [Step::Written, Step::BackedUp, Step::Renamed] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir
                .path()
                .join(if beside { "tokens.db" } else { "tokens.bin" });
            let old = dir.path().join("tokens.bin");
            write_old_file(&old, &key(1), &old_tokens());
            let new_key = StoreKey::parse(&key(1), &path).unwrap();
            migrate_until(&path, Some(&key(1)), &new_key, Some(stop)).unwrap();
            let case = format!("beside {beside}, stopped after {stop:?}");
            // What a restart finds: the old file, or the database, in place.
            let database_in_place = stop == Step::Renamed;
            assert_eq!(
                fs::read(&path).is_ok_and(|bytes| bytes.starts_with(b"SQLite")),
                database_in_place,
                "{case}"
            );
            if !database_in_place {
                assert!(old.exists(), "{case}");
            }
            let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
            assert_migrated(&store, &path);
            assert!(backup_path(&old).exists(), "{case}");
            assert!(named(dir.path(), "migrating").is_empty(), "{case}");
        }
    }
}

/// A crash in the middle of writing the new database leaves a partial file under the
/// temporary name: the next start discards it.
#[test]
fn a_partial_temporary_database_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let old = dir.path().join("tokens.bin");
    write_old_file(&old, &key(1), &old_tokens());
    fs::write(
        dir.path().join("tokens.db.migrating"),
        b"SQLite format 3\0half",
    )
    .unwrap();
    fs::write(dir.path().join("tokens.db.migrating-journal"), b"junk").unwrap();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_migrated(&store, &path);
    assert!(named(dir.path(), "migrating").is_empty());
}
