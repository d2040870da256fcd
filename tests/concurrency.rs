//! Concurrency: many clients pushing the same bytes, images sharing layers, and two writers
//! on one upload session, all at the same moment. Every race must end with every client told
//! the truth (a 201 means HEAD answers 200 with the full length at once) and every blob whole,
//! stored once.
//!
//! Threads line up on a `Barrier` right before the request that matters, so the requests
//! really collide. A thread that fails before the barrier still waits on it and re-raises its
//! panic afterwards, so a failure never leaves the others stuck. Every HTTP request has the
//! client's 30 s timeout; every skopeo run is killed after 180 s; every loop has a fixed count.
//!
//! The skopeo test needs `skopeo` on PATH, as `tests/skopeo.rs` does: without it it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, Response, assert_error};
use common::layout;
use common::skopeo::Skopeo;
use serde_json::json;

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// Clients racing in the same-blob tests.
const CLIENTS: usize = 32;

/// The ways a client can push a blob; thread `i` uses `MODES[i % MODES.len()]`.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `POST ?digest=` with the whole blob: the only request.
    Monolithic,
    /// `POST`, then `PUT ?digest=` with the whole blob.
    PostPut,
    /// `POST`, two `PATCH`es with Content-Range, then `PUT ?digest=` carrying the last chunk.
    Chunked,
    /// `POST`, three `PATCH`es with Content-Range, then an empty `PUT ?digest=`.
    ChunkedEmptyPut,
}

const MODES: [Mode; 4] = [
    Mode::Monolithic,
    Mode::PostPut,
    Mode::Chunked,
    Mode::ChunkedEmptyPut,
];

/// The request that completes a push, prepared in advance.
struct Final {
    method: &'static str,
    url: String,
    body: Vec<u8>,
}

/// `<start>-<end>` of an upload holding `offset` bytes, as berth reports it (`0-0` when empty).
fn upload_range(offset: usize) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// Does everything a push in `mode` needs before its last request (start the session, send
/// the chunks), checking each answer; returns that last request.
fn prepare_push(base: &str, repo: &str, data: &[u8], digest: &str, mode: Mode) -> Final {
    let query = format!("digest={digest}");
    let whole = |method, url: String| Final {
        method,
        url: http::with_query(&url, &query),
        body: data.to_vec(),
    };
    match mode {
        Mode::Monolithic => whole("POST", http::uploads_url(base, repo)),
        Mode::PostPut => whole("PUT", http::start_upload(base, repo)),
        Mode::Chunked | Mode::ChunkedEmptyPut => {
            let mut upload = http::start_upload(base, repo);
            let third = data.len().div_ceil(3);
            let chunks: Vec<&[u8]> = data.chunks(third).collect();
            let patched = match mode {
                Mode::Chunked => chunks.len() - 1,
                _ => chunks.len(),
            };
            let mut offset = 0;
            for chunk in &chunks[..patched] {
                let range = format!("{}-{}", offset, offset + chunk.len() - 1);
                let resp = http::patch(&upload, &[OCTETS, ("Content-Range", &range)], chunk);
                assert_eq!(resp.status, 202, "PATCH {range} to {repo}: {resp:?}");
                offset += chunk.len();
                assert_eq!(
                    resp.header("range"),
                    Some(upload_range(offset).as_str()),
                    "PATCH {range}: {resp:?}"
                );
                upload = http::resolve(base, resp.location());
            }
            Final {
                method: "PUT",
                url: http::with_query(&upload, &query),
                body: chunks[patched..].concat(),
            }
        }
    }
}

/// Sends the last request of a push; asserts 201 with the blob's Location and digest, and
/// then, at once, that HEAD answers 200 with the full length.
#[track_caller]
fn finish_push(base: &str, repo: &str, data: &[u8], digest: &str, last: Final, mode: Mode) {
    let resp = http::request(last.method, &last.url, &[OCTETS], &last.body);
    assert_eq!(
        resp.status, 201,
        "{mode:?} push of {digest} to {repo}: {resp:?}"
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(digest),
        "{mode:?} push to {repo}: {resp:?}"
    );
    assert_eq!(
        http::path_of(resp.location()),
        format!("/v2/{repo}/blobs/{digest}"),
        "{mode:?} push to {repo}: {resp:?}"
    );
    let head = http::head(&http::blob_url(base, repo, digest));
    assert_eq!(
        head.status, 200,
        "HEAD right after the 201 of a {mode:?} push to {repo}: {head:?}"
    );
    let len = data.len().to_string();
    assert_eq!(
        head.header("content-length"),
        Some(len.as_str()),
        "HEAD right after the 201 of a {mode:?} push to {repo}: {head:?}"
    );
    assert_eq!(
        head.header("docker-content-digest"),
        Some(digest),
        "{head:?}"
    );
}

