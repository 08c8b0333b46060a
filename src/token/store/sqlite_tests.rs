//! Tests of [`SqliteStore`]: persistence, modes, keys, sealing (of token sets,
//! definitions and per-user grants), damage reported as errors naming the connection, the
//! lock, `verify` beside a running writer, and the migration of a version-1 database.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;

use super::atomic::{DIR_MODE, FILE_MODE, PERMISSION_BITS};
use super::legacy_tests::key;
use super::test_support::{same_token, sample_token};
use super::{GrantCounts, GrantListing, SqliteStore, StoreError, StoredToken, TokenStore};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & PERMISSION_BITS
}

/// A fresh directory and the database path inside it (in a not-yet-existing subdirectory).
fn store_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("tokens.db");
    (dir, path)
}

fn assert_same(a: &HashMap<String, StoredToken>, b: &[(&str, StoredToken)]) {
    assert_eq!(a.len(), b.len());
    for (connection, token) in b {
        assert!(same_token(&a[*connection], token), "{connection}");
    }
}

/// A second connection to the database, as an operator's `sqlite3` would have.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn open_creates_an_empty_private_database() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, None).unwrap();
    assert_eq!(store.path(), path);
    assert!(store.load_all().unwrap().is_empty());
    assert!(store.load_definitions().unwrap().is_empty());
    store.remove("absent").unwrap();
    store.remove_definition("absent").unwrap();
    assert_eq!(mode(path.parent().unwrap()), DIR_MODE);
    store.put("a", &sample_token("1")).unwrap();
    for file in [
        "tokens.db",
        "tokens.db-wal",
        "tokens.db-shm",
        "tokens.db.key",
    ] {
        assert_eq!(mode(&path.with_file_name(file)), FILE_MODE, "{file}");
    }
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn round_trip_replace_remove_and_reopen() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("a", &sample_token("1")).unwrap();
    store.put("b", &sample_token("2")).unwrap();
    store.put("a", &sample_token("3")).unwrap();
    store.remove("b").unwrap();
    let long_lived = StoredToken {
        refresh_token: None,
        expires_at_ms: None,
        scope: None,
        definition: None,
        ..sample_token("4")
    };
    store.put("c", &long_lived).unwrap();
    store.put_definition("c", b"{\"secret\":\"s3\"}").unwrap();
    store.put_definition("d", b"{\"secret\":\"s4\"}").unwrap();
    store.put_definition("d", b"{\"secret\":\"s5\"}").unwrap();
    drop(store);

    let reopened = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_same(
        &reopened.load_all().unwrap(),
        &[("a", sample_token("3")), ("c", long_lived)],
    );
    let mut definitions = reopened.load_definitions().unwrap();
    definitions.sort_by(|a, b| a.0.cmp(&b.0));
    let definitions: Vec<_> = definitions
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_slice()))
        .collect();
    assert_eq!(
        definitions,
        [
            ("c", &b"{\"secret\":\"s3\"}"[..]),
            ("d", &b"{\"secret\":\"s5\"}"[..])
        ]
    );
    // One step removes a runtime connection's definition and its token set.
    reopened.remove_definition("c").unwrap();
    assert_eq!(reopened.load_all().unwrap().len(), 1);
    assert_eq!(reopened.load_definitions().unwrap().len(), 1);
}

#[test]
fn one_definition_is_read_by_its_key() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(7))).unwrap();
    store.put_definition("a", b"{\"n\":1}").unwrap();
    store.put_definition("b", b"{\"n\":2}").unwrap();
    let b = store.read_definition("b").unwrap().unwrap();
    assert_eq!(b.as_slice(), b"{\"n\":2}");
    assert!(store.read_definition("c").unwrap().is_none());
    store.remove_definition("b").unwrap();
    assert!(store.read_definition("b").unwrap().is_none());
}

#[test]
fn values_are_sealed_and_keys_are_listed() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("crm", &sample_token("visible")).unwrap();
    store
        .put_definition("crm", b"client-secret-visible")
        .unwrap();
    let db = raw(&path);
    for table in ["token_sets", "definitions"] {
        let (connection, sealed): (String, Vec<u8>) = db
            .query_row(
                &format!("SELECT connection, sealed FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(connection, "crm");
        assert!(
            !String::from_utf8_lossy(&sealed).contains("visible"),
            "{table}"
        );
    }
}

#[test]
fn wrong_key_is_reported_with_both_ids() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("a", &sample_token("1")).unwrap();
    store.put_definition("a", b"{}").unwrap();
    drop(store);
    let other = SqliteStore::open(&path, Some(&key(2))).unwrap();
    for err in [
        other.load_all().err().unwrap(),
        other.load_definitions().map(drop).err().unwrap(),
        SqliteStore::verify(&path, Some(&key(2))).err().unwrap(),
    ] {
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    }
}

