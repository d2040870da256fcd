//! Pruning the clustered store, on the embedded store's terms (which
//! manifests stay is decided by the same function), with PostgreSQL's row
//! locks where the embedded store has one writer:
//! - a repository's manifests are decided on under its row's lock, which
//!   every manifest PUT and DELETE takes before it writes;
//! - a blob is swept under its row's lock (FOR UPDATE), which a manifest
//!   PUT that needs it holds shared until it commits; the references are
//!   read after the lock, in a fresh statement, so none committed is missed;
//! - its object goes afterwards under the digest's advisory lock, only if
//!   no finish brought the blob back meanwhile.
//!
//! Then what nothing owns goes: pieces of uploads that are gone, blob
//! objects with no row, and multipart uploads a dead node left, once
//! older than the grace period (a live request's are younger).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio_postgres::Transaction;

use super::super::Result;
use super::super::meta::{self, ManifestRow};
use super::super::prune::{Origin, Policy, Report, kept_manifests};
use super::blobs::forget_if_empty;
use super::uploads::lock_key;
use super::{Cluster, signed, unsigned};
use crate::oci::Digest;

/// Runs `$work` (an expression using `$txn`) in the dry run's transaction,
/// or in a transaction of its own that commits.
macro_rules! unit {
    ($self:ident, $dry:expr, |$txn:ident| $work:expr) => {
        match $dry {
            Some($txn) => $work,
            None => {
                let mut client = $self.client().await?;
                let owned = client.transaction().await?;
                let $txn = &owned;
                let out = $work;
                owned.commit().await?;
                out
            }
        }
    };
}

/// Blobs old enough to sweep with a link no manifest needs, or none at
/// all: the only ones a sweep changes. Only a hint; each is checked again
/// under its row's lock.
const CANDIDATES: &str = "SELECT b.digest FROM blobs b WHERE b.touched <= $1
     AND (NOT EXISTS (SELECT 1 FROM links l WHERE l.digest = b.digest)
          OR EXISTS (SELECT 1 FROM links l WHERE l.digest = b.digest
                     AND NOT EXISTS (SELECT 1 FROM blob_refs r
                                     WHERE r.blob = l.digest AND r.repo = l.repo)))";

impl Cluster {
    /// Runs one prune. With `dry_run` it all happens in one transaction
    /// that is rolled back, and no object is touched.
    pub fn prune(&self, policy: &Policy, dry_run: bool) -> Result<Report> {
        self.run(async {
            let now = meta::now();
            let mut report = Report::default();
            // A connection held through the prune only for a dry run's
            // transaction: each unit of a real one takes its own.
            let mut dry_client = match dry_run {
                true => Some(self.client().await?),
                false => None,
            };
            let dry = match &mut dry_client {
                Some(client) => {
                    // One snapshot for every copy: a push committing between
                    // two of them would leave the copies disagreeing.
                    let txn = client
                        .build_transaction()
                        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                        .start()
                        .await?;
                    shadow(&txn).await?;
                    Some(txn)
                }
                None => None,
            };
            let uploads_cutoff = meta::ago(now, policy.upload_expiration);
            self.expire_uploads(dry.as_deref(), uploads_cutoff, &mut report)
                .await?;
            let repos: Vec<String> = self
                .client()
                .await?
                .query("SELECT name FROM repos ORDER BY name", &[])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for repo in &repos {
                unit!(self, dry.as_deref(), |txn| {
                    prune_repo(txn, repo, policy, now, &mut report).await?
                });
            }
            let grace = meta::ago(now, policy.grace);
            self.sweep_blobs(dry.as_deref(), grace, &mut report).await?;
            if let Some(txn) = dry {
                txn.rollback().await?;
            } else {
                self.remove_leftovers(grace).await?;
            }
            Ok(report)
        })
    }

    /// Removes upload sessions idle longer than `expiration`.
    pub fn expire_stale_uploads(&self, expiration: std::time::Duration) -> Result<Report> {
        self.run(async {
            let mut report = Report::default();
            let cutoff = meta::ago(meta::now(), expiration);
            self.expire_uploads(None, cutoff, &mut report).await?;
            Ok(report)
        })
    }

    async fn expire_uploads(
        &self,
        dry: Option<&Transaction<'_>>,
        cutoff: u64,
        report: &mut Report,
    ) -> Result<()> {
        // A chunk that lands meanwhile finds its session gone at commit.
        let rows = unit!(self, dry, |txn| {
            txn.query(
                r#"DELETE FROM uploads WHERE updated <= $1 RETURNING id, "offset", piece_keys"#,
                &[&signed(cutoff)],
            )
            .await?
        });
        for row in rows {
            let (id, bytes, keys): (String, i64, Vec<String>) =
                (row.get(0), row.get(1), row.get(2));
            if dry.is_none() {
                for key in &keys {
                    self.objects.delete(key).await?;
                }
            }
            report.uploads += 1;
            report.bytes += unsigned(bytes);
            report.items.push(format!("upload {id} ({bytes} bytes)"));
        }
        Ok(())
    }