/// A whole push in `mode`, no barrier.
#[track_caller]
fn push_mode(base: &str, repo: &str, data: &[u8], mode: Mode) {
    let digest = http::sha256_digest(data);
    let last = prepare_push(base, repo, data, &digest, mode);
    finish_push(base, repo, data, &digest, last, mode);
}

/// Runs `prepare`, waits on `barrier` whether it panicked or not, then runs `go` on what it
/// prepared (or re-raises its panic): a thread that fails early never strands the others.
fn at_barrier<P, T>(barrier: &Barrier, prepare: impl FnOnce() -> P, go: impl FnOnce(P) -> T) -> T {
    let prepared = std::panic::catch_unwind(AssertUnwindSafe(prepare));
    barrier.wait();
    match prepared {
        Ok(prepared) => go(prepared),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Joins scoped threads, panicking with the names of those that failed (each printed its
/// own panic message already).
fn join_all<T>(handles: Vec<(String, thread::ScopedJoinHandle<'_, T>)>) -> Vec<T> {
    let mut failed = Vec::new();
    let mut out = Vec::new();
    for (name, handle) in handles {
        match handle.join() {
            Ok(v) => out.push(v),
            Err(_) => failed.push(name),
        }
    }
    assert!(failed.is_empty(), "these threads failed: {failed:?}");
    out
}

#[track_caller]
fn assert_blob(base: &str, repo: &str, data: &[u8]) {
    let digest = http::sha256_digest(data);
    let resp = http::get(&http::blob_url(base, repo, &digest));
    assert_eq!(resp.status, 200, "GET {digest} from {repo}: {resp:?}");
    assert_eq!(
        resp.body.len(),
        data.len(),
        "GET {digest} from {repo}: length"
    );
    assert!(resp.body == data, "GET {digest} from {repo}: other bytes");
}

/// The blob files under `blobs/` and the files under `uploads/` of a data
/// directory; of a clustered store, its blob objects and upload pieces.
fn stored_files(data_dir: &Path) -> (Vec<String>, Vec<String>) {
    if common::engine() == common::Engine::Cluster {
        let blobs = common::cluster::objects(data_dir, "blobs/sha256/")
            .iter()
            .map(|key| key.rsplit('/').next().unwrap().to_owned())
            .collect();
        return (blobs, common::cluster::objects(data_dir, "uploads/"));
    }
    let mut blobs = Vec::new();
    let sha = data_dir.join("blobs").join("sha256");
    for dir in std::fs::read_dir(&sha).expect("read blobs/sha256") {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).expect("read a blob dir") {
            blobs.push(file.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    let uploads = std::fs::read_dir(data_dir.join("uploads"))
        .expect("read uploads")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (blobs, uploads)
}

/// The blob's bytes are stored once, whole, and no upload file is left
/// behind. On the embedded engine a new blob's upload file keeps its name
/// for a moment after the 201, as a second name of the blob file (it
/// vouches for the bytes until the blob's link is synced: store/settle.rs),
/// so one may stay a few seconds, holding no bytes of its own.
#[track_caller]
fn assert_stored_once(reg: &TestRegistry, data: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let digest = http::sha256_digest(data);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let (blobs, mut uploads) = stored_files(reg.data.path());
    let copies = blobs.iter().filter(|b| b.as_str() == hex).count();
    assert_eq!(copies, 1, "blob files named {hex}: {blobs:?}");
    let on_disk = match common::engine() {
        common::Engine::Embedded => {
            let path = common::blob_file(reg.data.path(), &digest);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !uploads.is_empty() && Instant::now() < deadline {
                for name in &uploads {
                    let upload = reg.data.path().join("uploads").join(name);
                    if let Ok(meta) = std::fs::metadata(&upload) {
                        assert!(
                            meta.nlink() > 1,
                            "every upload finished, yet {} holds bytes of its own",
                            upload.display()
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
                uploads = stored_files(reg.data.path()).1;
            }
            std::fs::read(&path).expect("read the blob file")
        }
        common::Engine::Cluster => {
            common::cluster::read_object(reg.data.path(), &format!("blobs/sha256/{hex}"))
        }
    };
    assert!(on_disk == data, "the stored bytes of {digest} differ");
    assert!(
        uploads.is_empty(),
        "every upload finished, yet uploads/ holds {uploads:?}"
    );
}

/// `CLIENTS` threads push `data` at once, thread `i` into `repo(i)` in `MODES[i % 4]`, each in
/// its own session; the final requests wait on one barrier. Each thread checks its 201 and the
/// HEAD right after it.
fn race_same_blob(base: &str, data: &[u8], repo: &(dyn Fn(usize) -> String + Sync)) {
    let digest = &http::sha256_digest(data);
    let barrier = Barrier::new(CLIENTS);
    thread::scope(|s| {
        let handles = (0..CLIENTS)
            .map(|i| {
                let (barrier, repo) = (&barrier, repo(i));
                let mode = MODES[i % MODES.len()];
                let handle = s.spawn(move || {
                    at_barrier(
                        barrier,
                        || prepare_push(base, &repo, data, digest, mode),
                        |last| finish_push(base, &repo, data, digest, last, mode),
                    )
                });
                (format!("client {i} ({mode:?})"), handle)
            })
            .collect();
        join_all(handles);
    });
}

// ---- images sharing layers ---------------------------------------------------------------

struct TestImage {
    tag: String,
    /// Config first, then the layers.
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    digest: String,
}

/// Image `i`: its own config, the two shared layers, and a layer of its own.
fn sharing_image(i: usize, shared: &[Vec<u8>]) -> TestImage {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
        "config": { "Labels": { "image": i.to_string() } },
    }))
    .unwrap();
    let own = http::random_bytes(200_000 + i, 4100 + i as u64);
    let layers = [shared[0].clone(), shared[1].clone(), own];
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &layers
            .iter()
            .map(|l| http::descriptor(http::OCI_LAYER, l))
            .collect::<Vec<_>>(),
    );
    let mut blobs = vec![config];
    blobs.extend(layers);
    TestImage {
        tag: format!("v{i}"),
        digest: http::sha256_digest(&manifest),
        blobs,
        manifest,
    }
}

// ---- the same with skopeo ---------------------------------------------------------------

/// Runs `work(i)` for `0..n` on `n` threads at once; panics naming the ones that failed.
fn all_at_once(n: usize, work: impl Fn(usize) + Sync) {
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        let handles = (0..n)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                (
                    format!("task {i}"),
                    s.spawn(move || at_barrier(barrier, || (), |()| work(i))),
                )
            })
            .collect();
        join_all(handles);
    });
}

// ---- two writers on one upload -----------------------------------------------------------

/// The end offset in a `Range: 0-<last>` header (`0-0` reads as 0 or 1; the caller knows).
fn range_last(resp: &Response) -> u64 {
    let range = resp.must_header("range");
    let last = range
        .strip_prefix("0-")
        .unwrap_or_else(|| panic!("Range {range:?} does not start at 0: {resp:?}"));
    last.parse()
        .unwrap_or_else(|_| panic!("Range {range:?} is not 0-<n>: {resp:?}"))
}

common::both_engines! {
/// 32 sessions push the same content into one repository at once, in all four upload styles:
/// all get 201, each sees HEAD 200 with the full length the instant its 201 arrives, GET
/// returns the exact bytes, the blob file exists once and no upload file is left. Two rounds
/// with fresh 4 MiB contents, five with fresh 100-byte contents.
#[test]
fn same_blob_from_32_sessions_into_one_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let rounds = [(4usize << 20, 2u64), (100, 5)];
    for (size, count) in rounds {
        for round in 0..count {
            let seed = 1000 + size as u64 + round;
            let data = http::random_bytes(size, seed);
            let started = Instant::now();
            race_same_blob(&base, &data, &|_| "race/one".to_string());
            println!(
                "{CLIENTS} pushes of {size} bytes (round {round}) took {:?}",
                started.elapsed()
            );
            assert_blob(&base, "race/one", &data);
            assert_stored_once(&reg, &data);
        }
    }
    assert_eq!(http::get(&format!("{base}/v2/")).status, 200);
}

/// 32 sessions push the same content into 32 repositories at once: every repository then
/// serves it (HEAD 200 with the length, GET the exact bytes), stored once, and the catalog
/// lists all 32.
#[test]
fn same_blob_from_32_sessions_into_32_repositories() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let repo = |i: usize| format!("race/many/r{i:02}");
    for (round, size) in [(0u64, 4usize << 20), (1, 100)] {
        let data = http::random_bytes(size, 2000 + round);
        race_same_blob(&base, &data, &repo);
        let digest = http::sha256_digest(&data);
        for i in 0..CLIENTS {
            let head = http::head(&http::blob_url(&base, &repo(i), &digest));
            assert_eq!(head.status, 200, "HEAD in {}: {head:?}", repo(i));
            assert_eq!(
                head.header("content-length"),
                Some(size.to_string().as_str()),
                "{head:?}"
            );
            assert_blob(&base, &repo(i), &data);
        }
        assert_stored_once(&reg, &data);
    }
    let catalog = http::get(&format!("{base}/v2/_catalog?n=1000")).json();
    let listed: BTreeSet<String> = catalog["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("no repositories in {catalog}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    for i in 0..CLIENTS {
        assert!(listed.contains(&repo(i)), "{} not in {catalog}", repo(i));
    }
}

/// While 16 sessions push a blob into `race/target`, 16 other clients DELETE the same blob
/// from 16 other repositories that hold it, all at once. A blob DELETE only unlinks it from
/// that repository: the pushes all succeed (HEAD 200 at once), `race/target` and an untouched
/// `race/keeper` serve the exact bytes, the 16 victims answer 404 BLOB_UNKNOWN, and pushing
/// into a victim again works. Three rounds with fresh contents.
#[test]
fn pushing_a_blob_while_other_repositories_delete_it() {
    let reg = TestRegistry::start();
    let base = reg.url();
    const PAIRS: usize = CLIENTS / 2;
    let victim = |k: usize| format!("race/victim{k:02}");
    for round in 0..3u64 {
        let data = http::random_bytes(256 * 1024 + round as usize, 3000 + round);
        let digest = http::sha256_digest(&data);
        http::push_blob(&base, "race/keeper", &data);
        for k in 0..PAIRS {
            http::push_blob(&base, &victim(k), &data);
        }
        let barrier = Barrier::new(CLIENTS);
        thread::scope(|s| {
            let mut handles = Vec::new();
            for k in 0..PAIRS {
                let (barrier, data, base, digest) = (&barrier, &data, &base, &digest);
                let mode = MODES[k % MODES.len()];
                handles.push((
                    format!("pusher {k} ({mode:?})"),
                    s.spawn(move || {
                        at_barrier(
                            barrier,
                            || prepare_push(base, "race/target", data, digest, mode),
                            |last| finish_push(base, "race/target", data, digest, last, mode),
                        )
                    }),
                ));
                let url = http::blob_url(base, &victim(k), digest);
                handles.push((
                    format!("deleter {k}"),
                    s.spawn(move || {
                        at_barrier(
                            barrier,
                            || (),
                            |()| {
                                let resp = http::delete(&url);
                                assert_eq!(resp.status, 202, "DELETE {url}: {resp:?}");
                            },
                        )
                    }),
                ));
            }
            join_all(handles);
        });
        assert_blob(&base, "race/target", &data);
        assert_blob(&base, "race/keeper", &data);
        for k in 0..PAIRS {
            let url = http::blob_url(&base, &victim(k), &digest);
            let head = http::head(&url);
            assert_eq!(head.status, 404, "HEAD {url} after its DELETE: {head:?}");
            assert_error(&http::get(&url), 404, "BLOB_UNKNOWN");
            assert_error(&http::delete(&url), 404, "BLOB_UNKNOWN");
        }
        assert_stored_once(&reg, &data);
        push_mode(&base, &victim(0), &data, Mode::Chunked);
        assert_blob(&base, &victim(0), &data);
    }
}

/// 8 clients each push an image (config + 3 layers, 2 of them shared by all 8) at once, into
/// a repository of its own and into one shared repository, with its own tag; the shared
/// layers go first so their uploads collide. Then every manifest GETs byte for byte (by tag
/// and by digest, in both repositories), every config and layer GETs byte for byte, and the
/// shared repository lists all 8 tags.
#[test]
fn images_sharing_layers_pushed_at_once() {
    const IMAGES: usize = 8;
    let reg = TestRegistry::start();
    let base = reg.url();
    let shared = vec![
        http::random_bytes(1 << 20, 4001),
        http::random_bytes(64 * 1024, 4002),
    ];
    let images: Vec<TestImage> = (0..IMAGES).map(|i| sharing_image(i, &shared)).collect();
    let own = |i: usize| format!("images/app{i}");
    let barrier = Barrier::new(IMAGES);
    thread::scope(|s| {
        let handles = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let (barrier, base, repo) = (&barrier, &base, own(i));
                let handle = s.spawn(move || {
                    at_barrier(
                        barrier,
                        || (),
                        |()| {
                            // Shared layers first, then this image's own layer, then its config.
                            let order = [1, 2, 3, 0];
                            for (n, &b) in order.iter().enumerate() {
                                let mode = MODES[(i + n) % MODES.len()];
                                push_mode(base, "images/shared", &image.blobs[b], mode);
                                let mode = MODES[(i + n + 1) % MODES.len()];
                                push_mode(base, &repo, &image.blobs[b], mode);
                            }
                            for r in ["images/shared", repo.as_str()] {
                                let digest = http::push_manifest(
                                    base,
                                    r,
                                    &image.tag,
                                    http::OCI_MANIFEST,
                                    &image.manifest,
                                );
                                assert_eq!(digest, image.digest);
                            }
                        },
                    )
                });
                (format!("image {i}"), handle)
            })
            .collect();
        join_all(handles);
    });

    for (i, image) in images.iter().enumerate() {
        for repo in ["images/shared".to_string(), own(i)] {
            for reference in [image.tag.as_str(), image.digest.as_str()] {
                let resp = http::get(&http::manifest_url(&base, &repo, reference));
                assert_eq!(resp.status, 200, "GET {repo}:{reference}: {resp:?}");
                assert_eq!(
                    resp.header("content-type"),
                    Some(http::OCI_MANIFEST),
                    "{resp:?}"
                );
                assert_eq!(
                    resp.header("docker-content-digest"),
                    Some(image.digest.as_str())
                );
                assert!(
                    resp.body == image.manifest,
                    "{repo}:{reference} serves other manifest bytes"
                );
            }
            for blob in &image.blobs {
                assert_blob(&base, &repo, blob);
            }
        }
    }
    let tags = http::get(&format!("{base}/v2/images/shared/tags/list")).json();
    let listed: BTreeSet<&str> = tags["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags in {tags}"))
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = images.iter().map(|i| i.tag.as_str()).collect();
    assert_eq!(listed, expected, "tags of images/shared");
    for layer in &shared {
        assert_stored_once(&reg, layer);
    }
}

