//! Every real-world manifest shape in fixtures/ pushed with its blobs and
//! read back byte for byte with its media type; the retired ones refused
//! with the error that names them; the layouts, logins and certificates of
//! fixtures/ working as a test would use them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::TestRegistry;
use common::http::{self, assert_error};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every manifest of fixtures/manifests: name -> bytes.
fn manifests() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(fixtures().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.insert(name, std::fs::read(&path).unwrap());
    }
    assert!(
        out.len() >= 20,
        "fixtures/manifests holds {} files",
        out.len()
    );
    out
}

/// Pushes every blob `doc` names that fixtures/blobs holds; foreign
/// layers (with `urls`) are never pushed, as clients do not push them.
fn push_blobs(base: &str, repo: &str, doc: &Value) -> usize {
    let mut pushed = 0;
    let descriptors = doc["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(doc.get("config"));
    for d in descriptors {
        if d.get("urls").is_some() {
            continue;
        }
        let hex = &d["digest"].as_str().unwrap()[7..];
        let bytes = std::fs::read(fixtures().join("blobs").join(hex))
            .unwrap_or_else(|e| panic!("fixtures/blobs/{hex}: {e}"));
        http::push_blob(base, repo, &bytes);
        pushed += 1;
    }
    pushed
}

/// PUTs a manifest with the media type it declares; the answer.
fn put(base: &str, repo: &str, reference: &str, body: &[u8]) -> http::Response {
    let doc: Value = serde_json::from_slice(body).unwrap();
    let media_type = doc["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.docker.distribution.manifest.v1+prettyjws");
    http::request(
        "PUT",
        &http::manifest_url(base, repo, reference),
        &[("Content-Type", media_type)],
        body,
    )
}

#[test]
fn every_manifest_shape_goes_in_and_comes_back_byte_for_byte() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let repo = "fixtures/shapes";
    let all = manifests();
    let mut checked = 0;
    for (name, body) in &all {
        if name.contains("schema1") {
            continue;
        }
        let doc: Value = serde_json::from_slice(body).unwrap();
        push_blobs(&base, repo, &doc);
        let digest = http::sha256_digest(body);
        // Indexes name their children; berth takes them in any order, as
        // the children may come after (a sparse index until then).
        let resp = put(&base, repo, name, body);
        assert_eq!(resp.status, 201, "{name}: {}", resp.text());
        assert_eq!(
            resp.header("docker-content-digest"),
            Some(digest.as_str()),
            "{name}"
        );
        for reference in [name.as_str(), digest.as_str()] {
            let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                          application/vnd.docker.distribution.manifest.v2+json, \
                          application/vnd.docker.distribution.manifest.list.v2+json";
            let resp = http::request(
                "GET",
                &http::manifest_url(&base, repo, reference),
                &[("Accept", accept)],
                b"",
            );
            assert_eq!(resp.status, 200, "{name} by {reference}");
            assert!(&resp.body == body, "{name} came back with other bytes");
            assert_eq!(
                resp.header("content-type"),
                doc["mediaType"].as_str(),
                "{name}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, all.len() - 1);

    // cosign's tag scheme: the signature under sha256-<hex>.sig.
    let signed = http::sha256_digest(&all["oci-manifest"]);
    let tag = format!("sha256-{}.sig", &signed[7..]);
    let resp = put(&base, repo, &tag, &all["cosign-tag-signature"]);
    assert_eq!(resp.status, 201, "{}", resp.text());
    // OCI 1.1: the signature and the SBOM are the image's referrers.
    let referrers = http::get(&format!("{base}/v2/{repo}/referrers/{signed}")).json();
    let mut types: Vec<&str> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "application/spdx+json",
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        ]
    );
    // The Windows image's foreign layer was never pushed, nor needed.
    let windows: Value = serde_json::from_slice(&all["windows-foreign-layers"]).unwrap();
    let foreign = windows["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        http::head(&http::blob_url(&base, repo, foreign)).status,
        404
    );
}

#[test]
fn a_signed_schema1_manifest_is_refused_naming_schema1() {
    let reg = TestRegistry::start();
    let body = &manifests()["docker-schema1-signed"];
    let resp = put(&reg.url(), "fixtures/old", "old", body);
    assert_error(&resp, 400, "MANIFEST_INVALID");
    assert!(
        resp.text().to_lowercase().contains("schema 1") || resp.text().contains("schema1"),
        "the refusal does not name schema 1: {}",
        resp.text()
    );
}

/// An OCI manifest padded with an annotation to exactly `size` bytes.
fn padded(size: usize) -> Vec<u8> {
    let empty = http::descriptor(http::OCI_EMPTY, b"{}");
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": http::OCI_MANIFEST,
        "config": empty,
        "layers": [],
        "annotations": {"org.example.padding": ""},
    });
    let bare = serde_json::to_vec(&doc).unwrap().len();
    doc["annotations"]["org.example.padding"] = json!("x".repeat(size - bare));
    let body = serde_json::to_vec(&doc).unwrap();
    assert_eq!(body.len(), size);
    body
}

#[test]
fn manifests_just_under_the_limit_go_in_and_just_over_are_refused() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "fixtures/big", b"{}");
    let limit = berth::api::DEFAULT_MAX_MANIFEST_BYTES;
    let under = padded(limit);
    let resp = put(&base, "fixtures/big", "under", &under);
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert!(http::get(&http::manifest_url(&base, "fixtures/big", "under")).body == under);
    let over = padded(limit + 1);
    let resp = put(&base, "fixtures/big", "over", &over);
    assert_error(&resp, 413, "SIZE_INVALID");
}

#[test]
fn the_fixture_layout_logins_and_certificates_serve_a_test() {
    let dir = fixtures();
    let auth = dir.join("auth");
    let tls = dir.join("tls");
    let registry = berth::Registry::builder()
        .preload(dir.join("layouts/app"))
        .auth(auth.join("htpasswd"), Some(auth.join("access")))
        .tls(tls.join("server.pem"), tls.join("server.key"))
        .start()
        .unwrap();
    let url = registry.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let curl = |user: &str, path: &str| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(tls.join("ca.pem"))
            .args(["-u", user])
            .arg(format!("{url}{path}"))
            .output()
            .expect("curl (Debian: apt-get install -y curl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let manifest = "/v2/fixtures/app/manifests/1";
    assert_eq!(
        curl("bob:bob-password", manifest),
        "200",
        "bob pulls the preloaded image"
    );
    assert_eq!(curl("bob:wrong", manifest), "401");
    assert_eq!(curl("alice:alice-password", "/v2/"), "200");
    let data: &Path = registry.data_dir();
    assert!(data.exists());
}
