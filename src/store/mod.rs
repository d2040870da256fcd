//! The storage engine: redb for every index and every upload's state, plain
//! files for blob bytes. It knows nothing of HTTP; the API calls one method
//! per request, from a blocking thread (every method here blocks).

mod blobs;
mod browse;
mod cache;
mod commit;
mod fsck;
mod imports;
mod links;
mod manifests;
pub(crate) mod meta;
pub mod prune;
mod sessions;
mod stats;
mod uploads;
mod writeback;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase};

use commit::{Committer, DbHandle};

use crate::oci::{Algorithm, Digest};

pub use blobs::read_chunk;
pub use browse::{ManifestView, TagSummary};
pub use cache::TagTarget;
pub use fsck::{Check, Finding};
pub use imports::ImportedManifest;
pub use manifests::{PutManifest, Referrer, StoredManifest};
pub use stats::{Holdings, Watcher};
pub use uploads::{Appender, ChunkSpec, Upload};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// The upload's committed bytes are gone from disk; it was discarded.
    #[error("the upload's data was lost; start the upload again")]
    UploadLost,
    /// A chunk did not start where the upload ends; carries the committed size.
    #[error("chunk does not start at the upload's end ({offset} bytes)")]
    RangeMismatch { offset: u64 },
    /// Another request is writing to the same upload right now.
    #[error("another request is writing to this upload")]
    UploadBusy { offset: u64 },
    /// The body's length differs from what the request declared.
    #[error("declared {declared} bytes but received {received}")]
    SizeMismatch { declared: u64, received: u64 },
    /// The client's body stream failed (disconnect, bad framing).
    #[error("request body failed: {0}")]
    BodyFailed(io::Error),
    #[error("content hashes to {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references unknown {0}")]
    ManifestBlobUnknown(Digest),
    #[error("repository name not known to registry")]
    NameUnknown,
    /// Another process (a running server) holds the database.
    #[error(
        "{} is in use by another process, most likely a running berth server; stop it first",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Too many upload sessions are open; says which cap.
    #[error("{0}")]
    TooManyUploads(String),
    /// A bug: the request failed, the stored data did not.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The disk (or the file system's quota) is full: the client can be
    /// told so, and the same request may work once space is freed.
    pub fn is_storage_full(&self) -> bool {
        let io = match self {
            Error::Io(io) | Error::Db(redb::Error::Io(io)) => io,
            _ => return false,
        };
        matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
// redb's specific errors all convert to redb::Error.
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, Error>;

/// Runs store work from async code: on a blocking thread, since every
/// store call blocks. A panic in it is an internal error, not a crash.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|panicked| Err(Error::Internal(panicked.to_string())))
}

/// Lock stripes for digests: finishing a blob (rename, then commit) and
/// removing one (commit, then unlink) hold the same stripe, so neither ever
/// sees the other's half-done state.
const DIGEST_STRIPES: usize = 64;

pub struct Store {
    root: PathBuf,
    db: Arc<DbHandle>,
    committer: Committer,
    watcher: Arc<commit::WatcherSlot>,
    digest_locks: Vec<Mutex<()>>,
    busy_uploads: Arc<Mutex<HashSet<String>>>,
    sessions: Mutex<sessions::Sessions>,
    /// Whether what is acknowledged is synced first. Only data thrown away
    /// with the process (an ephemeral registry's) goes unsynced.
    durable: bool,
    /// Dropped last, once the database is closed: what removes a volatile
    /// store's directory.
    _owner: Option<Box<dyn Send + Sync>>,
}

