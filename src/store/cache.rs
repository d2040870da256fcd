//! What a pull-through cache keeps of its upstream: manifests fetched by
//! digest, stored before their blobs (those come when first asked for), and
//! tags marked as the upstream's, which a push takes over.

use redb::{ReadableDatabase, ReadableTable};

use super::links;
use super::manifests;
use super::meta;
use super::{Embedded, Error, Result};
use crate::oci::{Digest, RepoName, Tag};

/// Where a tag points, and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TagTarget {
    pub digest: Digest,
    /// Taken from the upstream; false: pushed here, shadowing it.
    pub from_upstream: bool,
}

impl Embedded {
    pub fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagTarget>> {
        let (r, t) = (repo.as_str(), tag.as_str());
        let txn = self.db()?.begin_read()?;
        let Some(target) = txn.open_table(meta::TAGS)?.get((r, t))? else {
            return Ok(None);
        };
        let digest = Digest::parse(target.value())
            .ok_or_else(|| Error::Corrupt(format!("tag {t} has a bad digest")))?;
        let from_upstream = txn.open_table(meta::UPSTREAM_TAGS)?.get((r, t))?.is_some();
        Ok(Some(TagTarget {
            digest,
            from_upstream,
        }))
    }

    /// Stores a manifest fetched from an upstream as `digest`, which its
    /// bytes must hash to, and points `tag` at it unless a push has made
    /// that tag this registry's own.
    pub fn cache_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        content_type: Option<&str>,
        body: Vec<u8>,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let parsed = manifests::fetched_manifest(digest, content_type, &body)?;
        let row = manifests::row_of(&parsed, body);
        let (r, d) = (repo.as_str().to_owned(), digest.to_string());
        let tag = tag.map(|t| t.as_str().to_owned());
        self.write(None, move |txn| {
            let (r, d) = (r.as_str(), d.as_str());
            // A manifest already here is the cache's only if the cache
            // brought it: one pushed here stays this registry's, whoever
            // pulls it by an upstream's tag.
            let held = manifests::has_row(txn, r, d)?;
            {
                let mut pulls = txn.open_table(meta::CACHE_PULLS)?;
                if !held || pulls.get((r, d))?.is_some() {
                    pulls.insert((r, d), meta::now())?;
                }
            }
            if !held {
                manifests::insert_row(txn, r, d, &row)?;
            }
            if let Some(tag) = &tag {
                let mut tags = txn.open_table(meta::TAGS)?;
                let mut upstream_tags = txn.open_table(meta::UPSTREAM_TAGS)?;
                let pushed_here = tags.get((r, tag.as_str()))?.is_some()
                    && upstream_tags.get((r, tag.as_str()))?.is_none();
                if !pushed_here {
                    tags.insert((r, tag.as_str()), d)?;
                    upstream_tags.insert((r, tag.as_str()), meta::now())?;
                }
            }
            links::remember(txn, r)?;
            Ok(())
        })
    }
}

impl Embedded {
    /// Records that cached manifests were pulled now, so the cache
    /// expiration counts from now. Manifests pushed here have no such
    /// record and are left alone.
    pub fn note_pulls(&self, pulls: Vec<(RepoName, Digest)>) -> Result<()> {
        self.write(None, move |txn| {
            let mut table = txn.open_table(meta::CACHE_PULLS)?;
            let now = meta::now();
            for (repo, digest) in &pulls {
                let key = (repo.as_str(), digest.as_str());
                if table.get(key)?.is_some() {
                    table.insert(key, now)?;
                }
            }
            Ok(())
        })
    }
}
