//! What the CA's files must look like before tokenwarden trusts or writes them, after
//! OpenSSH's `StrictModes`: the root key is readable by its owner only, owned by the user
//! running tokenwarden or by root, and no directory above it lets anyone else replace it
//! (writable by others without the sticky bit). `ca init` writes only new files and follows
//! no symbolic link, dangling or not.

use super::CaError;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Permission bits of group and others: none may be set on the key file.
const GROUP_OTHER_BITS: u32 = 0o077;
/// Write permission for others, on a directory.
const OTHER_WRITE: u32 = 0o002;
/// The sticky bit: in such a directory only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;
/// The superuser's uid, whose files every user has to trust anyway.
const ROOT_UID: u32 = 0;

/// Refuses a root key at `key` that others could read or replace: group or other
/// permission bits, an owner other than this process's user or root, or a directory above
/// it (as written, and after following links) writable by others without the sticky bit.
pub(super) fn check_key(key: &Path) -> Result<(), CaError> {
    let path = || key.display().to_string();
    let meta = std::fs::metadata(key).map_err(super::io_error(key))?;
    let mode = meta.permissions().mode();
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(CaError::LoosePermissions {
            path: path(),
            mode: mode & 0o777,
        });
    }
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user && meta.uid() != ROOT_UID {
        return Err(CaError::ForeignOwner {
            path: path(),
            owner: meta.uid(),
            user,
        });
    }
    for dir in directories(key)? {
        let mode = std::fs::metadata(&dir)
            .map_err(super::io_error(&dir))?
            .permissions()
            .mode();
        if mode & OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Err(CaError::OpenDirectory {
                path: path(),
                dir: dir.display().to_string(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// Every directory above `key`, along its absolute path as written and along the path
/// with every link resolved.
fn directories(key: &Path) -> Result<Vec<PathBuf>, CaError> {
    let written = std::path::absolute(key).map_err(super::io_error(key))?;
    let resolved = std::fs::canonicalize(key).map_err(super::io_error(key))?;
    Ok([written, resolved]
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .collect())
}

/// Refuses to create `path` when anything is there: a file, or a symbolic link even if it
/// points nowhere (writing through it would create the file it points to).
pub(super) fn check_new(path: &Path) -> Result<(), CaError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(CaError::Symlink {
            path: path.display().to_string(),
            target: std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default(),
        }),
        Ok(_) => Err(CaError::Exists {
            path: path.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::io_error(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{init, CaFiles, Root, CA_CERT_FILE, CA_KEY_FILE};
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    /// An unprivileged uid that does not run the tests (`nobody`).
    const OTHER_UID: u32 = 65534;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn load(files: &CaFiles) -> Result<Root, String> {
        Root::load(&files.cert, &files.key).map_err(|e| e.to_string())
    }

    #[test]
    fn a_key_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path()).unwrap();
        std::os::unix::fs::chown(&files.key, Some(OTHER_UID), None).unwrap();
        let e = load(&files).err().expect("refused");
        assert!(e.contains(&files.key.display().to_string()), "{e}");
        assert!(e.contains("owned by uid 65534"), "{e}");
        // Root's own files are as good as the user's.
        std::os::unix::fs::chown(&files.key, Some(0), None).unwrap();
        assert!(load(&files).is_ok());
    }

    #[test]
    fn a_key_in_a_directory_anyone_may_write_without_the_sticky_bit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("shared");
        std::fs::create_dir(&ca).unwrap();
        let files = init(&ca).unwrap();
        chmod(&ca, 0o777);
        let e = load(&files).err().expect("refused");
        assert!(e.contains(&files.key.display().to_string()), "{e}");
        assert!(e.contains(&ca.display().to_string()), "{e}");
        assert!(e.contains("writable by anyone"), "{e}");
        // With the sticky bit (as /tmp has) nobody else may replace the key.
        chmod(&ca, 0o1777);
        assert!(load(&files).is_ok());
        // The same holds for every directory above the key.
        chmod(&ca, 0o700);
        chmod(dir.path(), 0o777);
        let e = load(&files).err().expect("refused");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[test]
    fn init_refuses_a_dangling_link_and_creates_nothing() {
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("elsewhere.pem");
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let e = init(dir.path()).err().expect("refused").to_string();
            assert!(e.contains(&link.display().to_string()), "{e}");
            assert!(e.contains("symbolic link"), "{e}");
            assert!(!target.exists(), "{name}: the link's target was created");
            assert!(!dir.path().join(CA_KEY_FILE).is_file());
        }
    }
}