#[test]
fn rows_moved_between_connections_or_tables_fail_naming_only_the_connection() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("alpha", &sample_token("a")).unwrap();
    store.put_definition("bravo", b"bravo-secret").unwrap();
    let db = raw(&path);
    // A token set copied under another connection key.
    db.execute_batch("INSERT INTO token_sets SELECT 'charlie', sealed FROM token_sets")
        .unwrap();
    let msg = store.load_all().err().unwrap().to_string();
    assert!(
        msg.contains("\"charlie\"") && msg.contains("failed authentication"),
        "{msg}"
    );
    db.execute_batch("DELETE FROM token_sets WHERE connection = 'charlie'")
        .unwrap();
    // A token set put where a definition belongs, and a definition edited in place.
    db.execute_batch(
        "INSERT INTO definitions SELECT connection, sealed FROM token_sets;
         UPDATE definitions SET sealed = CAST(sealed || x'00' AS BLOB) WHERE connection = 'bravo'",
    )
    .unwrap();
    let err = store.load_definitions().map(drop).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(msg.contains("definition of connection"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
    db.execute_batch("UPDATE definitions SET sealed = x'0102'")
        .unwrap();
    let msg = store
        .load_definitions()
        .map(drop)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("too short"), "{msg}");
    assert!(SqliteStore::verify(&path, Some(&key(1))).is_err());
}

#[test]
fn a_newer_schema_and_a_foreign_file_are_refused() {
    let (_dir, path) = store_path();
    drop(SqliteStore::open(&path, Some(&key(1))).unwrap());
    raw(&path).pragma_update(None, "user_version", 9).unwrap();
    let err = SqliteStore::open(&path, Some(&key(1))).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedVersion {
                found: 9,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = SqliteStore::verify(&path, Some(&key(1))).err().unwrap();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { .. }),
        "{err:?}"
    );

    let (_dir, path) = store_path();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, vec![b'x'; 8192]).unwrap();
    for err in [
        SqliteStore::open(&path, Some(&key(1))).err().unwrap(),
        SqliteStore::verify(&path, Some(&key(1))).err().unwrap(),
    ] {
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(fs::read(&path).unwrap(), vec![b'x'; 8192], "left untouched");
}

#[test]
fn unstorable_connection_keys_and_bad_keys_are_rejected() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    let err = store.put("", &sample_token("x")).err().unwrap();
    assert!(matches!(err, StoreError::Unstorable { .. }), "{err:?}");
    let long = "x".repeat(usize::from(u16::MAX) + 1);
    assert!(store.put(&long, &sample_token("x")).is_err());
    assert!(store.put_definition(&long, b"{}").is_err());
    assert!(store.load_all().unwrap().is_empty());

    let secret = "c2hvcnQta2V5";
    let err = SqliteStore::open(
        &path.with_file_name("other.db"),
        Some(&SecretString::from(secret)),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::BadKey { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret));
}

