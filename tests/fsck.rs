//! `berth fsck`: on a directory written by a server and then stopped, it
//! re-hashes every blob and finds missing, corrupt and orphaned files; with
//! `--repair` it takes bad blobs out of service (moving corrupt files to
//! `quarantine/`) and removes orphans. Against a live server's directory it
//! refuses, and changes nothing.

mod common;

use std::path::{Path, PathBuf};

use common::http;
use common::process::{self, FsckOutput, ServerProcess};
use common::{TestRegistry, blob_file};

#[track_caller]
fn assert_exit(out: &FsckOutput, code: i32) {
    assert_eq!(out.code, Some(code), "fsck exit code: {out:#?}");
}

#[track_caller]
fn assert_blob_serves(base: &str, name: &str, data: &[u8]) {
    let digest = http::sha256_digest(data);
    let resp = http::get(&http::blob_url(base, name, &digest));
    assert_eq!(resp.status, 200, "GET {name}@{digest}: {resp:?}");
    assert!(resp.body == data, "{name}@{digest} serves other bytes");
}

#[track_caller]
fn assert_manifest_serves(base: &str, name: &str, reference: &str, body: &[u8]) {
    let resp = http::get(&http::manifest_url(base, name, reference));
    assert_eq!(
        resp.status, 200,
        "GET manifest {name}:{reference}: {resp:?}"
    );
    assert!(
        resp.body == body,
        "manifest {name}:{reference} has other bytes"
    );
}

/// Every file under blobs/ with its bytes, to prove nothing changed.
fn blob_tree(data: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    process::files_under(&data.join("blobs"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_clean_directory_passes() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let a = http::push_image(&base, "fsck/clean", Some("v1"), 11);
    let b = http::push_image(&base, "fsck/clean", Some("v2"), 12);
    let extra = http::random_bytes(200_000, 13);
    http::push_blob(&base, "fsck/other", &extra);
    // An upload in progress is owned by its row: not an orphan.
    let upload = http::start_upload(&base, "fsck/clean");
    let resp = http::patch(&upload, &[("Content-Range", "0-9")], b"0123456789");
    assert_eq!(resp.status, 202, "{resp:?}");
    let dir = registry.stop();

    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 0);
    assert!(
        out.findings().is_empty(),
        "findings on a clean dir: {out:#?}"
    );
    let bytes =
        (a.config.len() + a.layer.len() + b.config.len() + b.layer.len() + extra.len()) as u64;
    assert_eq!(out.summary(), (5, bytes, 0, 0), "summary: {out:#?}");

    // --repair on a clean directory repairs nothing and removes nothing.
    let before = process::files_under(dir.path());
    let out = process::fsck(dir.path(), true);
    assert_exit(&out, 0);
    assert_eq!(out.summary(), (5, bytes, 0, 0), "summary: {out:#?}");
    assert_eq!(process::files_under(dir.path()), before);
}

#[test]
fn a_corrupt_blob_is_reported_and_quarantined_by_repair() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let bad = http::push_image(&base, "fsck/corrupt", Some("bad"), 21);
    let good = http::push_image(&base, "fsck/corrupt", Some("good"), 22);
    let dir = registry.stop();

    // Flip one byte of the first image's layer.
    let path = blob_file(dir.path(), &bad.layer_digest);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, bad.layer);
    bytes[bad.layer.len() / 2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 1);
    let corrupt = out.findings_of("corrupt:");
    assert_eq!(
        out.findings().len(),
        1,
        "exactly one finding expected: {out:#?}"
    );
    assert_eq!(corrupt.len(), 1, "{out:#?}");
    assert!(
        corrupt[0].contains(&bad.layer_digest),
        "the corrupt line names the digest: {out:#?}"
    );
    assert_eq!(out.summary().2, 1, "one problem: {out:#?}");
    // A check without --repair changes nothing.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!dir.path().join("quarantine").exists());

    let out = process::fsck(dir.path(), true);
    assert_exit(&out, 0);
    let (_, _, problems, repaired) = out.summary();
    assert_eq!((problems, repaired), (1, 1), "summary: {out:#?}");
    assert!(!path.exists(), "corrupt file still in blobs/");
    let hex = bad.layer_digest.strip_prefix("sha256:").unwrap();
    let quarantined = dir.path().join("quarantine").join(hex);
    assert_eq!(
        std::fs::read(&quarantined).expect("corrupt file moved to quarantine/"),
        bytes,
        "quarantine holds the corrupt bytes"
    );

    // Served again: the corrupt blob is unavailable, everything else serves.
    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let url = http::blob_url(&base, "fsck/corrupt", &bad.layer_digest);
    let resp = http::head(&url);
    assert_eq!(resp.status, 404, "HEAD of a quarantined blob: {resp:?}");
    let resp = http::get(&url);
    assert_eq!(resp.status, 404, "GET of a quarantined blob: {resp:?}");
    assert_blob_serves(&base, "fsck/corrupt", &bad.config);
    assert_blob_serves(&base, "fsck/corrupt", &good.config);
    assert_blob_serves(&base, "fsck/corrupt", &good.layer);
    assert_manifest_serves(&base, "fsck/corrupt", "good", &good.manifest);

    // Pushing the right bytes again brings the blob back.
    http::push_blob(&base, "fsck/corrupt", &bad.layer);
    assert_blob_serves(&base, "fsck/corrupt", &bad.layer);
    let dir = registry.stop();
    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 0);
    assert!(out.findings().is_empty(), "after a re-push: {out:#?}");
}

