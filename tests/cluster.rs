//! Several `berth serve` processes on one clustered store (a real
//! PostgreSQL and Swift's S3 API, see `common::cluster`): what one node
//! acknowledges, every other node serves, whole; an upload moves between
//! nodes chunk by chunk; a node killed with SIGKILL loses nothing it
//! acknowledged, and its uploads continue on the others.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::cut_relay::CutRelay;
use common::http::{self, Response, sha256_digest};
use common::process::ServerProcess;
use common::skopeo::Skopeo;

const MIB: usize = 1 << 20;
const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// `n` nodes of one new cluster, each with a data directory of its own.
fn start_nodes(dir: &Path, n: usize) -> Vec<ServerProcess> {
    start_nodes_with(dir, n, &[])
}

/// As [`start_nodes`], each with `extra` flags.
fn start_nodes_with(dir: &Path, n: usize, extra: &[&str]) -> Vec<ServerProcess> {
    let mut args = common::cluster::node_args(dir);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (0..n)
        .map(|i| {
            let data = dir.join(format!("node{i}"));
            ServerProcess::start_with(&data, &dir.join(format!("node{i}.log")), &args)
        })
        .collect()
}

/// A node of the cluster that belongs to `dir`, with its data directory
/// and log there under `name` (the same node again, restarted).
fn start_node(dir: &Path, name: &str) -> ServerProcess {
    let args = common::cluster::node_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start_with(&dir.join(name), &dir.join(format!("{name}.log")), &args)
}

fn start_upload(base: &str, name: &str) -> String {
    let resp = http::post(&http::uploads_url(base, name), &[], b"");
    assert_eq!(resp.status, 202, "{resp:?}");
    let path = http::path_of(resp.location()).to_owned();
    path.split('?').next().unwrap().to_owned()
}

fn patch(base: &str, upload: &str, start: usize, chunk: &[u8]) -> Response {
    let range = format!("{start}-{}", start + chunk.len() - 1);
    http::patch(
        &format!("{base}{upload}"),
        &[OCTETS, ("Content-Range", &range)],
        chunk,
    )
}

fn finish(base: &str, upload: &str, digest: &str, body: &[u8]) -> Response {
    http::put(
        &http::with_query(&format!("{base}{upload}"), &format!("digest={digest}")),
        &[OCTETS],
        body,
    )
}

#[track_caller]
fn assert_blob(base: &str, name: &str, digest: &str, data: &[u8]) {
    let resp = http::get(&http::blob_url(base, name, digest));
    assert_eq!(resp.status, 200, "GET {digest} from {base}: {resp:?}");
    assert_eq!(resp.body.len(), data.len(), "size of {digest} from {base}");
    assert_eq!(
        sha256_digest(&resp.body),
        digest,
        "bytes of {digest} from {base}"
    );
}

#[test]
fn a_chunked_upload_moves_between_nodes_and_every_node_serves_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 3);
    let urls: Vec<String> = nodes.iter().map(ServerProcess::url).collect();
    // Sizes that make the composition copy big pieces inside the store and
    // read back small runs: 3 MiB + 7 MiB, a byte, 12 MiB, 100 KiB.
    let sizes = [3 * MIB, 7 * MIB, 1, 12 * MIB, 100 << 10];
    let data = http::random_bytes(sizes.iter().sum(), 14);
    let digest = sha256_digest(&data);
    let upload = start_upload(&urls[0], "moving/blob");
    let mut at = 0;
    for (i, size) in sizes.iter().enumerate() {
        let node = &urls[i % 3];
        let resp = patch(node, &upload, at, &data[at..at + size]);
        assert_eq!(resp.status, 202, "chunk {i} through {node}: {resp:?}");
        at += size;
        // Every node knows where the upload stands.
        let status = http::get(&format!("{}{upload}", urls[(i + 1) % 3]));
        assert_eq!(status.status, 204, "{status:?}");
        assert_eq!(status.header("range"), Some(&*format!("0-{}", at - 1)));
    }
    // A chunk retried through another node after it landed is refused.
    let stale = patch(&urls[2], &upload, 0, &data[..10]);
    assert_eq!(stale.status, 416, "{stale:?}");
    let resp = finish(&urls[1], &upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    for url in &urls {
        assert_blob(url, "moving/blob", &digest, &data);
    }
    let part = http::request(
        "GET",
        &http::blob_url(&urls[2], "moving/blob", &digest),
        &[("Range", "bytes=10485759-10485761")],
        b"",
    );
    assert_eq!(part.status, 206, "{part:?}");
    assert_eq!(part.body, &data[10485759..10485762]);
}

