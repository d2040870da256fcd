//! Pull-through: a namespace that caches an upstream registry, here a
//! second berth on loopback. Manifests and blobs come from the upstream
//! when first asked for and from the cache after; tags are asked again
//! after the TTL; what is cached is served while the upstream is down;
//! what is pushed into the namespace shadows the upstream's.

mod common;

use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, OCI_INDEX, assert_error};
use serde_json::json;

/// A berth whose namespace `up.test` caches `upstream`.
fn mirror_of(upstream: &TestRegistry, ttl: Duration) -> TestRegistry {
    let url = upstream.url();
    TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_ttl = ttl;
        c.upstream_timeout = Duration::from_secs(2);
    })
}

#[track_caller]
fn assert_serves(url: &str, body: &[u8]) {
    let resp = http::get(url);
    assert_eq!(resp.status, 200, "GET {url}: {resp:?}");
    assert!(resp.body == body, "GET {url} served other bytes");
}

#[track_caller]
fn assert_image(base: &str, repo: &str, reference: &str, image: &http::Image) {
    assert_serves(&http::manifest_url(base, repo, reference), &image.manifest);
    assert_serves(
        &http::blob_url(base, repo, &image.config_digest),
        &image.config,
    );
    assert_serves(
        &http::blob_url(base, repo, &image.layer_digest),
        &image.layer,
    );
}

#[test]
fn an_upstream_namespace_must_name_a_host_and_come_once() {
    for upstreams in [
        vec![("not_a_host".to_owned(), "http://127.0.0.1:1".to_owned())],
        vec![
            ("up.test".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("up.test".to_owned(), "http://127.0.0.1:2".to_owned()),
        ],
        vec![("up.test".to_owned(), "ftp://127.0.0.1:1".to_owned())],
    ] {
        let data = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = berth::Config::new(data.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.upstreams = upstreams.clone();
        let started = runtime.block_on(berth::Registry::start(config));
        assert!(started.is_err(), "{upstreams:?} started");
    }
}

/// Runs `berth prune ARGS` on a stopped registry's data directory (or its
/// clustered store).
fn prune(data: &std::path::Path, args: &[&str]) -> String {
    let cluster = match common::engine() {
        common::Engine::Cluster => common::cluster::node_args(data),
        common::Engine::Embedded => Vec::new(),
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("prune")
        .arg("--data")
        .arg(data)
        .args(cluster)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

common::both_engines! {
#[test]
fn an_image_is_pulled_through_by_tag_and_digest_both_ways_in() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 1);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();

    assert_image(&base, "up.test/team/app", "1", &image);
    assert_image(&base, "up.test/team/app", &image.digest, &image);
    // containerd's way in names the same content.
    let ns = |url: String| http::with_query(&url, "ns=up.test");
    assert_serves(
        &ns(http::manifest_url(&base, "team/app", "1")),
        &image.manifest,
    );
    assert_serves(
        &ns(http::blob_url(&base, "team/app", &image.layer_digest)),
        &image.layer,
    );
    let head = http::head(&http::manifest_url(&base, "up.test/team/app", "1"));
    assert_eq!(
        head.header("docker-content-digest"),
        Some(image.digest.as_str())
    );

    // Cached: served with the upstream gone.
    drop(upstream);
    assert_image(&base, "up.test/team/app", &image.digest, &image);
    let started = Instant::now();
    assert_image(&base, "up.test/team/app", "1", &image);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a stale tag took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_blob_head_is_answered_with_the_upstreams_size_and_fetches_nothing() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 2);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let url = http::blob_url(&mirror.url(), "up.test/team/app", &image.layer_digest);
    let resp = http::head(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    let size = image.layer.len().to_string();
    assert_eq!(resp.header("content-length"), Some(size.as_str()));
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.layer_digest.as_str())
    );
    // A HEAD fetches nothing: a push asks it of every layer it may upload.
    drop(upstream);
    assert_error(&http::get(&url), 502, "UNAVAILABLE");
}

#[test]
fn an_index_and_its_children_come_when_asked_for() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    let amd = http::push_image(&up, "team/multi", None, 3);
    let arm = http::push_image(&up, "team/multi", None, 4);
    let index = http::image_index(&[amd.descriptor(), arm.descriptor()]);
    http::push_manifest(&up, "team/multi", "latest", OCI_INDEX, &index);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();

    assert_serves(
        &http::manifest_url(&base, "up.test/team/multi", "latest"),
        &index,
    );
    assert_image(&base, "up.test/team/multi", &arm.digest, &arm);
    drop(upstream);
    // Only what was asked for is cached.
    assert_image(&base, "up.test/team/multi", &arm.digest, &arm);
    let resp = http::get(&http::manifest_url(
        &base,
        "up.test/team/multi",
        &amd.digest,
    ));
    assert_error(&resp, 502, "UNAVAILABLE");
}

