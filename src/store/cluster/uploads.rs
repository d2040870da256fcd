//! Upload sessions on the clustered store. A request's bytes are cut into
//! pieces of up to [`PIECE`] bytes, each written as its own object
//! (`uploads/<id>/<random>`) as it fills; once the request's last piece is
//! in the object store, one UPDATE appends the pieces to the session's row
//! with the new offset and hash state, and only if the offset is still the
//! one this request started from. So a session continues on any node, and
//! two nodes writing one session at once cannot both win.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::super::{ChunkSpec, Error, Result, Upload, meta};
use super::blobs::{blob_key, link};
use super::streams::BEAT;
use super::{Cluster, signed, unsigned};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// The most a request holds in memory before it writes a piece: above
/// S3's smallest multipart part, so most pieces are copied, not reread,
/// when the blob is composed.
const PIECE: usize = 8 << 20;
/// A session's last piece smaller than this is read back by the next chunk
/// and written again with its bytes, as one piece: a client sending small
/// chunks would otherwise make a piece of each, listed in the session's
/// row, which each chunk rewrites whole, and read back one by one at the
/// finish. A chunk of a MiB or more costs no read.
const JOIN_BELOW: u64 = 1 << 20;

/// A session's row.
struct Session {
    repo: String,
    offset: u64,
    hash_state: Vec<u8>,
    pieces: Vec<(String, u64)>,
}

/// Marks an upload as being written on this node while it lives.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// One request's bytes going into a session or a whole blob.
pub struct ObjectAppender {
    cluster: Arc<Cluster>,
    repo: RepoName,
    id: String,
    /// A session with a row; false for a whole blob in one request.
    session: bool,
    /// Whether the finished blob is linked into `repo`; false: staged.
    link: bool,
    declared: Option<u64>,
    /// The committed offset this request continues from.
    offset: u64,
    pieces: Vec<(String, u64)>,
    /// Pieces this request wrote, not yet in the session's row.
    written: Vec<String>,
    /// The session's small last piece, read into `buffer` to be written
    /// again with this request's bytes; left out of `pieces`, and removed
    /// once the session's row no longer names it.
    joined: Option<String>,
    buffer: BytesMut,
    hasher: Hasher,
    received: u64,
    /// Set once the pieces belong to the session or the blob.
    kept: bool,
    /// When this request last said it streams.
    beat: Instant,
    /// Whether a whole blob's request has its `streams` row.
    streaming: bool,
    _busy: Option<Busy>,
}

impl ObjectAppender {
    /// Hashes a batch and writes out every full piece.
    pub fn write(&mut self, chunks: &[Bytes]) -> Result<()> {
        for chunk in chunks {
            self.hasher.update(chunk);
            self.received += chunk.len() as u64;
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() >= PIECE {
                self.flush()?;
            }
        }
        if self.beat.elapsed() >= BEAT && (self.session || self.streaming) {
            self.beat = Instant::now();
            let (cluster, id, session) = (Arc::clone(&self.cluster), self.id.clone(), self.session);
            // Off the request's path: a late beat only keeps a row longer.
            self.cluster.handle().spawn(async move {
                if let Err(e) = cluster.beat(&id, session).await {
                    log::warn!("upload {id}: saying it streams: {e}");
                }
            });
        }
        Ok(())
    }