#[test]
fn one_blob_uploaded_through_three_nodes_at_once_is_whole_after_every_201() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 3);
    let urls: Vec<String> = nodes.iter().map(ServerProcess::url).collect();
    let data = Arc::new(http::random_bytes(9 * MIB + 17, 7));
    let digest = sha256_digest(&data);
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let (urls, data, digest, answers) = (
                urls.clone(),
                Arc::clone(&data),
                digest.clone(),
                Arc::clone(&answers),
            );
            thread::spawn(move || {
                let (node, other) = (&urls[i % 3], &urls[(i + 1) % 3]);
                let resp = if i % 2 == 0 {
                    http::post(
                        &http::with_query(
                            &http::uploads_url(node, "same/blob"),
                            &format!("digest={digest}"),
                        ),
                        &[OCTETS],
                        &data,
                    )
                } else {
                    let upload = start_upload(node, "same/blob");
                    let half = data.len() / 2;
                    let first = patch(node, &upload, 0, &data[..half]);
                    assert_eq!(first.status, 202, "{first:?}");
                    finish(other, &upload, &digest, &data[half..])
                };
                // Right after the 201, another node has all of it.
                let head = http::head(&http::blob_url(other, "same/blob", &digest));
                answers.lock().unwrap().push((
                    resp.status,
                    head.status,
                    head.header("content-length").map(str::to_owned),
                ));
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let size = data.len().to_string();
    for (put, head, length) in answers.lock().unwrap().iter() {
        assert_eq!(*put, 201);
        assert_eq!((*head, length.as_deref()), (200, Some(&*size)));
    }
    for url in &urls {
        assert_blob(url, "same/blob", &digest, &data);
    }
}

#[test]
fn a_node_killed_under_load_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(dir.path(), 3);
    let urls: Vec<String> = nodes.iter().map(ServerProcess::url).collect();
    // An upload half done on the node about to die.
    let data = http::random_bytes(6 * MIB, 3);
    let digest = sha256_digest(&data);
    let upload = start_upload(&urls[0], "killed/upload");
    let resp = patch(&urls[0], &upload, 0, &data[..4 * MIB]);
    assert_eq!(resp.status, 202, "{resp:?}");
    // Pushers through every node, each recording what was acknowledged.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let pushers: Vec<_> = (0..6)
        .map(|p| {
            let (urls, acknowledged) = (urls.clone(), Arc::clone(&acknowledged));
            thread::spawn(move || {
                for i in 0..15u64 {
                    let node = &urls[(p + i as usize) % 3];
                    let blob = http::random_bytes(64 << 10, p as u64 * 1000 + i);
                    let digest = sha256_digest(&blob);
                    let url = http::with_query(
                        &http::uploads_url(node, "killed/load"),
                        &format!("digest={digest}"),
                    );
                    // Requests to the killed node fail; only 201s count.
                    if let Ok(resp) = http::try_request("POST", &url, &[OCTETS], &blob)
                        && resp.status == 201
                    {
                        acknowledged.lock().unwrap().push((digest, blob));
                    }
                }
            })
        })
        .collect();
    thread::sleep(std::time::Duration::from_millis(300));
    nodes.remove(0).kill();
    for pusher in pushers {
        pusher.join().expect("pusher thread");
    }
    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.len() >= 60,
        "only {} pushes were acknowledged",
        acknowledged.len()
    );
    for (digest, blob) in acknowledged.iter() {
        for url in &urls[1..] {
            assert_blob(url, "killed/load", digest, blob);
        }
    }
    // The dead node's upload continues on another node from what it acknowledged.
    let status = http::get(&format!("{}{upload}", urls[1]));
    assert_eq!(
        status.header("range"),
        Some(&*format!("0-{}", 4 * MIB - 1)),
        "{status:?}"
    );
    let resp = patch(&urls[2], &upload, 4 * MIB, &data[4 * MIB..]);
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = finish(&urls[1], &upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&urls[2], "killed/upload", &digest, &data);
}

#[test]
fn skopeo_pushes_through_one_node_and_pulls_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 2);
    let skopeo = Skopeo::new();
    let layout = dir.path().join("layout");
    let image = common::layout::write_image(&layout, "v1", 21);
    let src = format!("oci:{}:v1", layout.display());
    let pushed = format!("docker://{}/cross/app:v1", nodes[0].addr);
    skopeo.ok(&["copy", "--dest-tls-verify=false", &src, &pushed]);
    let pulled_dir = dir.path().join("pulled");
    let pulled = format!("oci:{}:v1", pulled_dir.display());
    let from_other = format!("docker://{}/cross/app:v1", nodes[1].addr);
    skopeo.ok(&["copy", "--src-tls-verify=false", &from_other, &pulled]);
    for blob in image.blobs() {
        let hex = blob.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(pulled_dir.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("{blob} not pulled: {e}"));
        assert_eq!(sha256_digest(&bytes), blob);
    }
}

#[test]
fn a_token_one_node_issues_is_honoured_by_the_others() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let (htpasswd, access) = (fixtures.join("htpasswd"), fixtures.join("access"));
    let nodes = start_nodes_with(
        dir.path(),
        2,
        &[
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--access",
            access.to_str().unwrap(),
        ],
    );
    let login = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-password")
    );
    let resp = http::request(
        "GET",
        &format!(
            "{}/token?service=berth&scope=repository:team/app:pull,push",
            nodes[0].url()
        ),
        &[("Authorization", &login)],
        b"",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let other = http::request(
        "POST",
        &http::uploads_url(&nodes[1].url(), "team/app"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(
        other.status, 202,
        "the other node refused the token: {other:?}"
    );
    let anonymous = http::post(&http::uploads_url(&nodes[1].url(), "team/app"), &[], b"");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}

#[test]
fn a_node_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let args = common::cluster::node_args(dir.path());
    let node = start_node(dir.path(), "node");
    node.stop();
    common::cluster::psql(&args[1], "UPDATE berth_schema SET version = version + 1");
    let refused = std::process::Command::new(common::process::BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("node"))
        .args(&args)
        .output()
        .expect("run berth");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("newer than this berth knows"), "{stderr}");
}

