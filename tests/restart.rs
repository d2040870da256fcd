//! Restarts: upload sessions continue where their last committed chunk ended
//! (bytes a dying server half wrote are cut back, and the sha256 state comes
//! from the database, not from rereading the file); blobs, manifests and tags
//! survive; cancelled uploads stay gone.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::TestRegistry;
use common::http::{self, Response, assert_error};

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// The upload id: the last path segment of an upload URL.
fn upload_id(url: &str) -> String {
    let path = http::path_of(url).split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_owned()
}

/// The same upload's URL on a (restarted) server at `base`.
fn on(base: &str, upload: &str) -> String {
    http::resolve(base, http::path_of(upload))
}

fn upload_file(data: &Path, upload: &str) -> PathBuf {
    data.join("uploads").join(upload_id(upload))
}

fn patch_at(upload: &str, start: usize, chunk: &[u8]) -> Response {
    let range = format!("{}-{}", start, start + chunk.len() - 1);
    http::patch(upload, &[OCTETS, ("Content-Range", &range)], chunk)
}

/// PATCHes `chunk` at `start`, asserting 202 and the new committed range.
#[track_caller]
fn must_patch(upload: &str, start: usize, chunk: &[u8]) {
    let resp = patch_at(upload, start, chunk);
    assert_eq!(resp.status, 202, "PATCH at {start}: {resp:?}");
    let end = start + chunk.len();
    assert_eq!(
        resp.header("range"),
        Some(format!("0-{}", end - 1).as_str()),
        "{resp:?}"
    );
}

/// GET upload status: asserts 204 and the Range of `committed` bytes.
#[track_caller]
fn assert_status(upload: &str, committed: usize) {
    let resp = http::get(upload);
    assert_eq!(resp.status, 204, "upload status: {resp:?}");
    let expected = format!("0-{}", committed.saturating_sub(1));
    assert_eq!(
        resp.header("range"),
        Some(expected.as_str()),
        "upload status after restart should report {committed} committed bytes: {resp:?}"
    );
    assert_eq!(
        resp.header("docker-upload-uuid"),
        Some(upload_id(upload).as_str()),
        "{resp:?}"
    );
}

fn finish(upload: &str, digest: &str, body: &[u8]) -> Response {
    http::put(
        &http::with_query(upload, &format!("digest={digest}")),
        &[OCTETS],
        body,
    )
}

#[track_caller]
fn assert_blob(base: &str, name: &str, data: &[u8]) {
    let digest = http::sha256_digest(data);
    let url = http::blob_url(base, name, &digest);
    let resp = http::head(&url);
    assert_eq!(resp.status, 200, "HEAD {name}@{digest}: {resp:?}");
    assert_eq!(
        resp.header("content-length"),
        Some(data.len().to_string().as_str()),
        "{resp:?}"
    );
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "GET {name}@{digest}: {resp:?}");
    assert_eq!(resp.body.len(), data.len(), "size of {name}@{digest}");
    assert!(resp.body == data, "{name}@{digest} serves other bytes");
}

#[track_caller]
fn assert_manifest(base: &str, name: &str, reference: &str, media_type: &str, body: &[u8]) {
    let resp = http::get(&http::manifest_url(base, name, reference));
    assert_eq!(
        resp.status, 200,
        "GET manifest {name}:{reference}: {resp:?}"
    );
    assert_eq!(resp.header("content-type"), Some(media_type), "{resp:?}");
    assert!(resp.body == body, "manifest {name}:{reference} changed");
}

#[test]
fn a_chunk_half_written_when_the_server_died_is_cut_back() {
    let data = http::random_bytes(250_000, 2);
    let digest = http::sha256_digest(&data);
    let registry = TestRegistry::start();
    let upload = http::start_upload(&registry.url(), "restart/garbage");
    must_patch(&upload, 0, &data[..120_000]);
    let dir = registry.stop();

    // What a server killed in the middle of the next chunk leaves: bytes
    // past the committed end that no row accounts for.
    let file = upload_file(dir.path(), &upload);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&http::random_bytes(77_777, 99)).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 120_000 + 77_777);

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 120_000);
    must_patch(&upload, 120_000, &data[120_000..200_000]);
    assert_status(&upload, 200_000);
    let resp = finish(&upload, &digest, &data[200_000..]);
    assert_eq!(resp.status, 201, "PUT after garbage was cut back: {resp:?}");
    assert_blob(&base, "restart/garbage", &data);
}

