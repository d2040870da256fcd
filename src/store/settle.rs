//! New big blobs' links into their shard directories, made durable a
//! moment after the blobs are acknowledged, many at a time. (A small
//! blob's link is synced before its commit, by its batch's syncfs: see
//! `commit::Before::Files`.)
//!
//! Syncing a blob's shard directory before its 201 cost one device flush
//! per blob (there are 256 shards, so a group commit seldom shares one).
//! Instead a new blob's upload file, whose name in `uploads/` (one
//! directory for all) the group commit syncs, vouches for the bytes until
//! the link is settled, and an UNSETTLED row, committed with the blob's,
//! says so. Settling syncs the shard directories, then drops the rows,
//! then the upload files' names. Opening a store settles what a crash
//! left, first putting back any link the crash took or turned back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};

use super::blobs::{create_dirs_durable, fsync_dir, remove_if_present};
use super::commit::DbHandle;
use super::embedded::{blob_dir, blob_path, upload_path};
use super::{Result, meta};
use crate::oci::Digest;

/// How old a link is before it is settled: long enough that one
/// directory sync covers many blobs, short enough that few upload files
/// linger.
const AGE: Duration = Duration::from_secs(1);

struct Link {
    upload: String,
    digest: Digest,
    at: Instant,
}

#[derive(Default)]
struct Queue {
    links: Vec<Link>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread that settles links once they are [`AGE`] old, and all of
/// them when the store closes.
pub(super) struct Settler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Settler {
    pub(super) fn start(root: &Path, db: Arc<DbHandle>) -> Settler {
        let shared = Arc::new(Shared::default());
        let (root, queue) = (root.to_path_buf(), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("berth-settle".into())
            .spawn(move || {
                crate::bulk::this_thread();
                run(&root, &db, &queue)
            })
            .expect("the settle thread starts");
        Settler {
            shared,
            thread: Some(thread),
        }
    }

    /// Queues the link of `digest`, whose UNSETTLED row naming `upload`
    /// has committed.
    pub(super) fn add(&self, upload: String, digest: Digest) {
        let mut queue = self.shared.queue();
        let first = queue.links.is_empty();
        queue.links.push(Link {
            upload,
            digest,
            at: Instant::now(),
        });
        if first {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.shared.queue().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(root: &Path, db: &DbHandle, shared: &Shared) {
    loop {
        let (due, stopping) = {
            let mut queue = shared.queue();
            loop {
                if queue.stopping {
                    break (std::mem::take(&mut queue.links), true);
                }
                let now = Instant::now();
                match queue.links.first() {
                    None => queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner()),
                    Some(oldest) if now >= oldest.at + AGE => {
                        // Queued in time order: the due ones come first.
                        let due = queue.links.partition_point(|l| now >= l.at + AGE);
                        break (queue.links.drain(..due).collect(), false);
                    }
                    Some(oldest) => {
                        let wait = oldest.at + AGE - now;
                        queue = shared
                            .wake
                            .wait_timeout(queue, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        };
        if !due.is_empty() {
            let pairs: Vec<_> = due.iter().map(|l| (l.upload.as_str(), &l.digest)).collect();
            if let Err(e) = settle(root, db, &pairs) {
                // Nothing is lost: the rows and upload files stay, and the
                // next round (or the next start) settles them.
                log::warn!("settling {} new blob links: {e}", due.len());
                if !stopping {
                    let mut queue = shared.queue();
                    queue.links.splice(0..0, due);
                    drop(queue);
                    std::thread::sleep(AGE);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Syncs the shard directories of `links` (upload id, digest), then drops
/// their rows in one commit, then the upload files' names.
fn settle(root: &Path, db: &DbHandle, links: &[(&str, &Digest)]) -> Result<()> {
    let dirs: BTreeSet<PathBuf> = links.iter().map(|(_, d)| blob_dir(root, d)).collect();
    for dir in &dirs {
        fsync_dir(dir)?;
    }
    let txn = db.get()?.begin_write()?;
    {
        let mut rows = txn.open_table(meta::UNSETTLED)?;
        for (upload, _) in links {
            rows.remove(*upload)?;
        }
    }
    db.commit(txn)?;
    for (upload, _) in links {
        remove_if_present(&upload_path(root, upload))?;
    }
    log::debug!(
        "settled {} new blob links in {} directories",
        links.len(),
        dirs.len()
    );
    Ok(())
}

/// Settles every link a previous run left unsettled, putting back from
/// its upload file any link that is gone while its blob is still indexed.
pub(super) fn recover(root: &Path, db: &DbHandle) -> Result<()> {
    let links: Vec<(String, Digest)> = {
        let txn = db.get()?.begin_read()?;
        let rows = txn.open_table(meta::UNSETTLED)?;
        let blobs = txn.open_table(meta::BLOBS)?;
        let mut links = Vec::new();
        for row in rows.iter()? {
            let (upload, digest) = row?;
            let (upload, digest) = (upload.value().to_owned(), digest.value().to_owned());
            let Some(digest) = Digest::parse(&digest) else {
                return Err(super::Error::Corrupt(format!(
                    "unsettled row {upload} names {digest:?}, not a digest"
                )));
            };
            if blobs.get(digest.as_str())?.is_some() {
                relink(root, &upload, &digest)?;
            }
            links.push((upload, digest));
        }
        links
    };
    if links.is_empty() {
        return Ok(());
    }
    let pairs: Vec<_> = links.iter().map(|(u, d)| (u.as_str(), d)).collect();
    settle(root, db, &pairs)?;
    log::info!("settled {} blob links an earlier run left", links.len());
    Ok(())
}

/// Puts back the link of an indexed blob from its upload file, if the
/// blob's name no longer holds that file. Until the link is settled the
/// upload file is the copy the 201 vouched for (verified and synced), and
/// a power cut can take the name or turn it back to what it held before
/// (a leftover the new link replaced in the same unsynced directory).
fn relink(root: &Path, upload: &str, digest: &Digest) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let blob = blob_path(root, digest);
    let from = upload_path(root, upload);
    let Some(vouched) = metadata_if_present(&from)? else {
        if !blob.exists() {
            // fsck reports the blob missing; there is nothing to put back.
            log::error!("blob {digest} lost its file and its upload file {upload}");
        }
        return Ok(());
    };
    match metadata_if_present(&blob)? {
        Some(held) if (held.dev(), held.ino()) == (vouched.dev(), vouched.ino()) => return Ok(()),
        Some(_) => {
            log::warn!("blob {digest}: its name holds another file than upload {upload}; replaced");
            remove_if_present(&blob)?;
        }
        None => {}
    }
    create_dirs_durable(&blob_dir(root, digest))?;
    std::fs::hard_link(&from, &blob)?;
    log::warn!("blob {digest}: put back the link a crash took, from upload {upload}");
    Ok(())
}

fn metadata_if_present(path: &Path) -> std::io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
