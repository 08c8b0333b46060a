//! The reader of the file store of earlier versions (one encrypted file holding every
//! connection, layout in the `format` module), kept only so that
//! [`SqliteStore`](super::SqliteStore) can migrate such a file on its first start and
//! `tokenwarden check` can verify it before. Nothing writes this format any more.
//!
//! A file that cannot be decoded (corrupt, wrong key, unknown version) is an error that names
//! it; it is never modified.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use secrecy::SecretString;

use super::key::{key_file_path, read_key_file, StoreKey};
use super::{format, layout, record, StoreError, StoredToken};

/// Whether `path` holds a file of the earlier format (it begins with the format's magic).
pub(crate) fn is_legacy(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; layout::MAGIC.len()];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == layout::MAGIC)
}

/// Every token set of the earlier-format file at `path`, opened with `key` — or, when that is
/// unset, with the file's generated key file `<path>.key` (never generated here: a new key
/// could not open an existing file). Never modifies anything.
pub(crate) fn read(
    path: &Path,
    key: Option<&SecretString>,
) -> Result<HashMap<String, StoredToken>, StoreError> {
    let key = match key {
        Some(text) => StoreKey::parse(text, path)?,
        None => read_key_file(&key_file_path(path))?.ok_or_else(|| StoreError::BadKey {
            path: key_file_path(path),
            reason: "the store exists but neither store.key nor its key file does; \
                     a generated key could not open it"
                .into(),
        })?,
    };
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, "reading the store", e))?;
    let (version, records) = format::decode(path, &bytes)?;
    let legacy = version == layout::LEGACY_FORMAT_VERSION;
    record::open_all(path, &key, legacy, records)
}
