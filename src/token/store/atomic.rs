//! Crash-safe file creation, and the directories and modes of a store's files.
//!
//! A file is never written in place. Its content goes to a uniquely named temporary file in
//! the same directory (created with mode 0600), which is fsynced and then linked to its name;
//! finally the directory is fsynced so the new name itself is durable. A reader — or a
//! process restarted after a crash at any instant — therefore sees either no file or the
//! complete one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::StoreError;

/// Mode of every file written here: owner read/write only.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of directories created for a store: owner only.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The permission bits of a file mode (without file type and setuid/setgid/sticky bits).
pub(crate) const PERMISSION_BITS: u32 = 0o777;
/// Infix between the target's file name and the unique suffix of a temporary file.
const TEMP_INFIX: &str = ".tmp-";

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` and any missing ancestors with mode 0700; an existing directory is kept as is.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::io(dir, "creating the store directory", e))
}

/// Durably creates `path` with `contents` unless it already exists. Returns `false` (writing
/// nothing) if another writer created it first, so two racing processes agree on one content.
pub(crate) fn create_exclusive(path: &Path, contents: &[u8]) -> Result<bool, StoreError> {
    let temp = write_temp(path, contents)?;
    let linked = match fs::hard_link(&temp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some filesystems cannot hard-link; fall back to a rename, which is still atomic.
        Err(_) if !path.exists() => fs::rename(&temp, path).map(|()| true),
        Err(e) => Err(e),
    };
    let _ = fs::remove_file(&temp);
    let created = linked.map_err(|e| StoreError::io(path, "creating the file", e))?;
    if created {
        sync_dir(path)?;
    }
    Ok(created)
}

/// `.<file name>.tmp-`: the name prefix of every temporary file written for `path`.
fn temp_prefix(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(format!(".{name}{TEMP_INFIX}"))
}

/// Writes `contents` to a fresh, uniquely named temporary file beside `path` and fsyncs it.
fn write_temp(path: &Path, contents: &[u8]) -> Result<PathBuf, StoreError> {
    let prefix = temp_prefix(path).ok_or_else(|| {
        StoreError::io(
            path,
            "deriving a temporary file name",
            io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 file name"),
        )
    })?;
    let temp = parent_dir(path).join(format!(
        "{prefix}{}-{:016x}",
        std::process::id(),
        rand::rngs::OsRng.next_u64()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(StoreError::io(&temp, "writing a temporary file", e))
        }
    }
}

/// Fsyncs the directory containing `path`, making a rename or link into it durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "syncing the directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & PERMISSION_BITS
    }

    #[test]
    fn create_exclusive_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(create_exclusive(&path, b"first").unwrap());
        assert!(!create_exclusive(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(mode(&path), FILE_MODE);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn ensure_dir_creates_0700_and_parent_dir_of_bare_name() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        ensure_dir(&nested).unwrap();
        assert_eq!(mode(&nested), DIR_MODE);
        assert_eq!(parent_dir(Path::new("tokens")), Path::new("."));
    }
}
