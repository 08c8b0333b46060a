//! [`FileStore`]: every connection's token set in one encrypted file.
//!
//! Each `put`/`remove` re-encrypts all records (fresh nonces), encodes the whole file (layout
//! in the `format` module) and atomically replaces the old one (see the `atomic` module), so
//! after a crash at any instant the file holds either the old or the new set — never a mix.
//!
//! A mutex serialises writers within the process and guards an in-memory copy of the
//! decrypted records, so a write does not re-read the file. One process owns a store file:
//! [`FileStore::open`] takes an exclusive lock on `<store>.lock` (holding this process's
//! pid) for as long as the store is open, and refuses when another process holds it —
//! two writers would overwrite each other's rotated refresh tokens. The operating system
//! releases the lock when the process dies, however it dies.
//!
//! A file that cannot be decoded (corrupt, wrong key, unknown version) is never rewritten or
//! deleted: `load_all`, `put` and `remove` all fail with the error until an operator acts.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use secrecy::SecretString;

use super::binding::Binding;
use super::key::{key_file_path, read_key_file, KeySource, StoreKey};
use super::{atomic, format, layout, record, StoreError, StoredToken, TokenStore};

/// Longest prefix of an offending connection key quoted in an error message.
const CONNECTION_DISPLAY_MAX: usize = 64;

/// Decrypted records as last read from or written to disk; `None` when unknown (never read,
/// or a write failed part-way so the disk state must be re-read).
type Cache = Option<HashMap<String, StoredToken>>;

/// Suffix of the lock file beside the store.
const LOCK_SUFFIX: &str = "lock";
/// How long opening waits for another holder of the lock to let go before refusing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Pause between attempts to take the lock.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// The durable encrypted token store (see the module doc).
pub struct FileStore {
    path: PathBuf,
    key: StoreKey,
    cache: Mutex<Cache>,
    /// The exclusive lock, held while the store is open (None: `verify`, which only reads).
    _lock: Option<fs::File>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("key_id", &self.key.id.to_string())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (does not create) the store at `path`. `key`: 32 bytes, base64 (standard, padding optional).
    /// With `key == None`: use `<path>.key` beside the store, generating it (32 random bytes, base64, mode 0600,
    /// written atomically) if missing, and `tracing::warn!` once that a generated key is in use (path only).
    ///
    /// The parent directory is created (mode 0700) if missing, and temporary files left by a
    /// writer that crashed are removed. The store file itself is first read by
    /// [`TokenStore::load_all`] and first written by [`TokenStore::put`].
    pub fn open(path: &Path, key: Option<&SecretString>) -> Result<FileStore, StoreError> {
        atomic::ensure_dir(atomic::parent_dir(path))?;
        let lock = lock(path)?;
        let key = match key {
            Some(text) => StoreKey::parse(text, path)?,
            None => {
                let key_path = key_file_path(path);
                let (key, source) = StoreKey::load_or_generate(&key_path)?;
                warn_generated_key(&key_path, source);
                key
            }
        };
        atomic::remove_stale_temps(path);
        Ok(FileStore {
            path: path.to_path_buf(),
            key,
            cache: Mutex::new(None),
            _lock: Some(lock),
        })
    }