#[test]
fn a_moved_tag_is_seen_once_the_ttl_passes() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    let first = http::push_image(&up, "team/app", Some("1"), 5);
    let mirror = mirror_of(&upstream, Duration::from_secs(2));
    let base = mirror.url();
    assert_serves(
        &http::manifest_url(&base, "up.test/team/app", "1"),
        &first.manifest,
    );

    let second = http::push_image(&up, "team/app", Some("1"), 6);
    // Within the TTL the cached answer stands.
    assert_serves(
        &http::manifest_url(&base, "up.test/team/app", "1"),
        &first.manifest,
    );
    std::thread::sleep(Duration::from_millis(2200));
    assert_image(&base, "up.test/team/app", "1", &second);

    // Past the TTL with the upstream gone, the cached tag is served stale.
    drop(upstream);
    std::thread::sleep(Duration::from_millis(2200));
    let started = Instant::now();
    assert_image(&base, "up.test/team/app", "1", &second);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn what_is_pushed_into_the_namespace_shadows_the_upstream_until_deleted() {
    let upstream = TestRegistry::start();
    let theirs = http::push_image(&upstream.url(), "team/app", Some("1"), 7);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();
    assert_serves(
        &http::manifest_url(&base, "up.test/team/app", "1"),
        &theirs.manifest,
    );

    let ours = http::push_image(&base, "up.test/team/app", Some("1"), 8);
    assert_image(&base, "up.test/team/app", "1", &ours);
    let tags = http::get(&format!("{base}/v2/up.test/team/app/tags/list")).json();
    assert_eq!(tags["tags"], json!(["1"]));

    let resp = http::delete(&http::manifest_url(&base, "up.test/team/app", "1"));
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_image(&base, "up.test/team/app", "1", &theirs);
}

/// A push into the namespace of an image built on the upstream's: the
/// client's HEAD of the shared layer finds it upstream and skips it, as
/// docker and podman do, and the manifest PUT brings the layer in.
#[test]
fn a_push_that_skips_a_layer_the_upstream_holds_brings_it_in() {
    let upstream = TestRegistry::start();
    let base_image = http::push_image(&upstream.url(), "team/app", Some("1"), 9);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();
    let repo = "up.test/team/app";
    let head = http::head(&http::blob_url(&base, repo, &base_image.layer_digest));
    assert_eq!(head.status, 200, "{head:?}");
    let config = br#"{"architecture":"amd64","os":"linux","built":"on top"}"#.to_vec();
    http::push_blob(&base, repo, &config);
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &[http::descriptor(http::OCI_LAYER, &base_image.layer)],
    );
    let resp = http::put_manifest(&base, repo, "2", http::OCI_MANIFEST, &manifest);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_serves(&http::manifest_url(&base, repo, "2"), &manifest);
    drop(upstream);
    assert_serves(&http::blob_url(&base, repo, &base_image.layer_digest), &base_image.layer);
}

