//! Manifests, tags, the referrers relation and the repository list.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::links;
use super::meta::{self, ManifestRow};
use super::{Embedded, Error, Result};
use crate::oci::manifest::{self, ParsedManifest};
use crate::oci::{Digest, Reference, RepoName};

/// A manifest as stored: its exact bytes and media type.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    /// Shared, not copied, by every clone: the served cache hands one out
    /// per GET.
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One entry of a referrers list.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Up to `n` items from a run sorted by `name` that starts at `last`
/// (which is skipped), and whether more follow.
pub(super) fn page<T>(
    items: impl Iterator<Item = Result<T>>,
    last: Option<&str>,
    n: usize,
    name: fn(&T) -> &str,
) -> Result<(Vec<T>, bool)> {
    let mut out = Vec::new();
    for item in items {
        let item = item?;
        if last == Some(name(&item)) {
            continue;
        }
        if out.len() == n {
            return Ok((out, true));
        }
        out.push(item);
    }
    Ok((out, false))
}

/// Whether `repo` holds a manifest: until it does, it has no tags to list
/// (every tag names one), and one that holds only blobs is as unknown as
/// one never pushed to.
pub(super) fn holds_manifest(
    manifests: &redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    repo: &str,
) -> Result<bool> {
    Ok(manifests
        .range((repo, "")..=(repo, meta::MAX_STR))?
        .next()
        .is_some())
}

/// A pushed manifest's digest and what it refers to, once its bytes match
/// the digest it was pushed by (by tag: its sha256) and it parses.
pub(super) fn pushed_manifest(
    reference: &Reference,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Digest, ParsedManifest)> {
    let expected = match reference {
        Reference::Digest(expected) => expected.clone(),
        Reference::Tag(_) => Digest::of(body),
    };
    Ok((
        expected.clone(),
        fetched_manifest(&expected, content_type, body)?,
    ))
}

