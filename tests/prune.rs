//! Pruning, end to end: pushes over HTTP, `berth prune` on the stopped data
//! directory, and checks over HTTP and on disk afterwards; and the
//! background prune racing live pushes.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, *};
use serde_json::json;

/// Runs `berth prune` on a stopped registry's data directory (or its
/// clustered store).
fn prune(data: &Path, args: &[&str]) -> String {
    let cluster = match common::engine() {
        common::Engine::Cluster => common::cluster::node_args(data),
        common::Engine::Embedded => Vec::new(),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("prune")
        .arg("--data")
        .arg(data)
        .args(cluster)
        .args(args)
        .output()
        .expect("berth runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "berth prune {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether a blob's bytes are still stored: its file, or its object.
fn blob_stored(data: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    match common::engine() {
        common::Engine::Embedded => common::blob_file(data, digest).exists(),
        common::Engine::Cluster => {
            !common::cluster::objects(data, &format!("blobs/sha256/{hex}")).is_empty()
        }
    }
}

/// How many upload files (or upload piece objects) are stored.
fn upload_files(data: &Path) -> usize {
    match common::engine() {
        common::Engine::Embedded => std::fs::read_dir(data.join("uploads")).unwrap().count(),
        common::Engine::Cluster => common::cluster::objects(data, "uploads/").len(),
    }
}

#[track_caller]
fn assert_blob(base: &str, repo: &str, data: &[u8]) {
    let resp = http::get(&blob_url(base, repo, &sha256_digest(data)));
    assert_eq!(resp.status, 200, "blob in {repo}: {resp:?}");
    assert_eq!(resp.body, data, "blob bytes in {repo}");
}

#[track_caller]
fn assert_no_blob(base: &str, repo: &str, digest: &str) {
    assert_eq!(
        http::head(&blob_url(base, repo, digest)).status,
        404,
        "{repo}@{digest} should be gone"
    );
}

#[track_caller]
fn manifest_status(base: &str, repo: &str, reference: &str) -> u16 {
    http::get(&manifest_url(base, repo, reference)).status
}

/// Runs `work` against a fresh registry, stops it, prunes with `args`, and
/// restarts over the same directory.
fn pushed_then_pruned<T>(args: &[&str], work: impl FnOnce(&str) -> T) -> (TestRegistry, T, String) {
    let reg = TestRegistry::start();
    let state = work(&reg.url());
    let data = reg.stop();
    let output = prune(data.path(), args);
    (TestRegistry::start_in(data), state, output)
}

/// A manifest of `media_type` over fresh blobs of those media types.
fn docker_image(base: &str, repo: &str, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = http::random_bytes(3000, seed);
    push_blob(base, repo, &config);
    push_blob(base, repo, &layer);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    (manifest, layer)
}

#[test]
fn prune_refuses_a_live_data_directory_and_a_missing_one() {
    let reg = TestRegistry::start();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["prune", "--data"])
        .arg(reg.data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["prune", "--data", "/nonexistent/berth", "--grace", "10x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// An artifact pushed before (or without) its subject, as OCI 1.1 allows:
/// one tagged, one not.
fn subjectless_artifacts(base: &str) -> (String, String, Vec<u8>) {
    let absent = build_image(40);
    let blob = b"a signature that arrived first".to_vec();
    push_blob(base, "early", &blob);
    push_blob(base, "early", b"{}");
    let artifact = |kind: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor("application/octet-stream", &blob)],
            "subject": absent.descriptor(),
        }))
        .unwrap()
    };
    let tagged = push_manifest(
        base,
        "early",
        "sig",
        OCI_MANIFEST,
        &artifact("application/vnd.example.tagged"),
    );
    let untagged_body = artifact("application/vnd.example.untagged");
    let untagged = push_manifest(
        base,
        "early",
        &sha256_digest(&untagged_body),
        OCI_MANIFEST,
        &untagged_body,
    );
    (tagged, untagged, blob)
}

fn catalog(base: &str) -> Vec<String> {
    let resp = http::get(&format!("{base}/v2/_catalog"));
    assert_eq!(resp.status, 200, "{resp:?}");
    serde_json::from_value(resp.json()["repositories"].clone()).unwrap()
}

/// A table of berth's database, as its files hold it: a test breaks the
/// schema on disk, which is no API of berth's.
const REPO_BLOBS: redb::TableDefinition<(&str, &str), ()> =
    redb::TableDefinition::new("repo_blobs");

#[test]
fn a_database_from_before_the_repository_blob_index_is_filled_in_at_start() {
    let reg = TestRegistry::start();
    let image = push_image(&reg.url(), "older", Some("v1"), 56);
    let data = reg.stop();
    {
        let db = redb::Database::open(data.path().join("berth.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(REPO_BLOBS).unwrap());
        txn.commit().unwrap();
    }
    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    assert_eq!(
        http::delete(&manifest_url(&base, "older", &image.digest)).status,
        202
    );
    // Its blobs are still linked, which only the filled-in index can tell.
    assert_eq!(catalog(&base), ["older"]);
    assert_blob(&base, "older", &image.layer);
}

/// BLOB_REFS as berth's database holds it, and its record of one-time
/// repairs: no API of berth's either.
const BLOB_REFS: redb::TableDefinition<(&str, &str, &str), ()> =
    redb::TableDefinition::new("blob_refs");
const REPAIRS: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("repairs");

/// A database written while a blob DELETE still dropped its repository's
/// BLOB_REFS rows (before c0312eb) lacks the record that a manifest needs
/// the blob pushed again: it is rebuilt from the manifests once, at start,
/// and the next prune keeps the blob.
#[test]
fn a_database_whose_blob_deletes_dropped_what_manifests_need_is_repaired_at_start() {
    let reg = TestRegistry::start();
    let image = push_image(&reg.url(), "older", Some("v1"), 58);
    let data = reg.stop();
    {
        let db = redb::Database::open(data.path().join("berth.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let key = (image.layer_digest.as_str(), "older", image.digest.as_str());
        assert!(
            txn.open_table(BLOB_REFS)
                .unwrap()
                .remove(key)
                .unwrap()
                .is_some()
        );
        txn.delete_table(REPAIRS).unwrap();
        txn.commit().unwrap();
    }
    let output = prune(data.path(), &["--grace", "0s"]);
    assert!(output.contains("tags, 0 blobs"), "{output}");
    let reg = TestRegistry::start_in(data);
    assert_eq!(manifest_status(&reg.url(), "older", "v1"), 200);
    assert_blob(&reg.url(), "older", &image.layer);
}

common::both_engines! {
#[test]
fn dry_run_lists_what_would_go_and_removes_nothing() {
    let (reg, stray, output) = pushed_then_pruned(&["--dry-run", "--grace", "0s"], |base| {
        push_image(base, "app", Some("v1"), 1);
        let stray = b"nobody needs me".to_vec();
        push_blob(base, "app", &stray);
        stray
    });
    let digest = sha256_digest(&stray);
    assert!(
        output.contains(&format!(
            "would remove blob {digest} ({} bytes)",
            stray.len()
        )),
        "{output}"
    );
    assert!(
        output.contains("would prune 0 uploads, 0 manifests, 0 tags, 1 blobs"),
        "{output}"
    );
    assert_blob(&reg.url(), "app", &stray);
    assert!(blob_stored(reg.data.path(), &digest));
}

#[test]
fn unreferenced_blobs_are_swept_and_referenced_ones_kept() {
    let (reg, (image, stray), output) = pushed_then_pruned(&["--grace", "0s"], |base| {
        let image = push_image(base, "app", Some("v1"), 2);
        let stray = http::random_bytes(5000, 2);
        push_blob(base, "app", &stray);
        (image, stray)
    });
    let base = reg.url();
    assert!(output.contains("1 blobs; 5000 bytes freed"), "{output}");
    let digest = sha256_digest(&stray);
    assert_no_blob(&base, "app", &digest);
    assert!(
        !blob_stored(reg.data.path(), &digest),
        "the swept blob's file is gone"
    );
    assert_blob(&base, "app", &image.config);
    assert_blob(&base, "app", &image.layer);
    assert_eq!(manifest_status(&base, "app", "v1"), 200);
}

/// A blob deleted from a repository and pushed there again (as containerd
/// does when its HEAD of the layer says 404 and of the manifest 200) is
/// needed by that repository's manifest as before: the sweep keeps it.
#[test]
fn a_blob_deleted_and_pushed_again_is_kept_for_the_manifest_that_needs_it() {
    let (reg, image, output) = pushed_then_pruned(&["--grace", "0s"], |base| {
        let image = push_image(base, "app", Some("v1"), 57);
        let layer = blob_url(base, "app", &image.layer_digest);
        assert_eq!(http::delete(&layer).status, 202);
        push_blob(base, "app", &image.layer);
        image
    });
    let base = reg.url();
    assert!(output.contains("tags, 0 blobs"), "{output}");
    assert_eq!(manifest_status(&base, "app", "v1"), 200);
    assert_blob(&base, "app", &image.layer);
}

#[test]
fn grace_period_spares_young_blobs() {
    let (reg, stray, output) = pushed_then_pruned(&[], |base| {
        let stray = b"just uploaded, manifest on its way".to_vec();
        push_blob(base, "app", &stray);
        stray
    });
    assert!(output.contains("0 blobs"), "{output}");
    assert_blob(&reg.url(), "app", &stray);
}

#[test]
fn stale_uploads_expire_and_fresh_ones_stay() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = start_upload(&base, "app");
    let resp = http::patch(&upload, &[], b"half a layer");
    assert_eq!(resp.status, 202);
    let data = reg.stop();
    let output = prune(data.path(), &[]);
    assert!(
        output.contains("pruned 0 uploads"),
        "kept with the 1h default: {output}"
    );
    let output = prune(data.path(), &["--upload-expiration", "0s"]);
    assert!(output.contains("pruned 1 uploads"), "{output}");
    assert_eq!(upload_files(data.path()), 0);
    let reg = TestRegistry::start_in(data);
    let moved = upload.replace(&base, &reg.url());
    assert_error(&http::get(&moved), 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn expired_manifests_go_with_their_tags_unless_a_kept_index_needs_them() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let child = push_image(&base, "app", Some("child"), 3);
    let lone = push_image(&base, "app", Some("lone"), 4);
    std::thread::sleep(Duration::from_millis(2100));
    let index = image_index(&[child.descriptor()]);
    push_manifest(&base, "app", "multi", OCI_INDEX, &index);
    let data = reg.stop();
    let output = prune(
        data.path(),
        &["--manifest-expiration", "2s", "--grace", "0s"],
    );
    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    assert!(
        output.contains("pruned 0 uploads, 1 manifests, 1 tags, 2 blobs"),
        "{output}"
    );
    assert_eq!(manifest_status(&base, "app", "lone"), 404);
    assert_eq!(manifest_status(&base, "app", &lone.digest), 404);
    assert_no_blob(&base, "app", &lone.layer_digest);
    // The child expired too, but the index that is kept still needs it.
    assert_eq!(manifest_status(&base, "app", "multi"), 200);
    assert_eq!(manifest_status(&base, "app", "child"), 200);
    assert_blob(&base, "app", &child.layer);
}

#[test]
fn a_sparse_index_keeps_the_children_that_arrive_after_it() {
    let (reg, (late, never), output) =
        pushed_then_pruned(&["--untagged", "--grace", "0s"], |base| {
            let late = build_image(40);
            let never = build_image(41);
            let index = image_index(&[late.descriptor(), never.descriptor()]);
            push_manifest(base, "sparse", "multi", OCI_INDEX, &index);
            // The child the index lists comes after it, untagged.
            push_blob(base, "sparse", &late.config);
            push_blob(base, "sparse", &late.layer);
            push_manifest(base, "sparse", &late.digest, OCI_MANIFEST, &late.manifest);
            (late, never)
        });
    let base = reg.url();
    assert!(output.contains("0 manifests, 0 tags, 0 blobs"), "{output}");
    assert_eq!(manifest_status(&base, "sparse", "multi"), 200);
    assert_eq!(manifest_status(&base, "sparse", &late.digest), 200);
    assert_blob(&base, "sparse", &late.layer);
    assert_eq!(manifest_status(&base, "sparse", &never.digest), 404);
}

#[test]
fn every_manifest_kind_keeps_what_it_reaches_under_the_untagged_policy() {
    let reg = TestRegistry::start();
    let base = reg.url();
    // An OCI index, tagged, over two untagged OCI manifests.
    let amd = push_image(&base, "kinds", None, 10);
    let arm = push_image(&base, "kinds", None, 11);
    push_manifest(
        &base,
        "kinds",
        "oci",
        OCI_INDEX,
        &image_index(&[amd.descriptor(), arm.descriptor()]),
    );
    // A Docker manifest list, tagged, over an untagged Docker manifest.
    let (docker, docker_layer) = docker_image(&base, "kinds", 12);
    let docker_digest = push_manifest(
        &base,
        "kinds",
        &sha256_digest(&docker),
        DOCKER_MANIFEST,
        &docker,
    );
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [descriptor(DOCKER_MANIFEST, &docker)],
    }))
    .unwrap();
    push_manifest(&base, "kinds", "docker", DOCKER_LIST, &list);
    // An untagged Docker manifest nothing needs.
    let (loose, loose_layer) = docker_image(&base, "kinds", 13);
    let loose_digest = push_manifest(
        &base,
        "kinds",
        &sha256_digest(&loose),
        DOCKER_MANIFEST,
        &loose,
    );
    // A signature-like artifact on a tagged image: kept with its own blob.
    let signed = push_image(&base, "kinds", Some("signed"), 14);
    let sig_blob = b"signature bytes".to_vec();
    push_blob(&base, "kinds", &sig_blob);
    push_blob(&base, "kinds", b"{}");
    let artifact = |subject: &Image, blob: &[u8]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor("application/octet-stream", blob)],
            "subject": subject.descriptor(),
        }))
        .unwrap()
    };
    let sig = artifact(&signed, &sig_blob);
    let sig_digest = push_manifest(&base, "kinds", &sha256_digest(&sig), OCI_MANIFEST, &sig);
    // An artifact whose subject is untagged, so both go.
    let unsigned = push_image(&base, "kinds", None, 15);
    let orphan_blob = b"signature of something doomed".to_vec();
    push_blob(&base, "kinds", &orphan_blob);
    let orphan = artifact(&unsigned, &orphan_blob);
    let orphan_digest = push_manifest(
        &base,
        "kinds",
        &sha256_digest(&orphan),
        OCI_MANIFEST,
        &orphan,
    );

    let data = reg.stop();
    let output = prune(data.path(), &["--untagged", "--grace", "0s"]);
    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    assert!(output.contains("3 manifests, 0 tags"), "{output}");

    for kept in [
        &amd.digest,
        &arm.digest,
        &docker_digest,
        &signed.digest,
        &sig_digest,
    ] {
        assert_eq!(
            manifest_status(&base, "kinds", kept),
            200,
            "{kept} is reachable"
        );
    }
    for blob in [&amd.layer, &arm.layer, &docker_layer, &sig_blob] {
        assert_blob(&base, "kinds", blob);
    }
    for gone in [&loose_digest, &unsigned.digest, &orphan_digest] {
        assert_eq!(
            manifest_status(&base, "kinds", gone),
            404,
            "{gone} is unreachable"
        );
    }
    assert_no_blob(&base, "kinds", &sha256_digest(&loose_layer));
    assert_no_blob(&base, "kinds", &unsigned.layer_digest);
    assert_no_blob(&base, "kinds", &sha256_digest(&orphan_blob));
    // The kept referrer is still listed; the removed one is not.
    let referrers = http::get(&format!("{base}/v2/kinds/referrers/{}", signed.digest)).json();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);
    let referrers = http::get(&format!("{base}/v2/kinds/referrers/{}", unsigned.digest)).json();
    assert_eq!(referrers["manifests"], json!([]));
}

