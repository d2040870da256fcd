//! A blob's first pull through a mirror: the upstream's bytes go to the
//! asking client while they are written and hashed, and the blob becomes
//! visible only once whole and verified. The last piece is held back until
//! the digest verifies, so a client never completes a body of wrong bytes.
//! The fetch runs on its own task: a client that goes away does not stop
//! it, and the others asking for the same blob wait for it and then read
//! the stored copy.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Error, Mirror, Result};
use crate::oci::{Digest, RepoName};
use crate::store::{self, Appender};

/// Pieces queued for the client before the fetch stops waiting for it.
const QUEUED_PIECES: usize = 64;
/// How long the fetch waits for a client that does not take its bytes
/// before it goes on without that client.
const CLIENT_PATIENCE: Duration = Duration::from_secs(5);
/// Blob fetches from one upstream at once. A fetch goes on when its client
/// leaves, so that the next pull finds the blob stored; without a bound,
/// clients asking for blob after blob and leaving would start fetches (and
/// files) without end. Past it, a fetch waits for one to end.
pub(super) const MAX_FETCHES: usize = 32;
/// Blobs a push into the namespace brings in from the upstream at once,
/// and referrers a subject's list brings in.
const BROUGHT_AT_ONCE: usize = 8;
/// Bytes gathered before each write: few blocking calls, little memory.
const WRITE_BATCH: usize = 1 << 20;

pub enum BlobAnswer {
    /// In the store: serve it from there.
    Stored,
    /// Being fetched: the bytes as they come, and the size if the upstream said.
    Streaming {
        size: Option<u64>,
        body: ChunkStream,
    },
}

enum Piece {
    Data(Bytes),
    /// Everything was sent and the digest verified.
    Done,
    Failed(String),
}

/// The bytes of a blob being fetched, for one client.
pub struct ChunkStream {
    rx: mpsc::Receiver<Piece>,
    done: bool,
}

impl ChunkStream {
    /// The next piece; `None` once the whole blob came and verified. A
    /// fetch that failed, or stopped waiting for this client, is an error,
    /// never a short body that looks whole.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(bytes))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(Some(Piece::Done)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Failed(why))) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other(why))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other(
                    "the fetch from the upstream went on without this client",
                ))))
            }
        }
    }
}

impl Mirror {
    /// Whether a HEAD is answered from the store, or with the size the
    /// upstream gives: a HEAD fetches nothing (a push asks it of every
    /// layer it may upload).
    pub async fn blob_head(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        if self.has_blob(repo, digest).await? {
            self.count(true);
            return Ok(None);
        }
        self.count(false);
        self.upstream
            .blob_size(self.upstream_repo(repo), digest)
            .await?
            .ok_or_else(|| store::Error::BlobUnknown.into())
            .map(Some)
    }

    /// A blob of `repo`: stored already, or fetched now.
    pub async fn blob(self: &Arc<Self>, repo: &RepoName, digest: &Digest) -> Result<BlobAnswer> {
        if self.has_blob(repo, digest).await? {
            self.count(true);
            return Ok(BlobAnswer::Stored);
        }
        let flight = self
            .flight(format!("blob {} {digest}", repo.as_str()))
            .await;
        if self.has_blob(repo, digest).await? {
            self.count(true);
            return Ok(BlobAnswer::Stored);
        }
        self.count(false);
        let turn = Arc::clone(&self.fetches)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let blob = self
            .upstream
            .blob(self.upstream_repo(repo), digest)
            .await?
            .ok_or(store::Error::BlobUnknown)?;
        let (r, algorithm) = (repo.clone(), digest.algorithm());
        let size = blob.size;
        let appender = {
            let store = Arc::clone(&self.store);
            store::blocking(move || store.put_blob(&r, size, algorithm)).await?
        };
        let (tx, rx) = mpsc::channel(QUEUED_PIECES);
        let (mirror, d) = (Arc::clone(self), digest.clone());
        tokio::spawn(async move {
            let (_flight, _turn) = (flight, turn);
            // Its outcome is logged; the client hears it through its body.
            let _ = mirror.fill(blob.body, appender, &d, tx).await;
        });
        Ok(BlobAnswer::Streaming {
            size,
            body: ChunkStream { rx, done: false },
        })
    }

    /// Brings in, from the upstream, the blobs a manifest pushed into the
    /// namespace names and `repo` lacks: a client's HEAD found them
    /// upstream (see [`Mirror::blob_head`]), so it did not push them. What
    /// cannot be brought is left for the manifest's check to refuse.
    pub async fn bring_blobs(
        self: &Arc<Self>,
        repo: &RepoName,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let Ok(parsed) = crate::oci::manifest::parse(content_type, body) else {
            return;
        };
        // A few at once: the PUT answers after the slowest, not the sum.
        self.few_at_once(repo, parsed.blobs, |mirror, repo, digest| async move {
            mirror.bring_blob(&repo, &digest).await;
        })
        .await;
    }

