//! Group commit: the database's one writing connection, on a thread of its own.
//!
//! Every write of the store is sent to it with a reply channel. It takes the writes waiting,
//! applies them in one transaction, commits (the commit returns once the write-ahead log is
//! synced) and only then answers each caller. A caller alone gets a transaction of its own,
//! as without the thread; callers that arrive while a commit is being synced share the next
//! one, so N concurrent writes cost one fsync instead of N — and no caller is answered before
//! the commit holding its write is on disk. If a shared transaction fails, each of its
//! writes is retried in a transaction of its own, so one caller's failure is never another's.
//!
//! Locking budget: callers never touch the connection; they block on their reply only.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::schema::{sql_error, Table, GRANT_DELETE, GRANT_DELETE_ALL, GRANT_UPSERT};
use super::StoreError;

/// Most writes in one transaction (a bound on one commit's size, not a wait: a batch is only
/// what is already queued).
const MAX_BATCH: usize = 512;

/// One change, as the store sends it.
pub(crate) enum Write {
    /// Inserts or replaces the row of `connection` in `table`.
    Upsert {
        table: Table,
        connection: String,
        sealed: Vec<u8>,
    },
    /// Deletes the row of `connection` from `table`.
    Delete { table: Table, connection: String },
    /// Deletes a runtime connection's definition, token set and per-user grants, together.
    DeleteConnection { connection: String },
    /// Inserts or replaces the grant of `subject` under `connection`; `expires_at_ms` is
    /// kept in clear beside the sealed set (None: long-lived).
    UpsertGrant {
        connection: String,
        subject: String,
        expires_at_ms: Option<i64>,
        sealed: Vec<u8>,
    },
    /// Deletes the grant of `subject` under `connection` (the write's count says whether
    /// there was one).
    DeleteGrant { connection: String, subject: String },
}

/// Where a write's outcome goes: how many rows it changed, counted in its transaction.
type Reply = mpsc::SyncSender<Result<usize, StoreError>>;

/// The writing thread and its queue; dropping it finishes the queued writes, closes the
/// connection (checkpointing the log) and joins the thread.
pub(crate) struct Committer {
    queue: Option<mpsc::Sender<(Write, Reply)>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Committer {
    /// Starts the thread that owns `db` (the database at `path`, opened for writing).
    pub(crate) fn start(db: Connection, path: &Path) -> Result<Committer, StoreError> {
        let (queue, writes) = mpsc::channel();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("tokenwarden-store".into())
            .spawn(move || run(db, &thread_path, &writes))
            .map_err(|e| StoreError::io(path, "starting the database writer", e))?;
        Ok(Committer {
            queue: Some(queue),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// Applies `write`, returning once it is committed and synced (or failed): how many
    /// rows it changed.
    pub(crate) fn write(&self, write: Write) -> Result<usize, StoreError> {
        let stopped = || {
            StoreError::io(
                &self.path,
                "writing to the database",
                io::Error::other("the database writer has stopped"),
            )
        };
        let (reply, outcome) = mpsc::sync_channel(1);
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send((write, reply)).map_err(|_| stopped())?;
        outcome.recv().map_err(|_| stopped())?
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: one transaction per batch of queued writes, until the queue closes.
fn run(mut db: Connection, path: &Path, writes: &mpsc::Receiver<(Write, Reply)>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        batch.extend(writes.try_iter().take(MAX_BATCH - 1));
        if batch.len() > 1 {
            if let Ok(changed) = apply(&mut db, path, batch.iter().map(|(w, _)| w)) {
                for ((_, reply), n) in batch.into_iter().zip(changed) {
                    let _ = reply.send(Ok(n));
                }
                continue;
            }
        }
        for (write, reply) in batch {
            let alone = apply(&mut db, path, std::iter::once(&write));
            let _ = reply.send(alone.map(|changed| changed.into_iter().sum()));
        }
    }
}

/// Applies `batch` in one transaction and commits it: how many rows each write changed.
/// On failure nothing of it is kept.
fn apply<'a>(
    db: &mut Connection,
    path: &Path,
    batch: impl Iterator<Item = &'a Write>,
) -> Result<Vec<usize>, StoreError> {
    let failed = sql_error(path, "writing to the database");
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&failed)?;
    let changed = batch
        .map(|write| execute(&tx, write))
        .collect::<rusqlite::Result<Vec<usize>>>()
        .map_err(&failed)?;
    tx.commit().map_err(failed)?;
    Ok(changed)
}

/// Runs one write's statements in `tx`: how many rows they changed.
fn execute(tx: &Transaction<'_>, write: &Write) -> rusqlite::Result<usize> {
    match write {
        Write::Upsert {
            table,
            connection,
            sealed,
        } => tx
            .prepare_cached(table.upsert())?
            .execute(params![connection, sealed]),
        Write::Delete { table, connection } => {
            tx.prepare_cached(table.delete())?.execute([connection])
        }
        Write::DeleteConnection { connection } => {
            let grants = tx.prepare_cached(GRANT_DELETE_ALL)?.execute([connection])?;
            [Table::Definitions, Table::TokenSets]
                .into_iter()
                .try_fold(grants, |n, table| {
                    Ok(n + tx.prepare_cached(table.delete())?.execute([connection])?)
                })
        }
        Write::UpsertGrant {
            connection,
            subject,
            expires_at_ms,
            sealed,
        } => tx.prepare_cached(GRANT_UPSERT)?.execute(params![
            connection,
            subject,
            expires_at_ms,
            sealed
        ]),
        Write::DeleteGrant {
            connection,
            subject,
        } => tx
            .prepare_cached(GRANT_DELETE)?
            .execute([connection, subject]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::store::schema::{connect, Access};
    use std::sync::Arc;

    /// Many callers at once share commits; a write the database refuses fails alone, and
    /// every other caller's write is stored.
    #[test]
    fn concurrent_writes_are_all_stored_and_a_refused_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let db = connect(&path, Access::Write).unwrap();
        db.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON definitions WHEN NEW.connection = 'bad-3'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let committer = Arc::new(Committer::start(db, &path).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let committer = Arc::clone(&committer);
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            let connection = if t == 3 && i == 10 {
                                "bad-3".to_owned()
                            } else {
                                format!("c{t}-{i}")
                            };
                            committer
                                .write(Write::Upsert {
                                    table: Table::Definitions,
                                    connection,
                                    sealed: vec![1, 2, 3],
                                })
                                .is_ok()
                        })
                        .filter(|ok| !ok)
                        .count()
                })
            })
            .collect();
        let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(failed, 1);
        committer
            .write(Write::DeleteConnection {
                connection: "c0-0".into(),
            })
            .unwrap();
        drop(committer); // joins the thread; the connection is closed
        let db = Connection::open(&path).unwrap();
        let stored: i64 = db
            .query_row("SELECT count(*) FROM definitions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 16 * 20 - 2);
    }
}
