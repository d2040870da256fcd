//! Checking the clustered store: every blob's object read through and
//! hashed, objects no row owns found, manifests that point at what their
//! repository lacks; with `repair`, set right. Safe while nodes serve:
//! objects written in the last hour are left out of the orphan search (a
//! finish may be between its compose and its commit), and a blob is taken
//! out of service under the digest's advisory lock, as a finish holds it.

use super::super::fsck::{Check, Finding, Progress};
use super::super::{Result, meta};
use super::blobs::{blob_key, digest_of_key};
use super::orphans::Orphan;
use super::uploads::lock_key;
use super::{Cluster, unsigned};
use crate::oci::Digest;

/// How old an object must be before a check calls it orphaned.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(3600);

impl Cluster {
    /// Checks everything; with `repair`, removes orphaned objects and takes
    /// missing or corrupt blobs out of the index (a corrupt blob's object
    /// is kept under `quarantine/`).
    pub fn check(&self, repair: bool, progress: Progress) -> Result<Check> {
        self.run(async {
            let mut check = Check::default();
            self.check_blobs(&mut check, progress).await?;
            self.find_orphans(&mut check).await?;
            self.check_manifests(&mut check).await?;
            if repair {
                self.repair(&mut check).await?;
            }
            Ok(check)
        })
    }

    async fn check_blobs(&self, check: &mut Check, progress: Progress<'_>) -> Result<()> {
        let rows = self
            .client()
            .await?
            .query("SELECT digest, size FROM blobs ORDER BY digest", &[])
            .await?;
        let total = rows.len() as u64;
        for row in rows {
            let (key, size): (String, i64) = (row.get(0), row.get(1));
            let size = unsigned(size);
            let Some(digest) = Digest::parse(&key) else {
                return Err(super::Error::Corrupt(format!(
                    "blob row with bad key {key:?}"
                )));
            };
            match self
                .objects
                .hash(&blob_key(&digest), digest.algorithm())
                .await?
            {
                None => check.findings.push(Finding::MissingBlob(digest)),
                Some((stored, _)) if stored != size => check.findings.push(Finding::CorruptBlob {
                    why: format!("{stored} bytes stored, {size} indexed"),
                    digest,
                }),
                Some((_, actual)) if actual != digest => {
                    check.findings.push(Finding::CorruptBlob {
                        why: format!("bytes hash to {actual}"),
                        digest,
                    });
                }
                Some(_) => {}
            }
            check.blobs += 1;
            check.bytes += size;
            progress(check.blobs, total, check.bytes);
        }
        Ok(())
    }

    async fn find_orphans(&self, check: &mut Check) -> Result<()> {
        let settled = meta::ago(meta::now(), SETTLED);
        for orphan in self.orphans(settled).await? {
            check.findings.push(Finding::OrphanObject(orphan.key));
        }
        Ok(())
    }

    async fn check_manifests(&self, check: &mut Check) -> Result<()> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT m.repo, m.digest, b FROM manifests m, unnest(m.blobs) AS b
                 WHERE NOT EXISTS (
                     SELECT 1 FROM links l JOIN blobs x ON x.digest = l.digest
                     WHERE l.digest = b AND l.repo = m.repo)
                 UNION ALL
                 SELECT m.repo, m.digest, c FROM manifests m, unnest(m.children) AS c
                 WHERE NOT EXISTS (
                     SELECT 1 FROM manifests k WHERE k.repo = m.repo AND k.digest = c)
                 ORDER BY 1, 2, 3",
                &[],
            )
            .await?;
        check
            .findings
            .extend(rows.iter().map(|row| Finding::DanglingManifest {
                repo: row.get(0),
                digest: row.get(1),
                missing: row.get(2),
            }));
        Ok(())
    }

    async fn repair(&self, check: &mut Check) -> Result<()> {
        for finding in &check.findings {
            match finding {
                Finding::OrphanObject(key) => {
                    let orphan = Orphan {
                        key: key.clone(),
                        blob: digest_of_key(key),
                    };
                    self.remove_orphan(&orphan).await?;
                }
                Finding::MissingBlob(digest) | Finding::CorruptBlob { digest, .. } => {
                    self.take_out(digest).await?;
                }
                Finding::DanglingManifest { .. } | Finding::OrphanFile(_) => continue,
            }
            check.repaired += 1;
        }
        Ok(())
    }

    /// Takes a blob found missing or corrupt out of service: its row, and
    /// its object (kept under `quarantine/` when corrupt), under the
    /// digest's advisory lock. The finding is made again there first:
    /// nodes served on since the check, and a blob pushed again meanwhile
    /// (after a prune took it, say) is whole and stays.
    async fn take_out(&self, digest: &Digest) -> Result<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(digest)])
            .await?;
        let Some(row) = txn
            .query_opt(
                "SELECT size FROM blobs WHERE digest = $1",
                &[&digest.as_str()],
            )
            .await?
        else {
            return Ok(());
        };
        let size = unsigned(row.get(0));
        let key = blob_key(digest);
        match self.objects.hash(&key, digest.algorithm()).await? {
            Some((stored, actual)) if stored == size && actual == *digest => {
                log::info!("blob {digest} is whole again since it was checked: left in service");
                return Ok(());
            }
            Some(_) => {
                self.objects
                    .copy(&key, &format!("quarantine/{}", digest.hex()))
                    .await?;
                self.objects.delete(&key).await?;
            }
            None => {}
        }
        txn.execute("DELETE FROM blobs WHERE digest = $1", &[&digest.as_str()])
            .await?;
        txn.commit().await?;
        Ok(())
    }
}