    async fn sweep_blobs(
        &self,
        dry: Option<&Transaction<'_>>,
        cutoff: u64,
        report: &mut Report,
    ) -> Result<()> {
        let old: Vec<String> = match dry {
            Some(txn) => txn.query(CANDIDATES, &[&signed(cutoff)]).await?,
            None => {
                self.client()
                    .await?
                    .query(CANDIDATES, &[&signed(cutoff)])
                    .await?
            }
        }
        .iter()
        .map(|row| row.get(0))
        .collect();
        let mut unlinked_from = BTreeSet::new();
        for digest in &old {
            let swept = unit!(self, dry, |txn| {
                sweep_blob(txn, digest, cutoff, &mut unlinked_from).await?
            });
            if let Some(size) = swept {
                if dry.is_none() {
                    self.remove_blob_object(digest).await?;
                }
                report.blobs += 1;
                report.bytes += size;
                report.items.push(format!("blob {digest} ({size} bytes)"));
            }
        }
        // Apart from the sweep's transactions: a repository's row is
        // locked after blobs' rows, never before.
        for repo in &unlinked_from {
            unit!(self, dry, |txn| forget_if_empty(txn, repo).await?);
        }
        Ok(())
    }

    /// Removes a swept blob's object, unless a finish brought the blob
    /// back since (it holds the same advisory lock while it writes).
    pub(super) async fn remove_blob_object(&self, digest: &str) -> Result<()> {
        let Some(digest) = Digest::parse(digest) else {
            return Ok(());
        };
        let mut client = self.client().await?;
        let txn = client.transaction().await?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&digest)])
            .await?;
        let back = txn
            .query_opt("SELECT 1 FROM blobs WHERE digest = $1", &[&digest.as_str()])
            .await?;
        if back.is_none() {
            self.objects
                .delete(&super::blobs::blob_key(&digest))
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Removes objects no row owns that are older than `cutoff`, and the
    /// multipart uploads of nodes that died composing a blob.
    async fn remove_leftovers(&self, cutoff: u64) -> Result<()> {
        let orphans = self.orphans(cutoff).await?;
        for orphan in &orphans {
            self.remove_orphan(orphan).await?;
        }
        let removed = orphans.len();
        let aborted = self.objects.abort_stale_multipart(cutoff).await?;
        if removed + aborted > 0 {
            log::info!(
                "removed {removed} orphaned upload pieces, aborted {aborted} multipart uploads"
            );
        }
        Ok(())
    }
}

/// The tables a prune changes. A dry run works on copies of its own.
const PRUNED: [&str; 9] = [
    "uploads",
    "repos",
    "cache_pulls",
    "tags",
    "upstream_tags",
    "blob_refs",
    "referrers",
    "blobs",
    "links",
];

/// Copies the tables a prune changes into temporary tables of the dry
/// run's transaction, which its session then finds before the real ones
/// (its search_path is set so, whatever the role's says). What the dry run
/// locks and deletes are its copies, and no push waits on it; on the real
/// tables it took each repository's row, and the rows it deleted, until it
/// ended. Manifest bodies are not copied: a prune never reads them.
async fn shadow(txn: &Transaction<'_>) -> Result<()> {
    let real = async |table: &str| -> Result<String> {
        let row = txn
            .query_one(
                "SELECT quote_ident(n.nspname) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::regclass",
                &[&table],
            )
            .await?;
        Ok(format!("{}.{table}", row.get::<_, String>(0)))
    };
    let copy = |table: &str, real: &str| {
        format!(
            "CREATE TEMP TABLE {table} (LIKE {real} INCLUDING DEFAULTS INCLUDING INDEXES)
             ON COMMIT DROP"
        )
    };
    for table in PRUNED {
        let real = real(table).await?;
        txn.batch_execute(&format!(
            "{}; INSERT INTO pg_temp.{table} SELECT * FROM {real}",
            copy(table, &real)
        ))
        .await?;
    }
    let manifests = real("manifests").await?;
    txn.batch_execute(&format!(
        "{}; INSERT INTO pg_temp.manifests (repo, digest, media_type, body, blobs, children,
                                           subject, created)
         SELECT repo, digest, media_type, ''::bytea, blobs, children, subject, created
         FROM {manifests}",
        copy("manifests", &manifests)
    ))
    .await?;
    let schema = manifests
        .rsplit_once('.')
        .map_or("public", |(schema, _)| schema);
    txn.batch_execute(&format!("SET LOCAL search_path TO pg_temp, {schema}"))
        .await?;
    Ok(())
}