/// As above, for a session's first chunk: nothing is committed, but its
/// file is there, longer than anything the client sends next. Finished in
/// one small PUT and in one big one, the blob is the client's bytes alone.
#[test]
fn a_first_chunk_half_written_when_the_server_died_is_cut_back() {
    let registry = TestRegistry::start();
    let uploads: Vec<(Vec<u8>, String)> = [30_000, 2 << 20]
        .into_iter()
        .map(|size| {
            let upload = http::start_upload(&registry.url(), "restart/first");
            (http::random_bytes(size, size as u64), upload)
        })
        .collect();
    let dir = registry.stop();
    for (data, upload) in &uploads {
        let garbage = http::random_bytes(data.len() + 55_555, 7);
        std::fs::write(upload_file(dir.path(), upload), garbage).unwrap();
    }

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    for (data, upload) in &uploads {
        let upload = on(&base, upload);
        assert_status(&upload, 0);
        let resp = finish(&upload, &http::sha256_digest(data), data);
        assert_eq!(resp.status, 201, "PUT over a killed first chunk: {resp:?}");
        assert_blob(&base, "restart/first", data);
    }
    // Served up to its recorded size, a file with the garbage's tail left
    // on would still read right: its length tells.
    let dir = registry.stop();
    for (data, _) in &uploads {
        let file = common::blob_file(dir.path(), &http::sha256_digest(data));
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(
            len,
            data.len() as u64,
            "{} holds more than its blob",
            file.display()
        );
    }
}

#[test]
fn garbage_past_the_committed_end_is_cut_back_by_a_streamed_patch_and_a_final_put() {
    // Same as above, but the chunks after the restart carry no
    // Content-Range (streamed), and the last one comes with the PUT: both
    // must land at the committed end, not at the end of the file.
    let data = http::random_bytes(90_000, 3);
    let digest = http::sha256_digest(&data);
    let registry = TestRegistry::start();
    let upload = http::start_upload(&registry.url(), "restart/stream");
    must_patch(&upload, 0, &data[..30_000]);
    let dir = registry.stop();
    let file = upload_file(dir.path(), &upload);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(b"garbage that must never reach the blob")
        .unwrap();
    drop(f);

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 30_000);
    let resp = http::patch(&upload, &[OCTETS], &data[30_000..60_000]);
    assert_eq!(resp.status, 202, "streamed PATCH: {resp:?}");
    assert_eq!(resp.header("range"), Some("0-59999"), "{resp:?}");
    let dir = registry.stop();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(b"more garbage").unwrap();
    drop(f);

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 60_000);
    let resp = finish(&upload, &digest, &data[60_000..]);
    assert_eq!(resp.status, 201, "PUT with the last chunk: {resp:?}");
    assert_blob(&base, "restart/stream", &data);
}

#[test]
fn the_hash_state_comes_from_the_database_not_from_the_file() {
    let data = http::random_bytes(200_000, 4);
    let digest = http::sha256_digest(&data);
    let registry = TestRegistry::start();
    let base = registry.url();
    let upload = http::start_upload(&base, "restart/hash");
    must_patch(&upload, 0, &data[..150_000]);
    // A second upload of the same bytes, to finish with the digest of what
    // the file holds after tampering.
    let other = http::start_upload(&base, "restart/hash");
    must_patch(&other, 0, &data[..150_000]);
    let dir = registry.stop();

    // Overwrite the committed bytes with different bytes of the same length.
    let tampered = http::random_bytes(150_000, 5);
    assert_ne!(tampered, data[..150_000]);
    for u in [&upload, &other] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(upload_file(dir.path(), u))
            .unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&tampered).unwrap();
    }

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 150_000);
    must_patch(&upload, 150_000, &data[150_000..]);
    // Only a hash resumed from the saved state matches the original bytes;
    // an implementation that rereads the file computes another digest.
    let resp = finish(&upload, &digest, b"");
    assert_eq!(
        resp.status, 201,
        "PUT with the digest of the original content after the committed bytes \
         were overwritten on disk (the server must resume the hash from its database): {resp:?}"
    );

    // And the digest of what the file now holds is refused.
    let other = on(&base, &other);
    assert_status(&other, 150_000);
    let mut on_disk = tampered.clone();
    on_disk.extend_from_slice(&data[150_000..]);
    let resp = finish(&other, &http::sha256_digest(&on_disk), &data[150_000..]);
    assert_error(&resp, 400, "DIGEST_INVALID");
}

