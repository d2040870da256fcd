//! Pruning: expire stale uploads, expire manifests, then sweep blobs that
//! no kept manifest needs. Every step runs in short write transactions, so
//! pushes and pulls go on beside it, and every decision is re-checked inside
//! the transaction that acts on it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::blobs::remove_if_present;
use super::links;
use super::meta::{self, BlobRow, ManifestRow, UploadRow};
use super::{Embedded, Result};
use crate::oci::Digest;

/// Rows handled per write transaction: small enough that a push waiting
/// for the write lock waits milliseconds, not the whole prune.
const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Upload sessions idle longer than this are removed.
    pub upload_expiration: Duration,
    /// Manifests older than this are removed with their tags, unless a kept
    /// index still needs them. `None`: manifests never expire.
    pub manifest_expiration: Option<Duration>,
    /// Nothing younger than this is removed: a blob or manifest pushed a
    /// moment ago waits for the manifest that will need it.
    pub grace: Duration,
    /// Also remove manifests that no tag names (and nothing kept needs).
    pub untagged: bool,
    /// Manifests a pull-through cache fetched and nobody pulled for this
    /// long are removed, with the upstream's tags on them; what was pushed
    /// here is not. `None`: cached manifests stay.
    pub cache_expiration: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            upload_expiration: Duration::from_secs(3600),
            manifest_expiration: None,
            grace: Duration::from_secs(3600),
            untagged: false,
            cache_expiration: Some(Duration::from_secs(7 * 86_400)),
        }
    }
}

/// What a prune removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub uploads: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    /// Blob bytes plus the bytes of expired uploads.
    pub bytes: u64,
    /// One line per thing removed, for `--dry-run` and debug logs.
    pub items: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "pruned {} uploads, {} manifests, {} tags, {} blobs; {} bytes freed",
            self.uploads, self.manifests, self.tags, self.blobs, self.bytes
        )
    }
}

impl Embedded {
    /// Runs one prune. With `dry_run` everything happens inside a single
    /// transaction that is thrown away, so the report is exact and nothing
    /// changes.
    pub fn prune(&self, policy: &Policy, dry_run: bool) -> Result<Report> {
        let now = meta::now();
        let mut report = Report::default();
        let dry = if dry_run {
            Some(self.db()?.begin_write()?)
        } else {
            None
        };
        self.expire_uploads(
            dry.as_ref(),
            meta::ago(now, policy.upload_expiration),
            &mut report,
        )?;
        self.expire_manifests(dry.as_ref(), policy, now, &mut report)?;
        self.sweep_blobs(dry.as_ref(), meta::ago(now, policy.grace), &mut report)?;
        if let Some(txn) = dry {
            txn.abort()?;
        }
        Ok(report)
    }

    /// Runs `work` in the dry run's transaction, or in a fresh one that
    /// commits if `work` changed anything (a no-op is not worth a sync).
    fn unit<T: Changes>(
        &self,
        dry: Option<&WriteTransaction>,
        work: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        match dry {
            Some(txn) => work(txn),
            None => {
                let txn = self.db()?.begin_write()?;
                let out = work(&txn)?;
                if out.changed() {
                    self.db.commit(txn)?;
                } else {
                    txn.abort()?;
                }
                Ok(out)
            }
        }
    }

    /// Removes upload sessions idle for longer than `expiration`: what a
    /// live server does by itself, prune or no prune.
    pub fn expire_stale_uploads(&self, expiration: Duration) -> Result<Report> {
        let mut report = Report::default();
        self.expire_uploads(None, meta::ago(meta::now(), expiration), &mut report)?;
        Ok(report)
    }