/// `berth prune --grace 0s` run again and again against the cluster while
/// two nodes take pushes: every manifest PUT either succeeds with its
/// blobs in place for good, or is refused with MANIFEST_BLOB_UNKNOWN.
#[test]
fn prunes_from_another_process_racing_pushes_on_two_nodes_never_lose_a_blob() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 2);
    let urls: Vec<String> = nodes.iter().map(ServerProcess::url).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pruner = {
        let (args, stop) = (common::cluster::node_args(dir.path()), Arc::clone(&stop));
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = prune_now(&args);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut pushed, mut refused) = (Vec::new(), 0);
    for i in 0..2000u64 {
        if (pushed.len() >= 10 && refused >= 1) || Instant::now() > deadline {
            break;
        }
        let (node, other) = (&urls[(i % 2) as usize], &urls[((i + 1) % 2) as usize]);
        let config = http::random_bytes(300, 50_000 + i);
        let layer = http::random_bytes(4000, 60_000 + i);
        http::push_blob(node, "race", &config);
        http::push_blob(other, "race", &layer);
        // A pause as long as a prune, so that some sweeps fall into it.
        thread::sleep(Duration::from_millis(i % 4 * 100));
        let manifest = http::image_manifest(
            &http::descriptor(http::OCI_CONFIG, &config),
            &[http::descriptor(http::OCI_LAYER, &layer)],
        );
        let tag = format!("t{i}");
        let resp = http::put_manifest(node, "race", &tag, http::OCI_MANIFEST, &manifest);
        match resp.status {
            201 => pushed.push((tag, config, layer)),
            400 => {
                assert_eq!(resp.error_codes(), ["MANIFEST_BLOB_UNKNOWN"], "{resp:?}");
                refused += 1;
            }
            _ => panic!("manifest PUT: {resp:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let runs = pruner.join().expect("pruner thread");
    assert!(runs >= 2, "only {runs} prunes ran");
    assert!(pushed.len() >= 10, "only {} pushes succeeded", pushed.len());
    assert!(refused >= 1, "no push ever met a sweep");
    // One more prune over what was acknowledged.
    let out = prune_now(&common::cluster::node_args(dir.path()));
    assert!(out.status.success());
    for (tag, config, layer) in &pushed {
        for url in &urls {
            let resp = http::get(&http::manifest_url(url, "race", tag));
            assert_eq!(resp.status, 200, "{tag} through {url}");
            assert_blob(url, "race", &sha256_digest(config), config);
            assert_blob(url, "race", &sha256_digest(layer), layer);
        }
    }
}

/// `berth fsck` against the cluster while a node serves: clean, then a
/// blob's object overwritten is found corrupt, and `--repair` takes the
/// blob out of service (kept under quarantine/) on every node.
#[test]
fn fsck_finds_a_corrupt_object_and_repair_takes_it_out_of_service() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 2);
    let good = http::random_bytes(3000, 91);
    let bad = http::random_bytes(2000, 92);
    let (good_digest, bad_digest) = (
        http::push_blob(&nodes[0].url(), "checked", &good),
        http::push_blob(&nodes[0].url(), "checked", &bad),
    );
    let args = common::cluster::node_args(dir.path());
    let fsck = |extra: &[&str]| {
        std::process::Command::new(common::process::BERTH)
            .arg("fsck")
            .args(&args)
            .args(extra)
            .output()
            .expect("run berth fsck")
    };
    let clean = fsck(&[]);
    assert!(clean.status.success(), "{clean:?}");
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains("2 blobs (5000 bytes) checked, 0 problems"),
        "{clean:?}"
    );
    let hex = bad_digest.strip_prefix("sha256:").unwrap();
    common::cluster::overwrite_object(dir.path(), &format!("blobs/sha256/{hex}"), vec![0; 2000]);
    let found = fsck(&[]);
    let report = String::from_utf8_lossy(&found.stdout);
    assert!(!found.status.success(), "{report}");
    assert!(
        report.contains(&format!("corrupt: blob {bad_digest}")),
        "{report}"
    );
    let repaired = fsck(&["--repair"]);
    assert!(repaired.status.success(), "{repaired:?}");
    for node in &nodes {
        assert_eq!(
            http::head(&http::blob_url(&node.url(), "checked", &bad_digest)).status,
            404
        );
        assert_blob(&node.url(), "checked", &good_digest, &good);
    }
    assert_eq!(
        common::cluster::objects(dir.path(), "quarantine/"),
        [format!("quarantine/{hex}")]
    );
    let after = fsck(&[]);
    assert!(after.status.success(), "{after:?}");
}

