//! The storage engines behind one seam. [`Store`] is either the embedded
//! engine (redb for every index and every upload's state, plain files for
//! blob bytes: `embedded` and the modules beside it) or the clustered one
//! (PostgreSQL and an S3-compatible object store: `cluster`), and the rest
//! of berth never knows which. It knows nothing of HTTP; the API calls one
//! method per request, from a blocking thread (every method here blocks).

mod blobs;
mod browse;
mod cache;
pub mod cluster;
mod commit;
mod embedded;
mod fsck;
mod hashing;
mod imports;
mod links;
mod manifests;
pub(crate) mod meta;
pub mod prune;
mod served;
mod sessions;
mod settle;
mod stats;
mod unwritten;
mod uploads;
mod writeback;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

pub use blobs::{BlobFile, read_chunk};
pub use browse::{ManifestView, TagSummary};
pub use cache::TagTarget;
pub use embedded::Embedded;
pub use fsck::{Check, Finding};
pub use imports::ImportedManifest;
pub use manifests::{PutManifest, Referrer, StoredManifest};
pub use stats::{Holdings, Watcher};
pub use uploads::{ChunkSpec, FileAppender, Upload};

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
    /// The clustered store's PostgreSQL failed or could not be reached.
    #[error("metadata database error: {0}")]
    Metadata(String),
    /// The clustered store's object store failed or could not be reached.
    #[error("object store error: {0}")]
    Objects(String),
    /// A concurrent transaction of the clustered store got in the way, and
    /// retrying did not get past it.
    #[error("too many concurrent changes; try again")]
    Conflict,
    /// What the clustered store cannot do yet.
    #[error("{0} is not available on the clustered store yet")]
    Unsupported(&'static str),
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
    tokio::task::spawn_blocking(|| {
        crate::bulk::this_thread();
        work()
    })
    .await
    .unwrap_or_else(|panicked| Err(Error::Internal(panicked.to_string())))
}

/// The store a registry runs on: one of two engines, chosen at start-up.
#[derive(Clone)]
pub enum Store {
    /// redb and plain files in one data directory.
    Embedded(Arc<Embedded>),
    /// PostgreSQL and an S3-compatible object store, shared by many nodes.
    Cluster(Arc<cluster::Cluster>),
}

/// Defines each `Store` method as the same call on whichever engine runs.
macro_rules! dispatch {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Store::Embedded(e) => e.$name($($arg),*),
                        Store::Cluster(c) => c.$name($($arg),*),
                    }
                }
            )*
        }
    };
}

