//! `berth export --registry` and `berth import --registry`: the same
//! archives, from and into a running registry (a live berth, with a login,
//! or CNCF Distribution), checked as strictly as a data directory's.

mod common;

use std::path::Path;

use common::TestRegistry;
use common::clients::{htpasswd, require_programs};
use common::distribution::Distribution;
use common::http::{self, OCI_INDEX};
use common::transfer::{
    Pushed, berth, blob_file, entries, export, index_of, must_export, populate, unpack,
};
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

/// A berth that takes pushes and pulls only from [`USER`].
fn secured() -> (TestRegistry, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let users = files.path().join("users");
    htpasswd(&users, USER, PASSWORD);
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.auth = Some(berth::auth::AuthConfig::new(users));
    });
    (reg, files)
}

fn basic() -> String {
    use base64::Engine;
    let pair = format!("{USER}:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A GET as [`USER`].
fn get(url: &str, accept: &str) -> http::Response {
    http::request(
        "GET",
        url,
        &[("Authorization", &basic()), ("Accept", accept)],
        b"",
    )
}

/// `berth export --registry URL --out OUT ARGS`: (success, all it said).
fn export_from(url: &str, out: &Path, args: &[&str]) -> (bool, String) {
    let out = out.to_str().unwrap();
    let (ok, stdout, stderr) =
        berth(&[&["export", "--registry", url, "--out", out], args].concat());
    (ok, format!("{stdout}{stderr}"))
}

/// `berth import --registry URL ARGS`: (success, all it said).
fn import_into(url: &str, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = berth(&[&["import", "--registry", url], args].concat());
    (ok, format!("{stdout}{stderr}"))
}

/// Whether the registry at `base` serves the images [`populate`] pushed,
/// byte for byte.
#[track_caller]
fn assert_serves(base: &str, pushed: &Pushed, accept: &str) {
    for (repo, reference, body) in [
        ("docker.io/library/app", "1", &pushed.single.manifest),
        (
            "docker.io/library/multi",
            pushed.arm.digest.as_str(),
            &pushed.arm.manifest,
        ),
    ] {
        let resp = get(&http::manifest_url(base, repo, reference), accept);
        assert_eq!(resp.status, 200, "{repo}:{reference}: {resp:?}");
        assert!(&resp.body == body, "{repo}:{reference} differs");
    }
    let layer = get(
        &http::blob_url(base, "docker.io/library/multi", &pushed.arm.layer_digest),
        "*/*",
    );
    assert!(layer.body == pushed.arm.layer, "a layer differs");
}

#[test]
fn a_live_berth_exports_what_its_data_holds_and_another_takes_it_with_a_login() {
    let source = TestRegistry::start();
    let pushed = populate(&source.url());
    let work = tempfile::tempdir().unwrap();
    let live = work.path().join("live.tar");
    let (ok, said) = export_from(&source.url(), &live, &[]);
    assert!(ok, "{said}");
    assert!(
        said.contains("exported docker.io/library/app:1\n"),
        "{said}"
    );
    // The same images give the same archive, from a live berth or its data.
    let data = source.stop();
    let stopped = work.path().join("stopped.tar");
    must_export(data.path(), &stopped, &[]);
    assert!(
        std::fs::read(&live).unwrap() == std::fs::read(&stopped).unwrap(),
        "a live export differs from the data directory's"
    );

    let (target, _files) = secured();
    let live = live.to_str().unwrap();
    let (ok, said) = import_into(&target.url(), &[live]);
    assert!(!ok, "imported without a login: {said}");
    assert!(said.contains("401"), "the refusal is not named: {said}");
    assert_eq!(
        get(
            &http::manifest_url(&target.url(), "docker.io/library/app", "1"),
            OCI_INDEX
        )
        .status,
        404
    );

    let creds = format!("{USER}:{PASSWORD}");
    let (ok, said) = import_into(&target.url(), &["--creds", &creds, live]);
    assert!(ok, "{said}");
    assert!(said.contains("imported 2 images"), "{said}");
    assert!(
        said.contains("imported docker.io/library/multi:2\n"),
        "{said}"
    );
    let accept = [http::OCI_MANIFEST, OCI_INDEX].join(", ");
    assert_serves(&target.url(), &pushed, &accept);
    let referrers = get(
        &format!(
            "{}/v2/docker.io/library/app/referrers/{}",
            target.url(),
            pushed.single.digest
        ),
        "*/*",
    );
    assert_eq!(
        referrers.json()["manifests"][0]["digest"],
        json!(http::sha256_digest(&pushed.signature))
    );

    // A second import finds everything there and sends nothing again.
    let (ok, said) = import_into(&target.url(), &["--creds", &creds, live]);
    assert!(ok && said.contains("0 blobs read"), "{said}");

    // A docker config file's login serves as well as --creds.
    let config = work.path().join("config.json");
    std::fs::write(
        &config,
        json!({"auths": {target.host(): {"username": USER, "password": PASSWORD}}}).to_string(),
    )
    .unwrap();
    let again = work.path().join("again.tar");
    let (ok, said) = export_from(
        &target.url(),
        &again,
        &["--authfile", config.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    assert!(std::fs::read(&again).unwrap() == std::fs::read(live).unwrap());
}

#[test]
fn a_damaged_image_is_not_pushed_and_a_delta_goes_only_onto_its_base() {
    let source = TestRegistry::start();
    let pushed = populate(&source.url());
    let work = tempfile::tempdir().unwrap();
    let base_tar = work.path().join("base.tar");
    let (ok, said) = export_from(&source.url(), &base_tar, &[]);
    assert!(ok, "{said}");

    // A flipped byte in app:1's layer: app is refused, multi goes in.
    let layout = work.path().join("layout");
    unpack(&base_tar, &layout);
    let layer = blob_file(&layout, &pushed.single.layer_digest);
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let target = TestRegistry::start();
    let (ok, said) = import_into(&target.url(), &[layout.to_str().unwrap()]);
    assert!(!ok, "a damaged import succeeded: {said}");
    assert!(
        said.contains("docker.io/library/app:1")
            && said.contains(&format!("{} is damaged", pushed.single.layer_digest)),
        "the damage is not named: {said}"
    );
    assert!(
        said.contains("imported docker.io/library/multi:2"),
        "{said}"
    );
    let app =
        |path: String| http::get(&format!("{}/v2/docker.io/library/app/{path}", target.url()));
    assert_eq!(app("manifests/1".into()).status, 404);
    for blob in [&pushed.single.layer_digest, &pushed.single.config_digest] {
        assert_eq!(
            app(format!("blobs/{blob}")).status,
            404,
            "a blob of the damaged image was pushed"
        );
    }

    // A delta: a new tag sharing app:1's layer, exported --since the base.
    let shared = http::image_manifest(
        &http::descriptor(
            http::OCI_CONFIG,
            br#"{"architecture":"amd64","os":"linux","new":1}"#,
        ),
        &[http::descriptor(http::OCI_LAYER, &pushed.single.layer)],
    );
    http::push_blob(
        &source.url(),
        "docker.io/library/app",
        br#"{"architecture":"amd64","os":"linux","new":1}"#,
    );
    http::push_manifest(
        &source.url(),
        "docker.io/library/app",
        "2",
        http::OCI_MANIFEST,
        &shared,
    );
    let delta = work.path().join("delta.tar");
    let since = base_tar.to_str().unwrap();
    let (ok, said) = export_from(
        &source.url(),
        &delta,
        &["--since", since, "docker.io/library/app:2"],
    );
    assert!(ok, "{said}");
    assert!(
        !entries(&delta).contains_key(&format!(
            "blobs/sha256/{}",
            &pushed.single.layer_digest[7..]
        )),
        "the delta carries a base blob"
    );
    let empty = TestRegistry::start();
    let (ok, said) = import_into(&empty.url(), &[delta.to_str().unwrap()]);
    assert!(!ok, "a delta without its base imported: {said}");
    assert!(
        said.contains(&format!("{} is missing", pushed.single.layer_digest)),
        "the missing blob is not named: {said}"
    );
    assert_eq!(
        http::get(&http::manifest_url(
            &empty.url(),
            "docker.io/library/app",
            "2"
        ))
        .status,
        404
    );
    let (ok, said) = import_into(&empty.url(), &[since]);
    assert!(ok, "{said}");
    let (ok, said) = import_into(&empty.url(), &[delta.to_str().unwrap()]);
    assert!(ok, "{said}");
    let resp = http::get(&http::manifest_url(
        &empty.url(),
        "docker.io/library/app",
        "2",
    ));
    assert!(resp.status == 200 && resp.body == shared, "{resp:?}");
}

#[test]
fn distribution_takes_an_archive_and_gives_back_the_same_images() {
    require_programs(
        "distribution_takes_an_archive",
        &[("docker-registry", "docker-registry")],
    );
    let source = TestRegistry::start();
    let pushed = populate(&source.url());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("out.tar");
    let (ok, said) = export_from(&source.url(), &archive, &[]);
    assert!(ok, "{said}");

    let dist = Distribution::start();
    let (ok, said) = import_into(&dist.url(), &[archive.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("imported 2 images"), "{said}");
    assert!(dist.manifest("docker.io/library/app", "1") == pushed.single.manifest);
    assert!(dist.manifest("docker.io/library/multi", &pushed.arm.digest) == pushed.arm.manifest);

    // Everything Distribution lists (its _catalog), as an archive: the same
    // tags and digests. Distribution 2.8 has no referrers API, so the
    // signature stays behind.
    let back = work.path().join("back.tar");
    let (ok, said) = export_from(&dist.url(), &back, &[]);
    assert!(ok, "{said}");
    assert_eq!(index_of(&entries(&back)), index_of(&entries(&archive)));
    let fresh = TestRegistry::start();
    let (ok, said) = import_into(&fresh.url(), &[back.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert_serves(
        &fresh.url(),
        &pushed,
        &[http::OCI_MANIFEST, OCI_INDEX].join(", "),
    );
}

#[test]
fn a_terminal_sees_bytes_blobs_rate_and_eta_while_a_pipe_sees_lines() {
    require_programs("a_terminal_sees_bytes", &[("script", "bsdutils")]);
    let source = TestRegistry::start();
    populate(&source.url());
    let data = source.stop();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("out.tar");
    let typescript = work.path().join("typescript");
    // script(1) gives the command a terminal and keeps all it drew.
    let command = format!(
        "{} export --data {} --out {}",
        env!("CARGO_BIN_EXE_berth"),
        data.path().display(),
        archive.display()
    );
    let status = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let drawn = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    for part in ["blobs", "ETA", "/s"] {
        assert!(
            drawn.contains(part),
            "no {part:?} on the terminal: {drawn:?}"
        );
    }
    assert!(
        drawn.contains("exported docker.io/library/app:1"),
        "{drawn:?}"
    );
    // Without a terminal: the lines alone, nothing drawn.
    let (ok, stdout, stderr) = export(data.path(), &archive, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("exported docker.io/library/app:1\n"),
        "{stdout:?}"
    );
    assert!(
        !stderr.contains("ETA") && !stdout.contains("ETA"),
        "{stdout:?} {stderr:?}"
    );
}
