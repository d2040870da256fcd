//! Blobs: their rows and links in PostgreSQL, their bytes as objects.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::super::{Blob, Error, Result, meta};
use super::{Cluster, signed, unsigned};
use crate::oci::{Digest, RepoName};

/// The object that holds a blob's bytes.
pub(super) fn blob_key(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// The blob an object under `blobs/` holds, by its key.
pub(super) fn digest_of_key(key: &str) -> Option<Digest> {
    let (algorithm, hex) = key.strip_prefix("blobs/")?.split_once('/')?;
    Digest::parse(&format!("{algorithm}:{hex}"))
}

/// A blob of the clustered store, ready to be read.
pub struct ObjectBlob {
    cluster: Arc<Cluster>,
    key: String,
    size: u64,
}

impl ObjectBlob {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes from `start`, as they arrive from the object store.
    /// Blocks until the store answers.
    pub fn range(&self, start: u64, len: u64) -> Result<ObjectStream> {
        let body = self
            .cluster
            .run(self.cluster.objects.get(&self.key, start, len))?;
        Ok(ObjectStream {
            cluster: Arc::clone(&self.cluster),
            key: self.key.clone(),
            body,
            reopening: None,
            next: start,
            left: len,
            resumes: 0,
        })
    }

    /// The whole blob as a blocking reader.
    pub fn reader(self) -> ObjectReader {
        ObjectReader {
            handle: self.cluster.handle(),
            blob: self,
            stream: None,
            pending: Bytes::new(),
        }
    }
}

/// How often one read resumes after the object store cut it short. A cut
/// in the middle of a long GET (a proxy or backend timing out under load, a
/// connection reset) is the store's passing trouble, and the client's
/// download should not fail for it; a store that keeps cutting is broken,
/// and the read gives up.
const RESUMES: u32 = 4;

/// A range of an object's bytes; ends with an error, never short.
pub struct ObjectStream {
    cluster: Arc<Cluster>,
    key: String,
    body: ByteStream,
    /// The rest of the range, asked for again after a cut.
    reopening: Option<JoinHandle<Result<ByteStream>>>,
    /// The offset of the next byte, and how many are still to come.
    next: u64,
    left: u64,
    resumes: u32,
}

impl ObjectStream {
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(reopening) = &mut self.reopening {
                let reopened = ready!(Pin::new(reopening).poll(cx));
                self.reopening = None;
                match reopened {
                    Ok(Ok(body)) => self.body = body,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                    Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                }
            }
            let cut = match ready!(Pin::new(&mut self.body).poll_next(cx)) {
                Some(Ok(bytes)) => {
                    let n = bytes.len() as u64;
                    if n > self.left {
                        return Poll::Ready(Some(Err(io::Error::other(format!(
                            "object {} is longer than its row says",
                            self.key
                        )))));
                    }
                    self.next += n;
                    self.left -= n;
                    return Poll::Ready(Some(Ok(bytes)));
                }
                None if self.left == 0 => return Poll::Ready(None),
                Some(Err(e)) => e.to_string(),
                None => format!("it ended {} bytes short", self.left),
            };
            if self.resumes == RESUMES {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "object {}: the store cut the read {} times, the last at byte {}: {cut}",
                        self.key,
                        RESUMES + 1,
                        self.next
                    ),
                ))));
            }
            self.resumes += 1;
            log::warn!(
                "object {}: the store cut the read at byte {} ({cut}); resuming there",
                self.key,
                self.next
            );
            let (cluster, key, next, left) = (
                Arc::clone(&self.cluster),
                self.key.clone(),
                self.next,
                self.left,
            );
            self.reopening = Some(
                self.cluster
                    .handle()
                    .spawn(async move { cluster.objects.get(&key, next, left).await }),
            );
        }
    }

    /// The next piece, from async code.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// A blob read from a blocking thread.
pub struct ObjectReader {
    handle: tokio::runtime::Handle,
    blob: ObjectBlob,
    stream: Option<ObjectStream>,
    pending: Bytes,
}

