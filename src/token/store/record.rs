//! Encryption of one connection's token set.
//!
//! The plaintext is a small JSON document with the fields of [`StoredToken`] (times in Unix
//! seconds, and since the Redis store also in milliseconds: a document without the
//! millisecond fields, written by an older version, is read from the seconds); it is sealed
//! with XChaCha20-Poly1305 under a fresh random 24-byte nonce on every write. The associated
//! data is a [`Binding`] — connection, subject, namespace (Redis key prefix) and generation,
//! layouts in the `binding` module — so a record only decrypts where and as what it was
//! written. [`open_legacy`] reads token sets sealed before the binding carried more than
//! the connection; nothing is sealed that way any more. Pending states ([`seal_bytes`]) are
//! bound to a label. Secrets are exposed only to build the document (`document`), and
//! plaintext buffers are zeroized after use.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::binding::{definition_associated_data, legacy_associated_data, Binding};
use super::key::{KeyId, StoreKey, KEY_ID_LEN};
use super::{StoreError, StoredToken};

/// Length of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of the Poly1305 authentication tag at the end of every ciphertext.
pub(crate) const TAG_LEN: usize = 16;

/// The serialized form of a token set (borrowing, for writing).
#[derive(Serialize)]
struct TokenDocRef<'a> {
    access_token: &'a str,
    refresh_token: Option<&'a str>,
    expires_at: Option<u64>,
    scope: Option<&'a str>,
    obtained_at: u64,
    expires_at_ms: Option<u64>,
    obtained_at_ms: u64,
    /// base64 of `StoredToken::definition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
}

/// The serialized form of a token set (owning, for reading).
#[derive(Deserialize)]
struct TokenDoc {
    access_token: String,
    refresh_token: Option<String>,
    expires_at: Option<u64>,
    scope: Option<String>,
    obtained_at: u64,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    obtained_at_ms: Option<u64>,
    #[serde(default)]
    definition: Option<String>,
}

/// Milliseconds in a second (the document keeps both units).
const MS_PER_S: u64 = 1000;

/// One encrypted token set, as stored in the file (or, as [`SealedRecord::to_bytes`], in
/// a Redis value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedRecord {
    pub(crate) key_id: KeyId,
    pub(crate) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub(crate) ciphertext: Vec<u8>,
}

