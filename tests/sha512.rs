//! sha512 throughout: blobs pushed every way, resumable sha512 upload state,
//! manifests named by sha512 digests, and what prune and fsck do with them.
//! sha256 is the canonical algorithm; sha512 is the other one OCI registers.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::http::{self, OCI_INDEX, OCI_MANIFEST, Response, assert_error};
use common::process;
use common::{TestRegistry, blob_file};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha512};

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

fn sha512_digest(data: &[u8]) -> String {
    let hex: String = Sha512::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha512:{hex}")
}

fn finish(upload: &str, digest: &str, body: &[u8]) -> Response {
    http::put(
        &http::with_query(upload, &format!("digest={digest}")),
        &[OCTETS],
        body,
    )
}

#[track_caller]
fn must_patch(upload: &str, chunk: &[u8]) -> String {
    let resp = http::patch(upload, &[OCTETS], chunk);
    assert_eq!(resp.status, 202, "PATCH: {resp:?}");
    resp.location().to_owned()
}

/// Asserts `repo` serves `data` under its sha512 digest, with that digest
/// in Docker-Content-Digest, on GET and HEAD.
#[track_caller]
fn assert_blob(base: &str, repo: &str, data: &[u8]) {
    let digest = sha512_digest(data);
    let url = http::blob_url(base, repo, &digest);
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "GET {repo}@{digest}: {resp:?}");
    assert!(resp.body == data, "{repo}@{digest} serves other bytes");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    let resp = http::head(&url);
    assert_eq!(resp.status, 200, "HEAD: {resp:?}");
    assert_eq!(
        resp.header("content-length"),
        Some(data.len().to_string().as_str())
    );
}

#[track_caller]
fn assert_created(resp: &Response, repo: &str, digest: &str) {
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest));
    assert_eq!(resp.location(), format!("/v2/{repo}/blobs/{digest}"));
}

fn uploads(base: &str, repo: &str, query: &str) -> String {
    format!("{}?{query}", http::uploads_url(base, repo))
}

#[test]
fn a_monolithic_post_stores_a_sha512_blob_under_its_own_directory() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let data = http::random_bytes(70_000, 1);
    let digest = sha512_digest(&data);
    let resp = http::post(
        &uploads(&base, "s/one", &format!("digest={digest}")),
        &[OCTETS],
        &data,
    );
    assert_created(&resp, "s/one", &digest);
    assert_blob(&base, "s/one", &data);
    let dir = registry.stop();
    assert_eq!(std::fs::read(blob_file(dir.path(), &digest)).unwrap(), data);
}

#[test]
fn a_hinted_sha512_upload_resumes_its_hash_from_the_database_after_a_restart() {
    let data = http::random_bytes(200_000, 6);
    let registry = TestRegistry::start();
    let base = registry.url();
    let resp = http::post(
        &uploads(&base, "s/resume", "digest-algorithm=sha512"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = http::resolve(&base, resp.location());
    let next = must_patch(&upload, &data[..150_000]);
    let dir = registry.stop();

    // The committed bytes are overwritten on disk: only a hash resumed from
    // the saved sha512 state still matches the original content.
    let id = http::path_of(&upload)
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("uploads").join(&id))
        .unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&http::random_bytes(150_000, 7)).unwrap();
    drop(file);

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = http::resolve(&base, &next);
    let resp = finish(&upload, &sha512_digest(&data), &data[150_000..]);
    assert_created(&resp, "s/resume", &sha512_digest(&data));
}

/// Pushes `data` by its sha512 digest and returns its descriptor.
fn push_sha512(base: &str, repo: &str, media_type: &str, data: &[u8]) -> Value {
    let digest = sha512_digest(data);
    let resp = http::post(
        &uploads(base, repo, &format!("digest={digest}")),
        &[OCTETS],
        data,
    );
    assert_created(&resp, repo, &digest);
    json!({"mediaType": media_type, "digest": digest, "size": data.len()})
}

#[track_caller]
fn put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    http::put(
        &http::manifest_url(base, repo, reference),
        &[("Content-Type", media_type)],
        body,
    )
}