#[test]
fn a_missing_blob_is_reported() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let gone = http::random_bytes(50_000, 31);
    let kept = http::random_bytes(60_000, 32);
    let gone_digest = http::push_blob(&base, "fsck/missing", &gone);
    http::push_blob(&base, "fsck/missing", &kept);
    let dir = registry.stop();

    std::fs::remove_file(blob_file(dir.path(), &gone_digest)).unwrap();
    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 1);
    let missing = out.findings_of("missing:");
    assert_eq!(out.findings().len(), 1, "{out:#?}");
    assert_eq!(missing.len(), 1, "{out:#?}");
    assert!(missing[0].contains(&gone_digest), "{out:#?}");

    // Repair takes it out of the index: the blob is unknown, not a 500.
    let out = process::fsck(dir.path(), true);
    assert_exit(&out, 0);
    assert_eq!(out.summary().3, 1, "one repaired: {out:#?}");
    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    let resp = http::head(&http::blob_url(&base, "fsck/missing", &gone_digest));
    assert_eq!(
        resp.status, 404,
        "HEAD of a repaired missing blob: {resp:?}"
    );
    let resp = http::get(&http::blob_url(&base, "fsck/missing", &gone_digest));
    assert_eq!(resp.status, 404, "GET of a repaired missing blob: {resp:?}");
    assert_blob_serves(&base, "fsck/missing", &kept);
    let dir = registry.stop();
    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 0);
}