    /// What [`FileStore::open`] and [`TokenStore::load_all`] would refuse, found without
    /// creating or writing anything (for `tokenwarden check`): an unusable key, and a store
    /// file the key does not open (wrong key, corrupt, unknown version).
    pub fn verify(path: &Path, key: Option<&SecretString>) -> Result<(), StoreError> {
        let key = match key {
            Some(text) => StoreKey::parse(text, path)?,
            None => match read_key_file(&key_file_path(path))? {
                Some(key) => key,
                // `run` generates a key: fine for a new store, not for an existing one.
                None if path.exists() => {
                    return Err(StoreError::BadKey {
                        path: key_file_path(path),
                        reason: "the store exists but neither store.key nor its key file does; \
                                 a generated key could not open it"
                            .into(),
                    })
                }
                None => return Ok(()),
            },
        };
        let store = FileStore {
            path: path.to_path_buf(),
            key,
            cache: Mutex::new(None),
            _lock: None,
        };
        store.read_file().map(drop)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache, recovering from poisoning by forgetting it (the file is the truth).
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| {
            self.cache.clear_poison();
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        })
    }

    /// Reads and decrypts the file; a missing file is an empty store. Never modifies the file.
    fn read_file(&self) -> Result<HashMap<String, StoredToken>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(StoreError::io(&self.path, "reading the store", e)),
        };
        let (version, records) = format::decode(&self.path, &bytes)?;
        let legacy = version == layout::LEGACY_FORMAT_VERSION;
        record::open_all(&self.path, &self.key, legacy, records)
    }

    /// Encrypts and encodes `tokens` and durably replaces the file with them.
    fn write_file(&self, tokens: &HashMap<String, StoredToken>) -> Result<(), StoreError> {
        let mut connections: Vec<&String> = tokens.keys().collect();
        connections.sort();
        let mut sealed = Vec::with_capacity(connections.len());
        for connection in connections {
            let binding = Binding::file(connection);
            let record = record::seal(&self.key, &binding, &tokens[connection])
                .map_err(|reason| self.unstorable(connection, reason))?;
            sealed.push((connection.as_str(), record));
        }
        let bytes = format::encode(&sealed).map_err(|reason| self.unstorable("", reason))?;
        atomic::replace(&self.path, &bytes)
    }

    /// Applies `change` to the records (loading them first if needed) and writes the result.
    /// `change` returns whether anything changed; if not, nothing is written. If the write
    /// fails, the cache is dropped so the next operation re-reads what is really on disk.
    fn update(
        &self,
        change: impl FnOnce(&mut HashMap<String, StoredToken>) -> bool,
    ) -> Result<(), StoreError> {
        let mut cache = self.lock();
        let mut tokens = match cache.take() {
            Some(tokens) => tokens,
            None => self.read_file()?,
        };
        if !change(&mut tokens) {
            *cache = Some(tokens);
            return Ok(());
        }
        self.write_file(&tokens)?;
        *cache = Some(tokens);
        Ok(())
    }

    fn unstorable(&self, connection: &str, reason: String) -> StoreError {
        StoreError::Unstorable {
            path: self.path.clone(),
            connection: connection.chars().take(CONNECTION_DISPLAY_MAX).collect(),
            reason,
        }
    }
}

impl TokenStore for FileStore {
    fn load_all(&self) -> Result<HashMap<String, StoredToken>, StoreError> {
        let mut cache = self.lock();
        let tokens = self.read_file()?;
        *cache = Some(tokens.clone());
        Ok(tokens)
    }

    fn put(&self, connection: &str, token: &StoredToken) -> Result<(), StoreError> {
        format::validate_connection(connection).map_err(|r| self.unstorable(connection, r))?;
        self.update(|tokens| {
            tokens.insert(connection.to_owned(), token.clone());
            true
        })
    }

    fn remove(&self, connection: &str) -> Result<(), StoreError> {
        self.update(|tokens| tokens.remove(connection).is_some())
    }

    // The file format holds no definitions: the embedded database replaces it (issue 23).
    fn load_definitions(&self) -> Result<Vec<(String, super::Definition)>, StoreError> {
        Ok(Vec::new())
    }

    fn put_definition(&self, connection: &str, _definition: &[u8]) -> Result<(), StoreError> {
        Err(self.unstorable(
            connection,
            "the file store holds no runtime connections".into(),
        ))
    }

    fn remove_definition(&self, connection: &str) -> Result<(), StoreError> {
        self.remove(connection)
    }
}

/// Takes the exclusive lock of the store at `path` and records this process's pid in it.
#[allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "runs off the runtime (opening the store is spawn_blocking): std's clock and sleep"
)]
fn lock(path: &Path) -> Result<fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let lock_path = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.{LOCK_SUFFIX}", ext.to_string_lossy()),
        None => LOCK_SUFFIX.to_owned(),
    });
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

/// Warns that the store is protected only by a key file lying beside it.
fn warn_generated_key(key_path: &Path, source: KeySource) {
    match source {
        KeySource::Generated => tracing::warn!(
            key_file = %key_path.display(),
            "generated a new token store key; configure an explicit key kept apart from the store"
        ),
        KeySource::KeyFile => tracing::warn!(
            key_file = %key_path.display(),
            "token store uses a generated key file; configure an explicit key kept apart from the store"
        ),
    }
}
