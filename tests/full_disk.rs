//! A full disk: uploads that do not fit fail with a 5xx and an OCI error
//! body, leave nothing partial visible (or behind), reads keep being served,
//! and once the space is given back uploads work again.
//!
//! Needs root to mount a small tmpfs as the data directory: without it the
//! tests fail (`cargo test -- --skip full_disk` leaves them out).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestRegistry;
use common::http::{self, Response};
use common::process;

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");
const MIB: usize = 1 << 20;

/// A tmpfs mounted for the life of the guard.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A 5xx with an OCI error body.
#[track_caller]
fn assert_storage_error(resp: &Response, what: &str) {
    assert!(
        (500..600).contains(&resp.status),
        "{what} on a full disk: expected a 5xx, got {resp:?}"
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}: {resp:?}"
    );
    let body = resp.json();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors array: {resp:?}"));
    assert!(!errors.is_empty(), "{what}: empty errors: {resp:?}");
    assert!(errors[0]["code"].is_string(), "{what}: {resp:?}");
    assert!(errors[0]["message"].is_string(), "{what}: {resp:?}");
}

#[track_caller]
fn assert_blob(base: &str, name: &str, data: &[u8]) {
    let digest = http::sha256_digest(data);
    let resp = http::get(&http::blob_url(base, name, &digest));
    assert_eq!(resp.status, 200, "GET {name}@{digest}: {resp:?}");
    assert!(resp.body == data, "{name}@{digest} serves other bytes");
}

#[track_caller]
fn assert_no_blob(base: &str, name: &str, digest: &str) {
    let resp = http::head(&http::blob_url(base, name, digest));
    assert_eq!(resp.status, 404, "HEAD {name}@{digest}: {resp:?}");
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Files under `uploads/` that hold bytes of their own: a blob just
/// finished keeps its upload file for a moment as a second name of the
/// blob file (store/settle.rs), which fills nothing.
fn bytes_held_in_uploads(data: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    process::files_under(&uploads_dir(data))
        .into_iter()
        .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.nlink() == 1))
        .collect()
}

fn uploads_dir(data: &Path) -> PathBuf {
    data.join("uploads")
}

/// Starts an upload and PATCHes 1 MiB chunks of a 16 MiB blob until one
/// fails, which it asserts is a 5xx with an OCI error body. Returns the
/// upload URL, the blob, and the bytes committed.
#[track_caller]
fn fill_with_chunks(base: &str, name: &str, seed: u64) -> (String, Vec<u8>, usize) {
    let chunked = http::random_bytes(16 * MIB, seed);
    let upload = http::start_upload(base, name);
    let mut committed = 0;
    let mut failed = None;
    for _ in 0..16 {
        let chunk = &chunked[committed..committed + MIB];
        let range = format!("{}-{}", committed, committed + MIB - 1);
        let resp = http::patch(&upload, &[OCTETS, ("Content-Range", &range)], chunk);
        if resp.status == 202 {
            committed += MIB;
            assert_eq!(
                resp.header("range"),
                Some(format!("0-{}", committed - 1).as_str()),
                "{resp:?}"
            );
            continue;
        }
        failed = Some(resp);
        break;
    }
    let resp = failed.expect("16 MiB of chunks fitted on an 8 MiB disk");
    assert_storage_error(&resp, "a PATCH that does not fit");
    eprintln!("chunked upload: {committed} bytes committed before the disk filled");
    (upload, chunked, committed)
}