dispatch! {
    /// The size of a blob, if `repo` may serve it.
    fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64>;
    /// A blob `repo` may serve, ready to be read.
    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Blob>;
    /// Unlinks a blob from one repository; a prune frees the bytes.
    fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()>;
    /// Links a blob that `from` holds into `repo`; false when `from` lacks it.
    fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool>;
    /// Removes stored blob bytes that no row owns; how many.
    fn remove_orphan_blobs(&self) -> Result<usize>;
    /// Up to `n` tags after `after` with what the web page shows of each.
    fn tag_summaries(&self, repo: &RepoName, after: Option<&str>, n: usize) -> Result<(Vec<TagSummary>, bool)>;
    /// What the web page shows of one manifest.
    fn manifest_view(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestView>;
    /// Where a tag a pull-through cache holds points, and since when.
    fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagTarget>>;
    /// Stores a manifest a pull-through cache fetched.
    fn cache_manifest(&self, repo: &RepoName, digest: &Digest, content_type: Option<&str>, body: Vec<u8>, tag: Option<&Tag>) -> Result<()>;
    /// Records when cached manifests were last pulled.
    fn note_pulls(&self, pulls: Vec<(RepoName, Digest)>) -> Result<()>;
    /// Checks (and with `repair`, mends) everything stored.
    fn check(&self, repair: bool, progress: fsck::Progress) -> Result<Check>;
    /// The size of a blob held at all (linked or staged).
    fn held_blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// A held blob's bytes, up to `limit`.
    fn read_held_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>>;
    /// Stores an imported image's manifests and links its blobs, tag last.
    fn import_image(&self, repo: &RepoName, blobs: Vec<Digest>, manifests: Vec<ImportedManifest>, tag: Option<(Tag, Digest)>) -> Result<()>;
    /// Stores a manifest byte for byte, once its blobs are there.
    fn put_manifest(&self, repo: &RepoName, reference: &Reference, content_type: Option<&str>, body: Vec<u8>) -> Result<PutManifest>;
    /// A manifest by tag or digest.
    fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest>;
    /// Removes a tag, or a manifest with its tags.
    fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()>;
    /// Up to `n` tags after `last`, and whether more follow.
    fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<(Vec<String>, bool)>;
    /// Up to `n` repositories after `last` that pass `visible`, and whether more follow.
    fn list_repositories(&self, last: Option<&str>, n: usize, visible: &dyn Fn(&str) -> bool) -> Result<(Vec<String>, bool)>;
    /// The manifests in `repo` whose subject is `subject`.
    fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>>;
    /// Removes what `policy` says has expired, and what nothing reaches.
    fn prune(&self, policy: &prune::Policy, dry_run: bool) -> Result<prune::Report>;
    /// Ends uploads untouched for `expiration`.
    fn expire_stale_uploads(&self, expiration: std::time::Duration) -> Result<prune::Report>;
    /// Caps open upload sessions, in all and per repository.
    fn limit_uploads(&self, total: usize, per_repo: usize) -> ();
    /// Tells `watcher` of every commit's batch.
    fn watch(&self, watcher: Arc<dyn Watcher>) -> ();
    /// What the store holds, for metrics.
    fn holdings(&self) -> Result<Holdings>;
    /// Open upload sessions.
    fn open_uploads(&self) -> u64;
    /// Commits a write, to show that writes work.
    fn probe_write(&self) -> Result<()>;
    /// The committed size of an upload.
    fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64>;
    /// Ends an upload session, dropping what it holds.
    fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()>;
}

impl Store {
    /// Starts an upload session hashed with `algorithm`, from async code.
    /// The embedded store queues the session's commit and waits for nothing
    /// else; the clustered one runs on a blocking thread, as every call does.
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<Upload> {
        match self {
            Store::Embedded(store) => store.start_upload(repo, algorithm).await,
            Store::Cluster(store) => {
                let (store, repo) = (Arc::clone(store), repo.clone());
                blocking(move || store.start_upload(&repo, algorithm)).await
            }
        }
    }

    /// Opens (creating if needed) an embedded store in `root`.
    pub fn open(root: &Path) -> Result<Store> {
        Embedded::open(root).map(|e| Store::Embedded(Arc::new(e)))
    }

    /// An embedded store whose data goes with the process (see
    /// [`Embedded::open_volatile`]).
    pub fn open_volatile(root: &Path, owner: Box<dyn Send + Sync>) -> Result<Store> {
        Embedded::open_volatile(root, owner).map(|e| Store::Embedded(Arc::new(e)))
    }

    /// An embedded store opened without repairing anything, for checks.
    pub fn open_unrepaired(root: &Path) -> Result<Store> {
        Embedded::open_unrepaired(root).map(|e| Store::Embedded(Arc::new(e)))
    }

    /// Connects to a clustered store (see [`cluster::Settings`]).
    pub fn open_cluster(settings: &cluster::Settings) -> Result<Store> {
        cluster::Cluster::open(settings).map(|c| Store::Cluster(Arc::new(c)))
    }

    /// The data directory, for an embedded store.
    pub fn root(&self) -> Option<&Path> {
        match self {
            Store::Embedded(e) => Some(e.root()),
            Store::Cluster(_) => None,
        }
    }

    /// Whether a lookup by key (a manifest by tag, a blob's row) is local
    /// and quick enough to run on an async thread: redb's pages are in its
    /// own cache or the page cache once read, where a lookup takes
    /// microseconds; the clustered engine asks PostgreSQL over the network.
    pub fn local_lookups(&self) -> bool {
        matches!(self, Store::Embedded(_))
    }

    /// Passes a result through, letting the engine recover from a storage
    /// error first (see [`Embedded::recover`]).
    pub fn recover<T>(&self, result: Result<T>) -> Result<T> {
        match self {
            Store::Embedded(e) => e.recover(result),
            Store::Cluster(_) => result,
        }
    }

    /// Opens the next chunk of a session, starting at `spec.start` if set.
    pub fn append_to(&self, repo: &RepoName, id: &str, spec: ChunkSpec) -> Result<Appender> {
        match self {
            Store::Embedded(e) => e.append_to(repo, id, spec).map(Appender::File),
            Store::Cluster(c) => c.append_to(repo, id, spec).map(Appender::Object),
        }
    }

    /// Opens a blob to be held but linked nowhere, until an import links it.
    pub fn stage_blob(&self, len: Option<u64>, algorithm: Algorithm) -> Result<Appender> {
        match self {
            Store::Embedded(e) => e.stage_blob(len, algorithm).map(Appender::File),
            Store::Cluster(c) => c.stage_blob(len, algorithm).map(Appender::Object),
        }
    }

    /// Opens a whole blob in one request, with no session.
    pub fn put_blob(
        &self,
        repo: &RepoName,
        len: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<Appender> {
        match self {
            Store::Embedded(e) => e.put_blob(repo, len, algorithm).map(Appender::File),
            Store::Cluster(c) => c.put_blob(repo, len, algorithm).map(Appender::Object),
        }
    }
}

/// A stored blob, ready to be read.
pub enum Blob {
    /// A file of the embedded store.
    File(BlobFile),
    /// An object of the clustered store.
    Object(cluster::ObjectBlob),
}

impl Blob {
    pub fn size(&self) -> u64 {
        match self {
            Blob::File(f) => f.size,
            Blob::Object(o) => o.size(),
        }
    }

    /// The whole blob as a blocking reader.
    pub fn into_reader(self) -> Box<dyn io::Read + Send> {
        match self {
            Blob::File(f) => Box::new(f.file),
            Blob::Object(o) => Box::new(o.reader()),
        }
    }
}

/// One request's bytes going into an upload or a blob: written in
/// batches as they arrive, then committed as a chunk or finished as a blob.
/// Dropped without either, it gives back what it wrote.
pub enum Appender {
    File(FileAppender),
    Object(cluster::ObjectAppender),
}

impl Appender {
    /// Writes a batch of body chunks and adds them to the hash.
    pub fn write(&mut self, chunks: &[bytes::Bytes]) -> Result<()> {
        match self {
            Appender::File(a) => a.write(chunks),
            Appender::Object(a) => a.write(chunks),
        }
    }

    /// Makes the chunk part of the session; returns the upload's new size.
    pub fn commit(self) -> Result<u64> {
        match self {
            Appender::File(a) => a.commit(),
            Appender::Object(a) => a.commit(),
        }
    }

    /// Lets writes go at page-cache speed (see [`FileAppender::unthrottle`]).
    pub fn unthrottle(&mut self) {
        if let Appender::File(a) = self {
            a.unthrottle();
        }
    }

    /// Whether what was written is the blob `digest`, ending nothing.
    pub fn verify(&mut self, digest: &Digest) -> Result<()> {
        match self {
            Appender::File(a) => a.verify(digest),
            Appender::Object(a) => a.verify(digest),
        }
    }

    /// Hashes with `algorithm` from here on, if nothing was hashed yet.
    pub fn hash_as(&mut self, algorithm: Algorithm) {
        match self {
            Appender::File(a) => a.hash_as(algorithm),
            Appender::Object(a) => a.hash_as(algorithm),
        }
    }

    /// Checks the digest and makes the blob visible; returns its size.
    pub fn finish(self, digest: &Digest) -> Result<u64> {
        match self {
            Appender::File(a) => a.finish(digest),
            Appender::Object(a) => a.finish(digest),
        }
    }
}
