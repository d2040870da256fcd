//! Group commit: write transactions from concurrent requests are queued to
//! one thread, which runs every queued job in a single redb transaction,
//! syncs the directories they touched once, and commits once. Each request
//! still gets its own result. Many small pushes then share their syncs
//! instead of queueing behind one another's: a small blob's bytes too are
//! made durable by one `syncfs` for its whole batch, not a sync of its own.

use std::any::Any;
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use super::blobs::fsync_dir;
use super::{Error, Result};

type Output = Box<dyn Any + Send>;
/// A job must write nothing when it returns an error: its transaction is
/// shared with the others in its batch. It may run more than once (see
/// `commit_batch`), so it touches nothing but the transaction.
type Job = Box<dyn Fn(&WriteTransaction) -> Result<Output> + Send>;

/// What must be on disk before a job's commit makes its change visible,
/// besides the database.
pub(super) enum Before {
    Nothing,
    /// A new entry in this directory.
    Entry(PathBuf),
    /// Whatever the job wrote to the store's files and left unsynced, and
    /// the names it gave them: a whole batch of such jobs shares one
    /// `syncfs`, where each would have cost a device flush of its own.
    Files,
}

struct Pending {
    job: Job,
    before: Before,
    reply: Reply,
}

/// How a job's outcome reaches whoever queued it. Every job is answered
/// once: one dropped before it ran (the commit thread stopped) answers
/// with that.
struct Reply(Option<Box<dyn FnOnce(Result<Output>) + Send>>);

impl Reply {
    fn new(answer: impl FnOnce(Result<Output>) + Send + 'static) -> Reply {
        Reply(Some(Box::new(answer)))
    }

    fn send(mut self, outcome: Result<Output>) {
        if let Some(answer) = self.0.take() {
            answer(outcome);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(stopped()));
        }
    }
}

fn stopped() -> Error {
    Error::Internal("the commit thread has stopped".into())
}

/// Jobs in one batch at most, so one commit never grows without bound.
const MAX_BATCH: usize = 256;

/// The database handle, shared by the store's readers and the committer,
/// and swapped for a fresh one after an I/O error.
pub(super) struct DbHandle {
    root: PathBuf,
    slot: RwLock<Option<Arc<Database>>>,
    /// Moves on around every commit, so what was read before it can be
    /// known to be stale (see served.rs): odd while a commit is under way,
    /// even between. Every write transaction commits through
    /// [`DbHandle::commit`], and redb runs one write transaction at a time.
    generation: AtomicU64,
    /// Set while a thread reopens the database.
    reopening: AtomicBool,
    /// When the database was last opened again.
    reopened_at: Mutex<Option<Instant>>,
}

impl DbHandle {
    pub(super) fn open(root: &Path) -> Result<DbHandle> {
        Ok(DbHandle {
            root: root.to_path_buf(),
            slot: RwLock::new(Some(Arc::new(open_database(root)?))),
            generation: AtomicU64::new(0),
            reopening: AtomicBool::new(false),
            reopened_at: Mutex::new(None),
        })
    }

