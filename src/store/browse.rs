//! What a person browsing the registry is shown: a page of a repository's
//! tags, each with what it points at, its size, age and platforms, read in
//! one transaction; and a manifest with its config.

use std::io::Read;

use redb::ReadableDatabase;

use super::manifests::{holds_manifest, page};
use super::meta::{self, BlobRow, ManifestRow};
use super::{Embedded, Error, Result};
use crate::oci::manifest::platform;
use crate::oci::{Digest, RepoName};

/// Configs above this are not read for a page: real ones are a few KiB.
pub(super) const MAX_CONFIG: u64 = 1 << 20;

/// One tag as a page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// The manifest and every blob it (and each child held) names, once.
    pub size: u64,
    /// When the manifest was stored, in milliseconds since the epoch.
    pub created: u64,
    /// `os/architecture[/variant]` of each child of an index, or of an
    /// image's config.
    pub platforms: Vec<String>,
}

/// A manifest as a page shows it.
#[derive(Debug, Clone)]
pub struct ManifestView {
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
    pub created: u64,
    /// The tags that point at it.
    pub tags: Vec<String>,
    /// Its config's JSON, if it has a config held here.
    pub config: Option<Vec<u8>>,
}

impl Embedded {
    /// Up to `n` tags of `repo` after `after`, summarised, and whether more
    /// follow. `NameUnknown` when it holds no manifest.
    pub fn tag_summaries(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<TagSummary>, bool)> {
        let r = repo.as_str();
        let txn = self.db()?.begin_read()?;
        let tags = txn.open_table(meta::TAGS)?;
        let manifests = txn.open_table(meta::MANIFESTS)?;
        let blobs = txn.open_table(meta::BLOBS)?;
        let links = txn.open_table(meta::LINKS)?;
        let size_of = |digest: &str| -> Result<u64> {
            Ok(match blobs.get(digest)? {
                Some(row) => meta::decode::<BlobRow>(row.value())?.size,
                None => 0,
            })
        };
        if !holds_manifest(&manifests, r)? {
            return Err(Error::NameUnknown);
        }
        let tagged = tags
            .range((r, after.unwrap_or(""))..=(r, meta::MAX_STR))?
            .map(|entry| {
                let (key, target) = entry?;
                Ok((key.value().1.to_owned(), target.value().to_owned()))
            });
        let (tagged, more) = page(tagged, after, n, |(tag, _)| tag.as_str())?;
        let mut out = Vec::new();
        for (tag, digest) in tagged {
            let Some(row) = manifests.get((r, digest.as_str()))? else {
                continue;
            };
            let row: ManifestRow = meta::decode(row.value())?;
            let mut size = row.body.len() as u64;
            let mut platforms = Vec::new();
            // A layer the platforms share is counted once.
            let mut counted: std::collections::BTreeSet<String> =
                row.blobs.iter().cloned().collect();
            for child in &row.manifests {
                if let Some(child_row) = manifests.get((r, child.as_str()))? {
                    let child_row: ManifestRow = meta::decode(child_row.value())?;
                    size += child_row.body.len() as u64;
                    counted.extend(child_row.blobs);
                }
            }
            for blob in &counted {
                size += size_of(blob)?;
            }
            if row.manifests.is_empty() {
                let config = config_digest(&row.body)
                    .filter(|c| links.get((c.as_str(), r)).is_ok_and(|l| l.is_some()));
                platforms.extend(self.config_platform(config)?);
            } else {
                platforms = index_platforms(&row.body);
            }
            out.push(TagSummary {
                tag,
                digest,
                media_type: row.media_type,
                size,
                created: row.created,
                platforms,
            });
        }
        Ok((out, more))
    }

    /// Manifest `digest` of `repo`, with its tags and its config.
    pub fn manifest_view(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestView> {
        let r = repo.as_str();
        let txn = self.db()?.begin_read()?;
        let manifests = txn.open_table(meta::MANIFESTS)?;
        let row: ManifestRow = match manifests.get((r, digest.as_str()))? {
            Some(row) => meta::decode(row.value())?,
            None => return Err(Error::ManifestUnknown),
        };
        let mut tags = Vec::new();
        for entry in txn
            .open_table(meta::TAGS)?
            .range((r, "")..=(r, meta::MAX_STR))?
        {
            let (key, target) = entry?;
            if target.value() == digest.as_str() {
                tags.push(key.value().1.to_owned());
            }
        }
        let links = txn.open_table(meta::LINKS)?;
        let config = match config_digest(&row.body) {
            // Only a config this repository holds: a manifest may name any
            // digest, and the page must not show another repository's.
            Some(config) if links.get((config.as_str(), r))?.is_some() => {
                self.read_config(&config)?
            }
            _ => None,
        };
        Ok(ManifestView {
            digest: digest.clone(),
            media_type: row.media_type,
            body: row.body,
            created: row.created,
            tags,
            config,
        })
    }

    /// `os/architecture[/variant]` from an image's config, if held.
    fn config_platform(&self, config: Option<Digest>) -> Result<Option<String>> {
        let Some(config) = config else {
            return Ok(None);
        };
        let Some(bytes) = self.read_config(&config)? else {
            return Ok(None);
        };
        let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(platform(&config))
    }

    fn read_config(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        match std::fs::File::open(self.blob_path(digest)) {
            Ok(file) => file.take(MAX_CONFIG).read_to_end(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(bytes))
    }
}

pub(super) fn config_digest(body: &[u8]) -> Option<Digest> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    doc["config"]["digest"].as_str().and_then(Digest::parse)
}

pub(super) fn index_platforms(body: &[u8]) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|child| platform(&child["platform"]))
        .collect()
}
