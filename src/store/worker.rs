//! The one boundary between the async runtime and SQLite: a dedicated thread
//! owns the connection and runs closures sent through a bounded channel,
//! answering through oneshot channels.
//!
//! A thread of its own rather than `spawn_blocking` with a Mutex: SQLite
//! writes one transaction at a time anyway, the connection's statement cache
//! stays with it, and a disk stalled in fsync holds one thread, not a pile of
//! blocking-pool threads waiting on the lock. The bounded queue is the
//! backpressure; the per-call timeout bounds how long a caller waits. A call
//! that timed out may still run later: writes are single transactions and
//! job updates compare-and-set, so a retry is safe.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{open, StoreError, StoreSettings};

/// What the store thread owns.
pub(super) struct Db {
    pub conn: Connection,
    pub settings: StoreSettings,
    /// Held for the thread's life: the exclusive lock on `<path>.lock`.
    _lock: std::fs::File,
}

type Work = Box<dyn FnOnce(&mut Db) + Send>;

/// A handle on the store; cheap to clone. The thread ends (and the lock is
/// released) when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Work>,
    timeout: Duration,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if absent) and checks the database, runs pending
    /// migrations, and starts the store thread. Fails, naming the problem,
    /// on a corrupt, locked, read-only or newer-schema database.
    pub async fn open(settings: StoreSettings) -> Result<Store, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Work>(settings.queue_depth.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let timeout = settings.call_timeout;
        let path = Arc::new(settings.path.clone());
        std::thread::Builder::new()
            .name("vmshot-store".into())
            .spawn(move || {
                let mut db = match open::open(settings) {
                    Ok(db) => {
                        let _ = ready_tx.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(work) = rx.blocking_recv() {
                    // A panic costs its call (the caller sees `Closed`), not
                    // the store: an open transaction rolls back as it drops.
                    let _ = catch_unwind(AssertUnwindSafe(|| work(&mut db)));
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                detail: format!("cannot start the store thread: {e}"),
            })?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Store { tx, timeout, path })
    }

    /// Runs `f` on the store thread, within the call timeout.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let work: Work = Box::new(move |db| {
            let _ = answer.send(f(db));
        });
        let round_trip = async {
            self.tx.send(work).await.map_err(|_| StoreError::Closed)?;
            answered.await.map_err(|_| StoreError::Closed)?
        };
        tokio::time::timeout(self.timeout, round_trip)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Holds the store thread for `d`, saying on `started` once it does:
    /// for tests of how callers meet a store that does not answer in time.
    #[cfg(test)]
    pub(crate) async fn hold(
        &self,
        d: Duration,
        started: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), StoreError> {
        self.call(move |_| {
            let _ = started.send(());
            std::thread::sleep(d);
            Ok(())
        })
        .await
    }

    /// Waits until every call sent before it has run (tests, shutdown).
    #[cfg(test)]
    pub(super) async fn sync(&self) -> Result<(), StoreError> {
        self.call(|_| Ok(())).await
    }
}

impl Db {
    pub(super) fn new(conn: Connection, settings: StoreSettings, lock: std::fs::File) -> Self {
        Self {
            conn,
            settings,
            _lock: lock,
        }
    }
}