/// A cancel cut short by a crash unlinks the upload file before it removes
/// the session's row. That session must then be gone for every request,
/// status included: it cannot be continued, and it must not look as if it
/// could.
#[test]
fn a_session_whose_file_is_gone_is_unknown_to_every_request() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let data = http::random_bytes(30_000, 13);
    let upload = http::start_upload(&base, "restart/lost");
    must_patch(&upload, 0, &data[..10_000]);
    let dir = registry.stop();
    std::fs::remove_file(upload_file(dir.path(), &upload)).expect("the upload file exists");

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_error(&http::get(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &patch_at(&upload, 10_000, &data[10_000..]),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &finish(&upload, &http::sha256_digest(&data), &data[10_000..]),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_eq!(
        http::head(&http::blob_url(
            &base,
            "restart/lost",
            &http::sha256_digest(&data)
        ))
        .status,
        404
    );
}

common::both_engines! {
#[test]
fn an_upload_continues_after_a_restart() {
    let data = http::random_bytes(3 * 100_000 + 123, 1);
    let digest = http::sha256_digest(&data);
    let registry = TestRegistry::start();
    let upload = http::start_upload(&registry.url(), "restart/chunks");
    must_patch(&upload, 0, &data[..100_000]);
    must_patch(&upload, 100_000, &data[100_000..200_000]);
    let dir = registry.stop();
    if common::engine() == common::Engine::Embedded {
        assert_eq!(
            std::fs::metadata(upload_file(dir.path(), &upload))
                .unwrap()
                .len(),
            200_000,
            "the upload file holds the committed bytes"
        );
    }

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 200_000);
    // A chunk at the wrong offset is refused with the committed range.
    let resp = patch_at(&upload, 100_000, &data[100_000..200_000]);
    assert_eq!(resp.status, 416, "PATCH at an old offset: {resp:?}");
    assert_eq!(resp.header("range"), Some("0-199999"), "{resp:?}");
    must_patch(&upload, 200_000, &data[200_000..300_000]);
    let resp = finish(&upload, &digest, &data[300_000..]);
    assert_eq!(resp.status, 201, "PUT after a restart: {resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_blob(&base, "restart/chunks", &data);
    let resp = http::get(&upload);
    assert_error(&resp, 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn many_restarts_across_one_upload() {
    let chunk = 64 * 1024 + 7;
    let data = http::random_bytes(5 * chunk, 6);
    let digest = http::sha256_digest(&data);
    let mut registry = TestRegistry::start();
    let mut upload = http::start_upload(&registry.url(), "restart/many");
    for i in 0..5 {
        registry = TestRegistry::start_in(registry.stop());
        let base = registry.url();
        upload = on(&base, &upload);
        assert_status(&upload, i * chunk);
        must_patch(&upload, i * chunk, &data[i * chunk..(i + 1) * chunk]);
    }
    registry = TestRegistry::start_in(registry.stop());
    let base = registry.url();
    let upload = on(&base, &upload);
    assert_status(&upload, 5 * chunk);
    let resp = finish(&upload, &digest, b"");
    assert_eq!(resp.status, 201, "PUT after five restarts: {resp:?}");
    registry = TestRegistry::start_in(registry.stop());
    assert_blob(&registry.url(), "restart/many", &data);
}

#[test]
fn blobs_manifests_and_tags_survive_restarts() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let amd = http::push_image(&base, "restart/app", Some("amd64"), 7);
    let arm = http::push_image(&base, "restart/app", None, 8);
    let index = http::image_index(&[amd.descriptor(), arm.descriptor()]);
    let index_digest = http::push_manifest(&base, "restart/app", "latest", http::OCI_INDEX, &index);
    let big = http::random_bytes(2 << 20, 9);
    http::push_blob_put(&base, "restart/big", &big);
    // Deleted before the restart: stays deleted after it.
    let doomed = http::push_image(&base, "restart/app", Some("doomed"), 10);
    let resp = http::delete(&http::manifest_url(&base, "restart/app", &doomed.digest));
    assert_eq!(resp.status, 202, "{resp:?}");
    let unlinked = http::random_bytes(5000, 11);
    let unlinked_digest = http::push_blob(&base, "restart/app", &unlinked);
    let resp = http::delete(&http::blob_url(&base, "restart/app", &unlinked_digest));
    assert_eq!(resp.status, 202, "{resp:?}");

    let mut registry = registry;
    for _ in 0..2 {
        registry = TestRegistry::start_in(registry.stop());
        let base = registry.url();
        for image in [&amd, &arm] {
            assert_blob(&base, "restart/app", &image.config);
            assert_blob(&base, "restart/app", &image.layer);
            assert_manifest(
                &base,
                "restart/app",
                &image.digest,
                http::OCI_MANIFEST,
                &image.manifest,
            );
        }
        assert_manifest(
            &base,
            "restart/app",
            "amd64",
            http::OCI_MANIFEST,
            &amd.manifest,
        );
        assert_manifest(&base, "restart/app", "latest", http::OCI_INDEX, &index);
        assert_manifest(&base, "restart/app", &index_digest, http::OCI_INDEX, &index);
        assert_blob(&base, "restart/big", &big);

        let resp = http::get(&format!("{base}/v2/restart/app/tags/list"));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(
            resp.json()["tags"],
            serde_json::json!(["amd64", "latest"]),
            "tags after a restart: {resp:?}"
        );
        let resp = http::get(&format!("{base}/v2/_catalog"));
        assert_eq!(
            resp.json()["repositories"],
            serde_json::json!(["restart/app", "restart/big"]),
            "{resp:?}"
        );
        let resp = http::get(&http::manifest_url(&base, "restart/app", &doomed.digest));
        assert_error(&resp, 404, "MANIFEST_UNKNOWN");
        let resp = http::get(&http::manifest_url(&base, "restart/app", "doomed"));
        assert_error(&resp, 404, "MANIFEST_UNKNOWN");
        let resp = http::head(&http::blob_url(&base, "restart/app", &unlinked_digest));
        assert_eq!(resp.status, 404, "a deleted blob came back: {resp:?}");
    }
}

#[test]
fn a_cancelled_upload_is_unknown_after_a_restart() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let data = http::random_bytes(40_000, 12);
    let cancelled = http::start_upload(&base, "restart/cancel");
    must_patch(&cancelled, 0, &data);
    let resp = http::delete(&cancelled);
    assert_eq!(resp.status, 204, "DELETE upload: {resp:?}");
    // A neighbour that was not cancelled, started but never written to.
    let kept = http::start_upload(&base, "restart/cancel");
    let dir = registry.stop();
    assert!(!upload_file(dir.path(), &cancelled).exists());

    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let cancelled = on(&base, &cancelled);
    let resp = http::get(&cancelled);
    assert_error(&resp, 404, "BLOB_UPLOAD_UNKNOWN");
    let resp = patch_at(&cancelled, 0, &data);
    assert_error(&resp, 404, "BLOB_UPLOAD_UNKNOWN");
    let resp = finish(&cancelled, &http::sha256_digest(&data), &data);
    assert_error(&resp, 404, "BLOB_UPLOAD_UNKNOWN");
    let resp = http::delete(&cancelled);
    assert_error(&resp, 404, "BLOB_UPLOAD_UNKNOWN");

    let kept = on(&base, &kept);
    let resp = http::get(&kept);
    assert_eq!(
        resp.status, 204,
        "an empty upload after a restart: {resp:?}"
    );
    let resp = finish(&kept, &http::sha256_digest(&data), &data);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "restart/cancel", &data);
}
}
