//! The clustered engine: every index and every upload's state in
//! PostgreSQL, blob bytes in an S3-compatible object store. Any number of
//! nodes opened on the same two share one registry; nothing is kept on a
//! node that another node needs.
//!
//! The guarantees carry over from the embedded engine on these terms:
//! - a chunk's bytes are objects (`uploads/<id>/<piece>`) written before
//!   the upload's row (offset, serialized hash state, piece list) commits,
//!   so any node continues the upload;
//! - a blob's object (`blobs/<algorithm>/<hex>`) is composed inside the
//!   object store (see `compose`) before its row commits, under a
//!   transaction-scoped advisory lock on the digest, so a blob is whole
//!   when it is visible and concurrent finishers never overwrite it;
//! - transactions run at READ COMMITTED, with row locks where two writers
//!   must not miss each other: a manifest PUT locks the rows of the blobs it
//!   needs (FOR SHARE), so a sweep, which locks a blob's row FOR UPDATE
//!   before it looks for references in a fresh statement, either sees the
//!   manifest's references or makes the PUT find the blob gone.

mod blobs;
mod browse;
mod cache;
mod compose;
mod fsck;
mod imports;
mod manifests;
mod objects;
mod orphans;
mod prune;
mod schema;
mod streams;
mod uploads;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{Error, Holdings, Result, Watcher};

pub use blobs::{ObjectBlob, ObjectReader, ObjectStream};
pub use objects::{ObjectSettings, client as s3_client};
pub use uploads::ObjectAppender;

/// The longest a request waits for one of the pool's connections: long
/// enough for finishes that hold one through a big blob's compose.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a clustered store lives.
#[derive(Clone)]
pub struct Settings {
    /// A PostgreSQL URL (`postgres://user@host:port/db`); a password not in
    /// it comes from `PGPASSWORD`. TLS as its `sslmode` says (`prefer` by
    /// default; `require` to insist), trusting the system's roots and the
    /// certificates in the PEM file `PGSSLROOTCERT` names.
    pub metadata: String,
    /// The object store.
    pub blobs: ObjectSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

pub struct Cluster {
    /// Runs the PostgreSQL connections and the object store's client; the
    /// store's callers block on it from their own threads.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    objects: objects::Objects,
    /// Uploads a request on this node is writing; other nodes are kept
    /// apart by the offset check at commit.
    busy: Arc<Mutex<HashSet<String>>>,
    max_uploads: AtomicUsize,
    max_uploads_per_repo: AtomicUsize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // May be dropped on an async thread, where a runtime cannot wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Error::Conflict,
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Error::Conflict,
            _ => Error::Metadata(match e.as_db_error() {
                Some(db) => db.to_string(),
                None => with_causes(&e),
            }),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Error {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => Error::Metadata(e.to_string()),
        }
    }
}

/// An error with what caused it ("error performing TLS handshake: invalid
/// peer certificate: UnknownIssuer"), which its own message leaves out.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// Reads a BIGINT column written from a u64.
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A u64 for a BIGINT column; sizes and times stay far below i64::MAX.
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Cluster {
    /// Connects to both services, creating the bucket and the schema (or
    /// migrating it) if needed. Refuses a schema newer than this binary's.
    pub fn open(settings: &Settings) -> Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-cluster")
            .enable_all()
            .build()?;
        let mut config: tokio_postgres::Config = settings
            .metadata
            .parse()
            .map_err(|e| Error::Metadata(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        let roots = std::env::var_os("PGSSLROOTCERT").map(std::path::PathBuf::from);
        let tls = crate::tls::client_config(roots.as_deref())?;
        let manager = Manager::from_config(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(32)
            // A request never waits for a connection without end: one that
            // cannot get one in time fails (503) instead of hanging.
            .wait_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Metadata(e.to_string()))?;
        // Opened on a thread of its own: the caller may be on an async
        // thread, where blocking on another runtime is not allowed.
        let objects = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        let objects = objects::Objects::connect(&settings.blobs).await?;
                        let mut client = pool.get().await?;
                        schema::migrate(&mut client).await?;
                        Ok::<_, Error>(objects)
                    })
                })
                .join()
                .map_err(|_| Error::Internal("opening the clustered store panicked".into()))?
        })?;
        Ok(Cluster {
            runtime: Some(runtime),
            pool,
            objects,
            busy: Arc::new(Mutex::new(HashSet::new())),
            max_uploads: AtomicUsize::new(usize::MAX),
            max_uploads_per_repo: AtomicUsize::new(usize::MAX),
        })
    }

    /// Runs `work` on the store's runtime, blocking the calling thread
    /// (a blocking-pool thread: every store method blocks).
    fn run<F: Future>(&self, work: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(work)
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
            .clone()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    pub fn limit_uploads(&self, total: usize, per_repo: usize) {
        self.max_uploads.store(total, Ordering::Relaxed);
        self.max_uploads_per_repo.store(per_repo, Ordering::Relaxed);
    }

    pub fn open_uploads(&self) -> u64 {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT count(*) FROM uploads", &[])
                .await?;
            Ok::<_, Error>(unsigned(row.get(0)))
        })
        .unwrap_or(0)
    }

    pub fn probe_write(&self) -> Result<()> {
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO probes (name, at) VALUES ('last', $1)
                     ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                    &[&signed(super::meta::now())],
                )
                .await?;
            self.objects.probe().await
        })
    }

    /// A secret every node shares: `len` random bytes made by whichever
    /// node asks first.
    pub fn shared_secret(&self, name: &str, len: usize) -> Result<Vec<u8>> {
        let mut fresh = vec![0u8; len];
        getrandom::fill(&mut fresh).map_err(|e| Error::Internal(e.to_string()))?;
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&name, &fresh],
                )
                .await?;
            let row = client
                .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
                .await?;
            Ok(row.get(0))
        })
    }

    pub fn holdings(&self) -> Result<Holdings> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT count(*), coalesce(sum(size), 0)::bigint,
                            (SELECT count(*) FROM uploads)
                     FROM blobs",
                    &[],
                )
                .await?;
            Ok(Holdings {
                blobs: unsigned(row.get(0)),
                bytes: unsigned(row.get(1)),
                uploads: unsigned(row.get(2)),
            })
        })
    }

    // What the clustered store cannot do yet says so, as an error a client
    // or an operator reads; none of it is reached by the distribution API.

    pub fn watch(&self, _watcher: Arc<dyn Watcher>) {
        log::info!("commit batch metrics are not kept on the clustered store");
    }

    pub fn remove_orphan_blobs(&self) -> Result<usize> {
        Err(Error::Unsupported("sweeping orphaned objects"))
    }
}