#[test]
fn concurrent_writers_are_serialised_and_a_second_process_is_locked_out() {
    let (_dir, path) = store_path();
    let store = Arc::new(SqliteStore::open(&path, Some(&key(1))).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.put(&format!("c{i}"), &sample_token(&i.to_string()))?;
                store.put_definition(&format!("c{i}"), b"{}")
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let err = SqliteStore::open(&path, Some(&key(1))).err().unwrap();
    assert!(
        matches!(err, StoreError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
        "{err}"
    );
    drop(store);
    let reopened = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_eq!(reopened.load_all().unwrap().len(), 8);
    assert_eq!(reopened.load_definitions().unwrap().len(), 8);
}

/// `tokenwarden check` beside `tokenwarden run`: verify reads, without the lock, a database
/// another store holds open and keeps writing; it sees committed rows and changes nothing.
#[test]
fn verify_reads_while_another_store_holds_the_database() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("a", &sample_token("1")).unwrap();
    store.put_definition("a", b"{}").unwrap();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    // While a write transaction is open on another connection, too.
    let other = raw(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    other.execute_batch("ROLLBACK").unwrap();
    // Its own connection's writes carry on after, and verify still sees a good store.
    store.put("b", &sample_token("2")).unwrap();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    assert!(matches!(
        SqliteStore::verify(&path, Some(&key(3))),
        Err(StoreError::WrongKey { .. })
    ));
    assert_eq!(store.load_all().unwrap().len(), 2);
}

#[test]
fn verify_creates_nothing() {
    let (dir, path) = store_path();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    SqliteStore::verify(&path, None).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // A database without its generated key file cannot be checked (nor opened by `run`).
    drop(SqliteStore::open(&path, None).unwrap());
    fs::remove_file(path.with_file_name("tokens.db.key")).unwrap();
    let err = SqliteStore::verify(&path, None).err().unwrap();
    assert!(matches!(err, StoreError::BadKey { .. }), "{err:?}");
}

/// `check` after `run` has exited: the database alone (its log folded in and removed) is read
/// read-only and left byte for byte. (SQLite's reader creates an empty log and its index
/// beside it, which the next `run` removes when it exits.)
#[test]
fn verify_reads_a_closed_database_and_leaves_it_unchanged() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("a", &sample_token("1")).unwrap();
    store.put_definition("a", b"{}").unwrap();
    drop(store);
    let files = || {
        let mut names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = files();
    assert_eq!(before, ["tokens.db", "tokens.db.lock"]);
    let bytes = fs::read(&path).unwrap();
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    assert!(matches!(
        SqliteStore::verify(&path, Some(&key(2))),
        Err(StoreError::WrongKey { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), bytes);
    drop(SqliteStore::open(&path, Some(&key(1))).unwrap());
    assert_eq!(files(), before);
}

/// A `tracing` writer capturing output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a subscriber capturing `level`-and-above output, returning that output.
fn capture(level: tracing::Level, f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn generated_key_warns_once_with_path_only() {
    let (_dir, path) = store_path();
    let key_path = path.with_file_name("tokens.db.key");
    let warn = tracing::Level::WARN;

    let generated = capture(warn, || drop(SqliteStore::open(&path, None).unwrap()));
    let key_text = fs::read_to_string(&key_path).unwrap();
    assert_eq!(generated.matches("WARN").count(), 1, "{generated}");
    assert!(
        generated.contains("generated a new token store key"),
        "{generated}"
    );
    assert!(
        generated.contains(&key_path.display().to_string()),
        "{generated}"
    );
    assert!(!generated.contains(key_text.trim()), "{generated}");

    let reused = capture(warn, || drop(SqliteStore::open(&path, None).unwrap()));
    assert_eq!(reused.matches("WARN").count(), 1, "{reused}");
    assert!(reused.contains("uses a generated key file"), "{reused}");

    let configured = capture(warn, || {
        drop(SqliteStore::open(&path, Some(&key(1))).unwrap())
    });
    assert!(configured.is_empty(), "{configured}");
}

/// The grant of `subject` under `connection`, which must be there.
fn grant(store: &SqliteStore, connection: &str, subject: &str) -> StoredToken {
    store.read_grant(connection, subject).unwrap().unwrap()
}

/// A token set without refresh token or expiry.
fn long_lived(tag: &str) -> StoredToken {
    StoredToken {
        refresh_token: None,
        expires_at_ms: None,
        ..sample_token(tag)
    }
}

#[test]
fn grants_are_put_read_replaced_and_removed_by_subject() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert!(store.read_grant("crm", "alice").unwrap().is_none());
    assert!(!store.remove_grant("crm", "alice").unwrap());
    store.put_grant("crm", "alice", &sample_token("1")).unwrap();
    assert!(same_token(
        &grant(&store, "crm", "alice"),
        &sample_token("1")
    ));
    store.put_grant("crm", "alice", &long_lived("2")).unwrap();
    assert!(same_token(&grant(&store, "crm", "alice"), &long_lived("2")));
    assert!(store.remove_grant("crm", "alice").unwrap());
    assert!(store.read_grant("crm", "alice").unwrap().is_none());
    assert!(!store.remove_grant("crm", "alice").unwrap());
    // Grants are not the connection's own token set.
    assert!(store.load_all().unwrap().is_empty());
}

#[test]
fn grants_of_subjects_and_connections_are_independent() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put("crm", &sample_token("own")).unwrap();
    store.put_grant("crm", "alice", &sample_token("a")).unwrap();
    store.put_grant("crm", "bob", &sample_token("bb")).unwrap();
    store
        .put_grant("erp", "alice", &sample_token("ccc"))
        .unwrap();
    assert!(same_token(
        &grant(&store, "crm", "alice"),
        &sample_token("a")
    ));
    assert!(same_token(
        &grant(&store, "crm", "bob"),
        &sample_token("bb")
    ));
    assert!(same_token(
        &grant(&store, "erp", "alice"),
        &sample_token("ccc")
    ));
    assert!(store.remove_grant("crm", "alice").unwrap());
    assert!(same_token(
        &grant(&store, "crm", "bob"),
        &sample_token("bb")
    ));
    assert!(same_token(
        &grant(&store, "erp", "alice"),
        &sample_token("ccc")
    ));
    assert!(store.read_grant("erp", "bob").unwrap().is_none());
    assert!(same_token(
        &store.load_all().unwrap()["crm"],
        &sample_token("own")
    ));
}

#[test]
fn a_grant_row_copied_to_another_subject_or_connection_fails_to_open() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store
        .put_grant("crm", "alice", &sample_token("alice"))
        .unwrap();
    store.put_grant("crm", "bob", &sample_token("bob")).unwrap();
    store
        .put_grant("erp", "bob", &sample_token("erp-bob"))
        .unwrap();
    let db = raw(&path);
    db.execute_batch(
        "UPDATE grants SET sealed = (SELECT sealed FROM grants
             WHERE connection = 'crm' AND subject = 'alice')
         WHERE subject = 'bob'",
    )
    .unwrap();
    for (connection, subject) in [("crm", "bob"), ("erp", "bob")] {
        let err = store.read_grant(connection, subject).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            msg.contains("\"bob\"") && msg.contains("failed authentication"),
            "{msg}"
        );
        assert!(!msg.contains("access-"), "{msg}");
    }
    assert!(same_token(
        &grant(&store, "crm", "alice"),
        &sample_token("alice")
    ));
    assert!(SqliteStore::verify(&path, Some(&key(1))).is_err());
    // A truncated row, and one sealed with another key.
    db.execute_batch("UPDATE grants SET sealed = x'0102' WHERE subject = 'bob'")
        .unwrap();
    let msg = store.read_grant("crm", "bob").err().unwrap().to_string();
    assert!(msg.contains("too short"), "{msg}");
    drop(store);
    let other = SqliteStore::open(&path, Some(&key(2))).unwrap();
    let err = other.read_grant("crm", "alice").err().unwrap();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
}

