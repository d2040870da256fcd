//! A real client against berth: skopeo (containers/image) pushes, inspects, lists, pulls,
//! copies between repositories and deletes, and every digest must survive the round trip.
//!
//! The images are built offline by `common::layout` (deterministic per seed). skopeo must be
//! on PATH (`apt-get install -y skopeo`): without it these tests fail. Their names start with
//! `skopeo_`, so `cargo test -- --skip skopeo` leaves them out where it cannot be had.
//! Every skopeo call is killed after a deadline; a failed call shows its stderr.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::TestRegistry;
use common::layout::{self, Compression, LayoutWriter};
use common::skopeo::{Run, Skopeo};
use serde_json::Value;

/// What these tests ask of skopeo, beyond running it.
trait SkopeoSteps {
    fn raw_manifest(&self, reference: &str) -> Vec<u8>;
    fn inspect(&self, globals: &[&str], reference: &str) -> Value;
    fn tags(&self, repository: &str) -> BTreeSet<String>;
    fn push(&self, dir: &Path, name: &str, dest: &str, all: bool) -> Run;
    fn pull(&self, globals: &[&str], src: &str, dir: &Path, name: &str, all: bool) -> Run;
}

impl SkopeoSteps for Skopeo {
    fn raw_manifest(&self, reference: &str) -> Vec<u8> {
        self.ok(&["inspect", "--raw", "--tls-verify=false", reference])
            .stdout
    }

    fn inspect(&self, globals: &[&str], reference: &str) -> Value {
        let mut args = globals.to_vec();
        args.extend(["inspect", "--tls-verify=false", reference]);
        let run = self.ok(&args);
        serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("inspect output is not JSON ({e}): {}", run.describe()))
    }

    fn tags(&self, repository: &str) -> BTreeSet<String> {
        let run = self.ok(&["list-tags", "--tls-verify=false", repository]);
        let listing: Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("list-tags output is not JSON ({e}): {}", run.describe()));
        listing["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no Tags in {listing}"))
            .iter()
            .map(|t| t.as_str().expect("tag is a string").to_string())
            .collect()
    }

    /// Pushes `oci:<dir>:<name>` to `docker://<dest>` unchanged.
    fn push(&self, dir: &Path, name: &str, dest: &str, all: bool) -> Run {
        let src = oci(dir, name);
        let mut args = vec!["copy"];
        if all {
            args.push("--all");
        }
        args.extend(["--preserve-digests", "--dest-tls-verify=false", &src, dest]);
        self.ok(&args)
    }

    /// Pulls `docker://<src>` to `oci:<dir>:<name>` unchanged.
    fn pull(&self, globals: &[&str], src: &str, dir: &Path, name: &str, all: bool) -> Run {
        let dest = oci(dir, name);
        let mut args = globals.to_vec();
        args.push("copy");
        if all {
            args.push("--all");
        }
        args.extend(["--preserve-digests", "--src-tls-verify=false", src, &dest]);
        self.ok(&args)
    }
}

