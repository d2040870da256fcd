//! Content-addressed blob files and their index rows.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use super::meta::{self, BlobRow};
use super::{Embedded, Error, Result};
use super::{links, sessions};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// The largest blob (or chunk) whose bytes are synced by its commit's
/// batch rather than by a sync of its own: a batch of them is written out
/// in one pass, and a bigger one would hold up the small ones behind it.
pub(super) const BATCHED_SYNC_MAX: u64 = 1 << 20;

/// An open blob, ready to be read from any offset.
pub struct BlobFile {
    pub file: File,
    pub size: u64,
}

/// Reads up to `len` bytes of `file` at `at` into a fresh buffer (not
/// zeroed first: it is about to be overwritten). With `cached_only`, reads
/// only what the page cache holds, never waiting on the disk, so it may run
/// on an async thread, and fails with `WouldBlock` when nothing is cached
/// or the file system cannot say. A read past the end of the file is an
/// error: blob files are never shorter than their rows say.
pub fn read_chunk(file: &File, at: u64, len: usize, cached_only: bool) -> io::Result<bytes::Bytes> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(at).map_err(io::Error::other)?;
    let mut buf = bytes::BytesMut::with_capacity(len);
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len().min(len),
    };
    let flags = if cached_only { libc::RWF_NOWAIT } else { 0 };
    let read = loop {
        // SAFETY: the iovec points into `buf`'s spare capacity, which is
        // valid for writes of iov_len bytes and outlives the call.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
        if n >= 0 {
            break n.unsigned_abs();
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EOPNOTSUPP) if cached_only => {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            _ => return Err(e),
        }
    };
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob file is short",
        ));
    }
    // SAFETY: preadv2 initialised the first `read` bytes of the spare
    // capacity.
    unsafe { buf.set_len(read) };
    Ok(buf.freeze())
}

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the data directory, if missing, readable by its owner alone
/// (blobs and the token key are nobody else's business; one that exists
/// keeps the mode its owner chose), durably like [`create_dirs_durable`].
pub(super) fn create_private_dir_durable(dir: &Path) -> io::Result<()> {
    create_durable(dir, 0o700)
}

/// Creates `dir` and any missing parents, syncing the parent of each one it
/// creates, so that once this returns a power cut cannot take them away.
pub(super) fn create_dirs_durable(dir: &Path) -> io::Result<()> {
    create_durable(dir, 0o777)
}

