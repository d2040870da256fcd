//! `berth export` and `berth import` as a user runs them, the images
//! they carry, and what their archives hold.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::http::{self, OCI_INDEX, OCI_MANIFEST};

/// Runs `berth ARGS`: (success, stdout, stderr).
pub fn berth(args: &[&str]) -> (bool, String, String) {
    let result = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .unwrap();
    (
        result.status.success(),
        String::from_utf8_lossy(&result.stdout).into_owned(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

/// Runs `berth export --data DATA --out OUT ARGS`: (success, stdout, stderr).
pub fn export(data: &Path, out: &Path, args: &[&str]) -> (bool, String, String) {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    berth(&[&["export", "--data", data, "--out", out], args].concat())
}

#[track_caller]
pub fn must_export(data: &Path, out: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = export(data, out, args);
    assert!(ok, "berth export {args:?} failed: {stdout}{stderr}");
    stdout
}

/// Runs `berth import --data DATA ARGS`: (success, all it said).
pub fn import(data: &Path, args: &[&str]) -> (bool, String) {
    let data = data.to_str().unwrap();
    let (ok, stdout, stderr) = berth(&[&["import", "--data", data], args].concat());
    (ok, format!("{stdout}{stderr}"))
}

/// Every entry of a tar archive: path -> bytes (directories as empty).
pub fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut out = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(path, bytes);
    }
    out
}

/// The names and digests `index.json` lists.
pub fn index_of(entries: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], json!(2));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What [`populate`] pushed.
pub struct Pushed {
    /// `docker.io/library/app:1`.
    pub single: http::Image,
    /// One child of the index `docker.io/library/multi:2`.
    pub arm: http::Image,
    /// A signature of `single`, pushed by digest.
    pub signature: Vec<u8>,
}

/// Pushes an index of two images, a referrer and a second repository to
/// the registry at `base`.
pub fn populate(base: &str) -> Pushed {
    let single = http::push_image(base, "docker.io/library/app", Some("1"), 11);
    let amd = http::push_image(base, "docker.io/library/multi", None, 12);
    let arm = http::push_image(base, "docker.io/library/multi", None, 13);
    let index = http::image_index(&[amd.descriptor(), arm.descriptor()]);
    http::push_manifest(base, "docker.io/library/multi", "2", OCI_INDEX, &index);
    http::push_blob(base, "docker.io/library/app", b"{}");
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": http::descriptor(http::OCI_EMPTY, b"{}"),
        "layers": [http::descriptor(http::OCI_EMPTY, b"{}")],
        "subject": single.descriptor(),
    }))
    .unwrap();
    http::push_manifest(
        base,
        "docker.io/library/app",
        &http::sha256_digest(&signature),
        OCI_MANIFEST,
        &signature,
    );
    Pushed {
        single,
        arm,
        signature,
    }
}

/// Unpacks an archive into a layout directory, to damage it.
pub fn unpack(archive: &Path, dir: &Path) {
    tar::Archive::new(std::fs::File::open(archive).unwrap())
        .unpack(dir)
        .unwrap();
}

pub fn blob_file(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}