#[test]
fn a_full_disk_fails_uploads_cleanly_and_recovers() {
    process::require_root("mounting a tmpfs", "full_disk");
    let tmpfs = Tmpfs::mount("8m");
    let data = tempfile::tempdir_in(tmpfs.path()).expect("data dir on the tmpfs");
    let data_path = data.path().to_path_buf();
    let registry = TestRegistry::start_in(data);
    let base = registry.url();
    let name = "full/disk";

    // Before the disk fills: a small image.
    let image = http::push_image(&base, name, Some("v1"), 1);
    eprintln!(
        "free after the first image: {} bytes",
        free_bytes(tmpfs.path())
    );

    // 1. A monolithic push twice the size of the disk.
    let huge = http::random_bytes(16 * MIB, 2);
    let huge_digest = http::sha256_digest(&huge);
    let url = http::with_query(
        &http::uploads_url(&base, name),
        &format!("digest={huge_digest}"),
    );
    let resp = http::post(&url, &[OCTETS], &huge);
    assert_storage_error(&resp, "a 16 MiB monolithic POST");
    assert_no_blob(&base, name, &huge_digest);
    let leftovers = bytes_held_in_uploads(&data_path);
    assert!(
        leftovers.is_empty(),
        "a failed monolithic upload left partial files (they fill the disk for good, \
         no client can remove them): {leftovers:?}"
    );

    // 2. The same as POST then PUT with the whole body.
    let upload = http::start_upload(&base, name);
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={huge_digest}")),
        &[OCTETS],
        &huge,
    );
    assert_storage_error(&resp, "a 16 MiB PUT");
    assert_no_blob(&base, name, &huge_digest);
    let resp = http::delete(&upload);
    assert_eq!(
        resp.status, 204,
        "DELETE of the failed PUT's upload: {resp:?}"
    );

    // 3. A chunked upload, 1 MiB at a time, until the disk is full.
    let (upload, chunked, committed) = fill_with_chunks(&base, name, 3);
    let chunked_digest = http::sha256_digest(&chunked);
    // The session still stands at its last committed chunk.
    let resp = http::get(&upload);
    assert_eq!(resp.status, 204, "upload status on a full disk: {resp:?}");
    let expected = format!("0-{}", committed.saturating_sub(1));
    assert_eq!(resp.header("range"), Some(expected.as_str()), "{resp:?}");
    // Finishing it with a digest fails without making anything visible.
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={chunked_digest}")),
        &[OCTETS],
        &chunked[committed..committed + 2 * MIB],
    );
    assert!(resp.status >= 400, "finishing on a full disk: {resp:?}");
    assert_no_blob(&base, name, &chunked_digest);
    let resp = http::post(
        &http::with_query(
            &http::uploads_url(&base, name),
            &format!("digest={chunked_digest}"),
        ),
        &[OCTETS],
        &chunked,
    );
    assert_storage_error(&resp, "another monolithic POST on a full disk");
    assert_no_blob(&base, name, &chunked_digest);

    // 4. Reads go on.
    let resp = http::get(&format!("{base}/v2/"));
    assert_eq!(resp.status, 200, "GET /v2/ on a full disk: {resp:?}");
    assert_blob(&base, name, &image.config);
    assert_blob(&base, name, &image.layer);
    for reference in ["v1", image.digest.as_str()] {
        let resp = http::get(&http::manifest_url(&base, name, reference));
        assert_eq!(resp.status, 200, "GET manifest {reference}: {resp:?}");
        assert!(resp.body == image.manifest, "manifest {reference} changed");
    }
    let resp = http::get(&format!("{base}/v2/{name}/tags/list"));
    assert_eq!(resp.status, 200, "tags/list on a full disk: {resp:?}");

    // 5. Give the space back through the API: cancel the session.
    let resp = http::delete(&upload);
    assert_eq!(resp.status, 204, "DELETE of the filling upload: {resp:?}");
    let leftovers = bytes_held_in_uploads(&data_path);
    assert!(
        leftovers.is_empty(),
        "files left in uploads/ after every session was cancelled: {leftovers:?}"
    );
    eprintln!("free after cancelling: {} bytes", free_bytes(tmpfs.path()));

    // 6. Uploads work again: a 1 MiB blob, chunked and monolithic, and a
    // manifest over it.
    let blob = http::random_bytes(MIB, 4);
    let resp = http::post(
        &http::with_query(
            &http::uploads_url(&base, name),
            &format!("digest={}", http::sha256_digest(&blob)),
        ),
        &[OCTETS],
        &blob,
    );
    assert_eq!(
        resp.status, 201,
        "1 MiB push after space came back: {resp:?}"
    );
    assert_blob(&base, name, &blob);
    let second = http::random_bytes(MIB, 5);
    let upload = http::start_upload(&base, name);
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", "0-524287")],
        &second[..MIB / 2],
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={}", http::sha256_digest(&second))),
        &[OCTETS],
        &second[MIB / 2..],
    );
    assert_eq!(
        resp.status, 201,
        "chunked push after space came back: {resp:?}"
    );
    assert_blob(&base, name, &second);
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &image.config),
        &[
            http::descriptor(http::OCI_LAYER, &blob),
            http::descriptor(http::OCI_LAYER, &second),
        ],
    );
    http::push_manifest(&base, name, "v2", http::OCI_MANIFEST, &manifest);
    // 7. Everything is consistent on disk.
    let dir = registry.stop();
    let out = process::fsck(dir.path(), false);
    assert_eq!(out.code, Some(0), "fsck after the full disk: {out:#?}");
    assert!(out.findings().is_empty(), "{out:#?}");
    drop(dir);
    drop(tmpfs);
}

