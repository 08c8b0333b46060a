//! The binary layout of a token store file.
//!
//! All integers are big-endian. One file holds every connection:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "TKWARDEN"
//! 8       2     format version (2; version 1 is still read)
//! 10      4     record count N
//! 14      8     total file length in bytes, checksum included
//! 22            N records, sorted by connection key:
//!                 2   connection key length L (1..=65535)
//!                 L   connection key (UTF-8, plaintext)
//!                 8   key id: first 8 bytes of SHA-256 of the store key
//!                 24  XChaCha20-Poly1305 nonce (fresh and random on every write)
//!                 4   ciphertext length C (at least the 16-byte tag)
//!                 C   ciphertext of the JSON token document, tag last
//! end-32  32    SHA-256 of every preceding byte
//! ```
//!
//! The checksum and the declared length tell damage (flipped bits, truncation, trailing data)
//! apart from a wrong key; the AEAD (see the `record` module) authenticates each token set and
//! binds it to its connection key. Versions 1 and 2 share this layout and differ only in the
//! records' associated data (see the `binding` module): a version-1 file is read, and the
//! next write replaces it with a version-2 file. Decoding checks, in order: magic, version, length,
//! checksum, record structure, duplicate connections — then `record` checks key ids and
//! decrypts.

use std::collections::HashSet;
use std::mem::size_of;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::key::{KeyId, KEY_ID_LEN};
use super::layout::{FORMAT_VERSION, LEGACY_FORMAT_VERSION, MAGIC};
use super::record::{SealedRecord, NONCE_LEN, TAG_LEN};
use super::StoreError;

/// Bytes before the first record: magic, version, record count, total length.
const HEADER_LEN: usize = MAGIC.len() + size_of::<u16>() + size_of::<u32>() + LENGTH_FIELD_LEN;
/// Size of the header field holding the total file length.
const LENGTH_FIELD_LEN: usize = size_of::<u64>();
/// Length of the trailing SHA-256 checksum.
const CHECKSUM_LEN: usize = 32;
/// Smallest valid file: a header and a checksum, no records.
const MIN_FILE_LEN: usize = HEADER_LEN + CHECKSUM_LEN;
/// Longest connection key the length field can describe.
pub(crate) const MAX_CONNECTION_LEN: usize = u16::MAX as usize;

/// Checks that `connection` can be stored; the error is the reason why not.
pub(crate) fn validate_connection(connection: &str) -> Result<(), String> {
    if connection.is_empty() {
        Err("connection key is empty".into())
    } else if connection.len() > MAX_CONNECTION_LEN {
        Err(format!(
            "connection key is longer than {MAX_CONNECTION_LEN} bytes"
        ))
    } else {
        Ok(())
    }
}

/// Serializes `records` (which the caller sorts) into a complete store file (tests write
/// the files an earlier version wrote with it).
#[cfg(test)]
pub(crate) fn encode(records: &[(&str, SealedRecord)]) -> Result<Vec<u8>, String> {
    encode_as(FORMAT_VERSION, records)
}

/// [`encode`] with the header's version `version` (tests write version-1 files with it).
#[cfg(test)]
pub(crate) fn encode_as(version: u16, records: &[(&str, SealedRecord)]) -> Result<Vec<u8>, String> {
    let count = u32::try_from(records.len()).map_err(|_| "too many connections".to_owned())?;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&0u64.to_be_bytes()); // patched below once the length is known
    for (connection, record) in records {
        validate_connection(connection)?;
        let conn_len = u16::try_from(connection.len()).map_err(|_| "connection key too long")?;
        let ct_len = u32::try_from(record.ciphertext.len()).map_err(|_| "token set too large")?;
        out.extend_from_slice(&conn_len.to_be_bytes());
        out.extend_from_slice(connection.as_bytes());
        out.extend_from_slice(&record.key_id.0);
        out.extend_from_slice(&record.nonce);
        out.extend_from_slice(&ct_len.to_be_bytes());
        out.extend_from_slice(&record.ciphertext);
    }
    let total = (out.len() + CHECKSUM_LEN) as u64;
    out[length_at..length_at + LENGTH_FIELD_LEN].copy_from_slice(&total.to_be_bytes());
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// A decoded store file: its format version and its (still encrypted) records, in file order.
pub(crate) type Decoded = (u16, Vec<(String, SealedRecord)>);

/// Parses a complete store file into its version and records.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Decoded, StoreError> {
    let corrupt = |reason: String| StoreError::corrupt(path, reason);
    let len = bytes.len();
    if len == 0 {
        return Err(corrupt("file is empty (0 bytes)".into()));
    }
    let magic_len = len.min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(corrupt(
            "not a tokenwarden token store (bad magic bytes)".into(),
        ));
    }
    if len < MIN_FILE_LEN {
        return Err(corrupt(format!(
            "truncated: file has {len} bytes, a store has at least {MIN_FILE_LEN}"
        )));
    }
    let mut header = Cursor::new(&bytes[MAGIC.len()..HEADER_LEN]);
    let version = header.u16().unwrap_or_default();
    if version != FORMAT_VERSION && version != LEGACY_FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let count = header.u32().unwrap_or_default();
    let declared = header.u64().unwrap_or_default();
    let actual = len as u64;
    if actual < declared {
        return Err(corrupt(format!(
            "truncated: file has {actual} bytes, its header declares {declared}"
        )));
    }
    if actual > declared {
        return Err(corrupt(format!(
            "{} bytes of trailing data after the {declared} bytes its header declares",
            actual - declared
        )));
    }
    let (body, checksum) = bytes.split_at(len - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt(
            "checksum mismatch: the content was modified or damaged".into(),
        ));
    }
    let records = parse_records(&body[HEADER_LEN..], count).map_err(corrupt)?;
    let mut seen = HashSet::with_capacity(records.len());
    if let Some((dup, _)) = records.iter().find(|(c, _)| !seen.insert(c.as_str())) {
        return Err(corrupt(format!(
            "connection {dup:?} appears more than once"
        )));
    }
    Ok((version, records))
}

