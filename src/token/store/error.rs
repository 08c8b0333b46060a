//! [`StoreError`]: what can go wrong with a token store, split by what the caller does about it.
//!
//! Every message names the file concerned and never contains secret material: no key bytes,
//! no token values, and no decoder error text that could quote either.

use std::io;
use std::path::PathBuf;

/// Failure of a token store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused an operation (permissions, disk full, missing directory…).
    /// Retrying may help once the cause is fixed.
    #[error("token store {path}: {action} failed")]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// What was being done, e.g. "renaming the new store over the old one".
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The file exists but cannot be decoded: damaged, truncated, extended or tampered with.
    /// It is left untouched; restore it from a backup or delete it to start empty.
    #[error("token store {path} is corrupt: {reason}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong, in terms of the file layout.
        reason: String,
    },

    /// The file is intact but was encrypted with a different key than the configured one.
    /// Configure the key the file was written with (ids are the first 8 bytes of SHA-256 of
    /// the raw key, hex).
    #[error(
        "token store {path} was written with key id {stored_key_id}, \
         configured key has id {configured_key_id}"
    )]
    WrongKey {
        /// The store file.
        path: PathBuf,
        /// Key id recorded in the file.
        stored_key_id: String,
        /// Key id of the configured key.
        configured_key_id: String,
    },

    /// The file was written by a newer (or unknown) format version of tokenwarden.
    #[error("token store {path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The store file.
        path: PathBuf,
        /// Version found in the header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },

    /// The configured or key-file key is unusable (not base64, wrong length). The value itself
    /// is never echoed.
    #[error("token store key for {path} is unusable: {reason}")]
    BadKey {
        /// The key file, or the store file when the key was configured directly.
        path: PathBuf,
        /// Why, e.g. "decodes to 16 bytes, expected 32".
        reason: String,
    },

    /// Redis did not answer in time, refused the connection or the command. Retried with
    /// backoff; tokens already held stay in use. `endpoint` is `host:port`, never the URL
    /// (it may carry a password).
    #[error("token store redis at {endpoint}: {action} failed: {reason}")]
    Unavailable {
        endpoint: String,
        action: &'static str,
        reason: String,
    },

    /// A Redis value that cannot be decoded (garbage, truncated, or written for another
    /// connection). It is never overwritten silently at start-up.
    #[error("token store redis key {key}: {reason}")]
    BadValue { key: String, reason: String },

    /// A Redis token set this replica will not use: it fails authentication (edited, written
    /// back under another generation, copied from another connection or key prefix), its
    /// generation or size is beyond the store's bounds, or it was sealed by an earlier
    /// version and could roll back the set this replica holds. It is not adopted; the next
    /// refresh replaces it. `generation`: its `gen` field, when that is within the bound.
    #[error("token store redis key {key}: value refused: {reason}")]
    Refused {
        key: String,
        reason: String,
        generation: Option<u64>,
    },

    /// A per-user grant that was deleted (revoked) at `generation`: its Redis hash is a
    /// tombstone, so a replica holding the grant drops it instead of writing it back.
    #[error("token store redis key {key}: the grant was deleted")]
    Deleted { key: String, generation: u64 },

    /// A Redis value sealed with another key than the configured one.
    #[error(
        "token store redis key {key} was written with key id {stored_key_id}, \
         configured key has id {configured_key_id}"
    )]
    WrongKeyAt {
        key: String,
        stored_key_id: String,
        configured_key_id: String,
    },

    /// Another process holds the store's lock: two writers would lose each other's rotated
    /// refresh tokens within seconds, so the second one does not start.
    #[error(
        "token store {path} is in use by another tokenwarden{} (lock file {lock}); stop it, or give this one its own store.path",
        .holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },

    /// This connection key or token set cannot be stored (e.g. an empty connection key, or one
    /// too long for the file format). Nothing was written.
    #[error("token store {path}: cannot store connection {connection:?}: {reason}")]
    Unstorable {
        /// The store file.
        path: PathBuf,
        /// The connection key (truncated if very long).
        connection: String,
        /// Why, e.g. "connection key is longer than 65535 bytes".
        reason: String,
    },
}

impl StoreError {
    /// Builds [`StoreError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// Builds [`StoreError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_error_names_path_and_keeps_source() {
        let err = StoreError::io(
            "/var/lib/tw/tokens",
            "reading the store",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let msg = err.to_string();
        assert!(msg.contains("/var/lib/tw/tokens"), "{msg}");
        assert!(msg.contains("reading the store"), "{msg}");
        assert!(err.source().is_some());
    }

    #[test]
    fn wrong_key_message_names_both_ids() {
        let err = StoreError::WrongKey {
            path: "/s".into(),
            stored_key_id: "aaaa".into(),
            configured_key_id: "bbbb".into(),
        };
        assert_eq!(
            err.to_string(),
            "token store /s was written with key id aaaa, configured key has id bbbb"
        );
    }
}
