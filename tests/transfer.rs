//! `berth export`: a stopped registry's images, with everything they need,
//! as one deterministic OCI layout tar archive that other tools read.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::TestRegistry;
use common::clients::require_programs;
use common::http::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use common::skopeo::Skopeo;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Runs `berth export --data DATA --out OUT ARGS`: (success, stdout, stderr).
fn export(data: &Path, out: &Path, args: &[&str]) -> (bool, String, String) {
    let result = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("export")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    (
        result.status.success(),
        String::from_utf8_lossy(&result.stdout).into_owned(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

#[track_caller]
fn must_export(data: &Path, out: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = export(data, out, args);
    assert!(ok, "berth export {args:?} failed: {stdout}{stderr}");
    stdout
}

/// Every entry of a tar archive: path -> bytes (directories as empty).
fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
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

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The names and digests `index.json` lists.
fn index_of(entries: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
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

#[track_caller]
fn assert_blob(entries: &BTreeMap<String, Vec<u8>>, digest: &str, bytes: &[u8]) {
    let path = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
    let held = entries
        .get(&path)
        .unwrap_or_else(|| panic!("{path} is missing"));
    assert!(held == bytes, "{path} holds other bytes");
}

#[test]
fn everything_an_image_needs_comes_along_once_and_the_archive_is_deterministic() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let single = http::push_image(&base, "docker.io/library/app", Some("1"), 1);
    let amd = http::push_image(&base, "docker.io/library/multi", None, 2);
    let arm = http::push_image(&base, "docker.io/library/multi", None, 3);
    let index = http::image_index(&[amd.descriptor(), arm.descriptor()]);
    http::push_manifest(&base, "docker.io/library/multi", "2", OCI_INDEX, &index);
    // A signature on the single image, untagged: it comes as a referrer.
    http::push_blob(&base, "docker.io/library/app", b"{}");
    http::push_blob(&base, "docker.io/library/app", b"signed");
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": http::descriptor(http::OCI_EMPTY, b"{}"),
        "layers": [http::descriptor("application/octet-stream", b"signed")],
        "subject": single.descriptor(),
    }))
    .unwrap();
    let sig_digest = sha256(&signature);
    http::push_manifest(
        &base,
        "docker.io/library/app",
        &sig_digest,
        OCI_MANIFEST,
        &signature,
    );
    // A Docker manifest list over a Docker manifest, in another repository.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = http::random_bytes(3000, 4);
    http::push_blob(&base, "team/legacy", &config);
    http::push_blob(&base, "team/legacy", &layer);
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": http::descriptor("application/vnd.docker.container.image.v1+json", &config),
        "layers": [http::descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer)],
    }))
    .unwrap();
    http::push_manifest(
        &base,
        "team/legacy",
        &sha256(&docker),
        DOCKER_MANIFEST,
        &docker,
    );
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [http::descriptor(DOCKER_MANIFEST, &docker)],
    }))
    .unwrap();
    http::push_manifest(&base, "team/legacy", "old", DOCKER_LIST, &list);
    let data = reg.stop();

    let work = tempfile::tempdir().unwrap();
    let (first, second) = (work.path().join("a.tar"), work.path().join("b.tar"));
    let printed = must_export(data.path(), &first, &[]);
    must_export(data.path(), &second, &[]);
    let bytes = std::fs::read(&first).unwrap();
    assert!(
        bytes == std::fs::read(&second).unwrap(),
        "two exports differ"
    );
    assert!(
        printed.contains(&sha256(&bytes)),
        "the printed sha256 is the file's: {printed}"
    );
    assert!(printed.contains("3 images"), "{printed}");

    let entries = entries(&first);
    assert_eq!(entries["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index_json = index_of(&entries);
    assert_eq!(
        index_json,
        BTreeMap::from([
            ("docker.io/library/app:1".to_owned(), single.digest.clone()),
            ("docker.io/library/multi:2".to_owned(), sha256(&index)),
            ("team/legacy:old".to_owned(), sha256(&list)),
        ])
    );
    for image in [&single, &amd, &arm] {
        assert_blob(&entries, &image.digest, &image.manifest);
        assert_blob(&entries, &image.config_digest, &image.config);
        assert_blob(&entries, &image.layer_digest, &image.layer);
    }
    assert_blob(&entries, &sha256(&index), &index);
    assert_blob(&entries, &sig_digest, &signature);
    assert_blob(&entries, &sha256(b"signed"), b"signed");
    assert_blob(&entries, &sha256(&list), &list);
    assert_blob(&entries, &sha256(&docker), &docker);
    assert_blob(&entries, &sha256(&layer), &layer);
    // Every blob file is named for what it holds.
    for (path, held) in &entries {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256(held), format!("sha256:{hex}"), "{path}");
        }
    }
}