    /// Commits `txn`, with the generation odd from before the commit
    /// until after it (even if it failed: what it left is not known).
    pub(super) fn commit(&self, txn: WriteTransaction) -> Result<()> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let committed = txn.commit();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(committed?)
    }

    /// Read before a read transaction begins: if it is even and the same
    /// later, nothing has committed since, and what was read is current.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
    /// is opened again: this starts that on a thread of its own, unless one
    /// is at it, and returns at once. Meanwhile every transaction fails
    /// fast: a request, and the async threads that read manifests, never
    /// wait on a database that may not open for seconds, or at all.
    pub(super) fn reopen(self: &Arc<Self>) {
        if !self.start_reopening() {
            return;
        }
        let this = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("berth-reopen".into())
            .spawn(move || {
                this.reopen_now();
                this.reopening.store(false, Ordering::Release);
            });
        if let Err(e) = started {
            log::error!("reopening the database: no thread: {e}");
            self.reopening.store(false, Ordering::Release);
        }
    }

    /// As [`DbHandle::reopen`], on this thread: the committer's, after a
    /// commit on `failed` failed, so that the request it answers next finds
    /// the database open (reads keep failing fast meanwhile). Unless that
    /// handle was swapped already: then it is, or was, being reopened.
    fn reopen_here(&self, failed: Arc<Database>) {
        let current = self
            .slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|db| Arc::ptr_eq(db, &failed));
        drop(failed);
        if !current || self.reopening.swap(true, Ordering::AcqRel) {
            return;
        }
        self.reopen_now();
        self.reopening.store(false, Ordering::Release);
    }

    /// Whether this caller is to reopen the database: no one else is at it,
    /// and it was not just opened again. Requests that failed on the old
    /// handle, or on none while it was being reopened, reach here after
    /// the new one is in: they must not take it out again.
    fn start_reopening(&self) -> bool {
        let just_reopened = self
            .reopened_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < REOPENED_LATELY);
        !just_reopened && !self.reopening.swap(true, Ordering::AcqRel)
    }

    /// Takes the old handle out (held only for that), waits for its last
    /// users to let it go, and opens the database again, for ten seconds
    /// at most; the next failed transaction tries again.
    fn reopen_now(&self) {
        let old = self.slot.write().unwrap_or_else(|p| p.into_inner()).take();
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(old) = old {
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        while Instant::now() < deadline {
            match open_database(&self.root) {
                Ok(db) => {
                    log::warn!("reopened the database after a storage error");
                    *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                    *self.reopened_at.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now());
                    return;
                }
                Err(e) => {
                    log::debug!("reopening the database: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        log::error!("could not reopen the database; the next failed request tries again");
    }
}

/// How long after the database was opened again a failure is taken for
/// one of the old handle's, not a reason to reopen it once more.
const REOPENED_LATELY: Duration = Duration::from_secs(1);

/// redb's page cache. Its default, 1 GiB, is anonymous memory that grows
/// with every page a transaction touches and is never given back: 110,000
/// blobs and manifests grew it by ~55 MiB, so a store ten times that size
/// would keep most of a GiB. That store fits under this bound (69.5 MiB
/// RSS either way, `cargo bench --bench compare -- --only hj`); 16 MiB
/// held it at 31 MiB but made its fill and prune some 10-30% slower in
/// interleaved runs. A page the cache drops is still in the kernel's page
/// cache.
const METADATA_CACHE_BYTES: usize = 64 << 20;

fn open_database(root: &Path) -> Result<Database> {
    let path = root.join("berth.redb");
    match Database::builder()
        .set_cache_size(METADATA_CACHE_BYTES)
        .create(&path)
    {
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::InUse(path)),
        other => Ok(other?),
    }
}

/// In a volatile store, one commit in this many is synced all the same.
const VOLATILE_SYNC_EVERY: u64 = 64;

/// Whoever watches the commits (the metrics), once one does.
pub(super) type WatcherSlot = std::sync::OnceLock<Arc<dyn super::Watcher>>;

pub(super) struct Committer {
    queue: Option<SyncSender<Pending>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// `durable`: every commit is synced; otherwise only one in
    /// [`VOLATILE_SYNC_EVERY`], which lets redb reuse the space of the
    /// commits between.
    /// `file_systems`: the directories holding the store's files, whose
    /// file systems [`Before::Files`] syncs.
    pub(super) fn start(
        db: Arc<DbHandle>,
        watcher: Arc<WatcherSlot>,
        durable: bool,
        file_systems: &[PathBuf],
    ) -> Result<Committer> {
        let file_systems = FileSystems::open(file_systems)?;
        let (queue, jobs) = sync_channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("berth-commit".into())
            .spawn(move || run(&db, &file_systems, &jobs, &watcher, durable))
            .expect("the commit thread starts");
        Ok(Committer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `work` in the next group transaction and returns its result
    /// once that transaction has committed.
    pub(super) fn write<T, F>(&self, before: Before, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let reply = Reply::new(move |outcome| {
            let _ = reply.send(outcome);
        });
        self.queue()
            .send(pending(before, work, reply))
            .map_err(|_| stopped())?;
        let output = answer.recv().map_err(|_| stopped())??;
        Ok(downcast(output))
    }

    /// As [`Committer::write`], for async code: no thread waits for the
    /// commit, so a request that needs only a commit (a POST starting an
    /// upload) costs no blocking thread and the four switches of one. On
    /// failure `failed` runs, whether or not anyone still awaits the
    /// answer. It runs on the commit thread and must not panic: that
    /// would stop the thread, and every write after it would fail.
    pub(super) async fn write_async<T, F>(
        &self,
        before: Before,
        work: F,
        failed: impl FnOnce() + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let reply = Reply::new(move |outcome: Result<Output>| {
            if outcome.is_err() {
                failed();
            }
            let _ = reply.send(outcome);
        });
        let queue = self.queue();
        match queue.try_send(pending(before, work, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(pending)) => {
                // Waiting for room blocks: not on an async thread.
                let queue = queue.clone();
                super::blocking(move || queue.send(pending).map_err(|_| stopped())).await?;
            }
            // Dropped with the job: its reply answers that the thread stopped.
            Err(TrySendError::Disconnected(_)) => {}
        }
        let output = answer.await.map_err(|_| stopped())??;
        Ok(downcast(output))
    }

    fn queue(&self) -> &SyncSender<Pending> {
        self.queue
            .as_ref()
            .expect("the committer runs while the store lives")
    }
}

fn pending<T, F>(before: Before, work: F, reply: Reply) -> Pending
where
    T: Send + 'static,
    F: Fn(&WriteTransaction) -> Result<T> + Send + 'static,
{
    let job: Job = Box::new(move |txn| work(txn).map(|t| Box::new(t) as Output));
    Pending { job, before, reply }
}

fn downcast<T: 'static>(output: Output) -> T {
    *output
        .downcast::<T>()
        .expect("a job's output has its own type")
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One open directory on each file system the store's files live on
/// (almost always one).
struct FileSystems(Vec<File>);

impl FileSystems {
    fn open(dirs: &[PathBuf]) -> Result<FileSystems> {
        let mut seen = Vec::new();
        let mut open = Vec::new();
        for dir in dirs {
            let file = File::open(dir)?;
            let device = file.metadata()?.dev();
            if !seen.contains(&device) {
                seen.push(device);
                open.push(file);
            }
        }
        Ok(FileSystems(open))
    }

    /// Writes out everything dirty on each file system and waits for it.
    /// On ext4 without a journal syncfs may leave the last inode blocks it
    /// wrote in the disk's cache, unflushed; the database's own sync, which
    /// always follows in the same batch, flushes them.
    fn sync(&self) -> io::Result<()> {
        for dir in &self.0 {
            // SAFETY: syncfs takes an open descriptor, which `dir` owns.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn run(
    db: &DbHandle,
    file_systems: &FileSystems,
    jobs: &Receiver<Pending>,
    watcher: &WatcherSlot,
    durable: bool,
) {
    let mut batches: u64 = 0;
    while let Ok(first) = jobs.recv() {
        batches += 1;
        let durable = durable || batches.is_multiple_of(VOLATILE_SYNC_EVERY);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (jobs, started) = (batch.len(), std::time::Instant::now());
        commit_batch(db, file_systems, batch, durable);
        if let Some(watcher) = watcher.get() {
            watcher.committed(jobs, started.elapsed());
        }
    }
}

fn commit_batch(db: &DbHandle, file_systems: &FileSystems, mut batch: Vec<Pending>, durable: bool) {
    let synced = if batch.iter().any(|p| matches!(p.before, Before::Files)) {
        // The directories too: they live on the file systems synced.
        file_systems.sync()
    } else {
        let dirs: BTreeSet<&PathBuf> = batch
            .iter()
            .filter_map(|p| match &p.before {
                Before::Entry(dir) => Some(dir),
                _ => None,
            })
            .collect();
        dirs.into_iter().try_for_each(|d| fsync_dir(d))
    };
    if let Err(e) = synced {
        return fail_all(batch, &Error::Io(e));
    }
    // A job that panics may have written half of its rows into the shared
    // transaction: that transaction is thrown away, the job's own request
    // fails, and the rest of the batch runs again in a fresh one.
    let (handle, txn, outputs) = loop {
        let begun = db.get().and_then(|handle| {
            let txn = handle.begin_write()?;
            Ok((handle, txn))
        });
        let (handle, txn) = match begun {
            Ok((handle, mut txn)) => {
                if !durable {
                    // A fresh transaction has made no savepoints: this holds.
                    let _ = txn.set_durability(redb::Durability::None);
                }
                (handle, txn)
            }
            Err(e) => return fail_all(batch, &e),
        };
        match run_jobs(&txn, &batch) {
            Ok(outputs) => break (handle, txn, outputs),
            Err((index, why)) => {
                let _ = txn.abort();
                log::error!("a database job panicked ({why}); its request fails, the others retry");
                let failed = batch.remove(index);
                failed
                    .reply
                    .send(Err(Error::Internal(format!("a job panicked: {why}"))));
                if batch.is_empty() {
                    return;
                }
            }
        }
    };
    let replies: Vec<_> = batch.into_iter().map(|p| p.reply).zip(outputs).collect();
    match db.commit(txn) {
        Ok(()) => {
            for (reply, output) in replies {
                reply.send(output);
            }
        }
        Err(e) => {
            // A failed commit poisons redb's handle: reopen it here, and
            // answer with plain I/O errors so no request reopens it again.
            let error = match e {
                Error::Db(redb::Error::Io(io)) => {
                    db.reopen_here(handle);
                    Error::Io(io)
                }
                Error::Db(redb::Error::PreviousIo) => {
                    db.reopen_here(handle);
                    Error::Internal("the database hit an I/O error and was reopened".into())
                }
                other => other,
            };
            for (reply, _) in replies {
                reply.send(Err(replicate(&error)));
            }
        }
    }
}

/// Runs every job of a batch; on a panic, which job and what it said.
fn run_jobs(
    txn: &WriteTransaction,
    batch: &[Pending],
) -> std::result::Result<Vec<Result<Output>>, (usize, String)> {
    let mut outputs = Vec::with_capacity(batch.len());
    for (index, pending) in batch.iter().enumerate() {
        match std::panic::catch_unwind(AssertUnwindSafe(|| (pending.job)(txn))) {
            Ok(output) => outputs.push(output),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                return Err((index, why));
            }
        }
    }
    Ok(outputs)
}

fn fail_all(batch: Vec<Pending>, e: &Error) {
    for pending in batch {
        pending.reply.send(Err(replicate(e)));
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
        other => Error::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const ROWS: TableDefinition<&str, u64> = TableDefinition::new("rows");

    fn insert(committer: &Committer, key: &'static str) -> Result<()> {
        committer.write(Before::Nothing, move |txn| {
            txn.open_table(ROWS)?.insert(key, 1)?;
            Ok(())
        })
    }

    fn committer(dir: &Path) -> (Arc<DbHandle>, Arc<Committer>) {
        let db = Arc::new(DbHandle::open(dir).unwrap());
        let committer =
            Committer::start(Arc::clone(&db), Arc::default(), true, &[dir.into()]).unwrap();
        (db, Arc::new(committer))
    }

    fn committed(db: &DbHandle, key: &str) -> bool {
        let txn = db.get().unwrap().begin_read().unwrap();
        let rows = txn.open_table(ROWS).unwrap();
        rows.get(key).unwrap().is_some()
    }

    /// A failure hook that counts its runs in `count`.
    fn hook(count: &Arc<std::sync::atomic::AtomicUsize>) -> impl FnOnce() + Send + 'static {
        let count = Arc::clone(count);
        move || {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn an_async_write_answers_once_committed_and_a_failed_one_runs_its_hook() {
        let dir = tempfile::tempdir().unwrap();
        let (db, committer) = committer(dir.path());
        let hooked = Arc::default();
        runtime().block_on(async {
            let written = committer.write_async(
                Before::Nothing,
                |txn| {
                    txn.open_table(ROWS)?.insert("async", 7)?;
                    Ok(7u64)
                },
                hook(&hooked),
            );
            assert_eq!(written.await.unwrap(), 7);
            assert!(committed(&db, "async"), "answered only once committed");
            let refused = committer.write_async(
                Before::Nothing,
                |_txn| -> Result<()> { Err(Error::Internal("refused".into())) },
                hook(&hooked),
            );
            assert!(matches!(refused.await, Err(Error::Internal(why)) if why == "refused"));
        });
        assert_eq!(
            hooked.load(Ordering::SeqCst),
            1,
            "only the failure ran its hook"
        );
    }

    #[test]
    fn async_writes_past_a_full_queue_wait_for_room_and_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (db, committer) = committer(dir.path());
        let jobs = 4 * MAX_BATCH + 100;
        runtime().block_on(async {
            // A job holds the thread until every write below has been
            // tried, so the queue fills past its bound.
            let (release, held) = sync_channel::<()>(1);
            let held = std::sync::Mutex::new(held);
            let holder = Arc::clone(&committer);
            let (started, running) = tokio::sync::oneshot::channel();
            let started = std::sync::Mutex::new(Some(started));
            let slow = tokio::task::spawn_blocking(move || {
                holder.write(Before::Nothing, move |_txn| {
                    if let Some(started) = started.lock().unwrap().take() {
                        let _ = started.send(());
                    }
                    let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(30));
                    Ok(())
                })
            });
            running.await.unwrap();
            let mut writes = tokio::task::JoinSet::new();
            for n in 0..jobs {
                let committer = Arc::clone(&committer);
                writes.spawn(async move {
                    let key = format!("k{n}");
                    let write = move |txn: &WriteTransaction| {
                        txn.open_table(ROWS)?.insert(key.as_str(), 1)?;
                        Ok(())
                    };
                    committer.write_async(Before::Nothing, write, || {}).await
                });
            }
            // Each write tries the queue when first polled: let them all.
            tokio::time::sleep(Duration::from_millis(300)).await;
            release.send(()).unwrap();
            while let Some(written) = writes.join_next().await {
                written.unwrap().unwrap();
            }
            slow.await.unwrap().unwrap();
        });
        for n in [0, jobs / 2, jobs - 1] {
            assert!(committed(&db, &format!("k{n}")), "k{n} committed");
        }
    }

    #[test]
    fn an_async_job_that_panics_fails_and_runs_its_hook_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, committer) = committer(dir.path());
        let hooked = Arc::default();
        let panics = |_txn: &WriteTransaction| -> Result<()> { panic!("a bug in a job") };
        let answer =
            runtime().block_on(committer.write_async(Before::Nothing, panics, hook(&hooked)));
        assert!(matches!(answer, Err(Error::Internal(why)) if why.contains("a bug in a job")));
        assert_eq!(hooked.load(Ordering::SeqCst), 1);
        insert(&committer, "later").expect("the commit thread still works");
    }

    #[test]
    fn an_async_write_to_a_stopped_committer_fails_and_runs_its_hook() {
        let (queue, jobs) = sync_channel(1);
        drop(jobs);
        let stopped = Committer {
            queue: Some(queue),
            thread: None,
        };
        let hooked = Arc::default();
        let answer =
            runtime().block_on(stopped.write_async(Before::Nothing, |_txn| Ok(()), hook(&hooked)));
        assert!(matches!(answer, Err(Error::Internal(why)) if why.contains("stopped")));
        assert_eq!(hooked.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_job_dropped_before_it_ran_answers_that_the_thread_stopped() {
        let (answer, answered) = sync_channel(1);
        drop(Reply::new(move |outcome| answer.send(outcome).unwrap()));
        match answered.recv().unwrap() {
            Err(Error::Internal(why)) => assert!(why.contains("stopped"), "{why}"),
            _ => panic!("a dropped job is answered with an error"),
        }
    }

    #[test]
    fn a_panicking_job_fails_alone_and_the_commit_thread_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(DbHandle::open(dir.path()).unwrap());
        let committer = Arc::new(
            Committer::start(Arc::clone(&db), Arc::default(), true, &[dir.path().into()]).unwrap(),
        );
        std::thread::scope(|scope| {
            // A slow job holds the thread, so the next three share a batch.
            let slow = scope.spawn(|| {
                committer.write(Before::Nothing, |_txn| {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
            });
            std::thread::sleep(Duration::from_millis(100));
            let before = scope.spawn(|| insert(&committer, "before"));
            let panics = scope.spawn(|| {
                committer.write(Before::Nothing, |txn| -> Result<()> {
                    txn.open_table(ROWS)?.insert("half-done", 1)?;
                    panic!("a bug in a job");
                })
            });
            let after = scope.spawn(|| insert(&committer, "after"));
            slow.join().unwrap().unwrap();
            before.join().unwrap().unwrap();
            after.join().unwrap().unwrap();
            match panics.join().unwrap() {
                Err(Error::Internal(why)) => assert!(why.contains("a bug in a job"), "{why}"),
                other => panic!("the panicking job's request gets {other:?}"),
            }
        });
        insert(&committer, "later").expect("the commit thread still works");
        let txn = db.get().unwrap().begin_read().unwrap();
        let rows = txn.open_table(ROWS).unwrap();
        for key in ["before", "after", "later"] {
            assert!(rows.get(key).unwrap().is_some(), "{key} committed");
        }
        assert!(
            rows.get("half-done").unwrap().is_none(),
            "what the panicking job wrote is rolled back"
        );
    }
}
