//! What a pull-through cache keeps of its upstream, on the clustered
//! store: manifests fetched by digest, and tags marked as the upstream's,
//! which a push takes over (see the embedded store's `cache`).

use super::super::manifests::fetched_manifest;
use super::super::{Error, Result, TagTarget, meta};
use super::blobs::remember;
use super::manifests::insert_row;
use super::{Cluster, signed};
use crate::oci::{Digest, RepoName, Tag};

impl Cluster {
    pub fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagTarget>> {
        self.run(async {
            let client = self.client().await?;
            let Some(row) = client
                .query_opt(
                    "SELECT t.digest, EXISTS (SELECT 1 FROM upstream_tags u
                                              WHERE u.repo = t.repo AND u.tag = t.tag)
                     FROM tags t WHERE t.repo = $1 AND t.tag = $2",
                    &[&repo.as_str(), &tag.as_str()],
                )
                .await?
            else {
                return Ok(None);
            };
            let digest: &str = row.get(0);
            Ok(Some(TagTarget {
                digest: Digest::parse(digest).ok_or_else(|| {
                    Error::Corrupt(format!("tag {} has a bad digest", tag.as_str()))
                })?,
                from_upstream: row.get(1),
            }))
        })
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
        let parsed = fetched_manifest(digest, content_type, &body)?;
        let (r, d) = (repo.as_str(), digest.as_str());
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            // The repository's row first, as every manifest write takes it.
            remember(&txn, r).await?;
            let now = signed(meta::now());
            let held = txn
                .query_opt(
                    "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2",
                    &[&r, &d],
                )
                .await?;
            if held.is_none() {
                txn.execute(
                    "INSERT INTO cache_pulls (repo, digest, pulled) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, digest) DO UPDATE SET pulled = excluded.pulled",
                    &[&r, &d, &now],
                )
                .await?;
                insert_row(&txn, r, digest, &parsed, &body).await?;
            } else {
                // Already here, it is the cache's only if the cache brought
                // it: one pushed here stays this registry's, whoever pulls
                // it by an upstream's tag.
                txn.execute(
                    "UPDATE cache_pulls SET pulled = $3 WHERE repo = $1 AND digest = $2",
                    &[&r, &d, &now],
                )
                .await?;
            }
            if let Some(tag) = tag {
                let t = tag.as_str();
                let pushed_here = txn
                    .query_opt(
                        "SELECT 1 FROM tags t WHERE t.repo = $1 AND t.tag = $2
                         AND NOT EXISTS (SELECT 1 FROM upstream_tags u
                                         WHERE u.repo = $1 AND u.tag = $2)",
                        &[&r, &t],
                    )
                    .await?
                    .is_some();
                if !pushed_here {
                    txn.execute(
                        "INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
                         ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest",
                        &[&r, &t, &d],
                    )
                    .await?;
                    txn.execute(
                        "INSERT INTO upstream_tags (repo, tag, fetched) VALUES ($1, $2, $3)
                         ON CONFLICT (repo, tag) DO UPDATE SET fetched = excluded.fetched",
                        &[&r, &t, &now],
                    )
                    .await?;
                }
            }
            txn.commit().await?;
            Ok(())
        })
    }

    /// Records that cached manifests were pulled now, so the cache
    /// expiration counts from now; manifests pushed here have no record.
    pub fn note_pulls(&self, pulls: Vec<(RepoName, Digest)>) -> Result<()> {
        let (repos, digests): (Vec<&str>, Vec<&str>) =
            pulls.iter().map(|(r, d)| (r.as_str(), d.as_str())).unzip();
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE cache_pulls c SET pulled = $3
                     FROM unnest($1::text[], $2::text[]) AS p(repo, digest)
                     WHERE c.repo = p.repo AND c.digest = p.digest",
                    &[&repos, &digests, &signed(meta::now())],
                )
                .await?;
            Ok(())
        })
    }
}