/// Five OCI layouts whose images share three base layers (built offline by
/// `layout::write_images_sharing_layers`) are pushed by five concurrent `skopeo copy`
/// processes, first all into one repository (different tags), then each into a repository of
/// its own; then each is pulled back, concurrently, from both, and every pulled layout has
/// the same top digest and exactly the same, intact blobs.
#[test]
fn skopeo_pushes_images_sharing_layers_concurrently() {
    const IMAGES: usize = 5;
    let skopeo = Skopeo::new();
    let reg = TestRegistry::start();
    let host = reg.host();
    let work = tempfile::tempdir().expect("temp dir");
    // skopeo's blob-info cache outlives the test and ports get reused: fresh digests per run
    // keep stale cache entries from pointing at repositories of an earlier run.
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    println!("layout seed {seed}");
    let images = layout::write_images_sharing_layers(
        &work.path().join("src"),
        "latest",
        IMAGES,
        &[500, 300_000, 2 << 20],
        seed,
    );
    let shared_tag = |i: usize| format!("docker://{host}/skopeo/shared:img{i}");
    let own_tag = |i: usize| format!("docker://{host}/skopeo/img{i}:latest");
    let push = |i: usize, dest: String| {
        let src = format!("oci:{}:latest", images[i].0.display());
        skopeo.ok(&[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &src,
            &dest,
        ]);
    };
    let started = Instant::now();
    all_at_once(IMAGES, |i| push(i, shared_tag(i)));
    all_at_once(IMAGES, |i| push(i, own_tag(i)));
    println!("pushes took {:?}", started.elapsed());

    // Before pulling: the registry serves every manifest byte for byte.
    for (i, (_, image)) in images.iter().enumerate() {
        for (repo, tag) in [
            ("skopeo/shared".to_string(), format!("img{i}")),
            (format!("skopeo/img{i}"), "latest".to_string()),
        ] {
            let resp = http::get(&http::manifest_url(&reg.url(), &repo, &tag));
            assert_eq!(resp.status, 200, "GET {repo}:{tag}: {resp:?}");
            assert!(
                resp.body == image.manifest_bytes,
                "{repo}:{tag} serves other bytes"
            );
        }
    }

    let back = |i: usize, which: &str| work.path().join(format!("back-{which}-{i}"));
    all_at_once(IMAGES * 2, |n| {
        let (i, which) = (n / 2, if n % 2 == 0 { "shared" } else { "own" });
        let src = if n % 2 == 0 {
            shared_tag(i)
        } else {
            own_tag(i)
        };
        let dest = format!("oci:{}:back", back(i, which).display());
        skopeo.ok(&[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &src,
            &dest,
        ]);
    });
    for (i, (_, image)) in images.iter().enumerate() {
        for which in ["shared", "own"] {
            layout::assert_copy_matches(&back(i, which), "back", &image.manifest, &image.blobs());
        }
    }
    // The base layers are stored once however many pushes carried them.
    for layer in &images[0].1.layers[..3] {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        let (blobs, _) = stored_files(reg.data.path());
        assert_eq!(
            blobs.iter().filter(|b| b.as_str() == hex).count(),
            1,
            "copies of base layer {}",
            layer.digest
        );
    }
}