    /// Runs `work` for each of `digests`, [`BROUGHT_AT_ONCE`] at a time.
    pub(super) async fn few_at_once<F, Fut>(
        self: &Arc<Self>,
        repo: &RepoName,
        digests: Vec<Digest>,
        work: F,
    ) where
        F: Fn(Arc<Self>, RepoName, Digest) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        for batch in digests.chunks(BROUGHT_AT_ONCE) {
            let mut running = tokio::task::JoinSet::new();
            for digest in batch {
                running.spawn(work(Arc::clone(self), repo.clone(), digest.clone()));
            }
            while running.join_next().await.is_some() {}
        }
    }

    /// One blob for [`Mirror::bring_blobs`]. A fetch's body ends before
    /// its blob is stored; asked again, the blob waits for the fetch and is
    /// found stored, or (the fetch failed) is fetched once more.
    async fn bring_blob(self: &Arc<Self>, repo: &RepoName, digest: &Digest) {
        for _ in 0..3 {
            match self.blob(repo, digest).await {
                Ok(BlobAnswer::Stored) => return,
                Ok(BlobAnswer::Streaming { mut body, .. }) => {
                    while let Some(Ok(_)) = std::future::poll_fn(|cx| body.poll_next(cx)).await {}
                }
                Err(e) => {
                    log::info!("{digest} for a push into {}: {e}", repo.as_str());
                    return;
                }
            }
        }
    }

    async fn has_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (r, d) = (repo.clone(), digest.clone());
        match self.blocking(move |s| s.blob_size(&r, &d)).await {
            Ok(_) => Ok(true),
            Err(Error::Store(store::Error::BlobUnknown)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn fill(
        &self,
        mut body: crate::upstream::Body,
        mut appender: Appender,
        digest: &Digest,
        tx: mpsc::Sender<Piece>,
    ) -> Result<()> {
        let mut client = Some(tx);
        // Nobody waits on the disk for this blob: the final sync makes it
        // durable, after the client has its bytes.
        appender.unthrottle();
        let mut writer = Writer::Idle(Box::new(appender));
        let mut held: Option<Bytes> = None;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0;
        loop {
            let chunk = match self.upstream.next_chunk(&mut body).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    fail(&mut client, e.to_string());
                    log::warn!("{digest}: the fetch failed: {e}");
                    return Err(e.into());
                }
            };
            pending_len += chunk.len();
            pending.push(chunk.clone());
            if let Some(previous) = held.replace(chunk) {
                forward(&mut client, previous).await;
            }
            if pending_len >= WRITE_BATCH {
                pending_len = 0;
                // Written and hashed while the next batch arrives.
                writer = writer
                    .write(std::mem::take(&mut pending), &mut client)
                    .await?;
            }
        }
        let mut appender = writer
            .write(pending, &mut client)
            .await?
            .idle(&mut client)
            .await?;
        let d = digest.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let verified = appender.verify(&d);
            (appender, verified)
        })
        .await;
        let appender = match checked {
            Ok((appender, Ok(()))) => appender,
            Ok((_, Err(e))) => {
                fail(
                    &mut client,
                    format!("upstream {} sent a bad {digest}: {e}", self.upstream.url()),
                );
                log::warn!("{digest} from {}: {e}; nothing kept", self.upstream.url());
                return Err(e.into());
            }
            Err(e) => {
                fail(&mut client, "checking the blob failed".into());
                return Err(store::Error::Internal(e.to_string()).into());
            }
        };
        // Verified: the client may have its last bytes while the blob is
        // made durable and visible.
        if let Some(last) = held {
            forward(&mut client, last).await;
        }
        if let Some(tx) = client {
            let _ = tx.send(Piece::Done).await;
        }
        let d = digest.clone();
        let size = store::blocking(move || appender.finish(&d))
            .await
            .inspect_err(|e| log::warn!("{digest}: storing the fetched blob failed: {e}"))?;
        log::info!(
            "{digest}: {size} bytes fetched from {}",
            self.upstream.url()
        );
        Ok(())
    }
}

/// The appender, idle or writing a batch on a blocking thread.
enum Writer {
    Idle(Box<Appender>),
    Writing(JoinHandle<(Appender, store::Result<()>)>),
}

impl Writer {
    /// Waits for the batch being written, if any, and gives the appender back.
    async fn idle(self, client: &mut Option<mpsc::Sender<Piece>>) -> Result<Appender> {
        match self {
            Writer::Idle(appender) => Ok(*appender),
            Writer::Writing(write) => match write.await {
                Ok((appender, Ok(()))) => Ok(appender),
                Ok((_, Err(e))) => {
                    fail(client, format!("storing the blob failed: {e}"));
                    Err(e.into())
                }
                Err(e) => {
                    fail(client, "storing the blob failed".into());
                    Err(store::Error::Internal(e.to_string()).into())
                }
            },
        }
    }

    /// Starts writing `batch` once the batch before it is written.
    async fn write(
        self,
        batch: Vec<Bytes>,
        client: &mut Option<mpsc::Sender<Piece>>,
    ) -> Result<Writer> {
        let mut appender = self.idle(client).await?;
        if batch.is_empty() {
            return Ok(Writer::Idle(Box::new(appender)));
        }
        Ok(Writer::Writing(tokio::task::spawn_blocking(move || {
            let written = appender.write(&batch);
            (appender, written)
        })))
    }
}

/// Sends a piece to the client, unless it stopped taking them: then the
/// fetch goes on without it (and its body ends in an error).
async fn forward(client: &mut Option<mpsc::Sender<Piece>>, bytes: Bytes) {
    if let Some(tx) = client {
        match tokio::time::timeout(CLIENT_PATIENCE, tx.send(Piece::Data(bytes))).await {
            Ok(Ok(())) => {}
            // It hung up: its connection says why.
            Ok(Err(_)) => *client = None,
            Err(_) => {
                log::warn!(
                    "a client took no bytes of a fetch for {CLIENT_PATIENCE:?}; it goes on without it"
                );
                *client = None;
            }
        }
    }
}

fn fail(client: &mut Option<mpsc::Sender<Piece>>, why: String) {
    if let Some(tx) = client.take() {
        // A full queue cannot take the reason; its closing says enough.
        let _ = tx.try_send(Piece::Failed(why));
    }
}