    fn expire_uploads(
        &self,
        dry: Option<&WriteTransaction>,
        cutoff: u64,
        report: &mut Report,
    ) -> Result<()> {
        let stale: Vec<String> = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(meta::UPLOADS)?;
            let mut stale = Vec::new();
            for entry in table.iter()? {
                let (id, row) = entry?;
                if meta::decode::<UploadRow>(row.value())?.updated <= cutoff {
                    stale.push(id.value().to_owned());
                }
            }
            stale
        };
        for batch in stale.chunks(BATCH) {
            // Claimed like a writer would, so no chunk lands in a file
            // that is about to go.
            let claims: Vec<_> = batch.iter().filter_map(|id| self.try_claim(id)).collect();
            let removed = self.unit(dry, |txn| {
                let mut table = txn.open_table(meta::UPLOADS)?;
                let mut removed = Vec::new();
                for claim in &claims {
                    let id = claim.id();
                    let row = match table.get(id)? {
                        Some(row) => meta::decode::<UploadRow>(row.value())?,
                        None => continue,
                    };
                    if row.updated <= cutoff {
                        table.remove(id)?;
                        removed.push((id.to_owned(), row.offset, row.repo));
                    }
                }
                Ok(removed)
            })?;
            for (id, bytes, repo) in removed {
                if dry.is_none() {
                    self.release_session(&repo);
                    remove_if_present(&self.upload_path(&id))?;
                }
                report.uploads += 1;
                report.bytes += bytes;
                report.items.push(format!("upload {id} ({bytes} bytes)"));
            }
            drop(claims);
        }
        Ok(())
    }

    fn expire_manifests(
        &self,
        dry: Option<&WriteTransaction>,
        policy: &Policy,
        now: u64,
        report: &mut Report,
    ) -> Result<()> {
        let repos: Vec<String> = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(meta::REPOS)?;
            let mut repos = Vec::new();
            for entry in table.iter()? {
                repos.push(entry?.0.value().to_owned());
            }
            repos
        };
        for repo in repos {
            self.unit(dry, |txn| {
                prune_repo_manifests(txn, &repo, policy, now, report)
            })?;
        }
        Ok(())
    }

    fn sweep_blobs(
        &self,
        dry: Option<&WriteTransaction>,
        cutoff: u64,
        report: &mut Report,
    ) -> Result<()> {
        let old: Vec<String> = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(meta::BLOBS)?;
            let mut old = Vec::new();
            for entry in table.iter()? {
                let (digest, row) = entry?;
                if meta::decode::<BlobRow>(row.value())?.touched <= cutoff {
                    old.push(digest.value().to_owned());
                }
            }
            old
        };
        for batch in old.chunks(BATCH) {
            let swept = self.unit(dry, |txn| sweep_batch(txn, batch, cutoff))?;
            for (digest, size) in swept.blobs {
                if dry.is_none() {
                    self.remove_blob_file(&digest)?;
                }
                report.blobs += 1;
                report.bytes += size;
                report.items.push(format!("blob {digest} ({size} bytes)"));
            }
        }
        Ok(())
    }

    /// Unlinks a swept blob's file, unless a push brought the blob back
    /// between the sweep's commit and now (it holds the same lock).
    fn remove_blob_file(&self, digest: &str) -> Result<()> {
        let Some(digest) = Digest::parse(digest) else {
            return Ok(());
        };
        let _guard = self.lock_digest(&digest);
        let txn = self.db()?.begin_read()?;
        if txn.open_table(meta::BLOBS)?.get(digest.as_str())?.is_none() {
            remove_if_present(&self.blob_path(&digest))?;
        }
        Ok(())
    }
}

/// What a unit of pruning did: whether its transaction needs committing.
trait Changes {
    fn changed(&self) -> bool;
}

impl<T> Changes for Vec<T> {
    fn changed(&self) -> bool {
        !self.is_empty()
    }
}

impl Changes for bool {
    fn changed(&self) -> bool {
        *self
    }
}