/// Two PATCHes with the same Content-Range, different bytes, sent to one upload session at
/// the same moment (1 MiB each, so they overlap in time): exactly one is accepted (202 with
/// the new range), the other gets 416 BLOB_UPLOAD_INVALID with a Range header telling the
/// committed range (before or after the winner's chunk) and the upload's Location. The
/// session then holds exactly the winner's chunk, and the finished blob is exactly it; the
/// loser's content was not stored. Rounds alternate between an empty session and one that
/// already holds a chunk.
#[test]
fn two_patches_at_one_offset_accept_exactly_one() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for round in 0..8u64 {
        let upload = http::start_upload(&base, "race/patch");
        let prefix = if round % 2 == 1 {
            http::random_bytes(1000, 5000 + round)
        } else {
            Vec::new()
        };
        let mut upload_url = upload.clone();
        if !prefix.is_empty() {
            let range = format!("0-{}", prefix.len() - 1);
            let resp = http::patch(&upload, &[OCTETS, ("Content-Range", &range)], &prefix);
            assert_eq!(resp.status, 202, "{resp:?}");
            upload_url = http::resolve(&base, resp.location());
        }
        let off = prefix.len();
        let chunks = [
            http::random_bytes(1 << 20, 5100 + round),
            http::random_bytes(1 << 20, 5200 + round),
        ];
        let len = chunks[0].len();
        let range = format!("{}-{}", off, off + len - 1);
        let barrier = Barrier::new(2);
        let results: Vec<Response> = thread::scope(|s| {
            let handles = chunks
                .iter()
                .enumerate()
                .map(|(w, chunk)| {
                    let (barrier, url, range) = (&barrier, &upload_url, &range);
                    (
                        format!("writer {w}"),
                        s.spawn(move || {
                            at_barrier(
                                barrier,
                                || (),
                                |()| http::patch(url, &[OCTETS, ("Content-Range", range)], chunk),
                            )
                        }),
                    )
                })
                .collect();
            join_all(handles)
        });
        let accepted: Vec<usize> = (0..2).filter(|&w| results[w].status == 202).collect();
        assert_eq!(
            accepted.len(),
            1,
            "round {round}: two PATCHes of {range}: exactly one must be accepted; got\n{:?}\n{:?}",
            results[0],
            results[1]
        );
        let (winner, loser) = (accepted[0], 1 - accepted[0]);
        assert_eq!(
            results[winner].header("range"),
            Some(upload_range(off + len).as_str()),
            "{:?}",
            results[winner]
        );
        let refused = &results[loser];
        assert_error(refused, 416, "BLOB_UPLOAD_INVALID");
        let last = range_last(refused);
        println!(
            "round {round}: the refused PATCH saw Range 0-{last} ({})",
            if last == (off + len - 1) as u64 {
                "after the winner"
            } else {
                "while it wrote"
            }
        );
        assert!(
            last == off.saturating_sub(1) as u64 || last == (off + len - 1) as u64,
            "round {round}: the refused PATCH's Range must be the committed range: {refused:?}"
        );
        assert!(
            refused.header("location").is_some(),
            "a 416 to a PATCH must say where the upload is: {refused:?}"
        );

        let status = http::get(&upload_url);
        assert_eq!(status.status, 204, "{status:?}");
        assert_eq!(
            status.header("range"),
            Some(upload_range(off + len).as_str()),
            "round {round}: the session holds the winner's chunk only: {status:?}"
        );
        let mut expected = prefix.clone();
        expected.extend_from_slice(&chunks[winner]);
        let mut other = prefix.clone();
        other.extend_from_slice(&chunks[loser]);
        let digest = http::sha256_digest(&expected);
        let resp = http::put(
            &http::with_query(
                &http::resolve(&base, status.location()),
                &format!("digest={digest}"),
            ),
            &[OCTETS],
            b"",
        );
        assert_eq!(resp.status, 201, "round {round}: {resp:?}");
        assert_blob(&base, "race/patch", &expected);
        let head = http::head(&http::blob_url(
            &base,
            "race/patch",
            &http::sha256_digest(&other),
        ));
        assert_eq!(head.status, 404, "the refused content is no blob: {head:?}");
    }
}

