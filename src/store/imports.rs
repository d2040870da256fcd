//! What an import makes visible: an image's staged blobs linked into its
//! repository, its manifests stored and its tag set, all in one
//! transaction, so a tag is never seen without everything it needs.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::blobs::touch_blob;
use super::links;
use super::manifests::{has_row, insert_refs, insert_row, row_of};
use super::meta::{self, BlobRow};
use super::{Embedded, Error, Result};
use crate::oci::manifest;
use crate::oci::{Digest, RepoName, Tag};

/// A manifest to import: its digest, the media type its layout gave, and
/// its bytes.
#[derive(Debug, Clone)]
pub struct ImportedManifest {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub body: Vec<u8>,
}

impl Embedded {
    /// The size of blob `digest` if this store holds it, linked anywhere
    /// or only staged.
    pub fn held_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let txn = self.db()?.begin_read()?;
        let blobs = txn.open_table(meta::BLOBS)?;
        let Some(row) = blobs.get(digest.as_str())? else {
            return Ok(None);
        };
        Ok(Some(meta::decode::<BlobRow>(row.value())?.size))
    }

    /// Up to `limit` bytes of a held blob, for reading manifests.
    pub fn read_held_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        if self.held_blob(digest)?.is_none() {
            return Err(Error::BlobUnknown);
        }
        let mut bytes = Vec::new();
        File::open(self.blob_path(digest))?
            .take(limit)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

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
        let mut rows = Vec::new();
        for m in &manifests {
            let parsed = manifest::parse(m.media_type.as_deref(), &m.body)
                .map_err(Error::ManifestInvalid)?;
            rows.push((m.digest.to_string(), row_of(&parsed, m.body.clone())));
        }
        let (r, rows, blobs) = (repo.as_str().to_owned(), Arc::new(rows), Arc::new(blobs));
        self.write(None, move |txn| {
            let r = r.as_str();
            // All checked before anything is written: a job that fails
            // must leave the batch's shared transaction as it found it.
            {
                let held = txn.open_table(meta::BLOBS)?;
                for blob in blobs.iter() {
                    if held.get(blob.as_str())?.is_none() {
                        return Err(Error::ManifestBlobUnknown(blob.clone()));
                    }
                }
            }
            for blob in blobs.iter() {
                touch_blob(txn, blob)?;
                links::link(txn, blob.as_str(), r)?;
            }
            for (d, row) in rows.iter() {
                let d = d.as_str();
                // A row already here keeps its age; its records are made
                // whole again (a blob delete dropped them before 2026-12-03).
                if has_row(txn, r, d)? {
                    insert_refs(txn, r, d, row)?;
                } else {
                    insert_row(txn, r, d, row)?;
                }
                // Imported here, it is ours, whatever a cache fetched before.
                txn.open_table(meta::CACHE_PULLS)?.remove((r, d))?;
            }
            if let Some((tag, digest)) = &tag {
                txn.open_table(meta::TAGS)?
                    .insert((r, tag.as_str()), digest.as_str())?;
                txn.open_table(meta::UPSTREAM_TAGS)?
                    .remove((r, tag.as_str()))?;
            }
            links::remember(txn, r)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn an_import_refused_for_a_blob_it_lacks_links_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let held_in = RepoName::parse("staged").unwrap();
        let bytes = bytes::Bytes::from_static(b"a layer the store holds");
        let held = Digest::of(&bytes);
        let mut appender = store
            .put_blob(&held_in, Some(bytes.len() as u64), Algorithm::Sha256)
            .unwrap();
        appender.write(&[bytes]).unwrap();
        appender.finish(&held).unwrap();
        let missing = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();

        let into = RepoName::parse("imported").unwrap();
        let refused = store.import_image(&into, vec![held.clone(), missing], Vec::new(), None);
        assert!(
            matches!(refused, Err(Error::ManifestBlobUnknown(_))),
            "{refused:?}"
        );
        assert!(
            matches!(store.blob_size(&into, &held), Err(Error::BlobUnknown)),
            "the refused import linked the blob it had"
        );
        let (names, _) = store.list_repositories(None, 10, &|_| true).unwrap();
        assert_eq!(names, ["staged"]);
    }
}