    /// Writes what the buffer holds as the next piece.
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if !self.session && !self.streaming {
            // Before its first piece: a prune must know whose it is.
            self.cluster.run(self.cluster.beat(&self.id, false))?;
            self.streaming = true;
            self.beat = Instant::now();
        }
        let bytes = self.buffer.split().freeze();
        let key = format!("uploads/{}/{}", self.id, uuid::Uuid::new_v4());
        let size = bytes.len() as u64;
        self.written.push(key.clone());
        self.cluster.run(self.cluster.objects.put(&key, bytes))?;
        self.pieces.push((key, size));
        Ok(())
    }

    fn check_length(&self) -> Result<()> {
        match self.declared {
            Some(declared) if declared != self.received => Err(Error::SizeMismatch {
                declared,
                received: self.received,
            }),
            _ => Ok(()),
        }
    }

    /// Makes the chunk part of the session: its pieces written, then the
    /// row moved on from the offset this request started at.
    pub fn commit(mut self) -> Result<u64> {
        self.check_length()?;
        let offset = self.offset + self.received;
        if self.received == 0 {
            self.kept = true;
            return Ok(offset);
        }
        self.flush()?;
        let start = self.pieces.len() - self.written.len();
        let (keys, sizes): (Vec<String>, Vec<i64>) = self.pieces[start..]
            .iter()
            .map(|(k, s)| (k.clone(), signed(*s)))
            .unzip();
        // The joined piece is the row's last: it goes from the row, and
        // the piece holding its bytes comes in its place.
        let kept = i32::try_from(self.pieces.len() - self.written.len())
            .map_err(|_| Error::Internal("more pieces than an array holds".into()))?;
        let moved = self.cluster.run(async {
            let client = self.cluster.client().await?;
            Ok::<_, Error>(
                client
                    .execute(
                        r#"UPDATE uploads SET "offset" = $2, hash_state = $3,
                               piece_keys = piece_keys[1:$8] || $4,
                               piece_sizes = piece_sizes[1:$8] || $5,
                               updated = $6
                           WHERE id = $1 AND "offset" = $7"#,
                        &[
                            &self.id,
                            &signed(offset),
                            &self.hasher.state(),
                            &keys,
                            &sizes,
                            &signed(meta::now()),
                            &signed(self.offset),
                            &kept,
                        ],
                    )
                    .await?,
            )
        })?;
        if moved == 0 {
            // Another node moved the session on, or ended it.
            let now = self.cluster.load(&self.repo, &self.id)?;
            return Err(Error::RangeMismatch { offset: now.offset });
        }
        self.kept = true;
        remove_objects(&self.cluster, self.joined.as_slice());
        log::debug!("upload {}: {offset} bytes committed", self.id);
        Ok(offset)
    }

    /// Whether what was written is the blob `digest`, ending nothing.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        self.check_length()?;
        let actual = self.actual(digest)?;
        if &actual == digest {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            })
        }
    }

    /// The digest of what was written, in `digest`'s algorithm.
    fn actual(&self, digest: &Digest) -> Result<Digest> {
        if self.hasher.algorithm() == digest.algorithm() {
            return Ok(self.hasher.digest());
        }
        // Hashed with another algorithm: only a second pass can say.
        let mut hasher = Hasher::new(digest.algorithm());
        for (key, size) in &self.pieces {
            let bytes = self.cluster.run(self.cluster.objects.read(key, 0, *size))?;
            hasher.update(&bytes);
        }
        hasher.update(&self.buffer);
        Ok(hasher.digest())
    }

    /// Hashes with `algorithm` from here on, if nothing was hashed yet.
    pub fn hash_as(&mut self, algorithm: Algorithm) {
        if self.offset == 0 && self.received == 0 {
            self.hasher = Hasher::new(algorithm);
        }
    }

    /// Checks the digest and makes the blob visible; a mismatch discards
    /// the upload. Returns the blob's size.
    pub fn finish(mut self, digest: &Digest) -> Result<u64> {
        self.check_length()?;
        let size = self.offset + self.received;
        let actual = self.actual(digest)?;
        if &actual != digest {
            self.kept = true;
            self.discard();
            log::info!(
                "upload {}: digest mismatch, {actual} != {digest}; discarded",
                self.id
            );
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let small = self.pieces.is_empty();
        let whole = if small {
            // All of it is in memory: written once, straight to its key.
            Some(self.buffer.split().freeze())
        } else {
            self.flush()?;
            None
        };
        self.cluster.run(self.cluster.commit_blob(
            digest,
            size,
            &self.pieces,
            whole,
            self.link.then_some(self.repo.as_str()),
            self.session.then_some((self.id.as_str(), self.offset)),
        ))?;
        self.kept = true;
        self.remove_pieces();
        log::debug!("upload {}: finished as {digest} ({size} bytes)", self.id);
        Ok(size)
    }

    /// Removes every piece of the upload and its row.
    fn discard(&mut self) {
        if self.session {
            let removed = self.cluster.run(async {
                let client = self.cluster.client().await?;
                client
                    .execute("DELETE FROM uploads WHERE id = $1", &[&self.id])
                    .await?;
                Ok::<_, Error>(())
            });
            if let Err(e) = removed {
                log::warn!("upload {}: removing its row: {e}", self.id);
            }
        }
        self.remove_pieces();
    }

    fn remove_pieces(&mut self) {
        let mut keys: Vec<String> = self.pieces.drain(..).map(|(k, _)| k).collect();
        keys.extend(self.joined.take());
        remove_objects(&self.cluster, &keys);
    }
}

