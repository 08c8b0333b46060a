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

use rusqlite::{params, Connection, TransactionBehavior};

use super::schema::{sql_error, Table};
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
    /// Deletes a runtime connection's definition and token set, together.
    DeleteConnection { connection: String },
}

/// Where a write's outcome goes.
type Reply = mpsc::SyncSender<Result<(), StoreError>>;

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

    /// Applies `write`, returning once it is committed and synced (or failed).
    pub(crate) fn write(&self, write: Write) -> Result<(), StoreError> {
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
        if batch.len() > 1 && apply(&mut db, path, batch.iter().map(|(w, _)| w)).is_ok() {
            for (_, reply) in batch {
                let _ = reply.send(Ok(()));
            }
            continue;
        }
        for (write, reply) in batch {
            let _ = reply.send(apply(&mut db, path, std::iter::once(&write)));
        }
    }
}

/// Applies `batch` in one transaction and commits it; on failure nothing of it is kept.
fn apply<'a>(
    db: &mut Connection,
    path: &Path,
    batch: impl Iterator<Item = &'a Write>,
) -> Result<(), StoreError> {
    let failed = sql_error(path, "writing to the database");
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&failed)?;
    for write in batch {
        let done = match write {
            Write::Upsert {
                table,
                connection,
                sealed,
            } => tx
                .prepare_cached(table.upsert())
                .and_then(|mut s| s.execute(params![connection, sealed])),
            Write::Delete { table, connection } => tx
                .prepare_cached(table.delete())
                .and_then(|mut s| s.execute([connection])),
            Write::DeleteConnection { connection } => [Table::Definitions, Table::TokenSets]
                .into_iter()
                .try_fold(0, |n, table| {
                    Ok(n + tx.prepare_cached(table.delete())?.execute([connection])?)
                }),
        };
        done.map_err(&failed)?;
    }
    tx.commit().map_err(failed)
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