#[test]
fn untagged_manifests_stay_without_the_policy() {
    let (reg, image, output) =
        pushed_then_pruned(&["--grace", "0s"], |base| push_image(base, "app", None, 20));
    assert!(output.contains("0 manifests"), "{output}");
    assert_eq!(manifest_status(&reg.url(), "app", &image.digest), 200);
    assert_blob(&reg.url(), "app", &image.layer);
}

#[test]
fn what_an_api_delete_leaves_unreferenced_is_reclaimed() {
    let (reg, (image, kept), output) = pushed_then_pruned(&["--grace", "0s"], |base| {
        let image = push_image(base, "app", Some("old"), 21);
        let kept = push_image(base, "app", Some("new"), 22);
        assert_eq!(
            http::delete(&manifest_url(base, "app", &image.digest)).status,
            202
        );
        (image, kept)
    });
    assert!(output.contains("2 blobs"), "{output}");
    assert!(!blob_stored(reg.data.path(), &image.layer_digest));
    assert!(!blob_stored(reg.data.path(), &image.config_digest));
    assert_blob(&reg.url(), "app", &kept.layer);
}

#[test]
fn a_blob_shared_by_repositories_stays_while_any_manifest_needs_it() {
    let (reg, image, _) = pushed_then_pruned(&["--grace", "0s"], |base| {
        let image = push_image(base, "one", Some("v1"), 23);
        // Mounted into a second repository that no manifest there needs.
        let mount = format!(
            "{}?mount={}&from=one",
            uploads_url(base, "two"),
            image.layer_digest
        );
        assert_eq!(http::post(&mount, &[], b"").status, 201);
        image
    });
    let base = reg.url();
    assert_blob(&base, "one", &image.layer);
    assert_no_blob(&base, "two", &image.layer_digest);
    assert!(blob_stored(reg.data.path(), &image.layer_digest));
}