/// Parses exactly `count` records filling `area`; the error is a reason for `Corrupt`.
fn parse_records(area: &[u8], count: u32) -> Result<Vec<(String, SealedRecord)>, String> {
    let mut cursor = Cursor::new(area);
    let mut records = Vec::new();
    for index in 0..count {
        let overrun = || format!("record {index} of {count} runs past the end of the records");
        let conn_len = usize::from(cursor.u16().ok_or_else(overrun)?);
        if conn_len == 0 {
            return Err(format!("record {index} has an empty connection key"));
        }
        let connection = std::str::from_utf8(cursor.take(conn_len).ok_or_else(overrun)?)
            .map_err(|_| format!("record {index} has a connection key that is not UTF-8"))?
            .to_owned();
        let key_id = KeyId(cursor.array::<KEY_ID_LEN>().ok_or_else(overrun)?);
        let nonce = cursor.array::<NONCE_LEN>().ok_or_else(overrun)?;
        let ct_len = usize::try_from(cursor.u32().ok_or_else(overrun)?).map_err(|_| overrun())?;
        if ct_len < TAG_LEN {
            return Err(format!(
                "record {index} has a {ct_len}-byte ciphertext, shorter than its {TAG_LEN}-byte tag"
            ));
        }
        let ciphertext = cursor.take(ct_len).ok_or_else(overrun)?.to_vec();
        let record = SealedRecord {
            key_id,
            nonce,
            ciphertext,
        };
        records.push((connection, record));
    }
    match cursor.remaining() {
        0 => Ok(records),
        extra => Err(format!(
            "{extra} unexplained bytes after the last of {count} records"
        )),
    }
}

/// Bounds-checked sequential reader over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes, or `None` (consuming nothing) if fewer remain.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fill: u8) -> SealedRecord {
        SealedRecord {
            key_id: KeyId([fill; KEY_ID_LEN]),
            nonce: [fill; NONCE_LEN],
            ciphertext: vec![fill; TAG_LEN + 3],
        }
    }

    fn decode_ok(bytes: &[u8]) -> Vec<(String, SealedRecord)> {
        let (version, records) = decode(Path::new("/s"), bytes).unwrap();
        assert_eq!(version, FORMAT_VERSION);
        records
    }

    fn reason(bytes: &[u8]) -> String {
        match decode(Path::new("/s"), bytes) {
            Err(StoreError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn empty_store_round_trips() {
        let bytes = encode(&[]).unwrap();
        assert_eq!(bytes.len(), MIN_FILE_LEN);
        assert!(decode_ok(&bytes).is_empty());
    }

    #[test]
    fn records_round_trip_in_order() {
        let bytes = encode(&[("a", record(1)), ("b", record(2))]).unwrap();
        let decoded = decode_ok(&bytes);
        assert_eq!(
            decoded,
            vec![("a".into(), record(1)), ("b".into(), record(2))]
        );
    }

    /// Re-seals a hand-edited file: fixes the declared length and the checksum.
    fn reseal(mut body: Vec<u8>) -> Vec<u8> {
        let total = (body.len() + CHECKSUM_LEN) as u64;
        body[HEADER_LEN - LENGTH_FIELD_LEN..HEADER_LEN].copy_from_slice(&total.to_be_bytes());
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    #[test]
    fn structural_errors_behind_a_valid_checksum() {
        let good = encode(&[("a", record(1))]).unwrap();
        let body = good[..good.len() - CHECKSUM_LEN].to_vec();

        let mut extra = body.clone();
        extra.push(0);
        assert!(reason(&reseal(extra)).contains("unexplained bytes"));

        let mut short = body.clone();
        short.pop();
        assert!(reason(&reseal(short)).contains("runs past the end"));

        let mut dup = body.clone();
        dup[MAGIC.len() + 5] = 2; // record count 1 -> 2
        dup.extend_from_slice(&body[HEADER_LEN..]);
        assert!(reason(&reseal(dup)).contains("more than once"));
    }

    #[test]
    fn header_errors_are_specific() {
        let good = encode(&[("a", record(1))]).unwrap();
        assert!(reason(&[]).contains("empty"));
        assert!(reason(b"hello").contains("bad magic"));
        assert!(reason(&good[..MAGIC.len() + 1]).contains("truncated"));
        assert!(reason(&good[..good.len() - 1]).contains("truncated"));
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        assert!(reason(&trailing).contains("4 bytes of trailing data"));
        let newer = encode_as(3, &[("a", record(1))]).unwrap();
        assert!(matches!(
            decode(Path::new("/s"), &newer),
            Err(StoreError::UnsupportedVersion { found: 3, .. })
        ));
        let older = encode_as(LEGACY_FORMAT_VERSION, &[("a", record(1))]).unwrap();
        let (version, records) = decode(Path::new("/s"), &older).unwrap();
        assert_eq!((version, records), (1, vec![("a".into(), record(1))]));
        let mut flipped = good;
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(reason(&flipped).contains("checksum mismatch"));
    }

    #[test]
    fn validate_connection_limits() {
        assert!(validate_connection("").is_err());
        assert!(validate_connection(&"x".repeat(MAX_CONNECTION_LEN)).is_ok());
        assert!(validate_connection(&"x".repeat(MAX_CONNECTION_LEN + 1)).is_err());
    }
}