#[test]
fn a_database_write_on_a_full_disk_does_not_break_the_server() {
    process::require_root("mounting a tmpfs", "full_disk");
    let tmpfs = Tmpfs::mount("8m");
    let data = tempfile::tempdir_in(tmpfs.path()).expect("data dir on the tmpfs");
    let registry = TestRegistry::start_in(data);
    let base = registry.url();
    let name = "full/db";
    let image = http::push_image(&base, name, Some("v1"), 11);

    // Full to the last byte: the failed PATCH's partial bytes stay in its
    // upload file until the session is cancelled or written again.
    let (upload, _, _) = fill_with_chunks(&base, name, 12);
    eprintln!("free when full: {} bytes", free_bytes(tmpfs.path()));

    // Writes that only touch the database: a large manifest (the database
    // file has to grow to hold it), a tag, a new session. Each may fit or
    // fail; a failure must be a clean OCI 5xx.
    let big_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": http::OCI_MANIFEST,
        "config": http::descriptor(http::OCI_CONFIG, &image.config),
        "layers": [http::descriptor(http::OCI_LAYER, &image.layer)],
        "annotations": { "filler": "x".repeat(1_500_000) },
    }))
    .unwrap();
    let resp = http::put_manifest(&base, name, "big", http::OCI_MANIFEST, &big_manifest);
    eprintln!("1.5 MB manifest PUT on a full disk: {}", resp.status);
    let big_stored = resp.status == 201;
    if !big_stored {
        assert_storage_error(&resp, "a 1.5 MB manifest PUT");
    }
    let resp = http::put_manifest(&base, name, "again", http::OCI_MANIFEST, &image.manifest);
    eprintln!("tag PUT on a full disk: {}", resp.status);
    let tagged = resp.status == 201;
    if !tagged {
        assert_storage_error(&resp, "a tag PUT");
    }

    // Reads go on.
    let resp = http::get(&format!("{base}/v2/"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_blob(&base, name, &image.layer);
    let resp = http::get(&http::manifest_url(&base, name, "v1"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == image.manifest);

    // The space comes back by cancelling the session that holds it: the
    // only way a client has. After a failed database write this must still
    // work, and so must every write after it.
    let resp = http::delete(&upload);
    assert_eq!(
        resp.status, 204,
        "DELETE of the session that filled the disk, after a database write failed \
         on the full disk: {resp:?}"
    );
    eprintln!("free after cancelling: {} bytes", free_bytes(tmpfs.path()));
    let blob = http::random_bytes(MIB, 13);
    let digest = http::sha256_digest(&blob);
    let resp = http::post(
        &http::with_query(&http::uploads_url(&base, name), &format!("digest={digest}")),
        &[OCTETS],
        &blob,
    );
    assert_eq!(resp.status, 201, "1 MiB push once space is back: {resp:?}");
    assert_blob(&base, name, &blob);
    let resp = http::put_manifest(&base, name, "big", http::OCI_MANIFEST, &big_manifest);
    assert_eq!(
        resp.status, 201,
        "1.5 MB manifest once space is back: {resp:?}"
    );
    let resp = http::get(&http::manifest_url(&base, name, "big"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == big_manifest);
    let _ = tagged;

    let dir = registry.stop();
    let out = process::fsck(dir.path(), false);
    assert_eq!(out.code, Some(0), "fsck: {out:#?}");
    drop(dir);
    drop(tmpfs);
}

#[test]
fn readyz_turns_unready_on_a_full_disk_and_ready_once_space_is_back() {
    process::require_root("mounting a tmpfs", "full_disk");
    let tmpfs = Tmpfs::mount("8m");
    let data = tempfile::tempdir_in(tmpfs.path()).expect("data dir on the tmpfs");
    let registry = TestRegistry::start_with(data, |c| c.min_free_space = MIB as u64);
    let base = registry.url();
    let readyz = || http::get(&format!("{base}/readyz"));
    let resp = readyz();
    assert_eq!(resp.status, 200, "before the disk fills: {resp:?}");

    let (upload, _, _) = fill_with_chunks(&base, "full/ready", 6);
    let resp = readyz();
    assert_eq!(resp.status, 503, "on a full disk: {resp:?}");
    assert!(resp.text().contains("free"), "{}", resp.text());
    assert_eq!(http::get(&format!("{base}/healthz")).status, 200);

    assert_eq!(http::delete(&upload).status, 204);
    let resp = readyz();
    assert_eq!(resp.status, 200, "once space is back: {resp:?}");
    drop(registry);
    drop(tmpfs);
}

/// Runs `berth passwd` for `user` on `file`; whether it succeeded.
fn berth_passwd(file: &Path, user: &str) -> bool {
    use std::io::Write as _;
    let mut child = Command::new(process::BERTH)
        .args(["passwd", "--htpasswd"])
        .arg(file)
        .arg(user)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn berth passwd");
    writeln!(child.stdin.take().unwrap(), "pw-of-{user}").unwrap();
    child.wait().expect("berth passwd runs").success()
}

#[test]
fn a_password_change_that_does_not_fit_leaves_the_users_file_whole() {
    let disk = Tmpfs::mount("1m");
    let file = disk.path().join("htpasswd");
    assert!(berth_passwd(&file, "alice"), "first user on an empty disk");
    // A file just under a page: one more line needs a page more than the
    // file holds, which a full disk does not have.
    let line = std::fs::read_to_string(&file).unwrap();
    let hash = line.trim_end().split_once(':').unwrap().1.to_owned();
    let mut text = line.clone();
    let mut n = 0;
    while text.len() + hash.len() + 10 < 4096 {
        text.push_str(&format!("user{n:04}:{hash}\n"));
        n += 1;
    }
    std::fs::write(&file, &text).unwrap();
    let filler = disk.path().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let one = [7u8; 1];
        while f.write_all(&one).is_ok() {}
    }
    assert!(
        !berth_passwd(&file, "bob"),
        "adding a user on a full disk cannot succeed"
    );
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after == text,
        "a failed berth passwd changed the users file: {} bytes, ending {:?}",
        after.len(),
        &after[after.len().saturating_sub(80)..]
    );
    let names: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "left behind: {names:?}");

    std::fs::remove_file(&filler).unwrap();
    assert!(berth_passwd(&file, "bob"), "with space back");
    let now = std::fs::read_to_string(&file).unwrap();
    assert!(now.starts_with(&text) && now.contains("\nbob:$2"), "{now}");
}