#[test]
fn grant_pages_follow_subject_order_and_counts_tell_expired_ones() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    let at = |ms: Option<u64>| StoredToken {
        expires_at_ms: ms,
        ..sample_token("t")
    };
    for (subject, expires) in [
        ("carol", Some(3_000)),
        ("Bob", Some(1_000)),
        ("alice", None),
        ("dave", Some(2_000)),
    ] {
        store.put_grant("crm", subject, &at(expires)).unwrap();
    }
    store.put_grant("erp", "zed", &at(Some(1))).unwrap();
    let listed = |subject: &str, ms: Option<u64>| GrantListing {
        subject: subject.into(),
        expires_at_ms: ms,
    };
    // Byte order: upper case before lower case.
    assert_eq!(
        store.grant_page("crm", None, 3).unwrap(),
        [
            listed("Bob", Some(1_000)),
            listed("alice", None),
            listed("carol", Some(3_000))
        ]
    );
    assert_eq!(
        store.grant_page("crm", Some("alice"), 10).unwrap(),
        [listed("carol", Some(3_000)), listed("dave", Some(2_000))]
    );
    assert_eq!(
        store.grant_page("crm", Some("b"), 1).unwrap(),
        [listed("carol", Some(3_000))]
    );
    assert!(store
        .grant_page("crm", Some("dave"), 10)
        .unwrap()
        .is_empty());
    assert!(store.grant_page("crm", None, 0).unwrap().is_empty());
    assert!(store.grant_page("none", None, 10).unwrap().is_empty());
    let counts = |now| store.grant_counts("crm", now).unwrap();
    assert_eq!(
        counts(0),
        GrantCounts {
            total: 4,
            expired: 0
        }
    );
    assert_eq!(
        counts(2_000),
        GrantCounts {
            total: 4,
            expired: 1
        }
    );
    assert_eq!(
        counts(2_001),
        GrantCounts {
            total: 4,
            expired: 2
        }
    );
    // A long-lived grant never expires.
    assert_eq!(
        counts(u64::MAX),
        GrantCounts {
            total: 4,
            expired: 3
        }
    );
    assert_eq!(
        store.grant_counts("none", 5).unwrap(),
        GrantCounts::default()
    );
}

