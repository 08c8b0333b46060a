//! Tests of the earlier store file's reader (`legacy`): what it reads, and that every kind of
//! damage to the file is reported as an error (never a wrong value, never a panic) without
//! touching it. The files are written here the way earlier versions wrote them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::binding::Binding;
use super::format::{encode, encode_as};
use super::key::StoreKey;
use super::layout::LEGACY_FORMAT_VERSION;
use super::test_support::{same_token, sample_token};
use super::{legacy, record, StoreError, StoredToken, KEY_LEN};

/// Length of the trailing checksum, mirrored from the format so tests can re-seal edited files.
const CHECKSUM_LEN: usize = 32;
/// Byte masks applied at every position by the flip test.
const FLIP_MASKS: [u8; 9] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff];

pub(super) fn key(byte: u8) -> SecretString {
    SecretString::from(base64::engine::general_purpose::STANDARD.encode([byte; KEY_LEN]))
}

/// Writes `tokens` at `path` as an earlier version's file store did (format version 2).
pub(super) fn write_old_file(path: &Path, key: &SecretString, tokens: &[(&str, StoredToken)]) {
    let store_key = StoreKey::parse(key, path).unwrap();
    let mut sorted: Vec<_> = tokens.iter().collect();
    sorted.sort_by_key(|(connection, _)| *connection);
    let records: Vec<_> = sorted
        .into_iter()
        .map(|(c, t)| (*c, record::seal(&store_key, &Binding::file(c), t).unwrap()))
        .collect();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, encode(&records).unwrap()).unwrap();
}

/// A directory holding an old file of two connections of equal key length ("alpha", "bravo").
fn two_connection_file() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    write_old_file(
        &path,
        &key(1),
        &[("alpha", sample_token("a")), ("bravo", sample_token("b"))],
    );
    let bytes = fs::read(&path).unwrap();
    (dir, path, bytes)
}

/// Writes `bytes` as the file, asserts that reading fails and leaves it byte-identical, and
/// returns the error.
fn assert_rejected(path: &Path, bytes: &[u8]) -> StoreError {
    fs::write(path, bytes).unwrap();
    let err = match legacy::read(path, Some(&key(1))) {
        Ok(tokens) => panic!("damaged store loaded {} connection(s)", tokens.len()),
        Err(err) => err,
    };
    assert_eq!(fs::read(path).unwrap(), bytes, "store file was modified");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    err
}

/// Replaces the checksum of an edited file so the damage must be caught by later checks.
fn reseal(bytes: &[u8]) -> Vec<u8> {
    let body = &bytes[..bytes.len() - CHECKSUM_LEN];
    let mut out = body.to_vec();
    out.extend_from_slice(&Sha256::digest(body));
    out
}

fn assert_same(a: &HashMap<String, StoredToken>, b: &[(&str, StoredToken)]) {
    assert_eq!(a.len(), b.len());
    for (connection, token) in b {
        assert!(same_token(&a[*connection], token), "{connection}");
    }
}

#[test]
fn reads_with_the_configured_key_or_its_key_file() {
    let (_dir, path, _) = two_connection_file();
    let expected = [("alpha", sample_token("a")), ("bravo", sample_token("b"))];
    assert!(legacy::is_legacy(&path));
    assert_same(&legacy::read(&path, Some(&key(1))).unwrap(), &expected);
    // No configured key and no key file: refused, naming the key file; never generated.
    let key_file = path.with_file_name("tokens.bin.key");
    let err = legacy::read(&path, None).err().unwrap();
    assert!(
        matches!(err, StoreError::BadKey { ref path, .. } if *path == key_file),
        "{err}"
    );
    assert!(!key_file.exists());
    fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.encode([1u8; KEY_LEN]),
    )
    .unwrap();
    assert_same(&legacy::read(&path, None).unwrap(), &expected);
}

#[test]
fn wrong_key_is_reported_with_both_ids() {
    let (_dir, path, _) = two_connection_file();
    let err = legacy::read(&path, Some(&key(2))).err().unwrap();
    let StoreError::WrongKey {
        ref stored_key_id,
        ref configured_key_id,
        ..
    } = err
    else {
        panic!("expected WrongKey, got {err:?}");
    };
    assert_ne!(stored_key_id, configured_key_id);
}

#[test]
#[ignore = "soak: a few seconds in a debug build (every byte, nine masks, twice); run with --include-ignored"]
fn every_byte_flip_is_an_error() {
    let (_dir, path, bytes) = two_connection_file();
    for at in 0..bytes.len() {
        for mask in FLIP_MASKS {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            assert_rejected(&path, &damaged);
            // Same damage behind a valid checksum: the structure checks and the AEAD must
            // catch it on their own (flips inside the checksum are undone by re-sealing).
            if at < bytes.len() - CHECKSUM_LEN {
                assert_rejected(&path, &reseal(&damaged));
            }
        }
    }
}

#[test]
fn every_truncation_and_trailing_garbage_is_an_error() {
    let (_dir, path, bytes) = two_connection_file();
    for len in 0..bytes.len() {
        let err = assert_rejected(&path, &bytes[..len]);
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }
    let mut extended = bytes.clone();
    extended.extend_from_slice(b"garbage");
    let msg = assert_rejected(&path, &extended).to_string();
    assert!(msg.contains("trailing"), "{msg}");
}

#[test]
fn record_moved_to_another_connection_is_an_error() {
    let (_dir, path, bytes) = two_connection_file();
    let find = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let (alpha, bravo) = (find(b"alpha"), find(b"bravo"));
    let mut swapped = bytes.clone();
    swapped[alpha..alpha + 5].copy_from_slice(b"bravo");
    swapped[bravo..bravo + 5].copy_from_slice(b"alpha");
    assert_rejected(&path, &swapped);
    let msg = assert_rejected(&path, &reseal(&swapped)).to_string();
    assert!(msg.contains("failed authentication"), "{msg}");
}

#[test]
fn a_version_1_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    let store_key = StoreKey::parse(&key(1), &path).unwrap();
    let old = record::seal_legacy(&store_key, "alpha", &sample_token("old")).unwrap();
    fs::write(
        &path,
        encode_as(LEGACY_FORMAT_VERSION, &[("alpha", old)]).unwrap(),
    )
    .unwrap();
    let loaded = legacy::read(&path, Some(&key(1))).unwrap();
    assert_same(&loaded, &[("alpha", sample_token("old"))]);
}