/// `--preload` on one node imports into the shared store: every node
/// serves the image, and a second node preloading the same layout finds
/// it there and changes nothing.
#[test]
fn an_image_preloaded_by_one_node_is_served_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/layouts/app");
    let mut args = common::cluster::node_args(dir.path());
    args.extend(["--preload".into(), layout.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = ServerProcess::start_with(&dir.path().join("a"), &dir.path().join("a.log"), &args);
    let second = ServerProcess::start_with(&dir.path().join("b"), &dir.path().join("b.log"), &args);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    for node in [&first, &second] {
        let resp = http::request(
            "GET",
            &http::manifest_url(&node.url(), "fixtures/app", "1"),
            &[("Accept", http::OCI_MANIFEST)],
            b"",
        );
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(sha256_digest(&resp.body), digest);
        let manifest = resp.json();
        for layer in manifest["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            let hex = d.strip_prefix("sha256:").unwrap();
            let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
            assert_blob(&node.url(), "fixtures/app", d, &bytes);
        }
    }
}

/// Behind one public URL, the web page's delete form that one node gave
/// is honoured by another: the form key is the cluster's, not a node's.
#[test]
fn a_delete_form_from_one_node_is_honoured_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::cluster::node_args(dir.path());
    args.extend(["--public-url".into(), "http://registry.test".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nodes: Vec<ServerProcess> = ["a", "b"]
        .iter()
        .map(|n| {
            ServerProcess::start_with(
                &dir.path().join(n),
                &dir.path().join(format!("{n}.log")),
                &args,
            )
        })
        .collect();
    let config = http::random_bytes(200, 71);
    let layer = http::random_bytes(3000, 72);
    http::push_blob(&nodes[0].url(), "team/app", &config);
    http::push_blob(&nodes[0].url(), "team/app", &layer);
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &[http::descriptor(http::OCI_LAYER, &layer)],
    );
    let put = http::put_manifest(
        &nodes[0].url(),
        "team/app",
        "1",
        http::OCI_MANIFEST,
        &manifest,
    );
    assert_eq!(put.status, 201, "{put:?}");
    let confirm = http::get(&format!("{}/r/team/app/-/delete?tag=1", nodes[0].url())).text();
    let at = confirm
        .find(r#"name="token" value=""#)
        .expect("a token field")
        + 20;
    let token = &confirm[at..at + confirm[at..].find('"').unwrap()];
    let resp = http::request(
        "POST",
        &format!("{}/r/team/app/-/delete", nodes[1].url()),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://registry.test"),
        ],
        format!("tag=1&token={token}").as_bytes(),
    );
    assert_eq!(resp.status, 303, "{}", resp.text());
    for node in &nodes {
        assert_eq!(
            http::get(&http::manifest_url(&node.url(), "team/app", "1")).status,
            404
        );
    }
}

/// podman pushes an image through one node and, its local copy gone,
/// pulls it through another: the same image, by its config's digest.
#[test]
fn podman_pushes_through_one_node_and_pulls_through_another() {
    common::clients::require_programs("podman", &[("podman", "podman")]);
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 2);
    let work = tempfile::tempdir().unwrap();
    let podman = common::podman::Podman::in_dir(work.path());
    // podman names an image pulled from a layout after its path, and image
    // names must be lowercase: temp dir names are not.
    let layout_dir =
        std::env::temp_dir().join(format!("berth-cluster-podman-{}", std::process::id()));
    let image = common::layout::write_image(&layout_dir, "v1", 33);
    let pulled = podman.run(&["pull", &format!("oci:{}:v1", layout_dir.display())]);
    let _ = std::fs::remove_dir_all(&layout_dir);
    assert!(pulled.ok, "{}", pulled.output);
    let config = image.config.digest.trim_start_matches("sha256:").to_owned();
    let pushed = podman.run(&[
        "push",
        "--tls-verify=false",
        &config,
        &format!("docker://{}/team/app:v1", nodes[0].addr),
    ]);
    assert!(pushed.ok, "{}", pushed.output);
    let removed = podman.run(&["rmi", "--all", "--force"]);
    assert!(removed.ok, "{}", removed.output);
    let other = format!("{}/team/app:v1", nodes[1].addr);
    let pulled = podman.run(&["pull", "--tls-verify=false", &other]);
    assert!(pulled.ok, "{}", pulled.output);
    let id = podman.run(&["image", "inspect", "--format", "{{.Id}}", &other]);
    assert!(id.ok && id.output.contains(&config), "{}", id.output);
}

/// With `sslmode=require`, the metadata connection is TLS, verified against
/// the system's roots and `PGSSLROOTCERT`: a server whose CA is not
/// trusted is refused, one whose CA is named is used.
#[test]
fn postgres_over_tls_is_verified_against_pgsslrootcert() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let pg = common::cluster::TlsPostgres::start(
        &fixtures.join("server.pem"),
        &fixtures.join("server.key"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::cluster::node_args(dir.path());
    args[1] = format!(
        "{}?sslmode=require",
        pg.url.replace("127.0.0.1", "localhost")
    );
    let prune = |ca: Option<&Path>| {
        let mut command = std::process::Command::new(common::process::BERTH);
        command.arg("prune").args(&args);
        if let Some(ca) = ca {
            command.env("PGSSLROOTCERT", ca);
        }
        command.output().expect("run berth prune")
    };
    let untrusted = prune(None);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let trusted = prune(Some(&fixtures.join("ca.pem")));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("pruned 0 uploads"));
}