#[test]
fn remove_definition_removes_the_connections_grants() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put_definition("crm", b"{}").unwrap();
    store.put_grant("crm", "alice", &sample_token("a")).unwrap();
    store.put_grant("crm", "bob", &sample_token("b")).unwrap();
    store.put_grant("erp", "alice", &sample_token("c")).unwrap();
    store.remove_definition("crm").unwrap();
    assert!(store.read_definition("crm").unwrap().is_none());
    assert!(store.read_grant("crm", "alice").unwrap().is_none());
    assert_eq!(store.grant_counts("crm", 0).unwrap().total, 0);
    assert!(same_token(
        &grant(&store, "erp", "alice"),
        &sample_token("c")
    ));
}

#[test]
fn unstorable_subjects_are_refused_without_quoting_them() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    let long = "s".repeat(257);
    for subject in [
        "",
        "with space",
        "tab\there",
        "caf\u{e9}",
        "nul\0",
        long.as_str(),
    ] {
        let err = store
            .put_grant("crm", subject, &sample_token("x"))
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Unstorable { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("access-x"), "{err:?}");
    }
    let err = store
        .put_grant("", "alice", &sample_token("x"))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Unstorable { .. }), "{err:?}");
    store
        .put_grant("crm", &"s".repeat(256), &sample_token("x"))
        .unwrap();
    store.put_grant("crm", "!~", &sample_token("x")).unwrap();
    assert_eq!(store.grant_counts("crm", 0).unwrap().total, 2);
}

#[test]
fn grants_survive_reopen() {
    let (_dir, path) = store_path();
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    store.put_grant("crm", "alice", &sample_token("a")).unwrap();
    store.put_grant("crm", "bob", &long_lived("b")).unwrap();
    store.put_grant("crm", "carol", &sample_token("c")).unwrap();
    assert!(store.remove_grant("crm", "carol").unwrap());
    drop(store);
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    let reopened = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert!(same_token(
        &grant(&reopened, "crm", "alice"),
        &sample_token("a")
    ));
    assert!(same_token(
        &grant(&reopened, "crm", "bob"),
        &long_lived("b")
    ));
    assert!(reopened.read_grant("crm", "carol").unwrap().is_none());
    assert_eq!(reopened.grant_counts("crm", 0).unwrap().total, 2);
}

/// A database as version 1 left it: its two tables and a token set sealed as it sealed them.
fn version_1_database(path: &Path) {
    use super::binding::Binding;
    use super::key::StoreKey;
    use super::record;

    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = raw(path);
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE token_sets (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE definitions (connection TEXT PRIMARY KEY NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let store_key = StoreKey::parse(&key(1), path).unwrap();
    let sealed = record::seal(&store_key, &Binding::file("crm"), &sample_token("v1")).unwrap();
    db.execute(
        "INSERT INTO token_sets (connection, sealed) VALUES ('crm', ?1)",
        [sealed.to_bytes()],
    )
    .unwrap();
}

#[test]
fn a_version_1_database_is_read_as_it_is_and_migrated_in_place_on_open() {
    let (_dir, path) = store_path();
    version_1_database(&path);
    // Read-only (`check`), it stays at version 1 and reads as having no grants.
    SqliteStore::verify(&path, Some(&key(1))).unwrap();
    let version = || -> i64 {
        raw(&path)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(), 1);

    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_eq!(version(), 2);
    assert_same(&store.load_all().unwrap(), &[("crm", sample_token("v1"))]);
    assert!(store.read_grant("crm", "alice").unwrap().is_none());
    assert_eq!(
        store.grant_counts("crm", 0).unwrap(),
        GrantCounts::default()
    );
    store.put_grant("crm", "alice", &sample_token("a")).unwrap();
    assert!(same_token(
        &grant(&store, "crm", "alice"),
        &sample_token("a")
    ));
    drop(store);
    // Opened again, nothing changes.
    let store = SqliteStore::open(&path, Some(&key(1))).unwrap();
    assert_eq!(version(), 2);
    assert!(same_token(
        &grant(&store, "crm", "alice"),
        &sample_token("a")
    ));
    assert_same(&store.load_all().unwrap(), &[("crm", sample_token("v1"))]);
}