/// Decides, under the repository row's lock, which of its manifests stay
/// (see [`kept_manifests`]), and removes the rest with their tags and
/// edges.
async fn prune_repo(
    txn: &Transaction<'_>,
    repo: &str,
    policy: &Policy,
    now: u64,
    report: &mut Report,
) -> Result<()> {
    let locked = txn
        .query_opt("SELECT 1 FROM repos WHERE name = $1 FOR UPDATE", &[&repo])
        .await?;
    if locked.is_none() {
        return Ok(());
    }
    let mut rows: BTreeMap<String, ManifestRow> = BTreeMap::new();
    for row in txn
        .query(
            "SELECT digest, created, children, subject FROM manifests WHERE repo = $1",
            &[&repo],
        )
        .await?
    {
        rows.insert(
            row.get(0),
            ManifestRow {
                media_type: String::new(),
                body: Vec::new(),
                blobs: Vec::new(),
                manifests: row.get(2),
                subject: row.get(3),
                artifact_type: None,
                annotations: None,
                created: unsigned(row.get(1)),
            },
        );
    }
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for row in txn
        .query("SELECT tag, digest FROM tags WHERE repo = $1", &[&repo])
        .await?
    {
        tags.entry(row.get(1)).or_default().push(row.get(0));
    }
    let pulled: HashMap<String, u64> = txn
        .query(
            "SELECT digest, pulled FROM cache_pulls WHERE repo = $1",
            &[&repo],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), unsigned(row.get(1))))
        .collect();
    let upstream_tags: BTreeSet<String> = txn
        .query("SELECT tag FROM upstream_tags WHERE repo = $1", &[&repo])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let origin = Origin {
        pulled: &pulled,
        upstream_tags: &upstream_tags,
    };
    let kept = kept_manifests(&rows, &tags, &origin, policy, now);
    let gone: Vec<&String> = rows.keys().filter(|d| !kept.contains(*d)).collect();
    for digest in gone {
        let d = digest.as_str();
        txn.execute(
            "DELETE FROM manifests WHERE repo = $1 AND digest = $2",
            &[&repo, &d],
        )
        .await?;
        txn.execute(
            "DELETE FROM cache_pulls WHERE repo = $1 AND digest = $2",
            &[&repo, &d],
        )
        .await?;
        for tag in tags.get(digest).into_iter().flatten() {
            txn.execute(
                "DELETE FROM tags WHERE repo = $1 AND tag = $2",
                &[&repo, tag],
            )
            .await?;
            txn.execute(
                "DELETE FROM upstream_tags WHERE repo = $1 AND tag = $2",
                &[&repo, tag],
            )
            .await?;
            report.tags += 1;
            report.items.push(format!("tag {repo}:{tag}"));
        }
        txn.execute(
            "DELETE FROM blob_refs WHERE repo = $1 AND manifest = $2",
            &[&repo, &d],
        )
        .await?;
        txn.execute(
            "DELETE FROM referrers WHERE repo = $1 AND referrer = $2",
            &[&repo, &d],
        )
        .await?;
        report.manifests += 1;
        report.items.push(format!("manifest {repo}@{digest}"));
    }
    forget_if_empty(txn, repo).await
}

/// Drops `digest`'s links that no manifest needs, then its row if no link
/// is left; the blob's size if the row went.
async fn sweep_blob(
    txn: &Transaction<'_>,
    digest: &str,
    cutoff: u64,
    unlinked_from: &mut BTreeSet<String>,
) -> Result<Option<u64>> {
    let Some(row) = txn
        .query_opt(
            "SELECT size, touched FROM blobs WHERE digest = $1 FOR UPDATE",
            &[&digest],
        )
        .await?
    else {
        return Ok(None);
    };
    if unsigned(row.get(1)) > cutoff {
        return Ok(None);
    }
    let links = txn
        .query(
            "SELECT l.repo, l.linked, EXISTS (
                 SELECT 1 FROM blob_refs r WHERE r.blob = l.digest AND r.repo = l.repo)
             FROM links l WHERE l.digest = $1",
            &[&digest],
        )
        .await?;
    let mut remaining = 0;
    for link in links {
        let (repo, linked, needed): (String, i64, bool) = (link.get(0), link.get(1), link.get(2));
        if needed || unsigned(linked) > cutoff {
            remaining += 1;
            continue;
        }
        txn.execute(
            "DELETE FROM links WHERE digest = $1 AND repo = $2",
            &[&digest, &repo],
        )
        .await?;
        unlinked_from.insert(repo);
    }
    if remaining > 0 {
        return Ok(None);
    }
    txn.execute("DELETE FROM blobs WHERE digest = $1", &[&digest])
        .await?;
    Ok(Some(unsigned(row.get(0))))
}