fn oci(dir: &Path, name: &str) -> String {
    format!("oci:{}:{name}", dir.display())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn work_dir() -> (tempfile::TempDir, impl Fn(&str) -> PathBuf) {
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().to_path_buf();
    (work, move |name| root.join(name))
}

/// Push an OCI image with gzip layers, then: the registry serves the very manifest bytes
/// (by tag and by digest), skopeo's parsed view agrees (digest, platform, layers, read from
/// the config blob), a second tag shows up in the tag list, and pulling back gives a layout
/// with the same top digest and exactly the same, intact blobs.
#[test]
fn skopeo_single_image_round_trip_keeps_manifest_bytes_tags_and_every_blob() {
    let skopeo = Skopeo::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_work, path) = work_dir();
    let image = layout::write_image(&path("src"), "v1", 1);
    let v1 = format!("docker://{host}/test/single:v1");

    skopeo.push(&path("src"), "v1", &v1, false);

    let raw = skopeo.raw_manifest(&v1);
    assert_eq!(
        layout::sha256_digest(&raw),
        image.manifest.digest,
        "raw manifest by tag"
    );
    assert_eq!(
        raw, image.manifest_bytes,
        "the registry must serve the pushed bytes verbatim"
    );

    let inspected = skopeo.inspect(&[], &v1);
    assert_eq!(
        inspected["Digest"],
        image.manifest.digest.as_str(),
        "inspect: {inspected}"
    );
    assert_eq!(inspected["Architecture"], "amd64", "inspect: {inspected}");
    assert_eq!(inspected["Os"], "linux", "inspect: {inspected}");
    assert_eq!(
        strings(&inspected["Layers"]),
        image.layer_digests(),
        "inspect: {inspected}"
    );

    let by_digest = format!("docker://{host}/test/single@{}", image.manifest.digest);
    assert_eq!(
        skopeo.raw_manifest(&by_digest),
        image.manifest_bytes,
        "raw manifest by digest"
    );

    skopeo.push(
        &path("src"),
        "v1",
        &format!("docker://{host}/test/single:v2"),
        false,
    );
    assert_eq!(
        skopeo.tags(&format!("docker://{host}/test/single")),
        set(&["v1", "v2"])
    );
    let v2 = format!("docker://{host}/test/single:v2");
    assert_eq!(
        skopeo.raw_manifest(&v2),
        image.manifest_bytes,
        "raw manifest by the second tag"
    );

    skopeo.pull(&[], &v1, &path("back"), "v1", false);
    layout::assert_copy_matches(&path("back"), "v1", &image.manifest, &image.blobs());
}

/// Push an image index (linux/amd64 + linux/arm64, plain tar layers) with `copy --all`: the
/// index comes back byte for byte, each platform resolves to its own image (by
/// `--override-arch` for inspect and for a single-platform pull, and by digest), and pulling
/// everything back gives the same index and blob set.
#[test]
fn skopeo_multi_platform_index_round_trips_and_resolves_each_architecture() {
    let skopeo = Skopeo::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_work, path) = work_dir();
    let multi = layout::write_multi_platform(&path("src"), "multi", 2);
    let tag = format!("docker://{host}/test/multi:multi");

    skopeo.push(&path("src"), "multi", &tag, true);

    let raw = skopeo.raw_manifest(&tag);
    assert_eq!(
        layout::sha256_digest(&raw),
        multi.index.digest,
        "raw index by tag"
    );
    assert_eq!(
        raw, multi.index_bytes,
        "the registry must serve the pushed index verbatim"
    );

    for arch in ["amd64", "arm64"] {
        let image = multi.image(arch);
        let inspected = skopeo.inspect(&["--override-arch", arch, "--override-os", "linux"], &tag);
        assert_eq!(
            inspected["Architecture"], arch,
            "inspect {arch}: {inspected}"
        );
        assert_eq!(
            strings(&inspected["Layers"]),
            image.layer_digests(),
            "inspect {arch}"
        );

        let by_digest = format!("docker://{host}/test/multi@{}", image.manifest.digest);
        assert_eq!(
            skopeo.raw_manifest(&by_digest),
            image.manifest_bytes,
            "{arch} by digest"
        );
    }

    // Without --all, skopeo picks the platform's manifest out of the index: the pulled
    // layout's top digest is the arm64 manifest's.
    let arm = multi.image("arm64");
    skopeo.pull(
        &["--override-arch", "arm64", "--override-os", "linux"],
        &tag,
        &path("arm64"),
        "arm64",
        false,
    );
    layout::assert_copy_matches(&path("arm64"), "arm64", &arm.manifest, &arm.blobs());

    skopeo.pull(&[], &tag, &path("back"), "multi", true);
    layout::assert_copy_matches(&path("back"), "multi", &multi.index, &multi.blobs());
}