impl Drop for ObjectAppender {
    fn drop(&mut self) {
        let lost = !self.kept && !self.written.is_empty();
        if !lost && !self.streaming {
            return;
        }
        // What a failed request wrote goes; the session's committed pieces
        // stay. Removed on the store's runtime, not here: an appender whose
        // body failed is dropped on an async thread, which must not block.
        let written = match lost {
            true => std::mem::take(&mut self.written),
            false => Vec::new(),
        };
        let (cluster, id, streaming) = (Arc::clone(&self.cluster), self.id.clone(), self.streaming);
        self.cluster.handle().spawn(async move {
            for key in &written {
                if let Err(e) = cluster.objects.delete(key).await {
                    log::warn!("removing {key}: {e}");
                }
            }
            if streaming && let Err(e) = cluster.end_stream(&id).await {
                log::warn!("upload {id}: forgetting its stream: {e}");
            }
        });
    }
}

/// Removes objects nobody needs any more; one left behind is garbage,
/// never harm, so a failure is only logged.
fn remove_objects(cluster: &Cluster, keys: &[String]) {
    for key in keys {
        if let Err(e) = cluster.run(cluster.objects.delete(key)) {
            log::warn!("removing {key}: {e}");
        }
    }
}

/// An i64 that names a digest for a transaction-scoped advisory lock.
pub(super) fn lock_key(digest: &Digest) -> i64 {
    let hex = digest.hex();
    i64::from_str_radix(&hex[..15], 16).expect("a digest's hex")
}