/// Pushes race a background prune with no grace period: every manifest PUT
/// either succeeds with all its blobs in place for good, or is refused with
/// MANIFEST_BLOB_UNKNOWN. It never succeeds pointing at a swept blob.
#[test]
fn pushes_racing_prunes_never_leave_a_manifest_without_its_blobs() {
    let data = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start_with(data, |config| {
        config.prune_interval = Some(Duration::from_millis(30));
        config.prune.grace = Duration::ZERO;
    });
    let base = reg.url();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let base = base.clone();
            let (refused, successes) = (Arc::clone(&refused), Arc::clone(&successes));
            std::thread::spawn(move || {
                let mut pushed = Vec::new();
                for i in 0..500u64 {
                    // Enough of both outcomes, or out of time.
                    let enough =
                        successes.load(Ordering::Relaxed) >= 20 && refused.load(Ordering::Relaxed);
                    if enough || Instant::now() > deadline {
                        break;
                    }
                    let image = build_image(1000 + w * 1000 + i);
                    // A shared layer keeps being needed and unneeded.
                    let shared = http::random_bytes(2000, 7);
                    push_blob(&base, "race", &image.config);
                    push_blob(&base, "race", &image.layer);
                    push_blob(&base, "race", &shared);
                    let manifest = image_manifest(
                        &descriptor(OCI_CONFIG, &image.config),
                        &[
                            descriptor(OCI_LAYER, &image.layer),
                            descriptor(OCI_LAYER, &shared),
                        ],
                    );
                    let tag = format!("w{w}-{i}");
                    let resp = put_manifest(&base, "race", &tag, OCI_MANIFEST, &manifest);
                    match resp.status {
                        201 => {
                            successes.fetch_add(1, Ordering::Relaxed);
                            pushed.push((tag, image, shared));
                        }
                        400 => {
                            assert_eq!(resp.error_codes(), ["MANIFEST_BLOB_UNKNOWN"], "{resp:?}");
                            refused.store(true, Ordering::Relaxed);
                        }
                        _ => panic!("manifest PUT: {resp:?}"),
                    }
                }
                pushed
            })
        })
        .collect();
    let pushed: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // Both outcomes must occur, or the race was never run.
    assert!(pushed.len() >= 10, "only {} pushes succeeded", pushed.len());
    assert!(refused.load(Ordering::Relaxed), "no push ever met a sweep");
    // Let a few more prunes pass over what was acknowledged.
    std::thread::sleep(Duration::from_millis(200));
    for (tag, image, shared) in &pushed {
        assert_eq!(manifest_status(&base, "race", tag), 200, "{tag}");
        assert_blob(&base, "race", &image.config);
        assert_blob(&base, "race", &image.layer);
        assert_blob(&base, "race", shared);
    }
}