#[test]
fn what_the_upstream_lacks_is_404_and_an_upstream_that_is_down_fails_fast() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 9);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();
    assert_error(
        &http::get(&http::manifest_url(&base, "up.test/team/app", "nope")),
        404,
        "MANIFEST_UNKNOWN",
    );
    let missing = http::sha256_digest(b"not at the upstream");
    assert_error(
        &http::get(&http::blob_url(&base, "up.test/team/app", &missing)),
        404,
        "BLOB_UNKNOWN",
    );

    drop(upstream);
    let started = Instant::now();
    let resp = http::get(&http::manifest_url(
        &base,
        "up.test/team/app",
        &image.digest,
    ));
    assert_error(&resp, 502, "UNAVAILABLE");
    assert!(
        resp.text().contains("127.0.0.1"),
        "the error names the upstream: {resp:?}"
    );
    let resp = http::get(&http::blob_url(
        &base,
        "up.test/team/app",
        &image.layer_digest,
    ));
    assert_error(&resp, 502, "UNAVAILABLE");
    // A push asks HEAD before uploading a blob: not there, rather than failed.
    let resp = http::head(&http::blob_url(
        &base,
        "up.test/team/app",
        &image.config_digest,
    ));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_namespace_without_an_upstream_and_the_default_one_never_ask_it() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 10);
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();
    for repo in ["team/app", "other.test/team/app"] {
        assert_error(
            &http::get(&http::manifest_url(&base, repo, "1")),
            404,
            "MANIFEST_UNKNOWN",
        );
        let resp = http::head(&http::blob_url(&base, repo, &image.layer_digest));
        assert_eq!(resp.status, 404, "{repo}");
    }
}

#[test]
fn cached_content_nobody_pulls_expires_and_what_was_pushed_stays() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    let stale = http::push_image(&up, "team/old", Some("1"), 11);
    let fresh = http::push_image(&up, "team/new", Some("1"), 12);
    // The server writes pulls down often enough for a 6 s expiration.
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), up)];
        c.prune.cache_expiration = Some(Duration::from_secs(6));
    });
    let base = mirror.url();
    // Times are kept from here, not slept: a clustered store's steps take
    // longer than an embedded one's.
    let first = Instant::now();
    assert_image(&base, "up.test/team/old", "1", &stale);
    assert_image(&base, "up.test/team/new", "1", &fresh);
    let ours = http::push_image(&base, "up.test/team/ours", Some("1"), 13);
    std::thread::sleep((first + Duration::from_secs(3)).saturating_duration_since(Instant::now()));
    // Pulled again: its clock starts over.
    assert_image(&base, "up.test/team/new", "1", &fresh);
    // The pull is written down beside the answer, not before it.
    std::thread::sleep(Duration::from_millis(300));
    let data = mirror.stop();

    let kept = prune(data.path(), &["--grace", "0s", "--cache-expiration", "6s"]);
    assert!(kept.contains("0 manifests, 0 tags, 0 blobs"), "{kept}");
    // Past old's expiration, three seconds before new's.
    std::thread::sleep((first + Duration::from_millis(6500)).saturating_duration_since(Instant::now()));
    let out = prune(data.path(), &["--grace", "0s", "--cache-expiration", "6s"]);
    assert!(out.contains("1 manifests, 1 tags, 2 blobs"), "{out}");

    drop(upstream);
    let mirror = TestRegistry::start_in(data);
    let base = mirror.url();
    let resp = http::get(&http::manifest_url(
        &base,
        "up.test/team/old",
        &stale.digest,
    ));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_image(&base, "up.test/team/new", &fresh.digest, &fresh);
    assert_image(&base, "up.test/team/ours", "1", &ours);
}

/// A manifest pushed here stays this registry's when a client pulls it by
/// an upstream tag that names it: the cache's expiration never takes it.
#[test]
fn a_pushed_manifest_pulled_by_an_upstream_tag_stays_pushed() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    let theirs = http::push_image(&up, "team/app", Some("1"), 21);
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), up)];
        c.prune.cache_expiration = Some(Duration::from_secs(2));
    });
    let base = mirror.url();
    // Pushed here by digest alone: the very image the upstream tags 1.
    let ours = http::push_image(&base, "up.test/team/app", None, 21);
    assert_eq!(ours.digest, theirs.digest);
    let pulled = Instant::now();
    assert_image(&base, "up.test/team/app", "1", &ours);
    // The pull is written down beside the answer, not before it.
    std::thread::sleep(Duration::from_millis(300));
    let data = mirror.stop();
    std::thread::sleep((pulled + Duration::from_millis(2500)).saturating_duration_since(Instant::now()));
    let out = prune(data.path(), &["--grace", "0s", "--cache-expiration", "2s"]);

    drop(upstream);
    let mirror = TestRegistry::start_in(data);
    let base = mirror.url();
    let resp = http::get(&http::manifest_url(&base, "up.test/team/app", &ours.digest));
    assert_eq!(resp.status, 200, "the pushed manifest after a prune that said: {out}\n{resp:?}");
    assert_image(&base, "up.test/team/app", &ours.digest, &ours);
}

