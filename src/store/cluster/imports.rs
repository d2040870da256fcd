//! What an import makes visible on the clustered store: an image's staged
//! blobs linked into its repository, its manifests stored and its tag set,
//! in one transaction (see the embedded store's `imports`).

use super::super::{Error, ImportedManifest, Result, meta};
use super::blobs::remember;
use super::manifests::{insert_refs, insert_row};
use super::{Cluster, signed};
use crate::oci::manifest::{self, ParsedManifest};
use crate::oci::{Digest, RepoName, Tag};

impl Cluster {
    /// Makes an image visible in `repo` at once: links `blobs` (which must
    /// all be held), stores `manifests` (their own references checked by
    /// the caller), and points `tag` at its manifest.
    pub fn import_image(
        &self,
        repo: &RepoName,
        blobs: Vec<Digest>,
        manifests: Vec<ImportedManifest>,
        tag: Option<(Tag, Digest)>,
    ) -> Result<()> {
        let mut parsed: Vec<(&Digest, ParsedManifest, &[u8])> = Vec::new();
        for m in &manifests {
            let p = manifest::parse(m.media_type.as_deref(), &m.body)
                .map_err(Error::ManifestInvalid)?;
            parsed.push((&m.digest, p, &m.body));
        }
        let r = repo.as_str();
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            let now = signed(meta::now());
            // Every blob's row first, then its links, then the repository's
            // row: the one order every writer locks in (a blob DELETE holds
            // a link and then waits for the repository).
            for blob in &blobs {
                let touched = txn
                    .execute(
                        "UPDATE blobs SET touched = $2 WHERE digest = $1",
                        &[&blob.as_str(), &now],
                    )
                    .await?;
                if touched == 0 {
                    return Err(Error::ManifestBlobUnknown(blob.clone()));
                }
            }
            for blob in &blobs {
                txn.execute(
                    "INSERT INTO links (digest, repo, linked) VALUES ($1, $2, $3)
                     ON CONFLICT (digest, repo) DO UPDATE SET linked = excluded.linked",
                    &[&blob.as_str(), &r, &now],
                )
                .await?;
            }
            remember(&txn, r).await?;
            for (digest, p, body) in &parsed {
                let d = digest.as_str();
                let held = txn
                    .query_opt(
                        "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2",
                        &[&r, &d],
                    )
                    .await?;
                // A row already here keeps its age; its records are made
                // whole again (a blob delete drops them).
                match held {
                    Some(_) => insert_refs(&txn, r, digest, p).await?,
                    None => insert_row(&txn, r, digest, p, body).await?,
                }
                // Imported here, it is ours, whatever a cache fetched before.
                txn.execute(
                    "DELETE FROM cache_pulls WHERE repo = $1 AND digest = $2",
                    &[&r, &d],
                )
                .await?;
            }
            if let Some((tag, digest)) = &tag {
                txn.execute(
                    "INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest",
                    &[&r, &tag.as_str(), &digest.as_str()],
                )
                .await?;
                txn.execute(
                    "DELETE FROM upstream_tags WHERE repo = $1 AND tag = $2",
                    &[&r, &tag.as_str()],
                )
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
    }
}
