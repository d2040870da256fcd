//! Manifests, tags, the referrers relation and the repository list, in
//! PostgreSQL. Row locks are always taken blobs first, then the
//! repository's row, so no two writers wait on each other in a circle.

use std::collections::{BTreeMap, HashSet};

use super::super::manifests::{page, pushed_manifest};
use super::super::{Error, PutManifest, Referrer, Result, StoredManifest, meta};
use super::blobs::{forget_if_empty, remember};
use super::{Cluster, signed};
use crate::oci::manifest::ParsedManifest;
use crate::oci::{Digest, Reference, RepoName};

fn strings(digests: &[Digest]) -> Vec<String> {
    digests.iter().map(|d| d.to_string()).collect()
}

/// Writes a manifest's row (replacing one of the same digest), the record
/// of which blobs it needs, and its referrers edge: what every way in
/// (push, cache) stores.
pub(super) async fn insert_row(
    txn: &tokio_postgres::Transaction<'_>,
    repo: &str,
    digest: &Digest,
    parsed: &ParsedManifest,
    body: &[u8],
) -> Result<()> {
    let d = digest.as_str();
    let blobs = strings(&parsed.blobs);
    let annotations = parsed
        .annotations
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("a map of strings serializes"));
    txn.execute(
        "INSERT INTO manifests (repo, digest, media_type, body, blobs, children,
                                subject, artifact_type, annotations, created)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (repo, digest) DO UPDATE SET
             media_type = excluded.media_type, body = excluded.body,
             blobs = excluded.blobs, children = excluded.children,
             subject = excluded.subject, artifact_type = excluded.artifact_type,
             annotations = excluded.annotations, created = excluded.created",
        &[
            &repo,
            &d,
            &parsed.media_type.as_str(),
            &body,
            &blobs,
            &strings(&parsed.manifests),
            &parsed.subject.as_ref().map(Digest::as_str),
            &parsed.artifact_type,
            &annotations,
            &signed(meta::now()),
        ],
    )
    .await?;
    insert_refs(txn, repo, digest, parsed).await
}

/// The record of which blobs a manifest needs, and its referrers edge.
pub(super) async fn insert_refs(
    txn: &tokio_postgres::Transaction<'_>,
    repo: &str,
    digest: &Digest,
    parsed: &ParsedManifest,
) -> Result<()> {
    let d = digest.as_str();
    txn.execute(
        "INSERT INTO blob_refs (blob, repo, manifest)
         SELECT unnest($1::text[]), $2, $3 ON CONFLICT DO NOTHING",
        &[&strings(&parsed.blobs), &repo, &d],
    )
    .await?;
    if let Some(subject) = &parsed.subject {
        txn.execute(
            "INSERT INTO referrers (repo, subject, referrer) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&repo, &subject.as_str(), &d],
        )
        .await?;
    }
    Ok(())
}