#[test]
fn the_upstreams_referrers_are_listed_and_cached() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    let image = http::push_image(&up, "team/app", Some("1"), 14);
    http::push_blob(&up, "team/app", b"{}");
    let signature = b"a signature".to_vec();
    http::push_blob(&up, "team/app", &signature);
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": http::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": http::descriptor(http::OCI_EMPTY, b"{}"),
        "layers": [http::descriptor("application/octet-stream", &signature)],
        "subject": image.descriptor(),
    }))
    .unwrap();
    let artifact_digest = http::sha256_digest(&artifact);
    http::push_manifest(
        &up,
        "team/app",
        &artifact_digest,
        http::OCI_MANIFEST,
        &artifact,
    );
    let mirror = mirror_of(&upstream, Duration::from_secs(60));
    let base = mirror.url();

    let list = |base: &str| {
        let resp = http::get(&format!(
            "{base}/v2/up.test/team/app/referrers/{}",
            image.digest
        ));
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()["manifests"].clone()
    };
    let listed = list(&base);
    assert_eq!(listed[0]["digest"], json!(artifact_digest), "{listed}");
    assert_eq!(
        listed[0]["artifactType"],
        json!("application/vnd.example.sig")
    );
    drop(upstream);
    assert_eq!(list(&base)[0]["digest"], json!(artifact_digest));
    assert_serves(
        &http::manifest_url(&base, "up.test/team/app", &artifact_digest),
        &artifact,
    );
}

#[test]
fn tags_list_the_upstreams_with_those_pushed_here() {
    let upstream = TestRegistry::start();
    let up = upstream.url();
    for (tag, seed) in [("1", 20), ("2", 21), ("3", 22)] {
        http::push_image(&up, "team/app", Some(tag), seed);
    }
    let mirror = mirror_of(&upstream, Duration::from_secs(1));
    let base = mirror.url();
    let list = |query: &str| http::get(&format!("{base}/v2/up.test/team/app/tags/list{query}"));
    assert_eq!(list("").json()["tags"], json!(["1", "2", "3"]));
    http::push_image(&base, "up.test/team/app", Some("ours"), 23);
    assert_eq!(list("").json()["tags"], json!(["1", "2", "3", "ours"]));
    let first = list("?n=2");
    assert_eq!(first.json()["tags"], json!(["1", "2"]));
    assert!(
        first.header("link").is_some_and(|l| l.contains("last=2")),
        "{first:?}"
    );
    assert_eq!(list("?n=2&last=2").json()["tags"], json!(["3", "ours"]));
    let resp = http::get(&format!("{base}/v2/up.test/team/none/tags/list"));
    assert_error(&resp, 404, "NAME_UNKNOWN");

    // With the upstream gone, what is held here is listed (once the
    // upstream's list, kept for the TTL, is stale).
    drop(upstream);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(list("").json()["tags"], json!(["ours"]));
}
}

/// Docker Hub goes by several names, and a client's `registry-1.docker.io/x`
/// is `docker.io/x`: a cache configured under another of Hub's names serves
/// the names clients give it.
#[test]
fn a_cache_named_for_docker_hub_by_another_of_its_names_serves() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "team/app", Some("1"), 24);
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("registry-1.docker.io".into(), url)];
    });
    for name in ["registry-1.docker.io/team/app", "docker.io/team/app"] {
        assert_serves(
            &http::manifest_url(&mirror.url(), name, &image.digest),
            &image.manifest,
        );
    }
}