#[test]
fn orphaned_files_are_reported_and_removed_by_repair() {
    let registry = TestRegistry::start();
    let base = registry.url();
    let image = http::push_image(&base, "fsck/orphans", Some("v1"), 41);
    let dir = registry.stop();

    let stray_upload = dir
        .path()
        .join("uploads")
        .join("0b8f4a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b");
    std::fs::write(&stray_upload, b"half an upload").unwrap();
    // A blob file that looks right (named by its own digest) but has no row.
    let stray = http::random_bytes(10_000, 42);
    let stray_digest = http::sha256_digest(&stray);
    let stray_blob = blob_file(dir.path(), &stray_digest);
    std::fs::create_dir_all(stray_blob.parent().unwrap()).unwrap();
    std::fs::write(&stray_blob, &stray).unwrap();

    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 1);
    let orphaned = out.findings_of("orphaned:");
    assert_eq!(out.findings().len(), 2, "{out:#?}");
    assert_eq!(orphaned.len(), 2, "{out:#?}");
    for path in [&stray_upload, &stray_blob] {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            orphaned.iter().any(|l| l.contains(name)),
            "no orphaned line names {}: {out:#?}",
            path.display()
        );
    }
    assert!(
        stray_upload.exists() && stray_blob.exists(),
        "check alone removed files"
    );

    let out = process::fsck(dir.path(), true);
    assert_exit(&out, 0);
    assert_eq!(out.summary().2, 2, "{out:#?}");
    assert_eq!(out.summary().3, 2, "{out:#?}");
    assert!(!stray_upload.exists(), "repair left the stray upload file");
    assert!(!stray_blob.exists(), "repair left the stray blob file");

    let out = process::fsck(dir.path(), false);
    assert_exit(&out, 0);
    assert!(out.findings().is_empty(), "{out:#?}");
    // The real content is untouched.
    let registry = TestRegistry::start_in(dir);
    let base = registry.url();
    assert_blob_serves(&base, "fsck/orphans", &image.config);
    assert_blob_serves(&base, "fsck/orphans", &image.layer);
    assert_manifest_serves(&base, "fsck/orphans", "v1", &image.manifest);
    let resp = http::head(&http::blob_url(&base, "fsck/orphans", &stray_digest));
    assert_eq!(resp.status, 404, "{resp:?}");
}

#[test]
fn fsck_refuses_a_directory_a_server_is_using_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let server = ServerProcess::start(&data, &log);
    let base = server.url();
    let image = http::push_image(&base, "fsck/live", Some("v1"), 51);
    let blob = http::random_bytes(300_000, 52);
    http::push_blob(&base, "fsck/live", &blob);
    // Something --repair would remove if it ran: an orphan in uploads/
    // (start-up sweeps these, a running server does not).
    let stray = data
        .join("uploads")
        .join("7d3e2c1b-aaaa-4bbb-8ccc-0123456789ab");
    std::fs::write(&stray, b"stray").unwrap();
    let before = blob_tree(&data);
    let db = std::fs::read(data.join("berth.redb")).unwrap();

    for repair in [false, true] {
        let out = process::fsck(&data, repair);
        assert_ne!(
            out.code,
            Some(0),
            "fsck over a live dir succeeded: {out:#?}"
        );
        assert!(
            out.stderr.contains("in use") || out.stdout.contains("in use"),
            "fsck (repair: {repair}) over a live dir does not say \"in use\": {out:#?}"
        );
        assert!(
            !out.stdout.contains("problems found"),
            "fsck checked a live dir: {out:#?}"
        );
    }
    assert!(
        stray.exists(),
        "fsck --repair removed a file under a live server"
    );
    assert!(blob_tree(&data) == before, "blob files changed");
    assert!(
        std::fs::read(data.join("berth.redb")).unwrap() == db,
        "the database file changed"
    );
    assert!(!data.join("quarantine").exists());

    // The server still serves everything, and still takes writes.
    let resp = http::get(&format!("{base}/v2/"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_blob_serves(&base, "fsck/live", &image.config);
    assert_blob_serves(&base, "fsck/live", &image.layer);
    assert_blob_serves(&base, "fsck/live", &blob);
    assert_manifest_serves(&base, "fsck/live", "v1", &image.manifest);
    let more = http::random_bytes(1000, 53);
    http::push_blob(&base, "fsck/live", &more);
    assert_blob_serves(&base, "fsck/live", &more);
    server.stop();

    // Stopped, the same directory checks; the stray file is an orphan.
    let out = process::fsck(&data, false);
    assert_exit(&out, 1);
    assert_eq!(out.findings_of("orphaned:").len(), 1, "{out:#?}");
    assert_eq!(out.findings().len(), 1, "{out:#?}");
}