/// What dead nodes leave in the object store (a piece of a request that
/// never committed, a composed blob whose row never committed, a multipart
/// upload never completed) goes with a prune once older than the grace
/// period; what rows own stays.
#[test]
fn a_prune_removes_what_dead_nodes_left_in_the_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 1);
    let image = http::push_image(&nodes[0].url(), "left", Some("v1"), 81);
    let stray = sha256_digest(b"never committed");
    let stray_key = format!("blobs/sha256/{}", stray.strip_prefix("sha256:").unwrap());
    common::cluster::overwrite_object(dir.path(), "uploads/dead-request/piece", vec![1; 100]);
    common::cluster::overwrite_object(dir.path(), &stray_key, b"never committed".to_vec());
    common::cluster::leave_multipart(dir.path(), &stray_key);
    assert_eq!(common::cluster::multipart_uploads(dir.path()).len(), 1);
    // Object stores give times to the second, rounded up.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = prune_now(&common::cluster::node_args(dir.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::cluster::objects(dir.path(), "uploads/"),
        Vec::<String>::new()
    );
    let mut kept: Vec<String> = [&image.config_digest, &image.layer_digest]
        .iter()
        .map(|d| format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap()))
        .collect();
    kept.sort();
    assert_eq!(common::cluster::objects(dir.path(), "blobs/"), kept);
    assert_eq!(
        common::cluster::multipart_uploads(dir.path()),
        Vec::<String>::new()
    );
    assert_eq!(
        http::get(&http::manifest_url(&nodes[0].url(), "left", "v1")).status,
        200
    );
}

/// An upload of more pieces than the object store takes parts in one
/// multipart upload is joined in runs first (here with the cap set to 3):
/// the blob is whole, and nothing of the runs is left behind.
#[test]
fn more_pieces_than_the_store_takes_parts_are_joined_in_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::cluster::node_args(dir.path());
    args[3].push_str("&max_parts=3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = ServerProcess::start_with(&dir.path().join("n"), &dir.path().join("n.log"), &args);
    let base = node.url();
    let chunk = 6 * MIB;
    let data = http::random_bytes(7 * chunk + 5, 61);
    let digest = sha256_digest(&data);
    let upload = start_upload(&base, "many/pieces");
    for (i, piece) in data.chunks(chunk).enumerate() {
        let resp = patch(&base, &upload, i * chunk, piece);
        assert_eq!(resp.status, 202, "{resp:?}");
    }
    let resp = finish(&base, &upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "many/pieces", &digest, &data);
    assert_eq!(
        common::cluster::objects(dir.path(), "uploads/"),
        Vec::<String>::new()
    );
    assert_eq!(
        common::cluster::multipart_uploads(dir.path()),
        Vec::<String>::new()
    );
}

/// A client that goes away in the middle of a chunk (after a full piece
/// was written) leaves the upload where it was, the piece removed, and
/// the node unharmed.
#[test]
fn a_client_gone_mid_chunk_leaves_the_upload_and_no_piece() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 1);
    let upload = start_upload(&nodes[0].url(), "gone/mid");
    let declared = 20 * MIB;
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n",
        nodes[0].addr
    );
    let mut request = head.into_bytes();
    request.extend(http::random_bytes(9 * MIB, 5));
    http::send_and_close(nodes[0].addr, &request);
    // The node has seen the body end early once the upload is free again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = patch(&nodes[0].url(), &upload, 0, b"after");
        if resp.status == 202 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{resp:?}");
        thread::sleep(std::time::Duration::from_millis(100));
    }
    // The dead request's piece goes beside the next request, not before it.
    loop {
        let pieces = common::cluster::objects(dir.path(), "uploads/");
        if pieces.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only the new chunk's piece stays: {pieces:?}"
        );
        thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&nodes[0].log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// `berth prune --grace 0s` with a node's cluster arguments, run to its end.
fn prune_now(node_args: &[String]) -> std::process::Output {
    std::process::Command::new(common::process::BERTH)
        .args(["prune", "--grace", "0s"])
        .args(node_args)
        .output()
        .expect("run berth prune")
}

/// A registry on the cluster of `data` whose object store is reached
/// through `relay`, and the relay.
fn registry_behind_a_relay(data: tempfile::TempDir) -> (common::TestRegistry, CutRelay) {
    let mut settings = common::cluster::settings_for(data.path());
    let swift = settings
        .blobs
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("the object store is on a loopback address");
    let relay = CutRelay::start(swift);
    settings.blobs.endpoint = relay.url();
    let registry = common::TestRegistry::start_with(data, move |c| c.cluster = Some(settings));
    (registry, relay)
}