impl Cluster {
    /// Makes verified bytes the blob `digest`: composed at its key, then
    /// its row committed, linked into `repo` and the session ended, all
    /// under the digest's advisory lock. A blob already there keeps its
    /// object; the upload's bytes are dropped.
    async fn commit_blob(
        &self,
        digest: &Digest,
        size: u64,
        pieces: &[(String, u64)],
        whole: Option<Bytes>,
        repo: Option<&str>,
        session: Option<(&str, u64)>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await?;
        let d = digest.as_str();
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(digest)])
            .await?;
        if let Some((id, offset)) = session {
            let ended = txn
                .execute(
                    r#"DELETE FROM uploads WHERE id = $1 AND "offset" = $2"#,
                    &[&id, &signed(offset)],
                )
                .await?;
            if ended == 0 {
                return Err(match repo {
                    Some(r) => match self.load_with(&txn, r, id).await {
                        Ok(now) => Error::RangeMismatch { offset: now.offset },
                        Err(e) => e,
                    },
                    None => Error::UploadUnknown,
                });
            }
        }
        let now = signed(meta::now());
        let touched = txn
            .execute(
                "UPDATE blobs SET touched = $2 WHERE digest = $1",
                &[&d, &now],
            )
            .await?;
        if touched == 0 {
            let key = blob_key(digest);
            match whole {
                Some(bytes) => self.objects.put(&key, bytes).await?,
                None => self.objects.compose(&key, pieces).await?,
            }
            txn.execute(
                "INSERT INTO blobs (digest, size, touched) VALUES ($1, $2, $3)",
                &[&d, &signed(size), &now],
            )
            .await?;
        }
        if let Some(r) = repo {
            link(&txn, d, r).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Starts a session whose bytes are hashed with `algorithm`.
    pub fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<Upload> {
        use std::sync::atomic::Ordering;
        let id = uuid::Uuid::new_v4().to_string();
        let total = self.max_uploads.load(Ordering::Relaxed);
        let per_repo = self.max_uploads_per_repo.load(Ordering::Relaxed);
        let r = repo.as_str();
        let now = signed(meta::now());
        let inserted = self.run(async {
            let client = self.client().await?;
            Ok::<_, Error>(
                client
                    .execute(
                        r#"INSERT INTO uploads (id, repo, "offset", hash_state, piece_keys,
                                                piece_sizes, started, updated)
                           SELECT $1, $2, 0, $3, '{}', '{}', $4, $4
                           WHERE (SELECT count(*) FROM uploads) < $5
                             AND (SELECT count(*) FROM uploads WHERE repo = $2) < $6"#,
                        &[
                            &id,
                            &r,
                            &Hasher::new(algorithm).state(),
                            &now,
                            &signed(total as u64),
                            &signed(per_repo as u64),
                        ],
                    )
                    .await?,
            )
        })?;
        if inserted == 0 {
            return Err(Error::TooManyUploads(format!(
                "too many uploads are open (at most {total}, {per_repo} per repository); \
                 finish or cancel some first"
            )));
        }
        log::debug!("upload {id}: started in {r}");
        Ok(Upload { id, offset: 0 })
    }

    fn load(&self, repo: &RepoName, id: &str) -> Result<Session> {
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            self.load_with(&txn, repo.as_str(), id).await
        })
    }

    async fn load_with(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        repo: &str,
        id: &str,
    ) -> Result<Session> {
        let row = txn
            .query_opt(
                r#"SELECT repo, "offset", hash_state, piece_keys, piece_sizes
                   FROM uploads WHERE id = $1"#,
                &[&id],
            )
            .await?
            .ok_or(Error::UploadUnknown)?;
        let keys: Vec<String> = row.get(3);
        let sizes: Vec<i64> = row.get(4);
        let session = Session {
            repo: row.get(0),
            offset: unsigned(row.get(1)),
            hash_state: row.get(2),
            pieces: keys
                .into_iter()
                .zip(sizes.into_iter().map(unsigned))
                .collect(),
        };
        if session.repo != repo {
            return Err(Error::UploadUnknown);
        }
        Ok(session)
    }

    /// The committed size of an upload.
    pub fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64> {
        Ok(self.load(repo, id)?.offset)
    }

    /// Opens a session for a chunk that starts at `spec.start` (if the
    /// client said) and is `spec.len` bytes long (if it said).
    pub fn append_to(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        spec: ChunkSpec,
    ) -> Result<ObjectAppender> {
        let busy = {
            let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(id.to_owned()) {
                let offset = self.load(repo, id)?.offset;
                return Err(Error::UploadBusy { offset });
            }
            Busy {
                set: Arc::clone(&self.busy),
                id: id.to_owned(),
            }
        };
        let session = self.load(repo, id)?;
        if spec.start.is_some_and(|s| s != session.offset) {
            return Err(Error::RangeMismatch {
                offset: session.offset,
            });
        }
        let hasher = Hasher::restore(&session.hash_state)
            .ok_or_else(|| Error::Corrupt("upload hash state is invalid".into()))?;
        let (offset, mut pieces) = (session.offset, session.pieces);
        let small = pieces
            .last()
            .filter(|(_, size)| *size < JOIN_BELOW)
            .cloned();
        let mut appender = self.appender(
            repo,
            id,
            offset,
            Vec::new(),
            hasher,
            true,
            spec.len,
            Some(busy),
        );
        if let Some((key, size)) = small {
            pieces.pop();
            // Already hashed: only the buffer takes them again.
            let bytes = match self.run(self.objects.read(&key, 0, size)) {
                Ok(bytes) => bytes,
                // Another node's chunk may have joined it since, and
                // removed it: the client is told where the upload is now.
                Err(e) => match self.load(repo, id)?.offset {
                    now if now != offset => return Err(Error::RangeMismatch { offset: now }),
                    _ => return Err(e),
                },
            };
            appender.buffer.extend_from_slice(&bytes);
            appender.joined = Some(key);
        }
        appender.pieces = pieces;
        Ok(appender)
    }

    /// Opens a blob to be held but linked nowhere, until an import links it.
    pub fn stage_blob(
        self: &Arc<Self>,
        len: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<ObjectAppender> {
        let staging = RepoName::parse("staging").expect("a valid name");
        let mut appender = self.put_blob(&staging, len, algorithm)?;
        appender.link = false;
        Ok(appender)
    }

    /// Opens a whole blob in one request, with no session row.
    pub fn put_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        len: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<ObjectAppender> {
        let id = uuid::Uuid::new_v4().to_string();
        Ok(self.appender(
            repo,
            &id,
            0,
            Vec::new(),
            Hasher::new(algorithm),
            false,
            len,
            None,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn appender(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        offset: u64,
        pieces: Vec<(String, u64)>,
        hasher: Hasher,
        session: bool,
        declared: Option<u64>,
        busy: Option<Busy>,
    ) -> ObjectAppender {
        ObjectAppender {
            cluster: Arc::clone(self),
            repo: repo.clone(),
            id: id.to_owned(),
            session,
            link: true,
            declared,
            offset,
            pieces,
            written: Vec::new(),
            joined: None,
            buffer: BytesMut::new(),
            hasher,
            received: 0,
            kept: false,
            beat: Instant::now(),
            streaming: false,
            _busy: busy,
        }
    }

    /// Ends a session and removes its pieces.
    pub fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let r = repo.as_str();
        let keys = self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "DELETE FROM uploads WHERE id = $1 AND repo = $2 RETURNING piece_keys",
                    &[&id, &r],
                )
                .await?
                .ok_or(Error::UploadUnknown)?;
            Ok::<Vec<String>, Error>(row.get(0))
        })?;
        remove_objects(self, &keys);
        log::debug!("upload {id}: cancelled");
        Ok(())
    }
}