impl Cluster {
    /// Stores a manifest byte for byte. Its blobs are checked, and their
    /// rows locked against a sweep, in the transaction that stores it.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<PutManifest> {
        let (digest, parsed) = pushed_manifest(reference, content_type, &body)?;
        let (r, d) = (repo.as_str(), digest.as_str());
        let blobs = strings(&parsed.blobs);
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            // Locks each blob's row, so no sweep removes it until this
            // commits (and then the sweep sees the references), and its
            // link, which a sweep can drop while keeping the blob for other
            // repositories: a row a sweep only locked is not read again
            // when this gets it, so the link's own lock is what tells this
            // that it went.
            let present: HashSet<String> = txn
                .query(
                    "SELECT b.digest FROM blobs b JOIN links l ON l.digest = b.digest
                     WHERE b.digest = ANY($1) AND l.repo = $2
                     FOR SHARE OF b, l",
                    &[&blobs, &r],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if let Some(missing) = parsed.blobs.iter().find(|b| !present.contains(b.as_str())) {
                return Err(Error::ManifestBlobUnknown(missing.clone()));
            }
            // The repository's row, locked before anything is written: a
            // prune decides over a repository's manifests and tags under
            // the same lock, so it never acts on half of this PUT.
            remember(&txn, r).await?;
            insert_row(&txn, r, &digest, &parsed, &body).await?;
            // Pushed here, it is ours, whatever the cache fetched before.
            txn.execute(
                "DELETE FROM cache_pulls WHERE repo = $1 AND digest = $2",
                &[&r, &d],
            )
            .await?;
            if let Some(tag) = reference.tag() {
                txn.execute(
                    "INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest",
                    &[&r, &tag, &d],
                )
                .await?;
                // Pushed here, the tag is ours: it shadows any upstream's.
                txn.execute(
                    "DELETE FROM upstream_tags WHERE repo = $1 AND tag = $2",
                    &[&r, &tag],
                )
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })?;
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
        })
    }

    pub fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let r = repo.as_str();
        self.run(async {
            let client = self.client().await?;
            let row = match reference {
                Reference::Digest(d) => {
                    client
                        .query_opt(
                            "SELECT digest, media_type, body FROM manifests
                             WHERE repo = $1 AND digest = $2",
                            &[&r, &d.as_str()],
                        )
                        .await?
                }
                Reference::Tag(tag) => {
                    client
                        .query_opt(
                            "SELECT m.digest, m.media_type, m.body FROM tags t
                             JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest
                             WHERE t.repo = $1 AND t.tag = $2",
                            &[&r, &tag.as_str()],
                        )
                        .await?
                }
            };
            let row = row.ok_or(Error::ManifestUnknown)?;
            let digest: &str = row.get(0);
            Ok(StoredManifest {
                digest: Digest::parse(digest)
                    .ok_or_else(|| Error::Corrupt(format!("bad manifest digest {digest:?}")))?,
                media_type: row.get(1),
                body: bytes::Bytes::from(row.get::<_, Vec<u8>>(2)),
            })
        })
    }

    /// Deleting a tag removes the tag; deleting a digest removes the
    /// manifest, every tag that points at it, and its referrers edge.
    pub fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let r = repo.as_str();
        self.run(async {
            let mut client = self.client().await?;
            let txn = client.transaction().await?;
            // As a PUT does: no prune acts on this repository meanwhile.
            txn.execute("SELECT 1 FROM repos WHERE name = $1 FOR UPDATE", &[&r])
                .await?;
            match reference {
                Reference::Tag(tag) => {
                    let removed = txn
                        .execute(
                            "DELETE FROM tags WHERE repo = $1 AND tag = $2",
                            &[&r, &tag.as_str()],
                        )
                        .await?;
                    if removed == 0 {
                        return Err(Error::ManifestUnknown);
                    }
                    txn.execute(
                        "DELETE FROM upstream_tags WHERE repo = $1 AND tag = $2",
                        &[&r, &tag.as_str()],
                    )
                    .await?;
                }
                Reference::Digest(digest) => {
                    let d = digest.as_str();
                    let row = txn
                        .query_opt(
                            "DELETE FROM manifests WHERE repo = $1 AND digest = $2
                             RETURNING subject",
                            &[&r, &d],
                        )
                        .await?
                        .ok_or(Error::ManifestUnknown)?;
                    let subject: Option<String> = row.get(0);
                    txn.execute(
                        "DELETE FROM upstream_tags u USING tags t
                         WHERE u.repo = $1 AND t.repo = $1 AND t.tag = u.tag AND t.digest = $2",
                        &[&r, &d],
                    )
                    .await?;
                    txn.execute(
                        "DELETE FROM tags WHERE repo = $1 AND digest = $2",
                        &[&r, &d],
                    )
                    .await?;
                    txn.execute(
                        "DELETE FROM cache_pulls WHERE repo = $1 AND digest = $2",
                        &[&r, &d],
                    )
                    .await?;
                    txn.execute(
                        "DELETE FROM blob_refs WHERE repo = $1 AND manifest = $2",
                        &[&r, &d],
                    )
                    .await?;
                    if let Some(subject) = subject {
                        txn.execute(
                            "DELETE FROM referrers
                             WHERE repo = $1 AND subject = $2 AND referrer = $3",
                            &[&r, &subject, &d],
                        )
                        .await?;
                    }
                    forget_if_empty(&txn, r).await?;
                }
            }
            txn.commit().await?;
            Ok(())
        })
    }

    /// Up to `n` tags after `last`, in order, and whether more follow.
    /// `NameUnknown` while the repository holds no manifest.
    pub fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool)> {
        let r = repo.as_str();
        self.run(async {
            let client = self.client().await?;
            require_manifest(&client, r).await?;
            let rows = client
                .query(
                    "SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3",
                    &[&r, &position(last), &limit(n)],
                )
                .await?;
            let names = rows.iter().map(|row| Ok(row.get::<_, String>(0)));
            page(names, last, n, String::as_str)
        })
    }

    /// Up to `n` repository names after `last`, and whether more follow.
    /// Only names that pass `visible` count.
    pub fn list_repositories(
        &self,
        last: Option<&str>,
        n: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<String>, bool)> {
        self.run(async {
            let client = self.client().await?;
            let mut out = Vec::new();
            let mut after = position(last).to_owned();
            // Read in batches until a page of visible names (and one more,
            // to tell whether more follow) is found.
            loop {
                let rows = client
                    .query(
                        "SELECT name FROM repos WHERE name > $1 ORDER BY name LIMIT 1000",
                        &[&after],
                    )
                    .await?;
                let Some(final_row) = rows.last() else {
                    return Ok((out, false));
                };
                after = final_row.get(0);
                for row in &rows {
                    let name: String = row.get(0);
                    if !visible(&name) {
                        continue;
                    }
                    if out.len() == n {
                        return Ok((out, true));
                    }
                    out.push(name);
                }
            }
        })
    }

    /// The manifests in `repo` whose subject is `subject`, optionally only
    /// those of one artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        if artifact_type.is_some_and(|t| t.contains('\0')) {
            // No artifact type holds one (see `oci::manifest::parse`).
            return Ok(Vec::new());
        }
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT m.digest, m.media_type, length(m.body), m.artifact_type, m.annotations
                     FROM referrers r JOIN manifests m
                       ON m.repo = r.repo AND m.digest = r.referrer
                     WHERE r.repo = $1 AND r.subject = $2
                       AND ($3::text IS NULL OR m.artifact_type = $3)
                     ORDER BY m.digest",
                    &[&repo.as_str(), &subject.as_str(), &artifact_type],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let annotations: Option<String> = row.get(4);
                    let annotations = annotations
                        .map(|a| serde_json::from_str::<BTreeMap<String, String>>(&a))
                        .transpose()
                        .map_err(|e| Error::Corrupt(format!("bad annotations: {e}")))?;
                    Ok(Referrer {
                        digest: row.get(0),
                        media_type: row.get(1),
                        size: u64::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                        artifact_type: row.get(3),
                        annotations,
                    })
                })
                .collect()
        })
    }
}

/// `NameUnknown` unless `repo` holds a manifest: until it does, it has no
/// tags to list (every tag names one).
pub(super) async fn require_manifest(client: &tokio_postgres::Client, repo: &str) -> Result<()> {
    let holds = client
        .query_opt("SELECT 1 FROM manifests WHERE repo = $1 LIMIT 1", &[&repo])
        .await?;
    holds.map(|_| ()).ok_or(Error::NameUnknown)
}

/// Where a page after `last` starts, as PostgreSQL can be asked: text
/// holds no NUL there, and as no name does either, the names after
/// `a\0b` are those after `a`.
pub(super) fn position(last: Option<&str>) -> &str {
    let last = last.unwrap_or("");
    last.split('\0').next().unwrap_or(last)
}

/// A LIMIT that also tells whether more rows follow.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1)
}
