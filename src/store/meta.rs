//! The redb tables and the rows in them. Every table is defined here, so the
//! whole schema can be read in one place.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// upload id -> [`UploadRow`]
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// upload id -> digest: a new blob whose link into its shard directory
/// may not be durable yet; `uploads/<id>`, durable, holds the same bytes
/// until it is (see settle.rs).
pub const UNSETTLED: TableDefinition<&str, &str> = TableDefinition::new("unsettled");
/// digest -> [`BlobRow`]; a blob exists for readers only once this row does.
pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// (digest, repository) -> linked-at: which repositories may serve a blob.
/// Keyed by digest first, so "is this blob linked anywhere" is one range.
pub const LINKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("links");
/// (repository, digest): LINKS turned around, so whether a repository still
/// holds any blob is one range.
pub const REPO_BLOBS: TableDefinition<(&str, &str), ()> = TableDefinition::new("repo_blobs");
/// (blob digest, repository, manifest digest): which manifests need a blob.
/// A manifest PUT adds its rows in the transaction that checks the blob, and
/// the sweep spares any blob that has one, so neither can miss the other.
pub const BLOB_REFS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("blob_refs");
/// repository -> last pushed-to: what `_catalog` lists, while the
/// repository holds a manifest or a blob.
pub const REPOS: TableDefinition<&str, u64> = TableDefinition::new("repos");
/// (repository, digest) -> [`ManifestRow`]
pub const MANIFESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("manifests");
/// (repository, tag) -> digest
pub const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (repository, tag) -> fetched-at: tags a pull-through cache took from
/// its upstream. A push of the tag removes its row: from then on the tag is
/// this registry's own and shadows the upstream's until it is deleted.
pub const UPSTREAM_TAGS: TableDefinition<(&str, &str), u64> = TableDefinition::new("upstream_tags");
/// (repository, manifest digest) -> last pulled: manifests a pull-through
/// cache fetched from its upstream. Those not pulled for the cache
/// expiration are pruned; a push of the same manifest removes its row.
pub const CACHE_PULLS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cache_pulls");
/// (repository, subject digest, referrer digest): the referrers relation.
pub const REFERRERS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("referrers");

/// Sorts after every string a key holds: the upper bound of a tuple-key
/// range over one prefix, such as one repository's tags.
pub const MAX_STR: &str = "\u{10FFFF}";

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct UploadRow {
    pub repo: String,
    /// Bytes committed so far; the file may be longer after a crash.
    pub offset: u64,
    /// The serialized hash state over the first `offset` bytes (sha256,
    /// or sha512 for a session started with `digest-algorithm=sha512`; the
    /// length tells which).
    pub hash_state: Vec<u8>,
    pub started: u64,
    /// Last chunk committed: what upload expiry measures from.
    pub updated: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BlobRow {
    pub size: u64,
    /// Last pushed or mounted: a blob younger than the grace period is never
    /// swept, so its manifest has time to arrive.
    pub touched: u64,
}

/// A manifest as stored. Its first two fields are what a GET serves and
/// are read alone, in place, as [`ServedManifest`]: they stay first.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestRow {
    pub media_type: String,
    pub body: Vec<u8>,
    pub blobs: Vec<String>,
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub created: u64,
}

/// The part of a [`ManifestRow`] a GET serves, borrowed from the row's
/// bytes: postcard reads a prefix and leaves the rest, so the digests,
/// annotations and the rest are neither decoded nor allocated. (A `Vec<u8>`
/// is a length and its bytes to postcard, as a `&[u8]` is.) In a callgrind
/// profile of manifest GETs, decoding the whole row byte by byte and
/// allocating its lists was 14% of the instructions.
#[derive(Deserialize)]
pub struct ServedManifest<'a> {
    pub media_type: &'a str,
    pub body: &'a [u8],
}

pub fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    postcard::to_stdvec(row).expect("rows always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, super::Error> {
    decode_in_place(bytes)
}

/// As [`decode`], for a row that borrows from `bytes`.
pub fn decode_in_place<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, super::Error> {
    postcard::from_bytes(bytes).map_err(|e| super::Error::Corrupt(format!("bad row: {e}")))
}

/// Every timestamp in the database: milliseconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The timestamp `age` before `now`: anything at or before it is that old.
pub fn ago(now: u64, age: std::time::Duration) -> u64 {
    now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
}

/// The last readiness probe's write: `"last"` -> seconds since the epoch.
pub const PROBES: TableDefinition<&str, u64> = TableDefinition::new("probes");

/// One-time repairs of databases older than a fix, by name -> when done
/// (milliseconds since the epoch).
pub const REPAIRS: TableDefinition<&str, u64> = TableDefinition::new("repairs");

/// Running totals kept in the transactions that change them: `"blobs"`
/// (rows of BLOBS) and `"bytes"` (their sizes).
pub const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_manifest_reads_the_rows_first_fields_in_place() {
        let row = ManifestRow {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: (0..=255).collect(),
            blobs: vec!["sha256:aa".into(), "sha256:bb".into()],
            manifests: vec!["sha256:cc".into()],
            subject: Some("sha256:dd".into()),
            artifact_type: None,
            annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
            created: 1_700_000_000_000,
        };
        let bytes = encode(&row);
        let served: ServedManifest = decode_in_place(&bytes).expect("a prefix decodes");
        assert_eq!(served.media_type, row.media_type);
        assert_eq!(served.body, row.body.as_slice());
        let whole: ManifestRow = decode(&bytes).expect("the whole row decodes");
        assert_eq!(whole.blobs, row.blobs);
    }
}