#[test]
fn a_tag_is_a_root_even_on_an_artifact_whose_subject_is_absent() {
    for args in [&["--grace", "0s"][..], &["--grace", "0s", "--untagged"][..]] {
        let (reg, (tagged, untagged, blob), output) =
            pushed_then_pruned(args, subjectless_artifacts);
        let base = reg.url();
        assert_eq!(
            manifest_status(&base, "early", "sig"),
            200,
            "{args:?}: {output}"
        );
        assert_eq!(manifest_status(&base, "early", &tagged), 200, "{args:?}");
        assert_blob(&base, "early", &blob);
        // Without --untagged nothing unexpired goes, referrer or not; with
        // it, an untagged artifact lives only while its subject does.
        let untagged_status = if args.contains(&"--untagged") {
            404
        } else {
            200
        };
        assert_eq!(
            manifest_status(&base, "early", &untagged),
            untagged_status,
            "{args:?}: {output}"
        );
    }
}

#[test]
fn a_repository_emptied_by_api_deletes_leaves_the_catalog() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_image(&base, "doomed", Some("v1"), 50);
    push_image(&base, "kept", Some("v1"), 51);
    assert_eq!(catalog(&base), ["doomed", "kept"]);
    assert_eq!(
        http::delete(&manifest_url(&base, "doomed", &image.digest)).status,
        202
    );
    // Its blobs are still linked: the repository still holds something.
    assert_eq!(catalog(&base), ["doomed", "kept"]);
    for blob in [&image.config_digest, &image.layer_digest] {
        assert_eq!(http::delete(&blob_url(&base, "doomed", blob)).status, 202);
    }
    assert_eq!(catalog(&base), ["kept"]);
    push_image(&base, "doomed", Some("v2"), 52);
    assert_eq!(catalog(&base), ["doomed", "kept"]);
}

#[test]
fn a_repository_emptied_by_prune_leaves_the_catalog() {
    let (reg, (), output) = pushed_then_pruned(&["--grace", "0s"], |base| {
        let image = push_image(base, "doomed", Some("v1"), 53);
        push_image(base, "kept", Some("v1"), 54);
        assert_eq!(
            http::delete(&manifest_url(base, "doomed", &image.digest)).status,
            202
        );
        push_blob(base, "strays", b"a blob no manifest ever needed");
    });
    assert!(output.contains("3 blobs"), "{output}");
    assert_eq!(catalog(&reg.url()), ["kept"]);
}
}