#[test]
fn a_blob_read_the_object_store_cuts_short_is_resumed_where_it_stopped() {
    let (registry, relay) = registry_behind_a_relay(tempfile::tempdir().unwrap());
    let base = registry.url();
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 251) as u8).collect();
    let digest = http::push_blob(&base, "cut/app", &data);
    // Two cuts, one after the other: the read resumes from each.
    relay.arm(2, MIB);
    assert_blob(&base, "cut/app", &digest, &data);
    assert_eq!(relay.cuts_made(), 2, "the relay cut both reads");
    // Ranged reads resume too.
    relay.arm(1, MIB / 2);
    let resp = http::request(
        "GET",
        &http::blob_url(&base, "cut/app", &digest),
        &[("Range", "bytes=1000-3000999")],
        b"",
    );
    assert_eq!(resp.status, 206, "{resp:?}");
    assert!(resp.body == data[1000..3_001_000], "the range's bytes");
    assert_eq!(relay.cuts_made(), 3);
}

#[test]
fn a_blob_read_the_object_store_keeps_cutting_ends_in_a_cut_not_a_hang() {
    let (registry, relay) = registry_behind_a_relay(tempfile::tempdir().unwrap());
    let base = registry.url();
    // More than the reads that may start can bring, a MiB each.
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 253) as u8).collect();
    let digest = http::push_blob(&base, "cut/app", &data);
    relay.arm(usize::MAX, MIB);
    let url = http::blob_url(&base, "cut/app", &digest);
    let got = http::try_request_within("GET", &url, &[], b"", Duration::from_secs(30));
    assert!(
        got.is_err(),
        "a blob the store never sends whole is never answered whole: {got:?}"
    );
    let cuts = relay.cuts_made();
    assert!(
        (2..=8).contains(&cuts),
        "a few resumes, then the read gives up: {cuts} cuts"
    );
    relay.disarm();
    assert_blob(&base, "cut/app", &digest, &data);
}

/// A prune on another node drops a repository's link to a blob (another
/// repository still needs the blob, so its row stays) while a manifest PUT
/// in that repository waits on the blob's row. The PUT must see the link
/// gone and refuse, not answer 201 for a manifest whose layer its
/// repository no longer serves. psql plays the sweep's transaction, and
/// the PUT is seen waiting on its lock before the sweep commits.
#[test]
fn a_manifest_put_waiting_on_a_sweep_that_drops_its_blobs_link_is_refused() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 1);
    let base = nodes[0].url();
    let name = "sweep/race";
    let image = http::build_image(41);
    http::push_blob(&base, name, &image.config);
    http::push_blob(&base, name, &image.layer);
    let metadata = common::cluster::settings_for(dir.path()).metadata;
    let psql = |sql: &str| common::cluster::psql(&metadata, sql);
    let waiting = || {
        psql(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
             AND wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'",
        )
    };
    assert_eq!(waiting(), "0");

    let mut sweep = Command::new("psql")
        .arg(&metadata)
        .args(["-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run psql");
    let mut sql = sweep.stdin.take().unwrap();
    writeln!(
        sql,
        "BEGIN; SELECT 1 FROM blobs WHERE digest = '{}' FOR UPDATE;",
        image.layer_digest
    )
    .unwrap();
    sql.flush().unwrap();
    // The sweep holds the row once its SELECT is done and its transaction
    // idles, open. Only its query names the layer: other tests' prunes
    // lock rows too, by parameters.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let locked = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND state = 'idle in transaction' AND query LIKE '%FOR UPDATE%' \
         AND query LIKE '%{}%'",
        image.layer_digest
    );
    while psql(&locked) == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "psql never took the row"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (put_base, manifest) = (base.clone(), image.manifest.clone());
    let put = thread::spawn(move || {
        http::put_manifest(&put_base, name, "v1", http::OCI_MANIFEST, &manifest)
    });
    // Another test's PUT waiting on some lock only makes this go on
    // sooner, and a PUT that starts after the sweep commits is refused all
    // the same.
    while waiting() == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the manifest PUT never waited on the blob's row"
        );
        thread::sleep(Duration::from_millis(50));
    }
    writeln!(
        sql,
        "DELETE FROM links WHERE digest = '{}' AND repo = '{name}'; COMMIT;",
        image.layer_digest
    )
    .unwrap();
    drop(sql);
    assert!(sweep.wait().unwrap().success(), "the sweep's psql failed");

    let resp = put.join().unwrap();
    assert_eq!(
        resp.status, 400,
        "a manifest PUT whose layer's link a sweep dropped while it waited: {resp:?}"
    );
    assert!(
        String::from_utf8_lossy(&resp.body).contains("MANIFEST_BLOB_UNKNOWN"),
        "{resp:?}"
    );
    let blob = http::head(&http::blob_url(&base, name, &image.layer_digest));
    assert_eq!(blob.status, 404, "the link is gone: {blob:?}");
}

/// Sends a request's head and then its body of `body` in `slices` writes
/// `pause` apart, and reads the answer.
fn trickle(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    slices: usize,
    pause: Duration,
) -> Response {
    use std::io::Write;
    let mut stream = http::connect_addr(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for slice in body.chunks(body.len().div_ceil(slices)) {
        stream.write_all(slice).unwrap();
        thread::sleep(pause);
    }
    http::read_response(&mut stream, false).unwrap()
}

/// A chunk that streams for longer than the upload expiration is not an
/// idle upload: no node expires it under the request (here 6 s of bytes
/// against nodes that expire uploads idle for 2 s, one of them another).
#[test]
fn an_upload_streaming_longer_than_the_expiration_is_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes_with(dir.path(), 2, &["--upload-expiration", "2s"]);
    let base = nodes[0].url();
    let data = http::random_bytes(24 * (16 << 10), 91);
    let digest = sha256_digest(&data);
    let upload = start_upload(&base, "slow/chunk");
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        nodes[0].addr,
        data.len()
    );
    let resp = trickle(nodes[0].addr, &head, &data, 24, Duration::from_millis(250));
    assert_eq!(resp.status, 202, "a streaming chunk was expired: {resp:?}");
    let resp = finish(&nodes[1].url(), &upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "slow/chunk", &digest, &data);
}

