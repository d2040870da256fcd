//! Group commit: write transactions from concurrent requests are queued to
//! one thread, which runs every queued job in a single redb transaction,
//! syncs the directories they touched once, and commits once. Each request
//! still gets its own result. Many small pushes then share their syncs
//! instead of queueing behind one another's.

use std::any::Any;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use super::blobs::fsync_dir;
use super::{Error, Result};

type Output = Box<dyn Any + Send>;
/// A job must write nothing when it returns an error: its transaction is
/// shared with the others in its batch.
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Output> + Send>;

struct Pending {
    job: Job,
    /// A directory whose new entry must be durable before the commit.
    sync_dir: Option<PathBuf>,
    reply: SyncSender<Result<Output>>,
}

/// Jobs in one batch at most, so one commit never grows without bound.
const MAX_BATCH: usize = 256;

/// The database handle, shared by the store's readers and the committer,
/// and swapped for a fresh one after an I/O error.
pub(super) struct DbHandle {
    root: PathBuf,
    slot: RwLock<Option<Arc<Database>>>,
}

impl DbHandle {
    pub(super) fn open(root: &Path) -> Result<DbHandle> {
        Ok(DbHandle {
            root: root.to_path_buf(),
            slot: RwLock::new(Some(Arc::new(open_database(root)?))),
        })
    }

    pub(super) fn get(&self) -> Result<Arc<Database>> {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            // Reported as redb's own "previous I/O error", so the next
            // `recover` tries to reopen again.
            .ok_or(Error::Db(redb::Error::PreviousIo))
    }

    /// redb refuses every transaction after an I/O error until the database
    /// is opened again; this does that, once the old handle is let go.
    pub(super) fn reopen(&self) {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        slot.take();
        while Instant::now() < deadline {
            match open_database(&self.root) {
                Ok(db) => {
                    log::warn!("reopened the database after a storage error");
                    *slot = Some(Arc::new(db));
                    return;
                }
                Err(e) => {
                    log::debug!("reopening the database: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        log::error!("could not reopen the database; restart berth");
    }
}

fn open_database(root: &Path) -> Result<Database> {
    let path = root.join("berth.redb");
    match Database::create(&path) {
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::InUse(path)),
        other => Ok(other?),
    }
}

pub(super) struct Committer {
    queue: Option<SyncSender<Pending>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub(super) fn start(db: Arc<DbHandle>) -> Committer {
        let (queue, jobs) = sync_channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("berth-commit".into())
            .spawn(move || run(&db, &jobs))
            .expect("the commit thread starts");
        Committer {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    /// Runs `work` in the next group transaction and returns its result
    /// once that transaction has committed.
    pub(super) fn write<T, F>(&self, sync_dir: Option<PathBuf>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let job: Job = Box::new(move |txn| work(txn).map(|t| Box::new(t) as Output));
        let queue = self
            .queue
            .as_ref()
            .expect("the committer runs while the store lives");
        queue
            .send(Pending {
                job,
                sync_dir,
                reply,
            })
            .map_err(|_| Error::Corrupt("the commit thread has stopped".into()))?;
        let output = answer
            .recv()
            .map_err(|_| Error::Corrupt("the commit thread has stopped".into()))??;
        Ok(*output
            .downcast::<T>()
            .expect("a job's output has its own type"))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &DbHandle, jobs: &Receiver<Pending>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
    }
}

fn commit_batch(db: &DbHandle, batch: Vec<Pending>) {
    let dirs: BTreeSet<&PathBuf> = batch.iter().filter_map(|p| p.sync_dir.as_ref()).collect();
    let synced = dirs.into_iter().try_for_each(|d| fsync_dir(d));
    if let Err(e) = synced {
        return fail_all(batch, &Error::Io(e));
    }
    let txn = match db.get().and_then(|db| Ok(db.begin_write()?)) {
        Ok(txn) => txn,
        Err(e) => return fail_all(batch, &e),
    };
    let mut replies = Vec::with_capacity(batch.len());
    for pending in batch {
        replies.push((pending.reply, (pending.job)(&txn)));
    }
    match txn.commit() {
        Ok(()) => {
            for (reply, output) in replies {
                let _ = reply.send(output);
            }
        }
        Err(e) => {
            // A failed commit poisons redb's handle: reopen it here, and
            // answer with plain I/O errors so no request reopens it again.
            let error = match Error::from(e) {
                Error::Db(redb::Error::Io(io)) => {
                    db.reopen();
                    Error::Io(io)
                }
                Error::Db(redb::Error::PreviousIo) => {
                    db.reopen();
                    Error::Corrupt("the database hit an I/O error and was reopened".into())
                }
                other => other,
            };
            for (reply, _) in replies {
                let _ = reply.send(Err(replicate(&error)));
            }
        }
    }
}

fn fail_all(batch: Vec<Pending>, e: &Error) {
    for pending in batch {
        let _ = pending.reply.send(Err(replicate(e)));
    }
}

/// One error for every job of a failed batch (errors are not `Clone`),
/// keeping what the API maps: the OS error code of an I/O failure.
fn replicate(e: &Error) -> Error {
    let io = |e: &io::Error| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    };
    match e {
        Error::Io(e) => Error::Io(io(e)),
        Error::Db(redb::Error::Io(e)) => Error::Db(redb::Error::Io(io(e))),
        Error::Db(redb::Error::PreviousIo) => Error::Db(redb::Error::PreviousIo),
        other => Error::Corrupt(other.to_string()),
    }
}
