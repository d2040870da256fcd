//! What the store says of itself, for metrics and readiness probes: what
//! it holds, how its group commits go, and whether it still commits.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable};

use super::meta::{self, BlobRow};
use super::{Embedded, Result};

const BLOBS: &str = "blobs";
const BYTES: &str = "bytes";

/// Adds a blob row of `size` bytes to the totals (`added`), or takes one
/// away, in the transaction that adds or removes the row.
pub(super) fn count_blob(txn: &redb::WriteTransaction, size: u64, added: bool) -> Result<()> {
    let mut totals = txn.open_table(meta::TOTALS)?;
    for (key, by) in [(BLOBS, 1), (BYTES, size)] {
        let now = totals.get(key)?.map_or(0, |v| v.value());
        let next = if added {
            now + by
        } else {
            now.saturating_sub(by)
        };
        totals.insert(key, next)?;
    }
    Ok(())
}

/// Counts the blob rows once, for a database made before the totals were
/// kept.
pub(super) fn backfill_totals(txn: &redb::WriteTransaction) -> Result<()> {
    let mut totals = txn.open_table(meta::TOTALS)?;
    if totals.get(BLOBS)?.is_some() {
        return Ok(());
    }
    let (mut blobs, mut bytes) = (0, 0);
    for entry in txn.open_table(meta::BLOBS)?.iter()? {
        let row: BlobRow = meta::decode(entry?.1.value())?;
        blobs += 1;
        bytes += row.size;
    }
    totals.insert(BLOBS, blobs)?;
    totals.insert(BYTES, bytes)?;
    Ok(())
}

/// Told of every group commit, on the commit thread: it must not block.
pub trait Watcher: Send + Sync {
    /// A transaction of `jobs` writes committed (or failed) in `took`.
    fn committed(&self, jobs: usize, took: Duration);
}

/// What the store holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    pub blobs: u64,
    /// Of all blobs, each counted once.
    pub bytes: u64,
    /// Upload sessions open.
    pub uploads: u64,
}

impl Embedded {
    /// Has `watcher` told of every commit from now on (once: the first
    /// watcher stays).
    pub fn watch(&self, watcher: Arc<dyn Watcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// The blobs held and their bytes, from the running totals.
    pub fn holdings(&self) -> Result<Holdings> {
        let txn = self.db()?.begin_read()?;
        let totals = txn.open_table(meta::TOTALS)?;
        let get = |key| -> Result<u64> { Ok(totals.get(key)?.map_or(0, |v| v.value())) };
        Ok(Holdings {
            blobs: get(BLOBS)?,
            bytes: get(BYTES)?,
            uploads: self.open_uploads(),
        })
    }

    /// Upload sessions open now.
    pub fn open_uploads(&self) -> u64 {
        self.sessions().total as u64
    }

    /// Commits a small write through the group commit, as a push would:
    /// `Ok` only if the database takes writes and makes them durable.
    pub fn probe_write(&self) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.write(None, move |txn| {
            txn.open_table(meta::PROBES)?.insert("last", now)?;
            Ok(())
        })
    }

    /// The data directory, for the free-space check beside it.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }
}