/// Decides, inside one repository's write transaction, which manifests
/// stay (see [`kept_manifests`]); everything else goes, with its tags and
/// edges.
fn prune_repo_manifests(
    txn: &WriteTransaction,
    repo: &str,
    policy: &Policy,
    now: u64,
    report: &mut Report,
) -> Result<bool> {
    let mut manifests_table = txn.open_table(meta::MANIFESTS)?;
    let mut tags_table = txn.open_table(meta::TAGS)?;

    let mut rows: BTreeMap<String, ManifestRow> = BTreeMap::new();
    for entry in manifests_table.range((repo, "")..=(repo, meta::MAX_STR))? {
        let (key, value) = entry?;
        rows.insert(key.value().1.to_owned(), meta::decode(value.value())?);
    }
    if rows.is_empty() {
        drop((manifests_table, tags_table));
        return links::forget_if_empty(txn, repo);
    }
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for entry in tags_table.range((repo, "")..=(repo, meta::MAX_STR))? {
        let (key, target) = entry?;
        tags.entry(target.value().to_owned())
            .or_default()
            .push(key.value().1.to_owned());
    }
    // What a pull-through cache fetched, and which tags it took from its
    // upstream: the rest was pushed here.
    let mut pulled: HashMap<String, u64> = HashMap::new();
    for entry in txn
        .open_table(meta::CACHE_PULLS)?
        .range((repo, "")..=(repo, meta::MAX_STR))?
    {
        let (key, at) = entry?;
        pulled.insert(key.value().1.to_owned(), at.value());
    }
    let mut upstream_tags: BTreeSet<String> = BTreeSet::new();
    for entry in txn
        .open_table(meta::UPSTREAM_TAGS)?
        .range((repo, "")..=(repo, meta::MAX_STR))?
    {
        upstream_tags.insert(entry?.0.value().1.to_owned());
    }
    let kept = kept_manifests(
        &rows,
        &tags,
        &Origin {
            pulled: &pulled,
            upstream_tags: &upstream_tags,
        },
        policy,
        now,
    );
    let mut removed = false;
    let mut edges = txn.open_table(meta::REFERRERS)?;
    let mut refs = txn.open_table(meta::BLOB_REFS)?;
    let mut pulls_table = txn.open_table(meta::CACHE_PULLS)?;
    let mut upstream_tags_table = txn.open_table(meta::UPSTREAM_TAGS)?;
    for (digest, row) in &rows {
        if kept.contains(digest) {
            continue;
        }
        manifests_table.remove((repo, digest.as_str()))?;
        pulls_table.remove((repo, digest.as_str()))?;
        for tag in tags.get(digest).into_iter().flatten() {
            tags_table.remove((repo, tag.as_str()))?;
            upstream_tags_table.remove((repo, tag.as_str()))?;
            report.tags += 1;
            report.items.push(format!("tag {repo}:{tag}"));
        }
        if let Some(subject) = &row.subject {
            edges.remove((repo, subject.as_str(), digest.as_str()))?;
        }
        for blob in &row.blobs {
            refs.remove((blob.as_str(), repo, digest.as_str()))?;
        }
        report.manifests += 1;
        report.items.push(format!("manifest {repo}@{digest}"));
        removed = true;
    }
    drop((
        manifests_table,
        tags_table,
        edges,
        refs,
        pulls_table,
        upstream_tags_table,
    ));
    Ok(links::forget_if_empty(txn, repo)? || removed)
}

/// What a pull-through cache knows of a repository's manifests: when it
/// last served each it fetched, and which tags it took from its upstream.
pub(super) struct Origin<'a> {
    pub pulled: &'a HashMap<String, u64>,
    pub upstream_tags: &'a BTreeSet<String>,
}

