//! berth as a test fixture: `berth serve --ephemeral` leaves nothing
//! behind however it stops (and sweeps what a killed one left), `--preload`
//! serves known images from the first request or refuses to start,
//! `--ready-json` tells other languages where it is, and the Rust builder
//! works from plain and tokio tests alike.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::TestRegistry;
use common::http;
use common::process::serve_ready;
use common::transfer::{blob_file, must_export, populate, unpack};
use serde_json::Value;

fn signal(child: &Child, signal: i32) {
    // SAFETY: sends a signal to a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The ephemeral directory: the data directory's parent.
fn ephemeral_dir(ready: &Value) -> PathBuf {
    let data = PathBuf::from(ready["data"].as_str().unwrap());
    let dir = data.parent().unwrap().to_owned();
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("berth-ephemeral-"),
        "{}",
        dir.display()
    );
    dir
}

#[test]
fn an_ephemeral_registry_leaves_nothing_behind_however_it_is_stopped() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let (mut child, ready) = serve_ready(&["--ephemeral"]);
        let dir = ephemeral_dir(&ready);
        let url = ready["url"].as_str().unwrap();
        http::push_image(url, "team/app", Some("1"), 3);
        assert!(dir.join("data/berth.redb").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(&dir.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700, "an ephemeral directory is private");
        signal(&child, sig);
        assert!(child.wait().unwrap().success(), "signal {sig}");
        assert!(
            !dir.exists(),
            "{} is left after signal {sig}",
            dir.display()
        );
    }
}

#[test]
fn a_killed_ephemeral_registrys_directory_goes_at_the_next_start() {
    let (mut killed, ready) = serve_ready(&["--ephemeral"]);
    let left = ephemeral_dir(&ready);
    signal(&killed, libc::SIGKILL);
    killed.wait().unwrap();
    assert!(left.exists(), "nothing to sweep: the test cannot fail");
    let (mut next, ready) = serve_ready(&["--ephemeral"]);
    assert!(!left.exists(), "{} survived the next start", left.display());
    signal(&next, libc::SIGTERM);
    next.wait().unwrap();
    assert!(!ephemeral_dir(&ready).exists());
}

/// A harness killed outright (a CI timeout, the OOM killer) cannot stop
/// its fixture: with `--exit-with-parent` the fixture stops itself, cleanly
/// (its ephemeral directory goes), once the process that started it is gone.
#[test]
fn a_fixture_told_to_exit_with_its_parent_stops_when_the_parent_is_killed() {
    let work = tempfile::tempdir().unwrap();
    let ready_file = work.path().join("ready");
    // The parent: a shell that starts berth and then just waits.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" serve --ephemeral --listen 127.0.0.1:0 --ready-json --exit-with-parent >"$1" & exec sleep 60"#)
        .arg(common::process::BERTH)
        .arg(&ready_file)
        .spawn()
        .expect("start the parent shell");
    let mut ready = String::new();
    for _ in 0..300 {
        ready = std::fs::read_to_string(&ready_file).unwrap_or_default();
        if ready.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ready: Value = serde_json::from_str(ready.trim()).expect("berth's ready line");
    let pid = ready["pid"].as_i64().unwrap() as i32;
    let dir = ephemeral_dir(&ready);
    signal(&parent, libc::SIGKILL);
    parent.wait().unwrap();
    let alive = || {
        // SAFETY: signal 0 only asks whether the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    };
    for _ in 0..100 {
        if !alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if alive() {
        // SAFETY: the berth this test started, left by its dead parent.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("berth outlived its parent by 5 s");
    }
    for _ in 0..100 {
        if !dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} is left", dir.display());
}

/// A CI job may export the clustered store's settings for other tests: an
/// ephemeral fixture keeps its data to itself all the same, and refuses a
/// clustered store named on its own command line.
#[test]
fn an_ephemeral_registry_ignores_a_clustered_store_in_the_environment() {
    use std::io::BufRead as _;
    let mut child = Command::new(common::process::BERTH)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ready-json",
            "--ephemeral",
        ])
        .env("BERTH_METADATA", "postgres://berth@127.0.0.1:1/nowhere")
        .env("BERTH_BLOBS", "s3://nowhere/x?endpoint=http://127.0.0.1:1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready line ({e}): {line:?}"));
    let url = ready["url"].as_str().unwrap();
    let digest = http::push_blob(url, "team/app", b"kept to itself");
    assert!(common::blob_file(Path::new(ready["data"].as_str().unwrap()), &digest).exists());
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());

    let refused = Command::new(common::process::BERTH)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--metadata",
        ])
        .arg("postgres://berth@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--ephemeral"), "{stderr}");
}