/// Four PATCHes without Content-Range (streamed chunks, 512 KiB each, different bytes) to
/// one session at once, four rounds: each is either accepted (202) or refused (416 with a
/// Range). The accepted chunks' ranges never overlap and tile the upload from 0 with no gap;
/// the session's size is their sum (a refused chunk leaves no byte behind), and the finished
/// blob is the accepted chunks in the order of their ranges.
#[test]
fn streamed_patches_to_one_session_at_once_never_interleave() {
    const WRITERS: usize = 4;
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = http::start_upload(&base, "race/stream");
    // start offset -> chunk
    let mut accepted: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for round in 0..4u64 {
        let chunks: Vec<Vec<u8>> = (0..WRITERS)
            .map(|w| http::random_bytes(512 * 1024 + w, 6000 + round * 10 + w as u64))
            .collect();
        let barrier = Barrier::new(WRITERS);
        let results: Vec<Response> = thread::scope(|s| {
            let handles = chunks
                .iter()
                .enumerate()
                .map(|(w, chunk)| {
                    let (barrier, url) = (&barrier, &upload);
                    (
                        format!("writer {w}"),
                        s.spawn(move || {
                            at_barrier(barrier, || (), |()| http::patch(url, &[OCTETS], chunk))
                        }),
                    )
                })
                .collect();
            join_all(handles)
        });
        let mut won = 0;
        for (chunk, resp) in chunks.iter().zip(&results) {
            match resp.status {
                202 => {
                    won += 1;
                    let end = range_last(resp) + 1;
                    let start = end
                        .checked_sub(chunk.len() as u64)
                        .unwrap_or_else(|| panic!("Range shorter than the chunk: {resp:?}"));
                    let previous = accepted.insert(start, chunk.clone());
                    assert!(previous.is_none(), "two accepted chunks start at {start}");
                }
                416 => {
                    assert_error(resp, 416, "BLOB_UPLOAD_INVALID");
                    range_last(resp);
                }
                _ => panic!("round {round}: a streamed PATCH got {resp:?}"),
            }
        }
        assert!(won >= 1, "round {round}: no PATCH accepted: {results:?}");
        println!("round {round}: {won} of {WRITERS} streamed PATCHes accepted");
    }
    let mut expected = Vec::new();
    for (start, chunk) in &accepted {
        assert_eq!(
            *start,
            expected.len() as u64,
            "accepted chunks must tile the upload: {:?}",
            accepted
                .iter()
                .map(|(s, c)| (*s, c.len()))
                .collect::<Vec<_>>()
        );
        expected.extend_from_slice(chunk);
    }
    let status = http::get(&upload);
    assert_eq!(
        status.header("range"),
        Some(upload_range(expected.len()).as_str()),
        "the session holds exactly the accepted chunks: {status:?}"
    );
    let digest = http::sha256_digest(&expected);
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={digest}")),
        &[OCTETS],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "race/stream", &expected);
}
}