/// A whole blob in one request keeps its pieces while it streams: a prune
/// (grace 0s) between its first piece and its end removes none of them.
#[test]
fn a_prune_leaves_the_pieces_of_a_blob_still_streaming() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 1);
    let data = http::random_bytes(9 * MIB, 92);
    let digest = sha256_digest(&data);
    let head = format!(
        "POST /v2/whole/slow/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        nodes[0].addr,
        data.len()
    );
    let mut stream = http::connect_addr(nodes[0].addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let (first, rest) = data.split_at(8 * MIB + MIB / 2);
    stream.write_all(first).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while common::cluster::objects(dir.path(), "uploads/").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no piece was written");
        thread::sleep(Duration::from_millis(50));
    }
    // Object stores give times to the second, rounded up.
    thread::sleep(Duration::from_millis(1100));
    let out = prune_now(&common::cluster::node_args(dir.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stream.write_all(rest).unwrap();
    let resp = http::read_response(&mut stream, false).unwrap();
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&nodes[0].url(), "whole/slow", &digest, &data);
    // Its end is said too: the row that vouched for it goes.
    let metadata = &common::cluster::node_args(dir.path())[1];
    while common::cluster::psql(metadata, "SELECT count(*) FROM streams") != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream's row stays"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster whose blob deletes dropped what manifests need (schema 4 and
/// before, with berth before c0312eb) has it rebuilt by the next migration:
/// a prune then keeps a blob deleted and pushed again.
#[test]
fn a_schema_4_database_gets_back_what_manifests_need() {
    let dir = tempfile::tempdir().unwrap();
    let args = common::cluster::node_args(dir.path());
    let node = start_node(dir.path(), "node");
    let image = http::push_image(&node.url(), "older", Some("v1"), 93);
    node.stop();
    let dropped = common::cluster::psql(
        &args[1],
        &format!(
            "DELETE FROM blob_refs WHERE blob = '{}' RETURNING manifest",
            image.layer_digest
        ),
    );
    assert_eq!(dropped, image.digest);
    common::cluster::psql(&args[1], "UPDATE berth_schema SET version = 4");
    let out = prune_now(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("tags, 0 blobs"), "{said}");
    let node = start_node(dir.path(), "node");
    assert_blob(&node.url(), "older", &image.layer_digest, &image.layer);
}

/// A page of a repository's tags reads each image's config; many of them
/// at once must not hold every database connection while waiting for one
/// more, which left the node answering nothing that needs the database.
#[test]
fn many_repository_pages_at_once_leave_the_node_answering() {
    let dir = tempfile::tempdir().unwrap();
    let node = &start_nodes(dir.path(), 1)[0];
    let base = node.url();
    let image = http::push_image(&base, "team/app", Some("1"), 91);
    thread::scope(|s| {
        let pages: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    (0..3)
                        .map(|_| {
                            http::try_request("GET", &format!("{base}/r/team/app"), &[], b"")
                                .map(|r| r.status)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for page in pages {
            for status in page.join().unwrap() {
                assert!(matches!(status, Ok(200)), "a repository page: {status:?}");
            }
        }
    });
    let head = http::try_request(
        "HEAD",
        &http::blob_url(&base, "team/app", &image.layer_digest),
        &[],
        b"",
    );
    assert!(matches!(head, Ok(ref r) if r.status == 200), "{head:?}");
}

/// `fsck --repair` acts on what it found earlier, while nodes serve: a
/// blob found corrupt and made whole again before the repair reaches it
/// (pushed again after a prune took it) must stay.
#[test]
fn a_repair_leaves_a_blob_made_whole_since_it_was_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = &start_nodes(dir.path(), 1)[0];
    let data = http::random_bytes(2000, 93);
    let digest = http::push_blob(&node.url(), "checked", &data);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let key = format!("blobs/sha256/{hex}");
    common::cluster::overwrite_object(dir.path(), &key, vec![0; 2000]);

    // The repair takes the digest's advisory lock (as a finish does):
    // held here, it waits there, after the check.
    let lock = i64::from_str_radix(&hex[..15], 16).unwrap();
    let url = common::cluster::settings_for(dir.path()).metadata;
    let mut holder = common::cluster::Session::open(&url);
    holder.run(&format!("SELECT pg_advisory_lock({lock})"));
    let args = common::cluster::node_args(dir.path());
    let fsck = std::process::Command::new(common::process::BERTH)
        .arg("fsck")
        .args(&args)
        .arg("--repair")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run berth fsck");
    holder.until_holding_anyone_up();
    common::cluster::overwrite_object(dir.path(), &key, data.clone());
    holder.close(&format!("SELECT pg_advisory_unlock({lock})"));
    let report = fsck.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains(&format!("corrupt: blob {digest}")),
        "{report}"
    );
    assert_blob(&node.url(), "checked", &digest, &data);
}

/// `berth prune --dry-run` reports what a prune would do while the nodes
/// serve: it must hold up no push for as long as it runs (it ran in one
/// transaction that locked each repository it had looked at until it
/// ended).
#[test]
fn a_dry_run_prune_holds_up_no_push() {
    let dir = tempfile::tempdir().unwrap();
    let node = &start_nodes(dir.path(), 1)[0];
    let base = node.url();
    http::push_image(&base, "a/app", Some("1"), 94);
    http::push_image(&base, "b/app", Some("1"), 95);
    http::push_blob(&base, "a/app", b"no manifest needs this");

    // Another writer holding b/app's row: a dry run that locks what it
    // reads waits there, holding a/app's.
    let url = common::cluster::settings_for(dir.path()).metadata;
    let mut holder = common::cluster::Session::open(&url);
    holder.run("BEGIN; SELECT 1 FROM repos WHERE name = 'b/app' FOR UPDATE");
    let mut dry = std::process::Command::new(common::process::BERTH)
        .args(["prune", "--dry-run", "--grace", "0s", "--data"])
        .arg(dir.path().join("prune"))
        .args(common::cluster::node_args(dir.path()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run berth prune");
    let mut settled = false;
    for _ in 0..300 {
        if dry.try_wait().unwrap().is_some() || holder.holds_anyone_up() {
            settled = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(settled, "the dry run neither ended nor waited");

    let (done, pushed) = std::sync::mpsc::channel();
    let push = thread::spawn({
        let base = base.clone();
        move || {
            let digest = http::push_blob(&base, "a/app", b"pushed during a dry run");
            let _ = done.send(());
            digest
        }
    });
    let in_time = pushed.recv_timeout(Duration::from_secs(5)).is_ok();
    holder.close("COMMIT");
    push.join().unwrap();
    let report = dry.wait_with_output().unwrap();
    assert!(report.status.success(), "{report:?}");
    assert!(in_time, "a push waited on a dry run");
    let report = String::from_utf8_lossy(&report.stdout);
    let unneeded = sha256_digest(b"no manifest needs this");
    assert!(report.contains(&format!("blob {unneeded}")), "{report}");
    let held = http::head(&http::blob_url(&base, "a/app", &unneeded));
    assert_eq!(held.status, 200, "a dry run removed what it reported");
}

/// Each chunk of a session was a piece of its own, listed in the session's
/// row: a client sending many small chunks made the row, rewritten whole
/// by each chunk, grow without bound, and the finish read every piece
/// back. A small last piece is joined with the next chunk's bytes.
#[test]
fn small_chunks_are_joined_into_few_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let node = &start_nodes(dir.path(), 1)[0];
    let base = node.url();
    let upload = start_upload(&base, "small/chunks");
    let data = http::random_bytes(200 * 1024, 96);
    for (i, chunk) in data.chunks(1024).enumerate() {
        let resp = patch(&base, &upload, i * 1024, chunk);
        assert_eq!(resp.status, 202, "chunk {i}: {resp:?}");
    }
    let pieces = common::cluster::objects(dir.path(), "uploads/");
    assert_eq!(pieces.len(), 1, "{} pieces", pieces.len());
    let digest = sha256_digest(&data);
    let resp = finish(&base, &upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "small/chunks", &digest, &data);
    let left = common::cluster::objects(dir.path(), "uploads/");
    assert!(left.is_empty(), "{left:?}");
}

/// A blob DELETE that empties a repository forgets it; a write into the
/// repository committing while that DELETE waits on its row must keep it
/// listed (the DELETE judged "empty" on what it saw before it waited).
#[test]
fn a_repository_written_while_a_delete_empties_it_stays_listed() {
    let dir = tempfile::tempdir().unwrap();
    let node = &start_nodes(dir.path(), 1)[0];
    let base = node.url();
    let deleted = http::push_blob(&base, "kept/app", b"deleted by the client");
    let other = http::push_blob(&base, "elsewhere", b"linked in by another writer");

    // Another writer, mid-transaction, holding the repository's row and
    // linking a second blob into it.
    let url = common::cluster::settings_for(dir.path()).metadata;
    let mut writer = common::cluster::Session::open(&url);
    writer.run(&format!(
        "BEGIN; UPDATE repos SET updated = updated WHERE name = 'kept/app';
         INSERT INTO links (digest, repo, linked) VALUES ('{other}', 'kept/app', 0)"
    ));
    let delete = thread::spawn({
        let url = http::blob_url(&base, "kept/app", &deleted);
        move || http::delete(&url).status
    });
    writer.until_holding_anyone_up();
    writer.close("COMMIT");
    assert_eq!(delete.join().unwrap(), 202);
    assert_eq!(
        http::head(&http::blob_url(&base, "kept/app", &other)).status,
        200
    );
    let catalog = http::get(&format!("{base}/v2/_catalog")).json();
    assert!(
        catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "kept/app"),
        "{catalog}"
    );
}
