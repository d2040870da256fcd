//! Upload sessions. Each chunk is written to `uploads/<id>`, synced, and then
//! the new offset and the sha256 state after it are committed in one redb
//! transaction, so an upload resumes after a restart without rereading a byte.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::sync::mpsc::{SyncSender, sync_channel};

use redb::ReadableDatabase;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

use super::blobs::remove_if_present;
use super::meta::{self, UploadRow};
use super::writeback::StreamingWriter;
use super::{Body, Error, Result, Store};
use crate::oci::{Digest, RepoName};

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
pub(super) struct Busy<'a> {
    store: &'a Store,
    id: String,
}

impl Busy<'_> {
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.store
            .busy_uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn hash_state(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

fn restore_hash(state: &[u8]) -> Result<Sha256> {
    let state = SerializedState::<Sha256>::try_from(state)
        .map_err(|_| Error::Corrupt("upload hash state has the wrong length".into()))?;
    Sha256::deserialize(&state).map_err(|_| Error::Corrupt("upload hash state is invalid".into()))
}

fn new_row(repo: &RepoName) -> UploadRow {
    UploadRow {
        repo: repo.as_str().to_owned(),
        offset: 0,
        hash_state: hash_state(&Sha256::new()),
        started: meta::now(),
        updated: meta::now(),
    }
}

/// An upload file with a chunk written (not yet synced) onto its end.
struct Written {
    file: File,
    hasher: Sha256,
    /// The file's length now.
    size: u64,
    /// Whether this chunk created the file: its name is not yet durable.
    created: bool,
}

/// Past this many bytes in one request, hashing moves to a thread of its
/// own: alone, sha256 is slower than a fast disk, and small pushes should
/// not pay for a thread.
const PARALLEL_HASH_FROM: u64 = 4 << 20;

/// Hashes and writes a request body; returns the hash and the byte count.
fn stream_chunk(
    body: Body,
    writer: &mut StreamingWriter,
    hasher: Sha256,
    spec: ChunkSpec,
) -> Result<(Sha256, u64)> {
    std::thread::scope(|scope| {
        let mut inline = Some(hasher);
        let mut helper: Option<(SyncSender<bytes::Bytes>, _)> = None;
        let mut received = 0u64;
        for chunk in body {
            let chunk = chunk.map_err(Error::BodyFailed)?;
            match (&mut inline, &helper) {
                (Some(hasher), _) => hasher.update(&chunk),
                (None, Some((to_hasher, _))) => to_hasher
                    .send(chunk.clone())
                    .expect("the hashing thread lives until the sender drops"),
                (None, None) => unreachable!("the hasher is inline or in its thread"),
            }
            writer.write_all(&chunk)?;
            received += chunk.len() as u64;
            if received >= PARALLEL_HASH_FROM
                && let Some(mut hasher) = inline.take()
            {
                let (to_hasher, chunks) = sync_channel::<bytes::Bytes>(2);
                let thread = scope.spawn(move || {
                    for chunk in chunks {
                        hasher.update(&chunk);
                    }
                    hasher
                });
                helper = Some((to_hasher, thread));
            }
        }
        if let Some(declared) = spec.len.filter(|&d| d != received) {
            return Err(Error::SizeMismatch { declared, received });
        }
        let hasher = match (inline, helper) {
            (Some(hasher), _) => hasher,
            (None, Some((to_hasher, thread))) => {
                drop(to_hasher);
                thread.join().expect("hashing does not panic")
            }
            (None, None) => unreachable!("the hasher is inline or in its thread"),
        };
        Ok((hasher, received))
    })
}

impl Store {
    pub fn start_upload(&self, repo: &RepoName) -> Result<Upload> {
        let id = uuid::Uuid::new_v4().to_string();
        let (key, row) = (id.clone(), meta::encode(&new_row(repo)));
        self.write(None, move |txn| {
            txn.open_table(meta::UPLOADS)?
                .insert(key.as_str(), row.as_slice())?;
            Ok(())
        })?;
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
    pub(super) fn try_claim(&self, id: &str) -> Option<Busy<'_>> {
        let mut busy = self.busy_uploads.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(id.to_owned()).then(|| Busy {
            store: self,
            id: id.to_owned(),
        })
    }

    /// Claims an upload for writing, then loads it; one writer at a time.
    fn claim_upload(&self, repo: &RepoName, id: &str) -> Result<(UploadRow, Busy<'_>)> {
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

    /// Streams `body` onto the end of the committed part of an upload file.
    fn write_chunk(
        &self,
        id: &str,
        row: &UploadRow,
        spec: ChunkSpec,
        body: Body,
    ) -> Result<Written> {
        if spec.start.is_some_and(|s| s != row.offset) {
            return Err(Error::RangeMismatch { offset: row.offset });
        }
        let hasher = restore_hash(&row.hash_state)?;
        let path = self.upload_path(id);
        let (mut file, created) = match OpenOptions::new().write(true).open(&path) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?,
                true,
            ),
            Err(e) => return Err(e.into()),
        };
        if file.metadata()?.len() < row.offset {
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
        // Cuts back what a crash or a failed request left past the committed end.
        file.set_len(row.offset)?;
        file.seek(SeekFrom::Start(row.offset))?;
        let mut writer = StreamingWriter::new(&mut file, row.offset);
        match stream_chunk(body, &mut writer, hasher, spec) {
            Ok((hasher, received)) => Ok(Written {
                file,
                hasher,
                size: row.offset + received,
                created,
            }),
            Err(e) => {
                // Give back at once what the failed chunk took (it may have
                // filled the disk); the committed part stays.
                let _ = file.set_len(row.offset);
                Err(e)
            }
        }
    }

    /// Appends a chunk; returns the upload's new size.
    pub fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        spec: ChunkSpec,
        body: Body,
    ) -> Result<u64> {
        let (row, _busy) = self.claim_upload(repo, id)?;
        let Written {
            file,
            hasher,
            size: offset,
            created,
        } = self.write_chunk(id, &row, spec, body)?;
        if offset == row.offset {
            return Ok(offset);
        }
        file.sync_data()?;
        // The chunk's 202 vouches for the file's name too.
        let sync_dir = created.then(|| self.root.join("uploads"));
        let updated = UploadRow {
            offset,
            hash_state: hash_state(&hasher),
            updated: meta::now(),
            ..row
        };
        let (key, row) = (id.to_owned(), meta::encode(&updated));
        self.write(sync_dir, move |txn| {
            txn.open_table(meta::UPLOADS)?
                .insert(key.as_str(), row.as_slice())?;
            Ok(())
        })?;
        log::debug!("upload {id}: {offset} bytes committed");
        Ok(offset)
    }

    /// Takes an optional last chunk, checks the digest and makes the blob
    /// visible. A digest mismatch discards the upload.
    pub fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        spec: ChunkSpec,
        body: Body,
    ) -> Result<u64> {
        let (row, _busy) = self.claim_upload(repo, id)?;
        let result = self.write_chunk(id, &row, spec, body);
        self.seal(repo, id, digest, result)
    }

    /// A whole blob in one request, with no session row: a crash leaves only
    /// an orphan file, which start-up removes.
    pub fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: Option<u64>,
        body: Body,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().to_string();
        let result = self.write_chunk(&id, &new_row(repo), ChunkSpec { start: None, len }, body);
        if result.is_err() {
            remove_if_present(&self.upload_path(&id))?;
        }
        self.seal(repo, &id, digest, result)
    }

    fn seal(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        written: Result<Written>,
    ) -> Result<u64> {
        let Written {
            file, hasher, size, ..
        } = written?;
        let actual = Digest::from_hash(&hasher.finalize());
        if &actual != digest {
            drop(file);
            self.discard_upload(id)?;
            log::info!("upload {id}: digest mismatch, {actual} != {digest}; discarded");
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.commit_blob(id, file, size, repo, digest)?;
        log::debug!("upload {id}: finished as {digest} ({size} bytes)");
        Ok(size)
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
        self.write(None, move |txn| {
            txn.open_table(meta::UPLOADS)?.remove(key.as_str())?;
            Ok(())
        })
    }
}