/// An image whose blobs and manifest are all named by sha512 digests;
/// returns the manifest and its digest.
fn push_image(base: &str, repo: &str, seed: u64) -> (Vec<u8>, String) {
    let config = push_sha512(
        base,
        repo,
        "application/vnd.oci.image.config.v1+json",
        format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).as_bytes(),
    );
    let layer = push_sha512(
        base,
        repo,
        "application/vnd.oci.image.layer.v1.tar",
        &http::random_bytes(5_000, seed),
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    }))
    .unwrap();
    let digest = sha512_digest(&manifest);
    let resp = put_manifest(base, repo, &digest, OCI_MANIFEST, &manifest);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(resp.location(), format!("/v2/{repo}/manifests/{digest}"));
    (manifest, digest)
}

#[test]
fn prune_and_fsck_handle_sha512_blobs() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let (_, digest) = push_image(&base, "s/gc", 10);
    let loose = http::random_bytes(8_000, 11);
    push_sha512(&base, "s/gc", "application/octet-stream", &loose);
    let dir = registry.stop();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["prune", "--grace", "0s", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 manifests, 0 tags, 1 blobs"), "{stdout}");
    assert!(!blob_file(dir.path(), &sha512_digest(&loose)).exists());

    let clean = process::fsck(dir.path(), false);
    assert_eq!(clean.code, Some(0), "{clean:#?}");
    // The image's layer, damaged on disk, is found by its sha512 hash.
    let layer = sha512_digest(&http::random_bytes(5_000, 10));
    let mut bytes = std::fs::read(blob_file(dir.path(), &layer)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(blob_file(dir.path(), &layer), bytes).unwrap();
    let found = process::fsck(dir.path(), false);
    assert_ne!(found.code, Some(0), "{found:#?}");
    assert!(
        found
            .findings_of("corrupt:")
            .iter()
            .any(|f| f.contains(&layer)),
        "{found:#?}"
    );

    let registry = TestRegistry::start_in(dir);
    let resp = http::get(&http::manifest_url(&registry.url(), "s/gc", &digest));
    assert_eq!(resp.status, 200, "{resp:?}");
}

common::both_engines! {
#[test]
fn post_then_put_and_chunked_uploads_finish_with_a_sha512_digest() {
    let registry = TestRegistry::start();
    let base = registry.url();

    // POST, then the whole blob in the PUT.
    let data = http::random_bytes(50_000, 2);
    let upload = http::start_upload(&base, "s/two");
    let resp = finish(&upload, &sha512_digest(&data), &data);
    assert_created(&resp, "s/two", &sha512_digest(&data));
    assert_blob(&base, "s/two", &data);

    // Chunks with no digest-algorithm hint: the session hashed sha256, and
    // the sha512 PUT still verifies.
    let data = http::random_bytes(300_000, 3);
    let mut upload = http::start_upload(&base, "s/two");
    for chunk in data.chunks(100_000) {
        upload = http::resolve(&base, &must_patch(&upload, chunk));
    }
    let resp = finish(&upload, &sha512_digest(&data), b"");
    assert_created(&resp, "s/two", &sha512_digest(&data));
    assert_blob(&base, "s/two", &data);

    // A session hinted sha512 that the client finishes with sha256.
    let data = http::random_bytes(90_000, 4);
    let upload = http::resolve(
        &base,
        http::post(
            &uploads(&base, "s/two", "digest-algorithm=sha512"),
            &[],
            b"",
        )
        .location(),
    );
    let upload = http::resolve(&base, &must_patch(&upload, &data));
    let resp = finish(&upload, &http::sha256_digest(&data), b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        http::get(&http::blob_url(&base, "s/two", &http::sha256_digest(&data))).body,
        data
    );
}

#[test]
fn a_wrong_sha512_digest_is_400_digest_invalid_and_nothing_is_stored() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let data = http::random_bytes(40_000, 5);
    let wrong = sha512_digest(b"something else");
    for hint in ["", "digest-algorithm=sha512"] {
        let upload = http::resolve(
            &base,
            http::post(&uploads(&base, "s/bad", hint), &[], b"").location(),
        );
        let upload = http::resolve(&base, &must_patch(&upload, &data));
        assert_error(&finish(&upload, &wrong, b""), 400, "DIGEST_INVALID");
    }
    let resp = http::post(
        &uploads(&base, "s/bad", &format!("digest={wrong}")),
        &[OCTETS],
        &data,
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
    for digest in [wrong, sha512_digest(&data)] {
        assert_eq!(
            http::head(&http::blob_url(&base, "s/bad", &digest)).status,
            404
        );
    }
}

#[test]
fn an_unknown_digest_algorithm_is_refused_at_post() {
    let registry = TestRegistry::start();
    let base = registry.url();
    for query in [
        "digest-algorithm=md5",
        "digest-algorithm=sha384",
        "digest-algorithm=",
    ] {
        let resp = http::post(&uploads(&base, "s/alg", query), &[], b"");
        assert_error(&resp, 400, "DIGEST_INVALID");
    }
    let resp = http::post(
        &uploads(
            &base,
            "s/alg",
            &format!("digest=sha384:{}", "ab".repeat(48)),
        ),
        &[OCTETS],
        b"x",
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
}

#[test]
fn manifests_named_by_sha512_digests_are_stored_served_and_indexed() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let (manifest, digest) = push_image(&base, "s/img", 8);
    for method in ["GET", "HEAD"] {
        let resp = http::request(
            method,
            &http::manifest_url(&base, "s/img", &digest),
            &[],
            b"",
        );
        assert_eq!(resp.status, 200, "{method}: {resp:?}");
        assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
        if method == "GET" {
            assert!(resp.body == manifest);
        }
    }

    // A body that does not hash to the sha512 digest in the URL is refused.
    let mut other = manifest.clone();
    other.extend_from_slice(b"  ");
    assert_error(
        &put_manifest(&base, "s/img", &digest, OCI_MANIFEST, &other),
        400,
        "DIGEST_INVALID",
    );

    // An index named by sha512, tagged, over the sha512 manifest; and an
    // artifact whose subject is the sha512 manifest.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}],
    }))
    .unwrap();
    let index_digest = sha512_digest(&index);
    let resp = put_manifest(&base, "s/img", &index_digest, OCI_INDEX, &index);
    assert_eq!(resp.status, 201, "{resp:?}");
    let resp = put_manifest(&base, "s/img", "multi", OCI_INDEX, &index);
    assert_eq!(resp.status, 201, "{resp:?}");
    // By tag, a manifest is named by its canonical (sha256) digest.
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(http::sha256_digest(&index).as_str())
    );

    let empty = push_sha512(&base, "s/img", "application/vnd.oci.empty.v1+json", b"{}");
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": empty,
        "layers": [empty],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()},
    }))
    .unwrap();
    let artifact_digest = sha512_digest(&artifact);
    let resp = put_manifest(&base, "s/img", &artifact_digest, OCI_MANIFEST, &artifact);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("oci-subject"), Some(digest.as_str()));
    let referrers = http::get(&format!("{base}/v2/s/img/referrers/{digest}")).json();
    assert_eq!(referrers["manifests"][0]["digest"], json!(artifact_digest));

    assert_eq!(
        http::delete(&http::manifest_url(&base, "s/img", &artifact_digest)).status,
        202
    );
    assert_eq!(
        http::get(&http::manifest_url(&base, "s/img", &artifact_digest)).status,
        404
    );
}

#[test]
fn sha512_blobs_mount_and_delete_like_any_other() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let data = http::random_bytes(30_000, 9);
    let digest = sha512_digest(&data);
    push_sha512(&base, "s/from", "application/octet-stream", &data);
    let resp = http::post(
        &uploads(&base, "s/to", &format!("mount={digest}&from=s/from")),
        &[],
        b"",
    );
    assert_created(&resp, "s/to", &digest);
    assert_blob(&base, "s/to", &data);
    assert_eq!(
        http::delete(&http::blob_url(&base, "s/to", &digest)).status,
        202
    );
    assert_eq!(
        http::head(&http::blob_url(&base, "s/to", &digest)).status,
        404
    );
    assert_blob(&base, "s/from", &data);
}
}
