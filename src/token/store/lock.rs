//! The single-writer lock of a local store: an exclusive `flock` on `<store>.lock`, holding
//! the holder's pid, for as long as the store is open. Two writers would overwrite each
//! other's rotated refresh tokens, so the second one is refused ([`StoreError::Locked`]).
//! The operating system releases the lock when the process dies, however it dies.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StoreError;

/// Suffix of the lock file beside the store.
const LOCK_SUFFIX: &str = "lock";
/// How long taking the lock waits for another holder to let go before refusing.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Pause between attempts to take the lock.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// `<store>.lock`: the lock file of the store at `path`.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    path.with_extension(match path.extension() {
        Some(ext) => format!("{}.{LOCK_SUFFIX}", ext.to_string_lossy()),
        None => LOCK_SUFFIX.to_owned(),
    })
}

/// Takes the exclusive lock of the store at `path` and records this process's pid in it.
#[allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "runs off the runtime (opening the store is spawn_blocking): std's clock and sleep"
)]
pub(crate) fn lock(path: &Path) -> Result<fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let lock_path = lock_path(path);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::io(&lock_path, "opening the lock file", e))?;
    // A holder that is exiting (a restart), or a forked child that has not yet exec'd
    // and so still shares the descriptor, lets go within moments: wait that long.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                    lock: lock_path,
                    holder: text.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(&lock_path, "locking the store", e))
            }
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    written.map_err(|e| StoreError::io(&lock_path, "writing the lock file", e))?;
    Ok(file)
}
