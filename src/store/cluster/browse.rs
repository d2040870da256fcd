//! What a person browsing the registry is shown, from the clustered
//! store: a page of a repository's tags with their sizes, ages and
//! platforms, and a manifest with its config (see the embedded `browse`).

use std::collections::BTreeSet;

use super::super::browse::{MAX_CONFIG, config_digest, index_platforms};
use super::super::{Error, ManifestView, Result, TagSummary};
use super::blobs::blob_key;
use super::manifests::{limit, position, require_manifest};
use super::{Cluster, unsigned};
use crate::oci::manifest::platform;
use crate::oci::{Digest, RepoName};

impl Cluster {
    /// Up to `n` tags of `repo` after `after`, summarised, and whether more
    /// follow. `NameUnknown` when it holds no manifest.
    pub fn tag_summaries(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<TagSummary>, bool)> {
        let r = repo.as_str();
        self.run(async {
            let client = self.client().await?;
            require_manifest(&client, r).await?;
            let rows = client
                .query(
                    "SELECT t.tag, t.digest, m.media_type, m.body, m.created, m.blobs, m.children
                     FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest
                     WHERE t.repo = $1 AND t.tag > $2 ORDER BY t.tag LIMIT $3",
                    &[&r, &position(after), &limit(n)],
                )
                .await?;
            let more = rows.len() > n;
            let mut out = Vec::new();
            for row in rows.iter().take(n) {
                let body: Vec<u8> = row.get(3);
                let children: Vec<String> = row.get(6);
                // A layer the platforms share is counted once.
                let mut counted: BTreeSet<String> =
                    row.get::<_, Vec<String>>(5).into_iter().collect();
                let mut size = body.len() as u64;
                for child in client
                    .query(
                        "SELECT length(body), blobs FROM manifests
                         WHERE repo = $1 AND digest = ANY($2)",
                        &[&r, &children],
                    )
                    .await?
                {
                    size += u64::try_from(child.get::<_, i32>(0)).unwrap_or(0);
                    counted.extend(child.get::<_, Vec<String>>(1));
                }
                let counted: Vec<String> = counted.into_iter().collect();
                let blobs = client
                    .query_one(
                        "SELECT coalesce(sum(size), 0)::bigint FROM blobs WHERE digest = ANY($1)",
                        &[&counted],
                    )
                    .await?;
                size += unsigned(blobs.get(0));
                let platforms = if children.is_empty() {
                    match config_digest(&body) {
                        Some(config) => self
                            .read_config(&client, r, &config)
                            .await?
                            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                            .and_then(|config: serde_json::Value| platform(&config))
                            .into_iter()
                            .collect(),
                        None => Vec::new(),
                    }
                } else {
                    index_platforms(&body)
                };
                out.push(TagSummary {
                    tag: row.get(0),
                    digest: row.get(1),
                    media_type: row.get(2),
                    size,
                    created: unsigned(row.get(4)),
                    platforms,
                });
            }
            Ok((out, more))
        })
    }

    /// Manifest `digest` of `repo`, with its tags and its config.
    pub fn manifest_view(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestView> {
        let r = repo.as_str();
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT media_type, body, created FROM manifests
                     WHERE repo = $1 AND digest = $2",
                    &[&r, &digest.as_str()],
                )
                .await?
                .ok_or(Error::ManifestUnknown)?;
            let tags: Vec<String> = client
                .query(
                    "SELECT tag FROM tags WHERE repo = $1 AND digest = $2 ORDER BY tag",
                    &[&r, &digest.as_str()],
                )
                .await?
                .iter()
                .map(|t| t.get(0))
                .collect();
            let body: Vec<u8> = row.get(1);
            let config = match config_digest(&body) {
                Some(config) => self.read_config(&client, r, &config).await?,
                None => None,
            };
            Ok(ManifestView {
                digest: digest.clone(),
                media_type: row.get(0),
                body,
                created: unsigned(row.get(2)),
                tags,
                config,
            })
        })
    }

    /// Up to the first MiB of a config `repo` holds: a manifest may name
    /// any digest, and a page must not show another repository's. On the
    /// caller's connection: many pages each holding one while waiting for
    /// a second would hold them all.
    async fn read_config(
        &self,
        client: &tokio_postgres::Client,
        repo: &str,
        config: &Digest,
    ) -> Result<Option<Vec<u8>>> {
        let Some(row) = client
            .query_opt(
                "SELECT b.size FROM blobs b JOIN links l ON l.digest = b.digest
                 WHERE b.digest = $1 AND l.repo = $2",
                &[&config.as_str(), &repo],
            )
            .await?
        else {
            return Ok(None);
        };
        let len = unsigned(row.get(0)).min(MAX_CONFIG);
        let bytes = self.objects.read(&blob_key(config), 0, len).await?;
        Ok(Some(bytes.to_vec()))
    }
}
