//! The embedded engine: redb for every index and every upload's state,
//! plain files for blob bytes, all under one data directory.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase};

use super::blobs::BATCHED_SYNC_MAX;
use super::commit::{self, Before, Committer, DbHandle};
use super::served::Served;
use super::settle::{self, Settler};
use super::unwritten::Unwritten;
use super::{Error, Result, blobs, links, manifests, meta, sessions, stats};
use crate::oci::{Algorithm, Digest};

/// Lock stripes for digests: finishing a blob (rename, then commit) and
/// removing one (commit, then unlink) hold the same stripe, so neither ever
/// sees the other's half-done state.
const DIGEST_STRIPES: usize = 64;

pub struct Embedded {
    pub(super) root: PathBuf,
    pub(super) db: Arc<DbHandle>,
    pub(super) committer: Committer,
    /// New blobs' links waiting for their directory sync (durable stores
    /// only; see settle.rs).
    pub(super) settler: Option<Settler>,
    pub(super) watcher: Arc<commit::WatcherSlot>,
    pub(super) digest_locks: Vec<Mutex<()>>,
    pub(super) busy_uploads: Arc<Mutex<HashSet<String>>>,
    /// Shared with the commit thread's answers to async session starts,
    /// which give a failed one's place back (see `start_upload`).
    pub(super) sessions: Arc<Mutex<sessions::Sessions>>,
    /// Manifests as lookups last read them (see served.rs).
    pub(super) served: Served,
    /// Whether what is acknowledged is synced first. Only data thrown away
    /// with the process (an ephemeral registry's) goes unsynced.
    pub(super) durable: bool,
    /// Whether small files may wait for their batch's syncfs.
    pub(super) unwritten: Unwritten,
    /// Dropped last, once the database is closed: what removes a volatile
    /// store's directory.
    pub(super) _owner: Option<Box<dyn Send + Sync>>,
}

impl Embedded {
    /// Opens (creating if needed) the data directory and its database, and
    /// removes upload files that no database row owns.
    pub fn open(root: &Path) -> Result<Embedded> {
        let store = Embedded::open_unrepaired(root)?;
        store.remove_orphan_uploads()?;
        Ok(store)
    }

    /// Opens a store whose data is thrown away with the process: nothing
    /// is synced, so a crash may lose what was acknowledged (and the data
    /// goes anyway). For ephemeral registries, where syncs only cost time.
    /// `owner` is dropped with the store, after its database is closed
    /// (the directory's remover, say).
    pub fn open_volatile(root: &Path, owner: Box<dyn Send + Sync>) -> Result<Embedded> {
        let mut store = Embedded::open_mode(root, false)?;
        store._owner = Some(owner);
        store.remove_orphan_uploads()?;
        Ok(store)
    }

    /// Opens without touching anything a crash may have left behind, for
    /// checks that must report it first. Blob links a crash left unsettled
    /// are settled all the same, as any start does: that finishes what
    /// was acknowledged, it repairs nothing.
    pub fn open_unrepaired(root: &Path) -> Result<Embedded> {
        Embedded::open_mode(root, true)
    }

    pub(super) fn open_mode(root: &Path, durable: bool) -> Result<Embedded> {
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
        let store = Embedded {
            root: root.to_path_buf(),
            durable,
            unwritten: Unwritten::new(),
            _owner: None,
            committer: Committer::start(
                Arc::clone(&db),
                Arc::clone(&watcher),
                durable,
                &[root.join("uploads"), root.join("blobs")],
            )?,
            settler: durable.then(|| Settler::start(root, Arc::clone(&db))),
            served: Served::new(),
            watcher,
            db,
            digest_locks: (0..DIGEST_STRIPES).map(|_| Mutex::new(())).collect(),
            busy_uploads: Arc::new(Mutex::new(HashSet::new())),
            sessions: Arc::new(Mutex::new(sessions::Sessions::unlimited())),
        };
        store.create_tables()?;
        settle::recover(root, &store.db)?;
        store.count_sessions()?;
        Ok(store)
    }

    pub(super) fn create_tables(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(meta::UPLOADS)?;
        txn.open_table(meta::UNSETTLED)?;
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
        manifests::rebuild_refs_once(&txn)?;
        stats::backfill_totals(&txn)?;
        self.db.commit(txn)?;
        Ok(())
    }

    pub(super) fn remove_orphan_uploads(&self) -> Result<()> {
        for path in self.orphan_uploads()? {
            log::info!("removing orphaned upload file {}", path.display());
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Files under `uploads/` that neither an upload row nor an unsettled
    /// blob link owns.
    pub(super) fn orphan_uploads(&self) -> Result<Vec<PathBuf>> {
        let txn = self.db()?.begin_read()?;
        let uploads = txn.open_table(meta::UPLOADS)?;
        let unsettled = txn.open_table(meta::UNSETTLED)?;
        let mut orphans = Vec::new();
        for entry in std::fs::read_dir(self.root.join("uploads"))? {
            let entry = entry?;
            let owned = match entry.file_name().to_str() {
                Some(id) => uploads.get(id)?.is_some() || unsettled.get(id)?.is_some(),
                None => false,
            };
            if !owned {
                orphans.push(entry.path());
            }
        }
        Ok(orphans)
    }

    pub(super) fn db(&self) -> Result<Arc<Database>> {
        self.db.get()
    }

    /// Runs `work` in a group commit (see `commit`), after syncing
    /// `sync_dir` if given; returns once it is durable.
    pub(super) fn write<T, F>(&self, sync_dir: Option<PathBuf>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        let before = match sync_dir {
            Some(dir) if self.durable => Before::Entry(dir),
            _ => Before::Nothing,
        };
        self.committer.write(before, work)
    }

    /// Runs `work` in a group commit that first makes durable what the
    /// caller wrote to the store's files and left unsynced (see
    /// [`Before::Files`]); returns once it is durable.
    pub(super) fn write_after_files<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        let before = if self.durable {
            Before::Files
        } else {
            Before::Nothing
        };
        self.committer.write(before, work)
    }

    /// Whether a file of `size` bytes is left to its commit's batch to
    /// sync (see [`Before::Files`]) rather than synced on its own: a small
    /// one, while a syncfs would find little else to write (unwritten.rs).
    pub(super) fn synced_by_batch(&self, size: u64) -> bool {
        size <= BATCHED_SYNC_MAX && (!self.durable || self.unwritten.is_little())
    }

    /// Syncs a file's data and size before it is vouched for (unless the
    /// store is volatile).
    pub(super) fn sync_file(&self, file: &std::fs::File) -> io::Result<()> {
        if self.durable {
            file.sync_all()
        } else {
            Ok(())
        }
    }

    /// Creates `dir` and its parents, synced like the rest of the store.
    pub(super) fn create_dirs(&self, dir: &Path) -> io::Result<()> {
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

    pub(super) fn lock_digest(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        let stripe = usize::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0) % DIGEST_STRIPES;
        self.digest_locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn upload_path(&self, id: &str) -> PathBuf {
        upload_path(&self.root, id)
    }

    pub(super) fn blob_dir(&self, digest: &Digest) -> PathBuf {
        blob_dir(&self.root, digest)
    }

    pub(super) fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }
}

pub(super) fn upload_path(root: &Path, id: &str) -> PathBuf {
    root.join("uploads").join(id)
}

/// A blob's shard directory: 256 per algorithm, by the digest's first
/// two hex digits, so no directory grows past what file systems list fast.
pub(super) fn blob_dir(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs")
        .join(digest.algorithm().name())
        .join(&digest.hex()[..2])
}

pub(super) fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    blob_dir(root, digest).join(digest.hex())
}
