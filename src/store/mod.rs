//! The storage engine: redb for every index and every upload's state, plain
//! files for blob bytes. It knows nothing of HTTP; the API calls one method
//! per request, from a blocking thread (every method here blocks).

mod blobs;
mod commit;
mod fsck;
mod links;
mod manifests;
pub mod meta;
pub mod prune;
mod sessions;
mod uploads;
mod writeback;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase};

use commit::{Committer, DbHandle};

use crate::oci::{Algorithm, Digest};

pub use blobs::read_chunk;
pub use fsck::{Check, Finding};
pub use manifests::{PutManifest, Referrer, StoredManifest};
pub use uploads::{Appender, ChunkSpec, Upload};

#[derive(Debug)]
pub enum Error {
    BlobUnknown,
    UploadUnknown,
    /// The upload's committed bytes are gone from disk; it was discarded.
    UploadLost,
    /// A chunk did not start where the upload ends; carries the committed size.
    RangeMismatch {
        offset: u64,
    },
    /// Another request is writing to the same upload right now.
    UploadBusy {
        offset: u64,
    },
    /// The body's length differs from what the request declared.
    SizeMismatch {
        declared: u64,
        received: u64,
    },
    /// The client's body stream failed (disconnect, bad framing).
    BodyFailed(io::Error),
    DigestMismatch {
        expected: Digest,
        actual: Digest,
    },
    ManifestUnknown,
    ManifestInvalid(String),
    ManifestBlobUnknown(Digest),
    NameUnknown,
    /// Another process (a running server) holds the database.
    InUse(PathBuf),
    Io(io::Error),
    Db(redb::Error),
    Corrupt(String),
    /// Too many upload sessions are open; says which cap.
    TooManyUploads(String),
    /// A bug: the request failed, the stored data did not.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BlobUnknown => f.write_str("blob unknown to registry"),
            Error::UploadUnknown => f.write_str("blob upload unknown to registry"),
            Error::UploadLost => f.write_str("the upload's data was lost; start the upload again"),
            Error::RangeMismatch { offset } => {
                write!(
                    f,
                    "chunk does not start at the upload's end ({offset} bytes)"
                )
            }
            Error::UploadBusy { .. } => f.write_str("another request is writing to this upload"),
            Error::SizeMismatch { declared, received } => {
                write!(f, "declared {declared} bytes but received {received}")
            }
            Error::BodyFailed(e) => write!(f, "request body failed: {e}"),
            Error::DigestMismatch { expected, actual } => {
                write!(f, "content hashes to {actual}, not {expected}")
            }
            Error::ManifestUnknown => f.write_str("manifest unknown to registry"),
            Error::ManifestInvalid(why) => write!(f, "manifest invalid: {why}"),
            Error::ManifestBlobUnknown(d) => write!(f, "manifest references unknown {d}"),
            Error::NameUnknown => f.write_str("repository name not known to registry"),
            Error::InUse(path) => write!(
                f,
                "{} is in use by another process, most likely a running berth server; stop it first",
                path.display()
            ),
            Error::Io(e) => write!(f, "storage I/O error: {e}"),
            Error::Db(e) => write!(f, "database error: {e}"),
            Error::Corrupt(why) => write!(f, "stored data is corrupt: {why}"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
            Error::TooManyUploads(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

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

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
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
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, Error>;

/// Lock stripes for digests: finishing a blob (rename, then commit) and
/// removing one (commit, then unlink) hold the same stripe, so neither ever
/// sees the other's half-done state.
const DIGEST_STRIPES: usize = 64;

pub struct Store {
    root: PathBuf,
    db: Arc<DbHandle>,
    committer: Committer,
    digest_locks: Vec<Mutex<()>>,
    busy_uploads: Arc<Mutex<HashSet<String>>>,
    sessions: Mutex<sessions::Sessions>,
}

impl Store {
    /// Opens (creating if needed) the data directory and its database, and
    /// removes upload files that no database row owns.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store::open_unrepaired(root)?;
        store.remove_orphan_uploads()?;
        Ok(store)
    }

    /// Opens without touching anything a crash may have left behind, for
    /// checks that must report it first.
    pub fn open_unrepaired(root: &Path) -> Result<Store> {
        blobs::create_private_dir_durable(root)?;
        blobs::create_dirs_durable(&root.join("uploads"))?;
        for algorithm in Algorithm::ALL {
            blobs::create_dirs_durable(&root.join("blobs").join(algorithm.name()))?;
        }
        let db = Arc::new(DbHandle::open(root)?);
        let store = Store {
            root: root.to_path_buf(),
            committer: Committer::start(Arc::clone(&db)),
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
        links::backfill(&txn)?;
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
        self.committer.write(sync_dir, work)
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