/// Two images in one repository; `skopeo delete` of one by digest makes it unknown (by digest
/// and through its tag) while the other stays whole.
#[test]
fn skopeo_delete_by_digest_removes_that_manifest_and_leaves_the_other() {
    let skopeo = Skopeo::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_work, path) = work_dir();
    let mut writer = LayoutWriter::create(&path("src"), 3);
    let doomed = writer.image("linux", "amd64", &[10_000, 70_000], Compression::Gzip);
    writer.tag("doomed", &doomed.manifest);
    let kept = writer.image("linux", "amd64", &[20_000], Compression::Gzip);
    writer.tag("kept", &kept.manifest);
    let repo = format!("docker://{host}/test/delete");

    skopeo.push(writer.root(), "doomed", &format!("{repo}:doomed"), false);
    skopeo.push(writer.root(), "kept", &format!("{repo}:kept"), false);
    assert_eq!(skopeo.tags(&repo), set(&["doomed", "kept"]));

    let doomed_ref = format!("{host}/test/delete@{}", doomed.manifest.digest);
    assert_eq!(
        skopeo.raw_manifest(&format!("docker://{doomed_ref}")),
        doomed.manifest_bytes
    );
    skopeo.ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{doomed_ref}"),
    ]);

    let stderr = skopeo.fails(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{doomed_ref}"),
    ]);
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("manifest unknown") || lower.contains("not found") || lower.contains("404"),
        "inspect of a deleted manifest should fail as unknown, got: {stderr}"
    );
    let stderr = skopeo.fails(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{repo}:doomed"),
    ]);
    println!(
        "inspect of the deleted manifest's tag fails with: {}",
        stderr.trim()
    );
    println!("tags after the delete: {:?}", skopeo.tags(&repo));

    assert_eq!(
        skopeo.raw_manifest(&format!("{repo}:kept")),
        kept.manifest_bytes
    );
    skopeo.pull(&[], &format!("{repo}:kept"), &path("kept"), "kept", false);
    layout::assert_copy_matches(&path("kept"), "kept", &kept.manifest, &kept.blobs());
}

/// `skopeo copy docker://…/a:v1 docker://…/b:v1` on one registry: skopeo remembers that the
/// blobs are in `a` (from the push) and asks berth to mount them into `b`
/// (`POST /v2/test/b/blobs/uploads/?mount=…&from=test/a`) instead of uploading them again;
/// berth must accept the mount (201), and `b` then serves the same manifest and blobs.
#[test]
fn skopeo_registry_to_registry_copy_mounts_blobs_across_repositories() {
    let skopeo = Skopeo::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_work, path) = work_dir();
    // skopeo's blob-info cache outlives the test (and ports get reused): a seed of its own
    // keeps stale entries from other runs from offering these digests somewhere else.
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    println!("layout seed {seed}");
    let image = layout::write_image(&path("src"), "v1", seed);
    let a = format!("docker://{host}/test/a:v1");
    let b = format!("docker://{host}/test/b:v1");

    skopeo.push(&path("src"), "v1", &a, false);
    let copy = skopeo.ok(&[
        "--debug",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &a,
        &b,
    ]);

    // containers/image logs every request at debug level: a mount is a POST with
    // `mount=sha256%3A<hex>`, followed by "... mount OK" on 201 or, when the registry starts
    // an upload instead (202), by "started an upload instead".
    let mounts: Vec<&str> = copy
        .stderr
        .lines()
        .filter(|l| l.contains("mount="))
        .collect();
    for layer in &image.layers {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        assert!(
            mounts.iter().any(|l| l.contains(hex)),
            "skopeo did not try to mount layer {} from test/a; its requests:\n{}",
            layer.digest,
            requests(&copy.stderr)
        );
    }
    let mounted = copy.stderr.matches("mount OK").count();
    assert!(
        mounted >= image.layers.len(),
        "berth confirmed {mounted} mounts for {} layers; skopeo's requests:\n{}",
        image.layers.len(),
        requests(&copy.stderr)
    );
    assert!(
        !copy.stderr.contains("started an upload instead"),
        "berth answered a mount with a new upload instead of 201; skopeo's log:\n{}",
        requests(&copy.stderr)
    );

    assert_eq!(
        skopeo.raw_manifest(&b),
        image.manifest_bytes,
        "b serves the same manifest"
    );
    assert_eq!(
        skopeo.tags(&format!("docker://{host}/test/b")),
        set(&["v1"])
    );
    skopeo.pull(&[], &b, &path("back"), "v1", false);
    layout::assert_copy_matches(&path("back"), "v1", &image.manifest, &image.blobs());
}

/// The request lines and upload/mount messages of a `skopeo --debug` log, for failure output.
fn requests(log: &str) -> String {
    log.lines()
        .filter(|l| {
            [
                "GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE ", "mount", "upload", "status",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