impl io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => self.stream.insert(
                    self.blob
                        .range(0, self.blob.size)
                        .map_err(io::Error::other)?,
                ),
            };
            match self.handle.block_on(stream.next()) {
                Some(bytes) => self.pending = bytes?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

impl Cluster {
    /// The size of a blob, if `repo` may serve it.
    pub fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT b.size FROM blobs b JOIN links l ON l.digest = b.digest
                     WHERE b.digest = $1 AND l.repo = $2",
                    &[&digest.as_str(), &repo.as_str()],
                )
                .await?;
            row.map(|r| unsigned(r.get(0))).ok_or(Error::BlobUnknown)
        })
    }

    pub fn open_blob(self: &Arc<Self>, repo: &RepoName, digest: &Digest) -> Result<Blob> {
        let size = self.blob_size(repo, digest)?;
        Ok(Blob::Object(ObjectBlob {
            cluster: Arc::clone(self),
            key: blob_key(digest),
            size,
        }))
    }

    /// Unlinks a blob from one repository. The bytes stay until a prune
    /// finds that nothing reaches them.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            let (d, r) = (digest.as_str(), repo.as_str());
            let removed = txn
                .execute(
                    "DELETE FROM links WHERE digest = $1 AND repo = $2",
                    &[&d, &r],
                )
                .await?;
            if removed == 0 {
                return Err(Error::BlobUnknown);
            }
            // The record of which manifests need it stays (see the
            // embedded store's links::unlink).
            forget_if_empty(&txn, r).await?;
            txn.commit().await?;
            Ok(())
        })
    }

    /// Links a blob that `from` holds into `repo`; false when `from` lacks it.
    pub fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            let d = digest.as_str();
            // The blob's row is locked, so a sweep cannot take it between
            // the check and the link.
            let found = txn
                .query_opt(
                    "UPDATE blobs SET touched = $3 WHERE digest = $1
                     AND EXISTS (SELECT 1 FROM links WHERE digest = $1 AND repo = $2)
                     RETURNING size",
                    &[&d, &from.as_str(), &signed(meta::now())],
                )
                .await?;
            if found.is_none() {
                return Ok(false);
            }
            link(&txn, d, repo.as_str()).await?;
            txn.commit().await?;
            Ok(true)
        })
    }

    /// The size of a blob held at all, linked or staged.
    pub fn held_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT size FROM blobs WHERE digest = $1",
                    &[&digest.as_str()],
                )
                .await?;
            Ok(row.map(|r| unsigned(r.get(0))))
        })
    }

    /// A held blob's bytes, refused past `limit`.
    pub fn read_held_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self.held_blob(digest)?.ok_or(Error::BlobUnknown)?;
        if size > limit {
            return Err(Error::ManifestInvalid(format!(
                "{digest} is {size} bytes, more than {limit}"
            )));
        }
        let bytes = self.run(self.objects.read(&blob_key(digest), 0, size))?;
        Ok(bytes.to_vec())
    }
}

/// Links `digest` into `repo`, which from now on is listed.
pub(super) async fn link(
    txn: &tokio_postgres::Transaction<'_>,
    digest: &str,
    repo: &str,
) -> Result<()> {
    let now = signed(meta::now());
    txn.execute(
        "INSERT INTO links (digest, repo, linked) VALUES ($1, $2, $3)
         ON CONFLICT (digest, repo) DO UPDATE SET linked = excluded.linked",
        &[&digest, &repo, &now],
    )
    .await?;
    remember(txn, repo).await
}

/// Marks `repo` as holding something.
pub(super) async fn remember(txn: &tokio_postgres::Transaction<'_>, repo: &str) -> Result<()> {
    txn.execute(
        "INSERT INTO repos (name, updated) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET updated = excluded.updated",
        &[&repo, &signed(meta::now())],
    )
    .await?;
    Ok(())
}

/// Drops `repo` from the list once it holds no manifest and no blob. The
/// row is locked first, by a statement of its own: a statement that waits
/// for a row's lock reads the row again when it gets it, but not what its
/// subqueries read, so a DELETE judging "empty" while a write into the
/// repository commits would judge on what it saw before that write.
pub(super) async fn forget_if_empty(
    txn: &tokio_postgres::Transaction<'_>,
    repo: &str,
) -> Result<()> {
    txn.execute("SELECT 1 FROM repos WHERE name = $1 FOR UPDATE", &[&repo])
        .await?;
    txn.execute(
        "DELETE FROM repos WHERE name = $1
         AND NOT EXISTS (SELECT 1 FROM manifests WHERE repo = $1)
         AND NOT EXISTS (SELECT 1 FROM links WHERE repo = $1)",
        &[&repo],
    )
    .await?;
    Ok(())
}