impl Store {
    /// Opens (creating if needed) the data directory and its database, and
    /// removes upload files that no database row owns.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store::open_unrepaired(root)?;
        store.remove_orphan_uploads()?;
        Ok(store)
    }

    /// Opens a store whose data is thrown away with the process: nothing
    /// is synced, so a crash may lose what was acknowledged (and the data
    /// goes anyway). For ephemeral registries, where syncs only cost time.
    /// `owner` is dropped with the store, after its database is closed
    /// (the directory's remover, say).
    pub fn open_volatile(root: &Path, owner: Box<dyn Send + Sync>) -> Result<Store> {
        let mut store = Store::open_mode(root, false)?;
        store._owner = Some(owner);
        store.remove_orphan_uploads()?;
        Ok(store)
    }

    /// Opens without touching anything a crash may have left behind, for
    /// checks that must report it first.
    pub fn open_unrepaired(root: &Path) -> Result<Store> {
        Store::open_mode(root, true)
    }

    fn open_mode(root: &Path, durable: bool) -> Result<Store> {
        if durable {
            blobs::create_private_dir_durable(root)?;
            blobs::create_dirs_durable(&root.join("uploads"))?;
            for algorithm in Algorithm::ALL {
                blobs::create_dirs_durable(&root.join("blobs").join(algorithm.name()))?;
            }
        } else {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(root)?;
            std::fs::create_dir_all(root.join("uploads"))?;
            for algorithm in Algorithm::ALL {
                std::fs::create_dir_all(root.join("blobs").join(algorithm.name()))?;
            }
        }
        let db = Arc::new(DbHandle::open(root)?);
        let watcher = Arc::new(commit::WatcherSlot::new());
        let store = Store {
            root: root.to_path_buf(),
            durable,
            _owner: None,
            committer: Committer::start(Arc::clone(&db), Arc::clone(&watcher), durable),
            watcher,
            db,
            digest_locks: (0..DIGEST_STRIPES).map(|_| Mutex::new(())).collect(),
            busy_uploads: Arc::new(Mutex::new(HashSet::new())),
            sessions: Mutex::new(sessions::Sessions::unlimited()),
        };
        store.create_tables()?;
        store.count_sessions()?;
        Ok(store)
    }

    fn create_tables(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(meta::UPLOADS)?;
        txn.open_table(meta::BLOBS)?;
        txn.open_table(meta::LINKS)?;
        txn.open_table(meta::REPO_BLOBS)?;
        txn.open_table(meta::BLOB_REFS)?;
        txn.open_table(meta::REPOS)?;
        txn.open_table(meta::MANIFESTS)?;
        txn.open_table(meta::TAGS)?;
        txn.open_table(meta::REFERRERS)?;
        txn.open_table(meta::PROBES)?;
        links::backfill(&txn)?;
        stats::backfill_totals(&txn)?;
        txn.commit()?;
        Ok(())
    }

    fn remove_orphan_uploads(&self) -> Result<()> {
        for path in self.orphan_uploads()? {
            log::info!("removing orphaned upload file {}", path.display());
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Files under `uploads/` that no upload row owns.
    fn orphan_uploads(&self) -> Result<Vec<PathBuf>> {
        let txn = self.db()?.begin_read()?;
        let uploads = txn.open_table(meta::UPLOADS)?;
        let mut orphans = Vec::new();
        for entry in std::fs::read_dir(self.root.join("uploads"))? {
            let entry = entry?;
            let owned = match entry.file_name().to_str() {
                Some(id) => uploads.get(id)?.is_some(),
                None => false,
            };
            if !owned {
                orphans.push(entry.path());
            }
        }
        Ok(orphans)
    }

    fn db(&self) -> Result<Arc<Database>> {
        self.db.get()
    }

    /// Runs `work` in a group commit (see `commit`), after syncing
    /// `sync_dir` if given; returns once it is durable.
    fn write<T, F>(&self, sync_dir: Option<PathBuf>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        self.committer
            .write(sync_dir.filter(|_| self.durable), work)
    }

    /// Syncs a file's data and size before it is vouched for (unless the
    /// store is volatile).
    fn sync_file(&self, file: &std::fs::File) -> io::Result<()> {
        if self.durable {
            file.sync_all()
        } else {
            Ok(())
        }
    }

    /// Creates `dir` and its parents, synced like the rest of the store.
    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        if self.durable {
            blobs::create_dirs_durable(dir)
        } else {
            std::fs::create_dir_all(dir)
        }
    }

    /// Passes a result through; if it failed with a storage I/O error
    /// (a full disk), reopens the database first, so that once space is
    /// freed the next request works without a restart.
    pub fn recover<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(Error::Db(redb::Error::Io(_) | redb::Error::PreviousIo)) = &result {
            self.db.reopen();
        }
        result
    }

    fn lock_digest(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        let stripe = usize::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0) % DIGEST_STRIPES;
        self.digest_locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn blob_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&digest.hex()[..2])
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest).join(digest.hex())
    }
}
