//! The store encryption key: parsing, key ids, and the generated key file.
//!
//! A key is 32 random bytes, written as standard base64 (padding optional, surrounding
//! whitespace ignored). Its *key id* is the first 8 bytes of SHA-256 of the raw key bytes,
//! shown as hex — reproducible with `base64 -d <key file> | sha256sum | cut -c1-16` — so
//! a store can say which key it needs without revealing anything about it.
//!
//! When no key is configured the store uses `<store path>.key`, generating it on first use.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::atomic::{self, PERMISSION_BITS};
use super::StoreError;

/// Length of a store key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key id in bytes (a prefix of the key's SHA-256).
pub(crate) const KEY_ID_LEN: usize = 8;
/// Suffix appended to the store's file name to name its generated key file.
const KEY_FILE_SUFFIX: &str = ".key";
/// Permission bits that must not be set on a key file (any group or other access).
const KEY_FILE_FORBIDDEN_BITS: u32 = 0o077;

/// Standard base64 that accepts input with or without padding.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Identifies a key without revealing it: the first 8 bytes of its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct KeyId(pub(crate) [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Where the key in use came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum KeySource {
    /// Read from an existing generated key file.
    KeyFile,
    /// Freshly generated into a new key file.
    Generated,
}

/// A ready-to-use store key: the AEAD cipher (which zeroizes the key on drop) and its id.
pub(crate) struct StoreKey {
    pub(crate) cipher: XChaCha20Poly1305,
    pub(crate) id: KeyId,
}

impl StoreKey {
    /// Parses a base64 key. `origin` (the key file or the store) is named in errors; the
    /// value itself never is.
    pub(crate) fn parse(text: &SecretString, origin: &Path) -> Result<StoreKey, StoreError> {
        let bad = |reason: String| StoreError::BadKey {
            path: origin.to_path_buf(),
            reason,
        };
        let trimmed = text.expose_secret().trim();
        if trimmed.is_empty() {
            return Err(bad("key is empty".into()));
        }
        let bytes = Zeroizing::new(
            KEY_BASE64
                .decode(trimmed)
                .map_err(|_| bad("key is not valid standard base64".into()))?,
        );
        if bytes.len() != KEY_LEN {
            return Err(bad(format!(
                "key decodes to {} bytes, expected {KEY_LEN}",
                bytes.len()
            )));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Builds the cipher and key id for raw key bytes (`KEY_LEN` of them).
    fn from_bytes(bytes: &[u8]) -> StoreKey {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        StoreKey {
            cipher: XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(bytes)),
            id: KeyId(id),
        }
    }

    /// Reads the key file at `key_path`, generating it first (32 random bytes, base64,
    /// mode 0600, created atomically) if it does not exist.
    pub(crate) fn load_or_generate(key_path: &Path) -> Result<(StoreKey, KeySource), StoreError> {
        if let Some(key) = read_key_file(key_path)? {
            return Ok((key, KeySource::KeyFile));
        }
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let mut text = Zeroizing::new(STANDARD.encode(raw.as_ref()));
        text.push('\n');
        if atomic::create_exclusive(key_path, text.as_bytes())? {
            return Ok((Self::from_bytes(raw.as_ref()), KeySource::Generated));
        }
        // Another process generated the key file first: use theirs.
        let key = read_key_file(key_path)?.ok_or_else(|| {
            StoreError::io(
                key_path,
                "reading the key file",
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        Ok((key, KeySource::KeyFile))
    }
}

/// `<store path>.key`: the generated key file belonging to the store at `store_path`.
pub(crate) fn key_file_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.as_os_str().to_owned();
    name.push(KEY_FILE_SUFFIX);
    PathBuf::from(name)
}

/// Reads and parses a key file; `None` if it does not exist.
pub(crate) fn read_key_file(key_path: &Path) -> Result<Option<StoreKey>, StoreError> {
    let text = match fs::read_to_string(key_path) {
        Ok(text) => SecretString::from(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(key_path, "reading the key file", e)),
    };
    if let Ok(meta) = fs::metadata(key_path) {
        let mode = meta.permissions().mode();
        if mode & KEY_FILE_FORBIDDEN_BITS != 0 {
            tracing::warn!(
                path = %key_path.display(),
                mode = format_args!("{:o}", mode & PERMISSION_BITS),
                "token store key file is accessible to other users; it should be mode 600"
            );
        }
    }
    StoreKey::parse(&text, key_path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreKey, StoreError> {
        StoreKey::parse(&SecretString::from(text), Path::new("/cfg"))
    }

    #[test]
    fn accepts_padded_unpadded_and_whitespace() {
        let padded = STANDARD.encode([7u8; KEY_LEN]);
        let unpadded = padded.trim_end_matches('=').to_owned();
        let a = parse(&padded).unwrap();
        let b = parse(&unpadded).unwrap();
        let c = parse(&format!("  {padded}\n")).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.id, c.id);
    }

    #[test]
    fn key_id_is_sha256_prefix_hex() {
        let key = parse(&STANDARD.encode([0u8; KEY_LEN])).unwrap();
        // sha256 of 32 zero bytes starts with 66687aadf862bd77.
        assert_eq!(key.id.to_string(), "66687aadf862bd77");
    }

    #[test]
    fn rejects_bad_keys_without_echoing_them() {
        let not_b64 = "this-is-not-base64!!";
        let err = parse(not_b64).err().unwrap();
        assert!(matches!(err, StoreError::BadKey { .. }));
        let msg = err.to_string();
        assert!(msg.contains("not valid standard base64"), "{msg}");
        assert!(!msg.contains(not_b64), "{msg}");

        let short = STANDARD.encode([1u8; 16]);
        let msg = parse(&short).err().unwrap().to_string();
        assert!(msg.contains("16 bytes, expected 32"), "{msg}");
        assert!(!msg.contains(&short), "{msg}");
        assert!(msg.contains("/cfg"), "{msg}");

        assert!(parse("   ").err().unwrap().to_string().contains("empty"));
    }

    #[test]
    fn generates_then_reuses_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = key_file_path(&dir.path().join("tokens"));
        assert_eq!(key_path, dir.path().join("tokens.key"));

        let (first, source) = StoreKey::load_or_generate(&key_path).unwrap();
        assert_eq!(source, KeySource::Generated);
        let mode = fs::metadata(&key_path).unwrap().permissions().mode() & PERMISSION_BITS;
        assert_eq!(mode, atomic::FILE_MODE);
        let text = fs::read_to_string(&key_path).unwrap();
        assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), KEY_LEN);

        let (second, source) = StoreKey::load_or_generate(&key_path).unwrap();
        assert_eq!(source, KeySource::KeyFile);
        assert_eq!(first.id, second.id);
    }

    #[test]
    fn corrupt_key_file_is_bad_key_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("s.key");
        fs::write(&key_path, "short").unwrap();
        let err = StoreKey::load_or_generate(&key_path).err().unwrap();
        assert!(matches!(err, StoreError::BadKey { ref path, .. } if *path == key_path));
        assert_eq!(fs::read_to_string(&key_path).unwrap(), "short");
    }
}
