//! Checking the data directory against the database: every blob's bytes
//! re-hashed, files nobody owns found, and with `repair` set right.

use std::fmt;
use std::io;
use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable};

use super::blobs::{create_dirs_durable, fsync_dir, hash_file, remove_if_present};
use super::meta::{self, BlobRow, ManifestRow};
use super::{Embedded, Result};
use crate::oci::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Indexed, but its file is gone.
    MissingBlob(Digest),
    /// Indexed, but its bytes are not what the digest names.
    CorruptBlob { digest: Digest, why: String },
    /// A file under blobs/ or uploads/ that no row owns.
    OrphanFile(PathBuf),
    /// An object of the clustered store that no row owns.
    OrphanObject(String),
    /// A manifest that refers to a blob or child the repository lacks.
    DanglingManifest {
        repo: String,
        digest: String,
        missing: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::MissingBlob(d) => write!(f, "missing: blob {d} is indexed but has no file"),
            Finding::CorruptBlob { digest, why } => write!(f, "corrupt: blob {digest}: {why}"),
            Finding::OrphanFile(p) => write!(f, "orphaned: {} belongs to no row", p.display()),
            Finding::OrphanObject(key) => write!(f, "orphaned: object {key} belongs to no row"),
            Finding::DanglingManifest {
                repo,
                digest,
                missing,
            } => {
                write!(
                    f,
                    "dangling: manifest {repo}@{digest} refers to missing {missing}"
                )
            }
        }
    }
}

/// What a check found, and what it set right.
#[derive(Debug, Default)]
pub struct Check {
    pub blobs: u64,
    pub bytes: u64,
    pub findings: Vec<Finding>,
    pub repaired: usize,
}

/// Called after each blob with (blobs done, blobs in all, bytes done).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64, u64);

impl Embedded {
    /// Checks everything. With `repair`, removes orphaned files and takes
    /// missing or corrupt blobs out of the index (their files move to
    /// `quarantine/`), so no client is served bytes that are wrong.
    pub fn check(&self, repair: bool, progress: Progress) -> Result<Check> {
        let mut check = Check::default();
        self.check_blobs(&mut check, progress)?;
        self.find_orphans(&mut check)?;
        self.check_manifests(&mut check)?;
        if repair {
            self.repair(&mut check)?;
        }
        Ok(check)
    }

    fn check_blobs(&self, check: &mut Check, progress: Progress) -> Result<()> {
        let rows: Vec<(String, BlobRow)> = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(meta::BLOBS)?;
            let mut rows = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                rows.push((k.value().to_owned(), meta::decode(v.value())?));
            }
            rows
        };
        let total = rows.len() as u64;
        for (key, row) in rows {
            let Some(digest) = Digest::parse(&key) else {
                return Err(super::Error::Corrupt(format!(
                    "blob row with bad key {key:?}"
                )));
            };
            match hash_file(&self.blob_path(&digest), digest.algorithm()) {
                Ok((size, _)) if size != row.size => check.findings.push(Finding::CorruptBlob {
                    why: format!("{size} bytes on disk, {} indexed", row.size),
                    digest,
                }),
                Ok((_, actual)) if actual != digest => check.findings.push(Finding::CorruptBlob {
                    why: format!("bytes hash to {actual}"),
                    digest,
                }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    check.findings.push(Finding::MissingBlob(digest));
                }
                Err(e) => return Err(e.into()),
            }
            check.blobs += 1;
            check.bytes += row.size;
            progress(check.blobs, total, check.bytes);
        }
        Ok(())
    }

    fn find_orphans(&self, check: &mut Check) -> Result<()> {
        let orphans = self.orphan_uploads()?;
        check
            .findings
            .extend(orphans.into_iter().map(Finding::OrphanFile));
        let txn = self.db()?.begin_read()?;
        let blobs = txn.open_table(meta::BLOBS)?;
        for (path, digest) in self.blob_files()? {
            let owned = match digest {
                Some(d) => blobs.get(d.as_str())?.is_some(),
                None => false,
            };
            if !owned {
                check.findings.push(Finding::OrphanFile(path));
            }
        }
        Ok(())
    }

    fn check_manifests(&self, check: &mut Check) -> Result<()> {
        let txn = self.db()?.begin_read()?;
        let manifests = txn.open_table(meta::MANIFESTS)?;
        let links = txn.open_table(meta::LINKS)?;
        let blobs = txn.open_table(meta::BLOBS)?;
        for entry in manifests.iter()? {
            let (key, value) = entry?;
            let (repo, digest) = key.value();
            let row: ManifestRow = meta::decode(value.value())?;
            let mut missing = Vec::new();
            for blob in &row.blobs {
                if links.get((blob.as_str(), repo))?.is_none()
                    || blobs.get(blob.as_str())?.is_none()
                {
                    missing.push(blob.clone());
                }
            }
            for child in &row.manifests {
                if manifests.get((repo, child.as_str()))?.is_none() {
                    missing.push(child.clone());
                }
            }
            check.findings.extend(
                missing
                    .into_iter()
                    .map(|missing| Finding::DanglingManifest {
                        repo: repo.to_owned(),
                        digest: digest.to_owned(),
                        missing,
                    }),
            );
        }
        Ok(())
    }

    fn repair(&self, check: &mut Check) -> Result<()> {
        let quarantine = self.root.join("quarantine");
        for finding in &check.findings {
            match finding {
                Finding::OrphanFile(path) => {
                    if path.is_dir() {
                        continue;
                    }
                    remove_if_present(path)?;
                }
                Finding::MissingBlob(digest) | Finding::CorruptBlob { digest, .. } => {
                    let _guard = self.lock_digest(digest);
                    let txn = self.db()?.begin_write()?;
                    let removed = {
                        let mut blobs = txn.open_table(meta::BLOBS)?;
                        let row = blobs.remove(digest.as_str())?;
                        row.map(|row| meta::decode::<meta::BlobRow>(row.value()))
                            .transpose()?
                    };
                    if let Some(row) = removed {
                        super::stats::count_blob(&txn, row.size, false)?;
                    }
                    self.db.commit(txn)?;
                    let path = self.blob_path(digest);
                    if path.exists() {
                        create_dirs_durable(&quarantine)?;
                        std::fs::rename(&path, quarantine.join(digest.hex()))?;
                        fsync_dir(&quarantine)?;
                        fsync_dir(path.parent().expect("blob files have a shard"))?;
                    }
                }
                Finding::DanglingManifest { .. } | Finding::OrphanObject(_) => continue,
            }
            check.repaired += 1;
        }
        Ok(())
    }
}
