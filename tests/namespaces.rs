//! Namespaces: a repository whose first component is a registry host
//! (`docker.io/library/alpine`) is in that host's namespace, reached by the
//! path prefix podman, docker and skopeo send, or by containerd's `?ns=`;
//! both name the same content, and namespaces never see each other's.

mod common;

use common::TestRegistry;
use common::http::{self, OCI_MANIFEST, assert_error};

fn with_ns(url: &str, ns: &str) -> String {
    http::with_query(url, &format!("ns={ns}"))
}

#[track_caller]
fn assert_manifest(url: &str, body: &[u8]) {
    let resp = http::get(url);
    assert_eq!(resp.status, 200, "GET {url}: {resp:?}");
    assert!(resp.body == body, "GET {url} served other bytes");
}

common::both_engines! {
#[test]
fn the_path_prefix_and_ns_name_the_same_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "docker.io/library/alpine", Some("3.20"), 1);

    for url in [
        http::manifest_url(&base, "docker.io/library/alpine", "3.20"),
        http::manifest_url(&base, "docker.io/alpine", "3.20"),
        with_ns(
            &http::manifest_url(&base, "library/alpine", "3.20"),
            "docker.io",
        ),
        // Docker Hub's short names take library/.
        with_ns(&http::manifest_url(&base, "alpine", "3.20"), "docker.io"),
        with_ns(
            &http::manifest_url(&base, "alpine", &image.digest),
            "docker.io",
        ),
    ] {
        assert_manifest(&url, &image.manifest);
    }
    let blob = with_ns(
        &http::blob_url(&base, "alpine", &image.layer_digest),
        "docker.io",
    );
    assert_eq!(http::get(&blob).body, image.layer);
    let tags = http::get(&with_ns(
        &format!("{base}/v2/alpine/tags/list"),
        "docker.io",
    ));
    assert_eq!(tags.json()["tags"], serde_json::json!(["3.20"]));
}

#[test]
fn namespaces_are_isolated_from_each_other_and_from_the_default() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let hub = http::push_image(&base, "docker.io/team/app", Some("1"), 2);
    let quay = http::push_image(&base, "quay.io/team/app", Some("1"), 3);
    let local = http::push_image(&base, "team/app", Some("1"), 4);

    assert_manifest(
        &http::manifest_url(&base, "docker.io/team/app", "1"),
        &hub.manifest,
    );
    assert_manifest(
        &http::manifest_url(&base, "quay.io/team/app", "1"),
        &quay.manifest,
    );
    assert_manifest(&http::manifest_url(&base, "team/app", "1"), &local.manifest);
    // Neither the manifests nor the blobs of one show in another.
    for (repo, other) in [
        ("docker.io/team/app", &quay),
        ("quay.io/team/app", &local),
        ("team/app", &hub),
    ] {
        let resp = http::get(&http::manifest_url(&base, repo, &other.digest));
        assert_error(&resp, 404, "MANIFEST_UNKNOWN");
        let resp = http::head(&http::blob_url(&base, repo, &other.layer_digest));
        assert_eq!(resp.status, 404, "{repo} sees another namespace's blob");
    }
    let referrers = http::get(&with_ns(
        &format!("{base}/v2/team/app/referrers/{}", local.digest),
        "quay.io",
    ));
    assert_eq!(referrers.status, 200);
    assert_eq!(referrers.json()["manifests"], serde_json::json!([]));

    let catalog = http::get(&format!("{base}/v2/_catalog")).json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["docker.io/team/app", "quay.io/team/app", "team/app"])
    );
}

#[test]
fn a_namespace_with_a_port_is_reached_by_ns_and_pushes_follow_their_location() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let ns = "127.0.0.1:5001";
    let layer = b"a layer pushed through ?ns=".to_vec();
    let config = b"{}".to_vec();
    for blob in [&layer, &config] {
        let resp = http::post(
            &with_ns(&http::uploads_url(&base, "team/app"), ns),
            &[],
            b"",
        );
        assert_eq!(resp.status, 202, "{resp:?}");
        // The session's Location names the full repository, so it works
        // whether or not the client keeps the ?ns= on it.
        assert!(
            resp.location()
                .starts_with("/v2/127.0.0.1:5001/team/app/blobs/uploads/"),
            "{resp:?}"
        );
        let upload = http::resolve(&base, resp.location());
        let digest = http::sha256_digest(blob);
        let resp = http::put(
            &http::with_query(&upload, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            blob,
        );
        assert_eq!(resp.status, 201, "{resp:?}");
    }
    let manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &[http::descriptor(http::OCI_LAYER, &layer)],
    );
    let resp = http::put(
        &with_ns(&http::manifest_url(&base, "team/app", "v1"), ns),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(resp.status, 201, "{resp:?}");

    assert_manifest(
        &with_ns(&http::manifest_url(&base, "team/app", "v1"), ns),
        &manifest,
    );
    assert_manifest(
        &http::manifest_url(&base, "127.0.0.1:5001/team/app", "v1"),
        &manifest,
    );
    assert_error(
        &http::get(&http::manifest_url(&base, "team/app", "v1")),
        404,
        "MANIFEST_UNKNOWN",
    );
    let catalog = http::get(&format!("{base}/v2/_catalog")).json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["127.0.0.1:5001/team/app"])
    );
}

#[test]
fn a_malformed_ns_is_400_name_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for ns in ["bad%20host", "UPPER_CASE", "h:0", "h:99999", "-h.io", "a/b"] {
        let resp = http::get(&with_ns(&http::manifest_url(&base, "team/app", "v1"), ns));
        assert_error(&resp, 400, "NAME_INVALID");
    }
}
}
