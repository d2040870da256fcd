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
use common::transfer::{
    blob_file, entries, export, import, index_of, must_export, populate, unpack,
};
use serde_json::json;

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
    let sig_digest = http::sha256_digest(&signature);
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
        &http::sha256_digest(&docker),
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
        printed.contains(&http::sha256_digest(&bytes)),
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
            (
                "docker.io/library/multi:2".to_owned(),
                http::sha256_digest(&index)
            ),
            ("team/legacy:old".to_owned(), http::sha256_digest(&list)),
        ])
    );
    for image in [&single, &amd, &arm] {
        assert_blob(&entries, &image.digest, &image.manifest);
        assert_blob(&entries, &image.config_digest, &image.config);
        assert_blob(&entries, &image.layer_digest, &image.layer);
    }
    assert_blob(&entries, &http::sha256_digest(&index), &index);
    assert_blob(&entries, &sig_digest, &signature);
    assert_blob(&entries, &http::sha256_digest(b"signed"), b"signed");
    assert_blob(&entries, &http::sha256_digest(&list), &list);
    assert_blob(&entries, &http::sha256_digest(&docker), &docker);
    assert_blob(&entries, &http::sha256_digest(&layer), &layer);
    // Every blob file is named for what it holds.
    for (path, held) in &entries {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(http::sha256_digest(held), format!("sha256:{hex}"), "{path}");
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

/// Runs `berth import --data DATA ARGS`: (success, stdout + stderr).
#[test]
fn an_export_imported_elsewhere_serves_exactly_what_left_and_twice_changes_nothing() {
    let (data, single, arm, signature) = populated();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("out.tar");
    must_export(data.path(), &archive, &[]);

    let fresh = work.path().join("fresh");
    let (ok, said) = import(&fresh, &[archive.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("imported 2 images"), "{said}");
    for image in ["docker.io/library/app:1", "docker.io/library/multi:2"] {
        assert!(
            said.contains(&format!("imported {image}\n")),
            "one line per image: {said}"
        );
    }
    let (ok, said) = import(&fresh, &[archive.to_str().unwrap()]);
    assert!(
        ok && said.contains("0 blobs read"),
        "a second import read again: {said}"
    );
    // What a second export of the imported copy writes is what left.
    let again = work.path().join("again.tar");
    must_export(&fresh, &again, &[]);
    assert!(std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap());

    let copy = TestRegistry::start_in(move_into_tempdir(&fresh));
    let base = copy.url();
    for (repo, reference, body) in [
        ("docker.io/library/app", "1", &single.manifest),
        (
            "docker.io/library/multi",
            arm.digest.as_str(),
            &arm.manifest,
        ),
        (
            "docker.io/library/app",
            &http::sha256_digest(&signature),
            &signature,
        ),
    ] {
        let resp = http::get(&http::manifest_url(&base, repo, reference));
        assert_eq!(resp.status, 200, "{repo}:{reference}: {resp:?}");
        assert!(&resp.body == body);
    }
    let layer = http::get(&http::blob_url(
        &base,
        "docker.io/library/multi",
        &arm.layer_digest,
    ));
    assert!(layer.body == arm.layer);
    let referrers = http::get(&format!(
        "{base}/v2/docker.io/library/app/referrers/{}",
        single.digest
    ));
    assert_eq!(
        referrers.json()["manifests"][0]["digest"],
        json!(http::sha256_digest(&signature))
    );
}

#[test]
fn a_damaged_image_is_named_and_nothing_of_it_shows_while_the_others_import() {
    let (data, single, arm, _) = populated();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("out.tar");
    must_export(data.path(), &archive, &[]);
    let layout = work.path().join("layout");
    unpack(&archive, &layout);
    // A flipped byte in the arm image's layer.
    let path = blob_file(&layout, &arm.layer_digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let target = work.path().join("target");
    let (ok, said) = import(&target, &[layout.to_str().unwrap()]);
    assert!(!ok, "a damaged import succeeded: {said}");
    assert!(said.contains("docker.io/library/multi:2"), "{said}");
    assert!(said.contains(&arm.layer_digest), "{said}");
    assert!(said.contains("imported 1 images"), "{said}");

    let reg = TestRegistry::start_in(move_into_tempdir(&target));
    let base = reg.url();
    assert_eq!(
        http::get(&http::manifest_url(&base, "docker.io/library/app", "1")).status,
        200
    );
    for reference in ["2", arm.digest.as_str()] {
        let resp = http::get(&http::manifest_url(
            &base,
            "docker.io/library/multi",
            reference,
        ));
        assert_eq!(resp.status, 404, "{reference} shows: {resp:?}");
    }
    let resp = http::head(&http::blob_url(
        &base,
        "docker.io/library/multi",
        &arm.config_digest,
    ));
    assert_eq!(resp.status, 404, "a blob of the refused image shows");
    let _ = single;
}

#[test]
fn a_missing_blob_or_a_wrong_size_is_refused_by_name() {
    let (data, single, _, _) = populated();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("out.tar");
    must_export(data.path(), &archive, &["docker.io/library/app:1"]);

    let missing = work.path().join("missing");
    unpack(&archive, &missing);
    std::fs::remove_file(blob_file(&missing, &single.config_digest)).unwrap();
    let (ok, said) = import(&work.path().join("t1"), &[missing.to_str().unwrap()]);
    assert!(
        !ok && said.contains(&single.config_digest) && said.contains("missing"),
        "{said}"
    );

    let resized = work.path().join("resized");
    unpack(&archive, &resized);
    let index_path = resized.join("index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();
    let size = format!("\"size\": {}", single.manifest.len());
    assert!(index.contains(&size), "{index}");
    std::fs::write(&index_path, index.replace(&size, "\"size\": 7")).unwrap();
    let (ok, said) = import(&work.path().join("t2"), &[resized.to_str().unwrap()]);
    assert!(!ok && said.contains("descriptor says 7"), "{said}");
}

#[test]
fn an_archive_with_an_entry_outside_the_layout_is_refused_whole() {
    let work = tempfile::tempdir().unwrap();
    for (name, link) in [
        ("../escape", false),
        ("/etc/escape", false),
        ("blobs/sha256/x", true),
    ] {
        let archive = work.path().join("evil.tar");
        {
            let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_size(if link { 0 } else { 4 });
            header.set_mode(0o644);
            if link {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_link_name("/etc/passwd").unwrap();
            }
            let path = name.trim_start_matches('/');
            let bytes = header.as_old_mut();
            bytes.name[..path.len()].copy_from_slice(path.as_bytes());
            if name.starts_with('/') {
                bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_cksum();
            tar.append(&header, if link { &b""[..] } else { &b"evil"[..] })
                .unwrap();
            tar.finish().unwrap();
        }
        let target = work.path().join("target");
        let (ok, said) = import(&target, &[archive.to_str().unwrap()]);
        assert!(!ok, "{name} was taken: {said}");
        assert!(said.contains("unsafe entry"), "{name}: {said}");
        assert!(!work.path().join("escape").exists());
    }
}

#[test]
fn a_layout_written_by_skopeo_imports_into_the_repository_given() {
    require_programs("a_layout_written_by_skopeo", &[("skopeo", "skopeo")]);
    let reg = TestRegistry::start();
    let image = http::push_image(&reg.url(), "team/app", Some("1"), 14);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    Skopeo::new().ok(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/team/app:1", reg.host()),
        &format!("oci:{}:v1", layout.display()),
    ]);
    let target = work.path().join("target");
    let (ok, said) = import(&target, &["--into", "copied/app", layout.to_str().unwrap()]);
    assert!(ok, "{said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&target));
    let resp = http::get(&http::manifest_url(&copy.url(), "copied/app", "v1"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == image.manifest);
}

/// A directory made by a command, handed to a TempDir for the registry.
fn move_into_tempdir(dir: &Path) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    std::fs::remove_dir(temp.path()).unwrap();
    std::fs::rename(dir, temp.path()).unwrap();
    temp
}

#[test]
fn a_delta_carries_only_new_blobs_and_imports_only_onto_its_base() {
    let reg = TestRegistry::start();
    let base_url = reg.url();
    let first = http::push_image(&base_url, "team/app", Some("1"), 15);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.tar");
    must_export(data.path(), &base, &[]);

    // A new tag sharing the first image's layer, with a config of its own.
    let reg = TestRegistry::start_in(data);
    let url = reg.url();
    let config = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    http::push_blob(&url, "team/app", &config);
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &[http::descriptor(http::OCI_LAYER, &first.layer)],
    );
    http::push_manifest(&url, "team/app", "2", OCI_MANIFEST, &manifest);
    let data = reg.stop();

    let delta = work.path().join("delta.tar");
    must_export(data.path(), &delta, &["--since", base.to_str().unwrap()]);
    let held = entries(&delta);
    let blobs: Vec<&String> = held
        .keys()
        .filter(|p| p.len() > "blobs/sha256/".len() && p.starts_with("blobs/sha256/"))
        .collect();
    assert_eq!(
        blobs.len(),
        3,
        "the delta holds the new config and the manifests only: {blobs:?}"
    );
    assert_blob(&held, &first.digest, &first.manifest);
    assert_blob(&held, &http::sha256_digest(&config), &config);
    assert_blob(&held, &http::sha256_digest(&manifest), &manifest);
    // The earlier archive's index.json alone says as much.
    let index_only = work.path().join("index.json");
    let mut base_index = Vec::new();
    tar::Archive::new(std::fs::File::open(&base).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_string_lossy() == "index.json")
        .unwrap()
        .read_to_end(&mut base_index)
        .unwrap();
    std::fs::write(&index_only, &base_index).unwrap();
    let from_index = work.path().join("delta2.tar");
    must_export(
        data.path(),
        &from_index,
        &["--since", index_only.to_str().unwrap()],
    );
    assert!(std::fs::read(&from_index).unwrap() == std::fs::read(&delta).unwrap());

    // Onto nothing, the new image is refused naming the layer it lacks.
    let (ok, said) = import(&work.path().join("empty"), &[delta.to_str().unwrap()]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("team/app:2") && said.contains(&first.layer_digest),
        "{said}"
    );
    // Onto the imported base, it completes the image.
    let site = work.path().join("site");
    let (ok, said) = import(&site, &[base.to_str().unwrap()]);
    assert!(ok, "{said}");
    let (ok, said) = import(&site, &[delta.to_str().unwrap()]);
    assert!(ok, "{said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    let resp = http::get(&http::manifest_url(&copy.url(), "team/app", "2"));
    assert!(resp.body == manifest, "{resp:?}");
    let layer = http::get(&http::blob_url(
        &copy.url(),
        "team/app",
        &first.layer_digest,
    ));
    assert!(layer.body == first.layer);
}

#[test]
fn an_import_killed_midway_goes_on_where_it_stopped() {
    let reg = TestRegistry::start();
    let url = reg.url();
    for seed in 0..12 {
        let mut image = http::build_image(100 + seed);
        image.layer = http::random_bytes(4 << 20, 100 + seed);
        let layer = http::descriptor(http::OCI_LAYER, &image.layer);
        image.manifest =
            http::image_manifest(&http::descriptor(http::OCI_CONFIG, &image.config), &[layer]);
        http::push_blob(&url, "team/big", &image.config);
        http::push_blob(&url, "team/big", &image.layer);
        http::push_manifest(
            &url,
            "team/big",
            &format!("v{seed}"),
            OCI_MANIFEST,
            &image.manifest,
        );
    }
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("big.tar");
    must_export(data.path(), &archive, &[]);

    let site = work.path().join("site");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["import", "--data"])
        .arg(&site)
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the first blobs are in place, well before the last.
    let shards = site.join("blobs/sha256");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::process::files_under(&shards).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the import finished before it was killed"
    );

    let (ok, said) = import(&site, &[archive.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("imported 12 images"), "{said}");
    let held: usize = said
        .split_once(" already held")
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    // The last file placed may not have been committed: an orphan, removed.
    assert!(
        held >= 2,
        "what the first run checked was read again: {said}"
    );
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    for seed in [0, 11] {
        let resp = http::get(&http::manifest_url(
            &copy.url(),
            "team/big",
            &format!("v{seed}"),
        ));
        assert_eq!(resp.status, 200, "v{seed}: {resp:?}");
    }
}

#[test]
fn a_platform_export_carries_the_whole_index_and_one_platform_and_imports_sparse() {
    let reg = TestRegistry::start();
    let url = reg.url();
    let amd = http::push_image(&url, "team/multi", None, 16);
    let arm = http::push_image(&url, "team/multi", None, 17);
    let mut amd_d = amd.descriptor();
    amd_d["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut arm_d = arm.descriptor();
    arm_d["platform"] = json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let index = http::image_index(&[amd_d, arm_d]);
    http::push_manifest(&url, "team/multi", "1", OCI_INDEX, &index);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("arm.tar");
    must_export(
        data.path(),
        &archive,
        &["--platform", "linux/arm64", "team/multi:1"],
    );
    let held = entries(&archive);
    assert_blob(&held, &http::sha256_digest(&index), &index);
    assert_blob(&held, &arm.digest, &arm.manifest);
    assert_blob(&held, &arm.layer_digest, &arm.layer);
    for absent in [&amd.digest, &amd.layer_digest, &amd.config_digest] {
        assert!(
            !held.contains_key(&format!("blobs/sha256/{}", &absent[7..])),
            "{absent}"
        );
    }

    let site = work.path().join("site");
    let (ok, said) = import(&site, &[archive.to_str().unwrap()]);
    assert!(ok, "{said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    let get =
        |reference: &str| http::get(&http::manifest_url(&copy.url(), "team/multi", reference));
    assert!(get("1").body == index);
    assert!(get(&arm.digest).body == arm.manifest);
    assert_eq!(get(&amd.digest).status, 404);
    drop(copy);

    // Without berth's note that it was exported so, the absent child is damage.
    let layout = work.path().join("layout");
    unpack(&archive, &layout);
    let index_json = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(
        index_json.contains("io.berth.export.platforms"),
        "{index_json}"
    );
    let stripped = index_json.replace("io.berth.export.platforms", "org.example.note");
    std::fs::write(layout.join("index.json"), stripped).unwrap();
    let (ok, said) = import(&work.path().join("t"), &[layout.to_str().unwrap()]);
    assert!(
        !ok && said.contains(&amd.digest) && said.contains("missing"),
        "{said}"
    );
}

/// A registry with [`populate`]'s images, stopped: its data directory and
/// what was pushed.
fn populated() -> (tempfile::TempDir, http::Image, http::Image, Vec<u8>) {
    let reg = TestRegistry::start();
    let pushed = populate(&reg.url());
    (reg.stop(), pushed.single, pushed.arm, pushed.signature)
}

/// Indexes nested past any real image's depth (a crafted archive can chain
/// tens of thousands, and each level was walked by a call of its own, until
/// the stack ran out) are refused by name.
#[test]
fn indexes_nested_past_the_limit_are_refused_by_name() {
    use common::layout::{Compression, LayoutWriter, MEDIA_INDEX};
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let mut writer = LayoutWriter::create(&layout, 61);
    let mut top = writer
        .image("linux", "amd64", &[100], Compression::Plain)
        .manifest;
    for _ in 0..40 {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [top.to_json()],
        });
        top = writer.put_blob(MEDIA_INDEX, &serde_json::to_vec(&index).unwrap());
    }
    writer.tag("deep", &top);
    let target = work.path().join("target");
    let (ok, said) = import(
        &target,
        &["--into", "crafted/deep", layout.to_str().unwrap()],
    );
    assert!(!ok, "an image nested 41 deep was imported: {said}");
    assert!(said.contains("nested deeper than"), "{said}");
}

/// A directory layout's own files are read as an archive's are: a link
/// (which could name /dev/zero) or a file over 4 MiB is refused, not
/// followed or read whole.
#[test]
fn a_layout_whose_index_is_a_link_or_over_4_mib_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    common::layout::write_image(&layout, "v1", 62);
    let index = layout.join("index.json");
    let real = work.path().join("index.json");
    std::fs::rename(&index, &real).unwrap();
    std::os::unix::fs::symlink(&real, &index).unwrap();
    let into = ["--into", "linked/app", layout.to_str().unwrap()];
    let (ok, said) = import(&work.path().join("a"), &into);
    assert!(!ok, "a linked index.json was followed: {said}");
    assert!(said.contains("unsafe entry \"index.json\""), "{said}");

    // Whitespace is JSON: a valid index, padded past 4 MiB.
    std::fs::remove_file(&index).unwrap();
    let mut padded = std::fs::read(&real).unwrap();
    padded.extend(std::iter::repeat_n(b' ', 4 << 20));
    std::fs::write(&index, padded).unwrap();
    let (ok, said) = import(&work.path().join("b"), &into);
    assert!(!ok, "an index.json over 4 MiB was read whole: {said}");
    assert!(said.contains("over 4 MiB"), "{said}");
}

/// A pull-through cache holds only the platforms pulled: its sparse index
/// exports as it is held, with a note naming the absent children, and
/// imports as it was exported; without the note an absent child is damage.
#[test]
fn a_cached_index_with_one_platform_pulled_exports_and_imports_sparse() {
    let upstream = TestRegistry::start();
    let url = upstream.url();
    let amd = http::push_image(&url, "team/multi", None, 63);
    let arm = http::push_image(&url, "team/multi", None, 64);
    let mut amd_d = amd.descriptor();
    amd_d["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut arm_d = arm.descriptor();
    arm_d["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let index = http::image_index(&[amd_d, arm_d]);
    // Two tags of one index: each image of the archive gets the note.
    http::push_manifest(&url, "team/multi", "1", OCI_INDEX, &index);
    http::push_manifest(&url, "team/multi", "latest", OCI_INDEX, &index);
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
    });
    // What `docker pull --platform linux/amd64` fetches through the cache.
    let repo = "up.test/team/multi";
    let mirror_url = mirror.url();
    for tag in ["1", "latest"] {
        assert_eq!(
            http::get(&http::manifest_url(&mirror_url, repo, tag)).status,
            200
        );
    }
    assert_eq!(
        http::get(&http::manifest_url(&mirror_url, repo, &amd.digest)).status,
        200
    );
    for blob in [&amd.config_digest, &amd.layer_digest] {
        assert_eq!(
            http::get(&http::blob_url(&mirror_url, repo, blob)).status,
            200
        );
    }
    let data = mirror.stop();
    drop(upstream);

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("cache.tar");
    must_export(data.path(), &archive, &[]);
    let held = entries(&archive);
    assert_blob(&held, &http::sha256_digest(&index), &index);
    assert_blob(&held, &amd.digest, &amd.manifest);
    assert!(!held.contains_key(&format!("blobs/sha256/{}", &arm.digest[7..])));
    let site = work.path().join("site");
    let (ok, said) = import(&site, &[archive.to_str().unwrap()]);
    assert!(ok, "its own export was refused: {said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    let get = |reference: &str| http::get(&http::manifest_url(&copy.url(), repo, reference));
    assert!(get("1").body == index);
    assert!(get("latest").body == index);
    assert!(get(&amd.digest).body == amd.manifest);
    assert_eq!(get(&arm.digest).status, 404);
    drop(copy);

    let layout = work.path().join("layout");
    unpack(&archive, &layout);
    let index_json = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index_json.contains(&arm.digest), "{index_json}");
    let stripped = index_json.replace(&arm.digest, &amd.digest);
    std::fs::write(layout.join("index.json"), stripped).unwrap();
    let (ok, said) = import(&work.path().join("t"), &[layout.to_str().unwrap()]);
    assert!(
        !ok && said.contains(&arm.digest) && said.contains("missing"),
        "{said}"
    );
}

/// Export walks nesting as import does: a chain of indexes past the limit
/// (anyone who may push can store one) is refused by name, not walked
/// until the stack runs out.
#[test]
fn an_export_of_indexes_nested_past_the_limit_is_refused_by_name() {
    let reg = TestRegistry::start();
    let url = reg.url();
    let image = http::push_image(&url, "team/deep", None, 65);
    let mut top = image.descriptor();
    for level in 0..40 {
        let index = http::image_index(&[top]);
        let reference = if level == 39 {
            "deep".to_owned()
        } else {
            http::sha256_digest(&index)
        };
        http::push_manifest(&url, "team/deep", &reference, OCI_INDEX, &index);
        top = http::descriptor(OCI_INDEX, &index);
    }
    let data = reg.stop();
    let out = data.path().join("deep.tar");
    let (ok, stdout, stderr) = export(data.path(), &out, &["team/deep:deep"]);
    assert!(!ok, "an image nested 41 deep was exported: {stdout}");
    assert!(stderr.contains("nested deeper than 32"), "{stderr}");
    assert!(!out.exists());
}

/// A foreign layer (Windows base layers; not to be redistributed) is not
/// pushed, with or without `urls`: the push accepts its manifest without
/// it, the export leaves it out, and the import accepts its absence.
#[test]
fn an_image_with_a_foreign_layer_exports_and_imports_without_it() {
    let reg = TestRegistry::start();
    let url = reg.url();
    let image = http::push_image(&url, "team/win", None, 66);
    let foreign = http::random_bytes(500, 67);
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &image.config),
        &[
            http::descriptor(
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                &foreign,
            ),
            http::descriptor(http::OCI_LAYER, &image.layer),
        ],
    );
    http::push_manifest(&url, "team/win", "1", OCI_MANIFEST, &manifest);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("win.tar");
    must_export(data.path(), &archive, &["team/win:1"]);
    let site = work.path().join("site");
    let (ok, said) = import(&site, &[archive.to_str().unwrap()]);
    assert!(ok, "its own export was refused: {said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    let resp = http::get(&http::manifest_url(&copy.url(), "team/win", "1"));
    assert!(resp.body == manifest, "{resp:?}");
}

/// A delta's image may share a manifest with an image of another
/// repository that the earlier export carried (a retag, a copy). The site
/// holds that manifest in the other repository only, once a prune swept
/// the staged copy of its bytes: the delta carries every manifest its
/// images need (they are small), so it imports all the same.
#[test]
fn a_delta_whose_image_shares_a_manifest_with_another_repository_imports_after_a_prune() {
    let reg = TestRegistry::start();
    let url = reg.url();
    let image = http::push_image(&url, "team/app", Some("1"), 68);
    let data = reg.stop();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.tar");
    must_export(data.path(), &base, &[]);
    let site = work.path().join("site");
    let (ok, said) = import(&site, &[base.to_str().unwrap()]);
    assert!(ok, "{said}");
    let (ok, stdout, stderr) =
        common::transfer::berth(&["prune", "--grace", "0s", "--data", site.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");

    // The same image under another name: its blobs and manifest again.
    let reg = TestRegistry::start_in(data);
    let url = reg.url();
    http::push_blob(&url, "team/copy", &image.config);
    http::push_blob(&url, "team/copy", &image.layer);
    http::push_manifest(&url, "team/copy", "1", OCI_MANIFEST, &image.manifest);
    let data = reg.stop();
    let delta = work.path().join("delta.tar");
    must_export(
        data.path(),
        &delta,
        &["--since", base.to_str().unwrap(), "team/copy:1"],
    );
    let (ok, said) = import(&site, &[delta.to_str().unwrap()]);
    assert!(ok, "the delta was refused: {said}");
    let copy = TestRegistry::start_in(move_into_tempdir(&site));
    let resp = http::get(&http::manifest_url(&copy.url(), "team/copy", "1"));
    assert!(resp.body == image.manifest, "{resp:?}");
    assert!(
        http::get(&http::blob_url(
            &copy.url(),
            "team/copy",
            &image.layer_digest
        ))
        .body
            == image.layer
    );
}
