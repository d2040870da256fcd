//! Objects no row owns: pieces of uploads that are gone (or of whole-blob
//! requests that died), and blob objects whose row never committed (a
//! node that died between a compose and its commit). Only objects written
//! before a cutoff count, and none of a request that says it still streams.

use std::collections::BTreeSet;

use super::super::Result;
use super::Cluster;
use super::blobs::digest_of_key;
use crate::oci::Digest;

/// An object no row owns.
pub(super) struct Orphan {
    pub key: String,
    /// The blob a blob object would be; `None` for an upload piece.
    pub blob: Option<Digest>,
}

impl Cluster {
    /// Every object written at or before `cutoff` that no row owns.
    pub(super) async fn orphans(&self, cutoff: u64) -> Result<Vec<Orphan>> {
        let client = self.client().await?;
        let ids = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<String> {
            rows.iter().map(|row| row.get(0)).collect()
        };
        let mut sessions = ids(client.query("SELECT id FROM uploads", &[]).await?);
        // A whole blob still streaming owns its pieces without a row.
        sessions.extend(self.live_streams().await?);
        let held = ids(client.query("SELECT digest FROM blobs", &[]).await?);
        let mut orphans = Vec::new();
        for (key, written) in self.objects.list("uploads/").await? {
            let id = key.split('/').nth(1).unwrap_or("");
            if written <= cutoff && !sessions.contains(id) {
                orphans.push(Orphan { key, blob: None });
            }
        }
        for (key, written) in self.objects.list("blobs/").await? {
            let Some(digest) = digest_of_key(&key) else {
                log::warn!("unexpected object {key} left alone");
                continue;
            };
            if written <= cutoff && !held.contains(digest.as_str()) {
                orphans.push(Orphan {
                    key,
                    blob: Some(digest),
                });
            }
        }
        Ok(orphans)
    }

    /// Removes an orphan; a blob object only if no finish brought its blob
    /// in since it was found.
    pub(super) async fn remove_orphan(&self, orphan: &Orphan) -> Result<()> {
        match &orphan.blob {
            Some(digest) => self.remove_blob_object(digest.as_str()).await,
            None => self.objects.delete(&orphan.key).await,
        }
    }
}
