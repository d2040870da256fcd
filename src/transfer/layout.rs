//! The OCI image layout: an `oci-layout` marker, an `index.json` naming each
//! image, and every blob (manifests included) under `blobs/<alg>/<hex>`.

use serde::Serialize;

use crate::oci::Digest;
use crate::oci::manifest::OCI_INDEX;

pub const LAYOUT_FILE: &str = "oci-layout";
pub const LAYOUT_VERSION: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const INDEX_FILE: &str = "index.json";
/// The annotation that names an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// berth's note on an image exported for some platforms only: its index
/// is whole, and the children of other platforms are absent on purpose.
pub const PLATFORMS: &str = "io.berth.export.platforms";
/// berth's note on an image whose index the source held sparse (a
/// pull-through cache holds the platforms pulled): the manifests it names
/// that were not there to export, comma-separated.
pub const ABSENT: &str = "io.berth.export.absent";

/// Manifests one inside another (an index's children, a manifest's
/// referrers) an image may have, far past any real one's: each level is
/// walked by a call of its own, and a crafted image could chain enough to
/// exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// `os/architecture[/variant]` of a descriptor that names its platform.
pub fn platform_of(descriptor: &serde_json::Value) -> Option<String> {
    crate::oci::manifest::platform(&descriptor["platform"])
}

pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// The digest a layout path names, the inverse of [`blob_path`]; `None`
/// for any other path.
pub fn blob_digest(path: &str) -> Option<Digest> {
    let rest = path.trim_start_matches("./").strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{algorithm}:{hex}"))
}

pub use crate::oci::manifest::platform_name;

/// One image of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Its full name: `docker.io/library/alpine:3.20`, or `repo@digest`.
    pub ref_name: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The platforms it was exported for, if not all.
    pub platforms: Option<String>,
    /// The manifests it names that its source did not hold, if any.
    pub absent: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    annotations: std::collections::BTreeMap<&'static str, &'a str>,
}

/// `index.json` for `entries`, in name order: the same images always give
/// the same bytes.
pub fn index_json(entries: &[Entry]) -> Vec<u8> {
    let mut entries: Vec<&Entry> = entries.iter().collect();
    entries.sort();
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: entries
            .iter()
            .map(|e| Descriptor {
                media_type: &e.media_type,
                digest: e.digest.as_str(),
                size: e.size,
                annotations: [
                    (REF_NAME, Some(e.ref_name.as_str())),
                    (PLATFORMS, e.platforms.as_deref()),
                    (ABSENT, e.absent.as_deref()),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&index).expect("an index always serializes")
}
