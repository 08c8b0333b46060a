//! Reading the file a `${file:PATH}` names ([`super::env`]): a secret or a key, so a file
//! others may read or write is refused, as the CA key is (`crate::ca`'s hygiene check, which
//! is stricter: no group bit either, since that key is tokenwarden's own; a Secret volume
//! shares its files with the pod's group). The mode is checked on the file opened, after
//! following links, so the check and the read are of the same file — a Kubernetes Secret
//! volume's entries are links through `..data` to the real files.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Read and write permission for others: neither may be set on a file a value comes from.
const OTHER_READ_WRITE: u32 = 0o006;
/// The largest file a value may come from (a key, a certificate chain or a secret is far
/// smaller; this keeps `${file:/dev/zero}` or a wrong path from filling the memory).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the file a `${file:}` names gives no value. The messages name the file and say why,
/// never what it holds.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`${{file:}}` names no file: write `${{file:/path/to/file}}` (a relative path is relative to the config file's folder)")]
    NoPath,
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is not a regular file")]
    NotAFile { file: String },
    #[error("{file} is readable or writable by others (mode {mode:o}), and it holds a secret: chmod 600 {file} (or 640 to share it with a group); from a Kubernetes Secret volume, set `defaultMode: 0440` (or 0400) on the volume")]
    OpenToOthers { file: String, mode: u32 },
    #[error("{file} is larger than {limit} bytes, too large for a secret or a key")]
    TooLarge { file: String, limit: u64 },
    #[error("{file} is not UTF-8 text")]
    NotText { file: String },
}

/// Where `written` (as in `${file:written}`) is: itself when absolute, else in `base`, the
/// config file's folder.
pub fn locate(base: &Path, written: &str) -> PathBuf {
    base.join(written)
}

/// The text of `file` without its trailing line ends (`\n`, `\r\n`), after checking that
/// it is a regular file no one else may read or write.
pub fn read(file: &Path) -> Result<String, FileError> {
    let name = || file.display().to_string();
    let io = |source| FileError::Io {
        file: name(),
        source,
    };
    // Before opening: opening a FIFO would wait for a writer.
    if !std::fs::metadata(file).map_err(io)?.is_file() {
        return Err(FileError::NotAFile { file: name() });
    }
    let opened = std::fs::File::open(file).map_err(io)?;
    let mode = opened.metadata().map_err(io)?.permissions().mode();
    if mode & OTHER_READ_WRITE != 0 {
        return Err(FileError::OpenToOthers {
            file: name(),
            mode: mode & 0o777,
        });
    }
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            file: name(),
            limit: MAX_FILE_BYTES,
        });
    }
    let mut text = String::from_utf8(bytes).map_err(|_| FileError::NotText { file: name() })?;
    trim_line_ends(&mut text);
    Ok(text)
}

/// Removes every trailing `\n` and `\r\n` (a lone `\r` stays: it is not a line end).
fn trim_line_ends(text: &mut String) {
    while text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn trailing_line_ends_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, text) in [
            (&b"s3cret\n"[..], "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret\n\n\r\n", "s3cret"),
            (b"s3cret", "s3cret"),
            (b" s3cret \t", " s3cret \t"),
            (b"s3cret\r", "s3cret\r"),
            (b"line 1\nline 2\n", "line 1\nline 2"),
            (b"", ""),
        ] {
            let file = write(dir.path(), "secret", bytes, 0o600);
            assert_eq!(read(&file).unwrap(), text, "{bytes:?}");
        }
    }

    #[test]
    fn a_file_others_may_read_or_write_is_refused_the_group_may_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o604, 0o602, 0o666, 0o446] {
            let file = write(dir.path(), "secret", b"s3cret", mode);
            let e = read(&file).unwrap_err();
            assert!(
                matches!(&e, FileError::OpenToOthers { file: f, mode: m } if *f == file.display().to_string() && *m == mode),
                "{e:?}"
            );
            let message = e.to_string();
            assert!(message.contains("chmod 600"), "{message}");
            assert!(message.contains("defaultMode: 0440"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        for mode in [0o600, 0o400, 0o640, 0o440, 0o660] {
            let file = write(dir.path(), "secret", b"s3cret", mode);
            assert_eq!(read(&file).unwrap(), "s3cret", "mode {mode:o}");
        }
    }

    #[test]
    fn the_mode_checked_is_the_link_target_s() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(dir.path(), "real", b"s3cret", 0o644);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read(&link),
            Err(FileError::OpenToOthers { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&link).unwrap(), "s3cret");
    }

    #[test]
    fn missing_large_binary_and_non_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = read(&missing).unwrap_err();
        assert!(
            matches!(&e, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", missing.display())),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");

        let big = write(dir.path(), "big", &vec![b'a'; 1 << 20 | 1], 0o600);
        assert!(matches!(read(&big), Err(FileError::TooLarge { .. })));
        let exact = write(dir.path(), "exact", &vec![b'a'; 1 << 20], 0o600);
        assert_eq!(read(&exact).unwrap().len(), 1 << 20);
        let binary = write(dir.path(), "bin", &[0xff, 0xfe, 0x00], 0o600);
        assert!(matches!(read(&binary), Err(FileError::NotText { .. })));
        assert!(matches!(read(dir.path()), Err(FileError::NotAFile { .. })));
    }

    #[test]
    fn relative_paths_are_in_the_config_folder() {
        let base = Path::new("/etc/tokenwarden");
        assert_eq!(
            locate(base, "secrets/x"),
            Path::new("/etc/tokenwarden/secrets/x")
        );
        assert_eq!(locate(base, "/run/x"), Path::new("/run/x"));
    }
}