impl SealedRecord {
    /// `key id ‖ nonce ‖ ciphertext and tag`.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// The inverse of [`SealedRecord::to_bytes`]; None when the value is too short.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<SealedRecord> {
        if bytes.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = bytes.split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Some(SealedRecord {
            key_id: KeyId(id.try_into().ok()?),
            nonce: nonce.try_into().ok()?,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// Encrypts `token`, bound to `binding`. Fails only if the AEAD refuses the input (which it
/// does only for absurdly large messages); the error text contains no secret material.
pub(crate) fn seal(
    key: &StoreKey,
    binding: &Binding<'_>,
    token: &StoredToken,
) -> Result<SealedRecord, String> {
    encrypt(key, &binding.associated_data(), &document(token)?)
}

/// Encrypts `token` as versions before the [`Binding`] did: bound to `connection` only (for
/// tests that play an earlier version).
#[cfg(test)]
pub(crate) fn seal_legacy(
    key: &StoreKey,
    connection: &str,
    token: &StoredToken,
) -> Result<SealedRecord, String> {
    seal_bytes(key, connection, &document(token)?)
}

/// The JSON document of `token` (zeroized on drop).
fn document(token: &StoredToken) -> Result<Zeroizing<Vec<u8>>, String> {
    let doc = TokenDocRef {
        access_token: token.access_token.expose_secret(),
        refresh_token: token.refresh_token.as_ref().map(|s| s.expose_secret()),
        expires_at: token.expires_at_ms.map(|ms| ms / MS_PER_S),
        scope: token.scope.as_deref(),
        obtained_at: token.obtained_at_ms / MS_PER_S,
        expires_at_ms: token.expires_at_ms,
        obtained_at_ms: token.obtained_at_ms,
        definition: token.definition.map(|d| BASE64.encode(d)),
    };
    serde_json::to_vec(&doc)
        .map(Zeroizing::new)
        .map_err(|_| "token set could not be serialized".to_owned())
}

/// Encrypts `plaintext` bound to `label` (a name that cannot be a connection key, such as a
/// pending state's) under a fresh nonce.
pub(crate) fn seal_bytes(
    key: &StoreKey,
    label: &str,
    plaintext: &[u8],
) -> Result<SealedRecord, String> {
    encrypt(key, &legacy_associated_data(label), plaintext)
}

/// Encrypts the definition of the runtime connection `connection`, bound to it as a
/// definition (see the `binding` module), under a fresh nonce.
pub(crate) fn seal_definition(
    key: &StoreKey,
    connection: &str,
    definition: &[u8],
) -> Result<SealedRecord, String> {
    encrypt(key, &definition_associated_data(connection), definition)
}

/// Decrypts a definition sealed by [`seal_definition`] for `connection`; the error names the
/// connection and quotes no content.
pub(crate) fn open_definition(
    key: &StoreKey,
    connection: &str,
    record: &SealedRecord,
) -> Result<Zeroizing<Vec<u8>>, String> {
    open_bytes_with(key, &definition_associated_data(connection), record).ok_or_else(|| {
        format!(
            "definition of connection {connection:?} failed authentication \
             (modified, or moved from another connection or record)"
        )
    })
}

/// Encrypts `plaintext` with associated data `aad` under a fresh nonce.
fn encrypt(key: &StoreKey, aad: &[u8], plaintext: &[u8]) -> Result<SealedRecord, String> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| "the record could not be encrypted".to_owned())?;
    Ok(SealedRecord {
        key_id: key.id,
        nonce,
        ciphertext,
    })
}

/// Decrypts a record sealed by [`seal_bytes`] for `label`; the error quotes no content.
pub(crate) fn open_bytes(
    key: &StoreKey,
    label: &str,
    record: &SealedRecord,
) -> Result<Zeroizing<Vec<u8>>, String> {
    open_bytes_with(key, &legacy_associated_data(label), record).ok_or_else(|| {
        format!(
            "record for {label:?} failed authentication \
             (modified, or moved from another connection)"
        )
    })
}

/// Decrypts `record` with associated data `aad`; None when it fails authentication.
fn open_bytes_with(
    key: &StoreKey,
    aad: &[u8],
    record: &SealedRecord,
) -> Option<Zeroizing<Vec<u8>>> {
    key.cipher
        .decrypt(
            XNonce::from_slice(&record.nonce),
            Payload {
                msg: &record.ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Decrypts every record of a store file, reporting a key mismatch before any decryption
/// failure so that a wrong key is never mistaken for corruption. `legacy`: the file is of
/// the earlier format, whose records are bound to their connection only.
pub(crate) fn open_all(
    path: &Path,
    key: &StoreKey,
    legacy: bool,
    records: Vec<(String, SealedRecord)>,
) -> Result<HashMap<String, StoredToken>, StoreError> {
    if let Some((_, foreign)) = records.iter().find(|(_, r)| r.key_id != key.id) {
        return Err(StoreError::WrongKey {
            path: path.to_path_buf(),
            stored_key_id: foreign.key_id.to_string(),
            configured_key_id: key.id.to_string(),
        });
    }
    let mut tokens = HashMap::with_capacity(records.len());
    for (connection, record) in records {
        let token = if legacy {
            open_legacy(key, &connection, &record)
        } else {
            open(key, &Binding::file(&connection), &record)
        };
        let token = token.map_err(|reason| StoreError::corrupt(path, reason))?;
        tokens.insert(connection, token);
    }
    Ok(tokens)
}

/// Decrypts and parses one record sealed by [`seal`] for `binding`; the error says what
/// failed without quoting content.
pub(crate) fn open(
    key: &StoreKey,
    binding: &Binding<'_>,
    record: &SealedRecord,
) -> Result<StoredToken, String> {
    let plaintext = open_bytes_with(key, &binding.associated_data(), record).ok_or_else(|| {
        format!(
            "record for connection {:?} failed authentication (modified, or written for \
             another connection, key prefix or generation)",
            binding.connection
        )
    })?;
    parse(binding.connection, &plaintext)
}

/// Decrypts and parses one token set sealed by an earlier version, bound to its connection
/// only (read, never written).
pub(crate) fn open_legacy(
    key: &StoreKey,
    connection: &str,
    record: &SealedRecord,
) -> Result<StoredToken, String> {
    let plaintext = open_bytes(key, connection, record)?;
    parse(connection, &plaintext)
}

/// The token document in `plaintext` → a token set.
fn parse(connection: &str, plaintext: &[u8]) -> Result<StoredToken, String> {
    // serde_json's error text may quote the document, so only its position is reported.
    let doc: TokenDoc = serde_json::from_slice(plaintext).map_err(|e| {
        format!(
            "record for connection {connection:?} holds an invalid token document \
             (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let definition = match doc.definition {
        None => None,
        Some(text) => Some(
            BASE64
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    format!("record for connection {connection:?} holds an invalid definition")
                })?,
        ),
    };
    Ok(StoredToken {
        access_token: SecretString::from(doc.access_token),
        refresh_token: doc.refresh_token.map(SecretString::from),
        expires_at_ms: doc
            .expires_at_ms
            .or(doc.expires_at.map(|s| s.saturating_mul(MS_PER_S))),
        scope: doc.scope,
        obtained_at_ms: doc
            .obtained_at_ms
            .unwrap_or(doc.obtained_at.saturating_mul(MS_PER_S)),
        definition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::store::test_support::{same_token, sample_token};

    fn key(byte: u8) -> StoreKey {
        let text =
            base64::engine::general_purpose::STANDARD.encode([byte; crate::token::store::KEY_LEN]);
        StoreKey::parse(&SecretString::from(text), Path::new("/k")).unwrap()
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let k = key(1);
        let token = sample_token("rt");
        let at = Binding::file("conn");
        let a = seal(&k, &at, &token).unwrap();
        let b = seal(&k, &at, &token).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.ciphertext.len(), b.ciphertext.len());
        assert!(same_token(&open(&k, &at, &a).unwrap(), &token));
    }

    #[test]
    fn a_document_with_seconds_only_reads_as_milliseconds() {
        let k = key(6);
        let old = br#"{"access_token":"a","refresh_token":null,"expires_at":1700000060,"scope":null,"obtained_at":1700000000}"#;
        let sealed = seal_bytes(&k, "conn", old).unwrap();
        let token = open_legacy(&k, "conn", &sealed).unwrap();
        assert_eq!(token.obtained_at_ms, 1_700_000_000_000);
        assert_eq!(token.expires_at_ms, Some(1_700_000_060_000));
        // New documents keep the milliseconds.
        let mut t = sample_token("ms");
        t.obtained_at_ms = 1_700_000_000_123;
        let at = Binding::file("conn");
        let back = open(&k, &at, &seal(&k, &at, &t).unwrap()).unwrap();
        assert_eq!(back.obtained_at_ms, 1_700_000_000_123);
    }

    #[test]
    fn record_does_not_open_under_another_connection() {
        let k = key(2);
        let sealed = seal(&k, &Binding::file("alpha"), &sample_token("x")).unwrap();
        let err = open(&k, &Binding::file("bravo"), &sealed).err().unwrap();
        assert!(err.contains("failed authentication"), "{err}");
    }

    #[test]
    fn record_opens_only_at_its_generation_prefix_and_subject() {
        let k = key(7);
        let at = Binding {
            connection: "crm",
            subject: "",
            namespace: "tokenwarden:",
            generation: 2,
        };
        let sealed = seal(&k, &at, &sample_token("g")).unwrap();
        assert!(open(&k, &at, &sealed).is_ok());
        for elsewhere in [
            Binding {
                generation: 3,
                ..at
            },
            Binding {
                namespace: "staging:",
                ..at
            },
            Binding {
                subject: "alice",
                ..at
            },
        ] {
            let err = open(&k, &elsewhere, &sealed).err().unwrap();
            assert!(err.contains("failed authentication"), "{err}");
        }
        // Nor does it pass for a record of the earlier layout, or the reverse.
        assert!(open_legacy(&k, "crm", &sealed).is_err());
        let legacy = seal_bytes(&k, "crm", br#"{"access_token":"a","refresh_token":null,"expires_at":null,"scope":null,"obtained_at":1}"#).unwrap();
        assert!(open_legacy(&k, "crm", &legacy).is_ok());
        assert!(open(&k, &Binding::file("crm"), &legacy).is_err());
    }

    #[test]
    fn definitions_and_token_sets_never_open_as_each_other() {
        let k = key(8);
        let definition = seal_definition(&k, "crm", b"{\"secret\":1}").unwrap();
        assert_eq!(
            open_definition(&k, "crm", &definition).unwrap().as_slice(),
            b"{\"secret\":1}"
        );
        let err = open_definition(&k, "crn", &definition).err().unwrap();
        assert!(err.contains("\"crn\"") && !err.contains("secret"), "{err}");
        assert!(open(&k, &Binding::file("crm"), &definition).is_err());
        assert!(open_bytes(&k, "crm", &definition).is_err());
        let token = seal(&k, &Binding::file("crm"), &sample_token("t")).unwrap();
        assert!(open_definition(&k, "crm", &token).is_err());
        let state = seal_bytes(&k, "crm", b"x").unwrap();
        assert!(open_definition(&k, "crm", &state).is_err());
    }

    #[test]
    fn ciphertext_hides_the_secrets() {
        let sealed = seal(&key(3), &Binding::file("c"), &sample_token("visible?")).unwrap();
        let haystack = String::from_utf8_lossy(&sealed.ciphertext);
        assert!(!haystack.contains("access-visible?"));
    }

    #[test]
    fn open_all_reports_wrong_key_before_corruption() {
        let sealed = seal(&key(4), &Binding::file("c"), &sample_token("t")).unwrap();
        let err = open_all(Path::new("/s"), &key(5), false, vec![("c".into(), sealed)])
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    }
}