/// As [`create_dirs_durable`], with `mode` (less the umask) for `dir`
/// itself; parents it creates get the usual 0777.
fn create_durable(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs_durable(parent)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fsync_dir(parent.unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Embedded {
    /// The size of a blob, if `repo` may serve it.
    pub fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        let links = txn.open_table(meta::LINKS)?;
        if links.get((digest.as_str(), repo.as_str()))?.is_none() {
            return Err(Error::BlobUnknown);
        }
        let blobs = txn.open_table(meta::BLOBS)?;
        let row = blobs.get(digest.as_str())?.ok_or(Error::BlobUnknown)?;
        Ok(meta::decode::<BlobRow>(row.value())?.size)
    }

    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<super::Blob> {
        let size = self.blob_size(repo, digest)?;
        match File::open(self.blob_path(digest)) {
            Ok(file) => Ok(super::Blob::File(BlobFile { file, size })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Corrupt(format!(
                "blob {digest} is indexed but its file is missing"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Unlinks a blob from one repository. The bytes stay until a prune finds
    /// that nothing reaches them.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (d, r) = (digest.to_string(), repo.as_str().to_owned());
        let removed = self.write(None, move |txn| {
            if !links::unlink(txn, &d, &r)? {
                return Ok(false);
            }
            links::forget_if_empty(txn, &r)?;
            Ok(true)
        })?;
        if removed {
            Ok(())
        } else {
            Err(Error::BlobUnknown)
        }
    }

    /// Links a blob that `from` holds into `repo`; false when `from` lacks it.
    pub fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        let _guard = self.lock_digest(digest);
        let (d, r, f) = (
            digest.clone(),
            repo.as_str().to_owned(),
            from.as_str().to_owned(),
        );
        self.write(None, move |txn| {
            let source = txn
                .open_table(meta::LINKS)?
                .get((d.as_str(), f.as_str()))?
                .is_some();
            if !source || !touch_blob(txn, &d)? {
                return Ok(false);
            }
            links::link(txn, d.as_str(), &r)?;
            Ok(true)
        })
    }

    /// Removes blob files that no row owns: what a crash between a rename
    /// and its commit leaves. Runs beside the server, so it checks each file
    /// under its digest lock, where no finish can be half done.
    pub fn remove_orphan_blobs(&self) -> Result<usize> {
        let mut removed = 0;
        for (path, digest) in self.blob_files()? {
            let Some(digest) = digest else {
                log::warn!("unexpected file {} left alone", path.display());
                continue;
            };
            let _guard = self.lock_digest(&digest);
            let txn = self.db()?.begin_read()?;
            if txn.open_table(meta::BLOBS)?.get(digest.as_str())?.is_none() {
                log::info!("removing orphaned blob file {}", path.display());
                remove_if_present(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every file under `blobs/<algorithm>/`, with the digest its name
    /// spells; `None` for anything that is not a blob file in a shard
    /// directory.
    pub(super) fn blob_files(&self) -> Result<Vec<(PathBuf, Option<Digest>)>> {
        let mut files = Vec::new();
        for algorithm in Algorithm::ALL {
            for shard in std::fs::read_dir(self.root.join("blobs").join(algorithm.name()))? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    files.push((shard.path(), None));
                    continue;
                }
                for file in std::fs::read_dir(shard.path())? {
                    let file = file?;
                    let digest = file
                        .file_name()
                        .to_str()
                        .and_then(|hex| Digest::parse(&format!("{}:{hex}", algorithm.name())));
                    files.push((file.path(), digest));
                }
            }
        }
        Ok(files)
    }

    /// Makes a verified upload file the blob `digest`: fsync, link into
    /// place, then one transaction adds the blob row, links it into `repo`
    /// and ends the upload, once `uploads/` is synced. Until the link is
    /// settled (settle.rs), the upload file keeps its name, and that is
    /// what vouches for the bytes. A blob that already exists keeps its
    /// file; the upload's copy is dropped.
    pub(super) fn commit_blob(
        &self,
        upload_id: &str,
        upload_file: &File,
        size: u64,
        repo: Option<&RepoName>,
        digest: &Digest,
    ) -> Result<()> {
        let exists = || -> Result<bool> {
            let txn = self.db()?.begin_read()?;
            Ok(txn.open_table(meta::BLOBS)?.get(digest.as_str())?.is_some())
        };
        // A small blob is synced with the rest of its commit's batch, and
        // its link with it; a big one syncs itself, in parallel with others.
        let batched = self.durable && self.synced_by_batch(size);
        // A long sync happens before the stripe lock, so it holds up no
        // other blob of the stripe; only a blob that vanished meanwhile is
        // synced under the lock.
        let mut synced = batched;
        if !synced && !exists()? {
            self.sync_file(upload_file)?;
            synced = true;
        }
        let _guard = self.lock_digest(digest);
        let upload_path = self.upload_path(upload_id);
        let mut placed = false;
        if !exists()? {
            if !synced {
                self.sync_file(upload_file)?;
            }
            // A hard link, not a rename: until the commit below, the upload
            // keeps its file, so a crash here leaves it resumable (and the
            // blob file an orphan that start-up sweeps).
            self.link_blob_file(&upload_path, digest)?;
            placed = true;
        }
        // The upload file's name is what a power cut must not take, and
        // all of them live in one directory: the group commit syncs it
        // once for every blob in the batch.
        let unsettled = placed && !batched && self.settler.is_some();
        let (d, r, id) = (
            digest.clone(),
            repo.map(|r| r.as_str().to_owned()),
            upload_id.to_owned(),
        );
        let job = move |txn: &redb::WriteTransaction| {
            if !touch_blob(txn, &d)? {
                let row = BlobRow {
                    size,
                    touched: meta::now(),
                };
                txn.open_table(meta::BLOBS)?
                    .insert(d.as_str(), meta::encode(&row).as_slice())?;
                super::stats::count_blob(txn, size, true)?;
            }
            // Without a repository the blob is staged: held, served by none.
            if let Some(r) = &r {
                links::link(txn, d.as_str(), r)?;
            }
            if unsettled {
                txn.open_table(meta::UNSETTLED)?
                    .insert(id.as_str(), d.as_str())?;
            }
            sessions::remove_row(txn, &id)
        };
        let session = if placed && batched {
            self.write_after_files(job)?
        } else {
            self.write(unsettled.then(|| self.root.join("uploads")), job)?
        };
        if let Some(repo) = session {
            self.release_session(&repo);
        }
        match &self.settler {
            Some(settler) if unsettled => settler.add(upload_id.to_owned(), digest.clone()),
            // Committed: the blob is acknowledged whatever happens now, and
            // a file left here is swept at the next start.
            _ => {
                if let Err(e) = remove_if_present(&upload_path) {
                    log::warn!("upload {upload_id}: removing its file once finished: {e}");
                }
            }
        }
        Ok(())
    }

    /// Links `upload` in as the file of blob `digest`, under the digest's
    /// stripe lock. No stale file is in the way but after a crash, so the
    /// link is tried before any removal: removing first cost a failed
    /// system call on every blob.
    fn link_blob_file(&self, upload: &Path, digest: &Digest) -> Result<()> {
        // Every digest of a shard takes the same stripe lock, so a shard
        // directory is synced before any link into it is trusted.
        self.create_dirs(&self.blob_dir(digest))?;
        let blob_path = self.blob_path(digest);
        match std::fs::hard_link(upload, &blob_path) {
            Ok(()) => return Ok(()),
            // A file with no row: an orphan of a crash, not yet swept.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_if_present(&blob_path)?,
            Err(e) => return Err(e.into()),
        }
        std::fs::hard_link(upload, &blob_path)?;
        Ok(())
    }
}

/// Restarts a blob's grace period; false if there is no such blob.
pub(super) fn touch_blob(txn: &redb::WriteTransaction, digest: &Digest) -> Result<bool> {
    let mut blobs = txn.open_table(meta::BLOBS)?;
    let row = match blobs.get(digest.as_str())? {
        Some(row) => meta::decode::<BlobRow>(row.value())?,
        None => return Ok(false),
    };
    let row = BlobRow {
        touched: meta::now(),
        ..row
    };
    blobs.insert(digest.as_str(), meta::encode(&row).as_slice())?;
    Ok(true)
}

/// Size and `algorithm` digest of a file, read in large blocks.
pub(super) fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(u64, Digest)> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.digest()))
}

pub(super) fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