/// What a manifest refers to, once its bytes hash to `digest` (in its
/// algorithm) and it parses.
pub(super) fn fetched_manifest(
    digest: &Digest,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ParsedManifest> {
    let actual = Digest::with(digest.algorithm(), body);
    if &actual != digest {
        return Err(Error::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    manifest::parse(content_type, body).map_err(Error::ManifestInvalid)
}

/// The row that stores a manifest's bytes and what they refer to.
pub(super) fn row_of(parsed: &ParsedManifest, body: Vec<u8>) -> ManifestRow {
    ManifestRow {
        media_type: parsed.media_type.as_str().to_owned(),
        body,
        blobs: parsed.blobs.iter().map(|d| d.to_string()).collect(),
        manifests: parsed.manifests.iter().map(|d| d.to_string()).collect(),
        subject: parsed.subject.as_ref().map(|d| d.to_string()),
        artifact_type: parsed.artifact_type.clone(),
        annotations: parsed.annotations.clone(),
        created: meta::now(),
    }
}

/// Writes a manifest's row, the record of which blobs it needs, and its
/// referrers edge: what every way in (push, cache, import) stores.
pub(super) fn insert_row(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    row: &ManifestRow,
) -> Result<()> {
    txn.open_table(meta::MANIFESTS)?
        .insert((repo, digest), meta::encode(row).as_slice())?;
    insert_refs(txn, repo, digest, row)
}

/// The record of which blobs a manifest needs, and its referrers edge.
pub(super) fn insert_refs(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    row: &ManifestRow,
) -> Result<()> {
    let mut refs = txn.open_table(meta::BLOB_REFS)?;
    for blob in &row.blobs {
        refs.insert((blob.as_str(), repo, digest), ())?;
    }
    if let Some(subject) = &row.subject {
        txn.open_table(meta::REFERRERS)?
            .insert((repo, subject.as_str(), digest), ())?;
    }
    Ok(())
}

/// Rebuilds BLOB_REFS from the manifests, once per database: before
/// c0312eb a blob DELETE dropped its repository's rows, and a blob pushed
/// again after one was needed by no manifest as far as the sweep could tell.
pub(super) fn rebuild_refs_once(txn: &WriteTransaction) -> Result<()> {
    const REPAIR: &str = "blob_refs";
    let mut repairs = txn.open_table(meta::REPAIRS)?;
    if repairs.get(REPAIR)?.is_some() {
        return Ok(());
    }
    let manifests = txn.open_table(meta::MANIFESTS)?;
    let mut refs = txn.open_table(meta::BLOB_REFS)?;
    let mut rebuilt = 0u64;
    for entry in manifests.iter()? {
        let (key, value) = entry?;
        let (repo, digest) = key.value();
        let row: ManifestRow = meta::decode(value.value())?;
        for blob in &row.blobs {
            if refs.insert((blob.as_str(), repo, digest), ())?.is_none() {
                rebuilt += 1;
            }
        }
    }
    if rebuilt > 0 {
        log::warn!("restored {rebuilt} records of blobs that manifests need");
    }
    repairs.insert(REPAIR, meta::now())?;
    Ok(())
}

/// Whether `repo` holds manifest `digest`.
pub(super) fn has_row(txn: &WriteTransaction, repo: &str, digest: &str) -> Result<bool> {
    Ok(txn
        .open_table(meta::MANIFESTS)?
        .get((repo, digest))?
        .is_some())
}

impl Embedded {
    /// Stores a manifest byte for byte. Its blobs are checked in the same
    /// write transaction that stores it, so it never lands pointing at a
    /// blob that is not there.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<PutManifest> {
        let (digest, parsed) = pushed_manifest(reference, content_type, &body)?;
        let row = row_of(&parsed, body);
        let (r, d, tag) = (
            repo.as_str().to_owned(),
            digest.to_string(),
            reference.tag().map(str::to_owned),
        );
        let blobs = parsed.blobs.clone();
        self.write(None, move |txn| {
            let (r, d) = (r.as_str(), d.as_str());
            // Every check before any write: the transaction is shared. An
            // index's children are not checked: a sparse index (one platform
            // copied, or children still to come) is valid, and prune keeps
            // whichever children are present.
            {
                let links = txn.open_table(meta::LINKS)?;
                let rows = txn.open_table(meta::BLOBS)?;
                for blob in &blobs {
                    let b = blob.as_str();
                    if links.get((b, r))?.is_none() || rows.get(b)?.is_none() {
                        return Err(Error::ManifestBlobUnknown(blob.clone()));
                    }
                }
            }
            insert_row(txn, r, d, &row)?;
            // Pushed here, it is ours, whatever the cache fetched before.
            txn.open_table(meta::CACHE_PULLS)?.remove((r, d))?;
            if let Some(tag) = &tag {
                txn.open_table(meta::TAGS)?.insert((r, tag.as_str()), d)?;
                // Pushed here, the tag is ours: it shadows any upstream's.
                txn.open_table(meta::UPSTREAM_TAGS)?
                    .remove((r, tag.as_str()))?;
            }
            links::remember(txn, r)?;
            Ok(())
        })?;
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
        })
    }

    pub fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let (r, key) = (repo.as_str(), reference.as_str());
        // Read before the transaction begins: see served.rs.
        let generation = self.db.generation();
        if let Some(manifest) = self.served.get(r, key, generation) {
            return Ok(manifest);
        }
        let manifest = self.read_manifest(repo, reference)?;
        self.served.put(r, key, generation, &manifest);
        Ok(manifest)
    }

    fn read_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let r = repo.as_str();
        let txn = self.db()?.begin_read()?;
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                let tags = txn.open_table(meta::TAGS)?;
                let target = tags.get((r, tag.as_str()))?.ok_or(Error::ManifestUnknown)?;
                Digest::parse(target.value()).ok_or_else(|| {
                    Error::Corrupt(format!("tag {} has a bad digest", tag.as_str()))
                })?
            }
        };
        let manifests = txn.open_table(meta::MANIFESTS)?;
        let row = manifests
            .get((r, digest.as_str()))?
            .ok_or(Error::ManifestUnknown)?;
        let served: meta::ServedManifest = meta::decode_in_place(row.value())?;
        Ok(StoredManifest {
            digest,
            media_type: served.media_type.to_owned(),
            body: bytes::Bytes::copy_from_slice(served.body),
        })
    }

    /// Deleting a tag removes the tag; deleting a digest removes the manifest,
    /// every tag that points at it, and its place in the referrers list.
    pub fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let r = repo.as_str().to_owned();
        let reference = reference.clone();
        self.write(None, move |txn| {
            let r = r.as_str();
            let mut tags = txn.open_table(meta::TAGS)?;
            match &reference {
                Reference::Tag(tag) => {
                    if tags.remove((r, tag.as_str()))?.is_none() {
                        return Err(Error::ManifestUnknown);
                    }
                    txn.open_table(meta::UPSTREAM_TAGS)?
                        .remove((r, tag.as_str()))?;
                }
                Reference::Digest(digest) => {
                    let d = digest.as_str();
                    let mut manifests = txn.open_table(meta::MANIFESTS)?;
                    let row: ManifestRow = match manifests.get((r, d))? {
                        Some(row) => meta::decode(row.value())?,
                        None => return Err(Error::ManifestUnknown),
                    };
                    manifests.remove((r, d))?;
                    let mut gone = Vec::new();
                    for entry in tags.range((r, "")..=(r, meta::MAX_STR))? {
                        let (key, target) = entry?;
                        if target.value() == d {
                            gone.push(key.value().1.to_owned());
                        }
                    }
                    let mut upstream_tags = txn.open_table(meta::UPSTREAM_TAGS)?;
                    for tag in &gone {
                        tags.remove((r, tag.as_str()))?;
                        upstream_tags.remove((r, tag.as_str()))?;
                    }
                    drop(upstream_tags);
                    txn.open_table(meta::CACHE_PULLS)?.remove((r, d))?;
                    let mut refs = txn.open_table(meta::BLOB_REFS)?;
                    for blob in &row.blobs {
                        refs.remove((blob.as_str(), r, d))?;
                    }
                    if let Some(subject) = &row.subject {
                        txn.open_table(meta::REFERRERS)?
                            .remove((r, subject.as_str(), d))?;
                    }
                    drop((tags, manifests, refs));
                    links::forget_if_empty(txn, r)?;
                }
            }
            Ok(())
        })
    }

    /// Up to `n` tags after `last`, in order, and whether more follow.
    /// `NameUnknown` when nothing was ever pushed to the repository.
    pub fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool)> {
        let r = repo.as_str();
        let txn = self.db()?.begin_read()?;
        let tags = txn.open_table(meta::TAGS)?;
        if !holds_manifest(&txn.open_table(meta::MANIFESTS)?, r)? {
            return Err(Error::NameUnknown);
        }
        let start = last.unwrap_or("");
        let names = tags
            .range((r, start)..=(r, meta::MAX_STR))?
            .map(|entry| Ok(entry?.0.value().1.to_owned()));
        page(names, last, n, String::as_str)
    }

    /// Up to `n` repository names after `last`, and whether more follow.
    /// Only names that pass `visible` count.
    pub fn list_repositories(
        &self,
        last: Option<&str>,
        n: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<String>, bool)> {
        let txn = self.db()?.begin_read()?;
        let repos = txn.open_table(meta::REPOS)?;
        let names = repos
            .range(last.unwrap_or("")..)?
            .map(|entry| Ok(entry?.0.value().to_owned()))
            .filter(|name: &Result<String>| name.as_ref().map_or(true, |n| visible(n)));
        page(names, last, n, String::as_str)
    }

    /// The manifests in `repo` whose subject is `subject`, optionally only
    /// those of one artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let r = repo.as_str();
        let s = subject.as_str();
        let txn = self.db()?.begin_read()?;
        let edges = txn.open_table(meta::REFERRERS)?;
        let manifests = txn.open_table(meta::MANIFESTS)?;
        let mut out = Vec::new();
        for entry in edges.range((r, s, "")..=(r, s, meta::MAX_STR))? {
            let (key, _) = entry?;
            let digest = key.value().2;
            let Some(row) = manifests.get((r, digest))? else {
                continue;
            };
            let row: ManifestRow = meta::decode(row.value())?;
            if artifact_type.is_some_and(|want| row.artifact_type.as_deref() != Some(want)) {
                continue;
            }
            out.push(Referrer {
                digest: digest.to_owned(),
                media_type: row.media_type,
                size: row.body.len() as u64,
                artifact_type: row.artifact_type,
                annotations: row.annotations,
            });
        }
        Ok(out)
    }
}