#[test]
fn a_selection_exports_only_what_it_names_and_a_name_matching_nothing_fails() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let one = http::push_image(&base, "docker.io/library/a", Some("1"), 5);
    http::push_image(&base, "docker.io/library/a", Some("2"), 6);
    let other = http::push_image(&base, "quay.io/team/b", Some("1"), 7);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x.tar");

    must_export(data.path(), &out, &["docker.io/library/a:2"]);
    let names: Vec<String> = index_of(&entries(&out)).into_keys().collect();
    assert_eq!(names, ["docker.io/library/a:2"]);
    assert!(!entries(&out).contains_key(&format!("blobs/sha256/{}", &one.layer_digest[7..])));

    must_export(data.path(), &out, &["docker.io/*"]);
    let names: Vec<String> = index_of(&entries(&out)).into_keys().collect();
    assert_eq!(names, ["docker.io/library/a:1", "docker.io/library/a:2"]);

    let by_digest = format!("quay.io/team/b@{}", other.digest);
    must_export(data.path(), &out, &[&by_digest]);
    assert_eq!(index_of(&entries(&out))[&by_digest], other.digest);

    for nothing in ["docker.io/library/a:3", "nowhere/at/all", "ghcr.io/*"] {
        let (ok, stdout, stderr) = export(data.path(), &work.path().join("y.tar"), &[nothing]);
        assert!(!ok, "{nothing} exported: {stdout}");
        assert!(stderr.contains(nothing), "{stderr}");
        assert!(!work.path().join("y.tar").exists());
    }
}

#[test]
fn an_image_whose_blobs_are_not_here_is_refused_by_name() {
    // A pull-through cache holds a manifest before its blobs.
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 8);
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
    });
    let resp = http::get(&http::manifest_url(&mirror.url(), "up.test/team/app", "1"));
    assert_eq!(resp.status, 200);
    let data = mirror.stop();
    let out = data.path().join("x.tar");
    let (ok, stdout, stderr) = export(data.path(), &out, &[]);
    assert!(!ok, "exported: {stdout}");
    assert!(stderr.contains("up.test/team/app:1"), "{stderr}");
    assert!(
        stderr.contains(&image.config_digest) || stderr.contains(&image.layer_digest),
        "{stderr}"
    );
}

#[test]
fn skopeo_copies_an_image_out_of_the_archive_by_its_full_name() {
    require_programs("skopeo_copies_an_image_out", &[("skopeo", "skopeo")]);
    let reg = TestRegistry::start();
    let image = http::push_image(&reg.url(), "docker.io/library/app", Some("1"), 9);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("images.tar");
    must_export(data.path(), &archive, &[]);

    let target = TestRegistry::start();
    let skopeo = Skopeo::new();
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:docker.io/library/app:1", archive.display()),
        &format!("docker://{}/library/app:1", target.host()),
    ]);
    let resp = http::get(&http::manifest_url(&target.url(), "library/app", "1"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == image.manifest, "skopeo changed the manifest");
    let layer = http::get(&http::blob_url(
        &target.url(),
        "library/app",
        &image.layer_digest,
    ));
    assert!(layer.body == image.layer);
}