/// Which of a repository's manifests stay (`rows` by digest, `tags` by
/// the digest they name). Kept: every manifest younger than the grace
/// period; every manifest that has not expired and is tagged (or any,
/// without the untagged policy); the children of a kept index; the
/// unexpired referrers of a kept manifest. Both engines decide here.
pub(super) fn kept_manifests(
    rows: &BTreeMap<String, ManifestRow>,
    tags: &HashMap<String, Vec<String>>,
    origin: &Origin<'_>,
    policy: &Policy,
    now: u64,
) -> BTreeSet<String> {
    let grace_cutoff = meta::ago(now, policy.grace);
    let expiry_cutoff = policy.manifest_expiration.map(|e| meta::ago(now, e));
    let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (digest, row) in rows {
        if let Some(subject) = &row.subject {
            referrers.entry(subject.as_str()).or_default().push(digest);
        }
    }
    let cache_cutoff = policy.cache_expiration.map(|e| meta::ago(now, e));
    let stale = |digest: &str| {
        cache_cutoff.is_some_and(|cutoff| origin.pulled.get(digest).is_some_and(|at| *at <= cutoff))
    };
    let tagged_here = |digest: &str| {
        tags.get(digest)
            .is_some_and(|names| names.iter().any(|t| !origin.upstream_tags.contains(t)))
    };

    let expired = |row: &ManifestRow| expiry_cutoff.is_some_and(|cutoff| row.created <= cutoff);
    // A tag is always a root, and without the untagged policy so is every
    // unexpired manifest, referrer or not: OCI lets an artifact arrive
    // before its subject, or without one. What the cache fetched and nobody
    // pulled lately is no root, unless a tag pushed here names it.
    let root = |digest: &str, row: &ManifestRow| {
        row.created > grace_cutoff
            || (!expired(row)
                && (tagged_here(digest)
                    || (!stale(digest) && (tags.contains_key(digest) || !policy.untagged))))
    };
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&str> = VecDeque::new();
    for (digest, row) in rows {
        if root(digest, row) {
            queue.push_back(digest);
        }
    }
    while let Some(digest) = queue.pop_front() {
        if !kept.insert(digest) {
            continue;
        }
        let row = &rows[digest];
        for child in &row.manifests {
            if let Some((child, _)) = rows.get_key_value(child.as_str()) {
                queue.push_back(child);
            }
        }
        // An untagged referrer lives while its subject does.
        for &referrer in referrers.get(digest).into_iter().flatten() {
            if !expired(&rows[referrer]) {
                queue.push_back(referrer);
            }
        }
    }

    kept.into_iter().map(str::to_owned).collect()
}

#[derive(Default)]
struct Swept {
    /// Blobs whose rows went, with their sizes.
    blobs: Vec<(String, u64)>,
    links: usize,
}

impl Changes for Swept {
    fn changed(&self) -> bool {
        self.links > 0 || !self.blobs.is_empty()
    }
}

/// Drops the links no manifest needs, then the blobs left with no link.
/// Reports the blobs whose rows went, with their sizes.
fn sweep_batch(txn: &WriteTransaction, digests: &[String], cutoff: u64) -> Result<Swept> {
    let mut blobs = txn.open_table(meta::BLOBS)?;
    let mut links = txn.open_table(meta::LINKS)?;
    let mut repo_blobs = txn.open_table(meta::REPO_BLOBS)?;
    let refs = txn.open_table(meta::BLOB_REFS)?;
    let mut swept = Swept::default();
    let mut unlinked_from = BTreeSet::new();
    for digest in digests {
        let d = digest.as_str();
        let row = match blobs.get(d)? {
            Some(row) => meta::decode::<BlobRow>(row.value())?,
            None => continue,
        };
        if row.touched > cutoff {
            continue;
        }
        let mut linked: Vec<(String, u64)> = Vec::new();
        for entry in links.range((d, "")..=(d, meta::MAX_STR))? {
            let (key, at) = entry?;
            linked.push((key.value().1.to_owned(), at.value()));
        }
        let mut remaining = 0;
        for (repo, at) in linked {
            let needed = refs
                .range((d, repo.as_str(), "")..=(d, repo.as_str(), meta::MAX_STR))?
                .next()
                .is_some();
            if needed || at > cutoff {
                remaining += 1;
            } else {
                // No manifest needs it here, so there is no BLOB_REFS row
                // to drop with the link.
                links.remove((d, repo.as_str()))?;
                repo_blobs.remove((repo.as_str(), d))?;
                unlinked_from.insert(repo);
                swept.links += 1;
            }
        }
        if remaining == 0 {
            blobs.remove(d)?;
            swept.blobs.push((digest.clone(), row.size));
        }
    }
    drop((blobs, links, repo_blobs, refs));
    for (_, size) in &swept.blobs {
        super::stats::count_blob(txn, *size, false)?;
    }
    for repo in &unlinked_from {
        links::forget_if_empty(txn, repo)?;
    }
    Ok(swept)
}