/// A stop waits for requests in flight (for a while); a harness that asks
/// twice does not want to wait: the second signal ends berth at once.
#[test]
fn a_second_signal_stops_at_once() {
    use std::io::Write as _;
    let (mut child, ready) = serve_ready(&["--ephemeral"]);
    let url = ready["url"].as_str().unwrap();
    let upload = http::start_upload(url, "team/app");
    let addr = url.trim_start_matches("http://");
    // A chunk that never ends, holding the stop up.
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stalled,
        "PATCH {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nsome",
        http::path_of(&upload)
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the stop did not wait");
    signal(&child, libc::SIGTERM);
    let stopped = common::process::wait_timeout(&mut child, std::time::Duration::from_secs(3));
    if stopped.is_none() {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("a second SIGTERM did not stop berth");
    }
    drop(stalled);
}

/// An export of [`populate`]'s images.
fn archive(work: &Path) -> (PathBuf, common::transfer::Pushed) {
    let reg = TestRegistry::start();
    let pushed = populate(&reg.url());
    let data = reg.stop();
    let archive = work.join("images.tar");
    must_export(data.path(), &archive, &[]);
    (archive, pushed)
}

/// `berth serve --preload layout`, which must refuse to start.
fn preload_refused(layout: &Path) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--preload",
        ])
        .arg(layout)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{} was preloaded", layout.display());
    out
}

#[test]
fn preloaded_images_are_served_from_the_first_request_and_a_bad_preload_stops_the_start() {
    let work = tempfile::tempdir().unwrap();
    let (archive, pushed) = archive(work.path());
    let (mut child, ready) = serve_ready(&["--ephemeral", "--preload", archive.to_str().unwrap()]);
    let url = ready["url"].as_str().unwrap();
    let resp = http::get(&http::manifest_url(url, "docker.io/library/app", "1"));
    assert_eq!(
        resp.status, 200,
        "the first request after the ready line: {resp:?}"
    );
    assert!(resp.body == pushed.single.manifest);
    signal(&child, libc::SIGTERM);
    child.wait().unwrap();

    let layout = work.path().join("layout");
    unpack(&archive, &layout);
    let layer = blob_file(&layout, &pushed.arm.layer_digest);
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let out = preload_refused(&layout);
    assert!(out.stdout.is_empty(), "a ready line before the refusal");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&pushed.arm.layer_digest),
        "the bad blob is not named: {said}"
    );

    // A layout naming its image by a bare tag (skopeo's oci:DIR:TAG) is
    // refused with advice that works for a preload too.
    let bare = work.path().join("bare");
    unpack(&archive, &bare);
    let index_path = bare.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        m["annotations"]["org.opencontainers.image.ref.name"] = "1".into();
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = preload_refused(&bare);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("berth import --into"), "{said}");
}

#[test]
fn the_builder_serves_a_plain_test_and_cleans_up() {
    let work = tempfile::tempdir().unwrap();
    let (archive, pushed) = archive(work.path());
    let registry = berth::Registry::builder()
        .preload(&archive)
        .start()
        .unwrap();
    let data = registry.data_dir().to_owned();
    let resp = http::get(&http::manifest_url(
        &registry.url(),
        "docker.io/library/app",
        "1",
    ));
    assert!(
        resp.status == 200 && resp.body == pushed.single.manifest,
        "{resp:?}"
    );
    assert_eq!(
        registry.host(),
        registry.url().trim_start_matches("http://")
    );
    drop(registry);
    assert!(!data.exists(), "{} is left after drop", data.display());

    let kept = work.path().join("kept");
    let registry = berth::Registry::builder().data(&kept).start().unwrap();
    http::push_image(&registry.url(), "team/app", Some("1"), 4);
    registry.stop();
    assert!(
        kept.join("berth.redb").exists(),
        "a given data directory is kept"
    );
}

#[tokio::test]
async fn the_builder_serves_a_tokio_test_too() {
    let registry = berth::Registry::builder().start().unwrap();
    let url = format!("{}/v2/", registry.url());
    let status = tokio::task::spawn_blocking(move || http::get(&url).status)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let data = registry.data_dir().to_owned();
    drop(registry);
    assert!(!data.exists());

    let served = berth::Registry::builder().serve().await.unwrap();
    let data = served.data_dir();
    let url = format!("{}/v2/", served.url());
    let status = tokio::task::spawn_blocking(move || http::get(&url).status)
        .await
        .unwrap();
    assert_eq!(status, 200);
    served.shutdown().await;
    assert!(!data.exists());
}
