//! Which repositories hold which blobs, and which repositories exist. Every
//! change to a link goes through here, inside the caller's write
//! transaction, so that LINKS, its mirror REPO_BLOBS and REPOS never
//! disagree: a repository is listed while it holds a manifest or a blob.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::Result;
use super::meta;

/// Links `digest` into `repo`, which from now on is listed.
pub(super) fn link(txn: &WriteTransaction, digest: &str, repo: &str) -> Result<()> {
    let now = meta::now();
    txn.open_table(meta::LINKS)?.insert((digest, repo), now)?;
    txn.open_table(meta::REPO_BLOBS)?
        .insert((repo, digest), ())?;
    txn.open_table(meta::REPOS)?.insert(repo, now)?;
    Ok(())
}

/// Unlinks `digest` from `repo`; false if it was not linked. The caller
/// then calls [`forget_if_empty`] once it has no table of its own open.
/// The record of which of the repository's manifests need the blob stays
/// with those manifests: a blob deleted and pushed again (as a client does
/// whose HEAD of the layer said 404 and of the manifest 200) is needed by
/// them as before, and a sweep reads the record only where the blob is
/// linked.
pub(super) fn unlink(txn: &WriteTransaction, digest: &str, repo: &str) -> Result<bool> {
    let removed = txn
        .open_table(meta::LINKS)?
        .remove((digest, repo))?
        .is_some();
    txn.open_table(meta::REPO_BLOBS)?.remove((repo, digest))?;
    Ok(removed)
}

/// Marks `repo` as holding something (a manifest arrived).
pub(super) fn remember(txn: &WriteTransaction, repo: &str) -> Result<()> {
    txn.open_table(meta::REPOS)?.insert(repo, meta::now())?;
    Ok(())
}

/// Drops `repo` from the list once it holds no manifest and no blob.
pub(super) fn forget_if_empty(txn: &WriteTransaction, repo: &str) -> Result<bool> {
    if holds_any(txn, meta::MANIFESTS, repo)? || holds_any(txn, meta::REPO_BLOBS, repo)? {
        return Ok(false);
    }
    Ok(txn.open_table(meta::REPOS)?.remove(repo)?.is_some())
}

/// Whether a table keyed (repository, ...) has any row for `repo`.
fn holds_any<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<(&'static str, &'static str), V>,
    repo: &str,
) -> Result<bool> {
    let table = txn.open_table(table)?;
    let mut rows = table.range((repo, "")..=(repo, meta::MAX_STR))?;
    Ok(rows.next().is_some())
}

/// Fills REPO_BLOBS from LINKS in a database written before it existed.
pub(super) fn backfill(txn: &WriteTransaction) -> Result<()> {
    let links = txn.open_table(meta::LINKS)?;
    let mut mirror = txn.open_table(meta::REPO_BLOBS)?;
    if links.first()?.is_none() || mirror.first()?.is_some() {
        return Ok(());
    }
    for entry in links.iter()? {
        let (key, _) = entry?;
        let (digest, repo) = key.value();
        mirror.insert((repo, digest), ())?;
    }
    Ok(())
}
