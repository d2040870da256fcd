//! Upload sessions. Each chunk is written to `uploads/<id>`, synced, and then
//! the new offset and the hash state after it are committed in one redb
//! transaction, so an upload resumes after a restart without rereading a byte.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::ReadableDatabase;

use super::blobs::{hash_file, remove_if_present};
use super::commit::Before;
use super::hashing::Hashing;
use super::meta::{self, UploadRow};
use super::sessions;
use super::writeback::Writeback;
use super::{Embedded, Error, Result};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// An upload session as the API reports it.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub offset: u64,
}

/// Where a chunk goes: `start` is the offset the client says it writes at
/// (from Content-Range), `len` the length it declared, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkSpec {
    pub start: Option<u64>,
    pub len: Option<u64>,
}

/// Marks an upload as being written for as long as it lives.
pub(super) struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Busy {
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn restore_hash(state: &[u8]) -> Result<Hasher> {
    Hasher::restore(state).ok_or_else(|| Error::Corrupt("upload hash state is invalid".into()))
}

fn new_row(repo: &RepoName, algorithm: Algorithm) -> UploadRow {
    UploadRow {
        repo: repo.as_str().to_owned(),
        offset: 0,
        hash_state: Hasher::new(algorithm).state(),
        started: meta::now(),
        updated: meta::now(),
    }
}

/// One request's bytes going onto the end of an upload. The caller feeds
/// it batches as they arrive from the network ([`FileAppender::write`] blocks
/// only on the disk, never on a client), then ends it with
/// [`FileAppender::commit`] or [`FileAppender::finish`]. Dropped without either,
/// it gives back what it wrote: the committed part of a session stays, a
/// whole-blob upload leaves nothing.
pub struct FileAppender {
    store: Arc<Embedded>,
    repo: RepoName,
    id: String,
    row: UploadRow,
    /// A session with a row; false for a whole blob in one request.
    session: bool,
    /// Whether the finished blob is linked into `repo`; false: staged.
    link: bool,
    declared: Option<u64>,
    file: File,
    writeback: Writeback,
    hashing: Hashing,
    received: u64,
    /// Set once the bytes belong to the upload or the blob.
    kept: bool,
    _busy: Option<Busy>,
}

impl FileAppender {
    /// Writes a batch of body chunks and adds them to the hash.
    pub fn write(&mut self, chunks: &[bytes::Bytes]) -> Result<()> {
        let total: usize = chunks.iter().map(bytes::Bytes::len).sum();
        self.hashing.update(chunks);
        self.writeback.write_all(&self.file, chunks)?;
        self.received += total as u64;
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

    /// Makes the chunk part of the session: synced, then the new offset and
    /// hash state committed. Returns the upload's new size.
    pub fn commit(mut self) -> Result<u64> {
        self.check_length()?;
        let offset = self.row.offset + self.received;
        if self.received == 0 {
            self.kept = true;
            return Ok(offset);
        }
        let batched = self.store.synced_by_batch(self.received);
        if !batched && self.store.durable {
            // Before the hash is asked for, so that the hashing thread
            // finishes its last batches while the disk takes the chunk:
            // one after the other they took 0.1-1.1 ms and 0.2-1.5 ms of
            // each 16 MiB PATCH's ~21 ms, and the commit's median went
            // from 1.9 ms to 1.5 ms (timed in the server, bench b).
            self.file.sync_data()?;
        }
        let updated = UploadRow {
            offset,
            hash_state: self.hashing.hasher().state(),
            updated: meta::now(),
            ..self.row.clone()
        };
        let (key, row) = (self.id.clone(), meta::encode(&updated));
        let job = move |txn: &redb::WriteTransaction| {
            txn.open_table(meta::UPLOADS)?
                .insert(key.as_str(), row.as_slice())?;
            Ok(())
        };
        if batched {
            // The chunk and the file's name, with the rest of the batch.
            self.store.write_after_files(job)?;
        } else {
            // The chunk's 202 vouches for the file's name too, which no
            // commit has synced while nothing is committed, whether this
            // request made the file or one that failed did (a file made
            // for a session with bytes committed is refused as lost).
            let unsynced_name = self.row.offset == 0;
            let sync_dir = unsynced_name.then(|| self.store.root.join("uploads"));
            self.store.write(sync_dir, job)?;
        }
        self.kept = true;
        log::debug!("upload {}: {offset} bytes committed", self.id);
        Ok(offset)
    }

    /// Writes go at page-cache speed, with no write-back paced beside
    /// them: for a blob nobody waits on the disk for, which the final sync
    /// makes durable all the same.
    pub fn unthrottle(&mut self) {
        self.writeback.unthrottle();
    }

    /// Whether what was written is the blob `digest`, without ending
    /// anything: the caller may act on the answer before the commit.
    pub fn verify(&mut self, digest: &Digest) -> Result<()> {
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
    fn actual(&mut self, digest: &Digest) -> Result<Digest> {
        let hasher = self.hashing.hasher();
        if hasher.algorithm() == digest.algorithm() {
            return Ok(hasher.digest());
        }
        // The session hashed with another algorithm than the one the
        // client finishes with: only a second pass over the file can say.
        let size = self.row.offset + self.received;
        let (read, actual) = hash_file(&self.store.upload_path(&self.id), digest.algorithm())?;
        if read != size {
            return Err(Error::Corrupt(format!(
                "upload {} holds {read} bytes, not {size}",
                self.id
            )));
        }
        Ok(actual)
    }

    /// Hashes with `algorithm` from here on, if nothing has been hashed
    /// yet: a PUT that names a sha512 digest on a session started without
    /// `digest-algorithm` then needs no second pass over the file.
    pub fn hash_as(&mut self, algorithm: Algorithm) {
        if self.row.offset == 0 && self.received == 0 {
            self.hashing.replace(Hasher::new(algorithm));
        }
    }

    /// Checks the digest and makes the blob visible; a mismatch discards
    /// the upload. Returns the blob's size.
    pub fn finish(mut self, digest: &Digest) -> Result<u64> {
        self.check_length()?;
        let size = self.row.offset + self.received;
        let actual = self.actual(digest)?;
        if &actual != digest {
            // The session is over: nothing of it is kept.
            self.kept = true;
            self.store.discard_upload(&self.id)?;
            log::info!(
                "upload {}: digest mismatch, {actual} != {digest}; discarded",
                self.id
            );
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.store.commit_blob(
            &self.id,
            &self.file,
            size,
            self.link.then_some(&self.repo),
            digest,
        )?;
        self.kept = true;
        log::debug!("upload {}: finished as {digest} ({size} bytes)", self.id);
        Ok(size)
    }
}

impl Drop for FileAppender {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let path = self.store.upload_path(&self.id);
        // Give back at once what the failed request took (it may have
        // filled the disk); a session's committed part stays.
        let given_back = if self.session {
            self.file.set_len(self.row.offset)
        } else {
            remove_if_present(&path)
        };
        if let Err(e) = given_back {
            log::warn!("upload {}: giving back a failed chunk: {e}", self.id);
        }
    }
}

/// Opens an upload's file for writing, creating it if missing; true if it
/// was created. A session with nothing committed (and a whole blob) most
/// often has no file yet, so it tries creating first: each first try that
/// fails is a wasted system call on the path of every small blob.
fn open_upload_file(path: &Path, likely_new: bool) -> std::io::Result<(File, bool)> {
    use std::io::ErrorKind;
    let create = || OpenOptions::new().write(true).create_new(true).open(path);
    let open = || OpenOptions::new().write(true).open(path);
    if likely_new {
        match create() {
            Ok(file) => Ok((file, true)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok((open()?, false)),
            Err(e) => Err(e),
        }
    } else {
        match open() {
            Ok(file) => Ok((file, false)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok((create()?, true)),
            Err(e) => Err(e),
        }
    }
}

impl Embedded {
    /// Starts a session whose bytes are hashed with `algorithm`, the one
    /// the client expects to finish with. Called from async code: nothing
    /// but the commit waits, and no thread waits for it. The commit thread
    /// gives a failed session's place back itself, so the answer holds the
    /// counts, never the store: the commit thread must not end up with the
    /// store's last reference, whose drop joins that thread.
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<Upload> {
        self.reserve_session(repo.as_str())?;
        let id = uuid::Uuid::new_v4().to_string();
        let (key, row) = (id.clone(), meta::encode(&new_row(repo, algorithm)));
        let job = move |txn: &redb::WriteTransaction| {
            txn.open_table(meta::UPLOADS)?
                .insert(key.as_str(), row.as_slice())?;
            Ok(())
        };
        let (sessions, name) = (Arc::clone(&self.sessions), repo.as_str().to_owned());
        let release = move || sessions::lock(&sessions).release(&name);
        self.committer
            .write_async(Before::Nothing, job, release)
            .await?;
        log::debug!("upload {id}: started in {}", repo.as_str());
        Ok(Upload { id, offset: 0 })
    }

    fn load_upload(&self, repo: &RepoName, id: &str) -> Result<UploadRow> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(meta::UPLOADS)?;
        let row: UploadRow = match table.get(id)? {
            Some(bytes) => meta::decode(bytes.value())?,
            None => return Err(Error::UploadUnknown),
        };
        if row.repo != repo.as_str() {
            return Err(Error::UploadUnknown);
        }
        Ok(row)
    }

    /// Marks an upload as being worked on; `None` if someone already is.
    pub(super) fn try_claim(&self, id: &str) -> Option<Busy> {
        let mut busy = self.busy_uploads.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(id.to_owned()).then(|| Busy {
            set: Arc::clone(&self.busy_uploads),
            id: id.to_owned(),
        })
    }

    /// Claims an upload for writing, then loads it; one writer at a time.
    fn claim_upload(&self, repo: &RepoName, id: &str) -> Result<(UploadRow, Busy)> {
        let Some(guard) = self.try_claim(id) else {
            let offset = self.load_upload(repo, id)?.offset;
            return Err(Error::UploadBusy { offset });
        };
        Ok((self.load_upload(repo, id)?, guard))
    }

    /// The committed size of an upload. A session whose committed bytes are
    /// gone (a cancel cut short by a crash unlinks the file before its row)
    /// is reported gone, as every later request on it would find.
    pub fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64> {
        let row = self.load_upload(repo, id)?;
        let on_disk = match std::fs::metadata(self.upload_path(id)) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        if on_disk < row.offset {
            if let Some(_busy) = self.try_claim(id) {
                self.discard_upload(id)?;
            }
            return Err(Error::UploadLost);
        }
        Ok(row.offset)
    }

    /// Opens a session for a chunk that starts at `start` (if the client
    /// said) and is `len` bytes long (if it said).
    pub fn append_to(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        spec: ChunkSpec,
    ) -> Result<FileAppender> {
        let (row, busy) = self.claim_upload(repo, id)?;
        if spec.start.is_some_and(|s| s != row.offset) {
            return Err(Error::RangeMismatch { offset: row.offset });
        }
        self.appender(repo, id, row, true, spec.len, Some(busy))
    }

    /// Opens a blob to be staged: once finished it is held (its row
    /// commits) but linked into no repository, so nobody is served it
    /// until an import links it with the image that needs it.
    pub fn stage_blob(
        self: &Arc<Self>,
        len: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<FileAppender> {
        let staging = RepoName::parse("staging").expect("a valid name");
        let mut appender = self.put_blob(&staging, len, algorithm)?;
        appender.link = false;
        Ok(appender)
    }

    /// Opens a whole blob in one request, with no session row: a crash
    /// leaves only an orphan file, which start-up removes.
    pub fn put_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        len: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<FileAppender> {
        let id = uuid::Uuid::new_v4().to_string();
        self.appender(repo, &id, new_row(repo, algorithm), false, len, None)
    }

    fn appender(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        row: UploadRow,
        session: bool,
        declared: Option<u64>,
        busy: Option<Busy>,
    ) -> Result<FileAppender> {
        let hasher = restore_hash(&row.hash_state)?;
        let path = self.upload_path(id);
        let (mut file, created) = open_upload_file(&path, row.offset == 0)?;
        let len = if created { 0 } else { file.metadata()?.len() };
        if len < row.offset {
            // Committed bytes are gone. Extending the file would fill the
            // gap with zeros that the saved hash state vouches for.
            drop(file);
            self.discard_upload(id)?;
            log::warn!(
                "upload {id}: file shorter than its committed {} bytes; discarded",
                row.offset
            );
            return Err(Error::UploadLost);
        }
        if !created {
            // Cuts back what a crash or a failed request left past the committed end.
            file.set_len(row.offset)?;
            file.seek(SeekFrom::Start(row.offset))?;
        }
        Ok(FileAppender {
            store: Arc::clone(self),
            repo: repo.clone(),
            id: id.to_owned(),
            writeback: Writeback::new(row.offset),
            row,
            session,
            link: true,
            declared,
            file,
            hashing: Hashing::new(hasher),
            received: 0,
            kept: false,
            _busy: busy,
        })
    }

    pub fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _busy = self.claim_upload(repo, id)?;
        self.discard_upload(id)?;
        log::debug!("upload {id}: cancelled");
        Ok(())
    }

    fn discard_upload(&self, id: &str) -> Result<()> {
        // The file first: on a full disk, that frees what the commit needs.
        remove_if_present(&self.upload_path(id))?;
        let key = id.to_owned();
        let removed = self.write(None, move |txn| sessions::remove_row(txn, &key))?;
        if let Some(repo) = removed {
            self.release_session(&repo);
        }
        Ok(())
    }
}
