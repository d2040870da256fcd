//! Validation of repository names and digests on every route.

mod common;

use common::TestRegistry;
use common::http::{self, assert_error};

fn bad_names() -> Vec<String> {
    vec![
        "Upper".into(),
        "lib/App".into(),
        "a/../b".into(),
        "..".into(),
        "/a".into(),
        "a//b".into(),
        "a/%2e%2e/b".into(),
        "%2e%2e".into(),
        "a-".into(),
        "-a".into(),
        "a..b".into(),
        "a___b".into(),
        "a".repeat(256),
        format!("{}/{}", "a".repeat(200), "b".repeat(60)),
    ]
}

/// (method, path after `/v2/<name>`, body) for every route that takes a name.
fn routes() -> Vec<(&'static str, String, Vec<u8>)> {
    let digest = http::sha256_digest(b"some blob");
    let upload = "/blobs/uploads/6f1a5c3e-9a40-4f39-8d2c-6a2b2c1d0e4f";
    vec![
        ("GET", "/tags/list".into(), vec![]),
        ("GET", "/manifests/latest".into(), vec![]),
        ("HEAD", "/manifests/latest".into(), vec![]),
        (
            "PUT",
            "/manifests/latest".into(),
            br#"{"schemaVersion":2}"#.to_vec(),
        ),
        ("DELETE", "/manifests/latest".into(), vec![]),
        ("GET", format!("/manifests/{digest}"), vec![]),
        ("GET", format!("/blobs/{digest}"), vec![]),
        ("HEAD", format!("/blobs/{digest}"), vec![]),
        ("DELETE", format!("/blobs/{digest}"), vec![]),
        ("POST", "/blobs/uploads/".into(), vec![]),
        (
            "POST",
            format!("/blobs/uploads/?digest={digest}"),
            b"some blob".to_vec(),
        ),
        ("GET", upload.into(), vec![]),
        ("PATCH", upload.into(), b"chunk".to_vec()),
        ("PUT", format!("{upload}?digest={digest}"), vec![]),
        ("DELETE", upload.into(), vec![]),
        ("GET", format!("/referrers/{digest}"), vec![]),
    ]
}

fn bad_digests() -> Vec<String> {
    vec![
        "sha256:abc".into(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "z".repeat(64)),
        format!("sha256:{}", "a".repeat(65)),
        "sha256:".into(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".into(),
        format!("sha512:{}", "a".repeat(64)),
        format!("sha384:{}", "a".repeat(96)),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
    ]
}

common::both_engines! {
#[test]
fn invalid_names_are_400_name_invalid_on_every_route() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for name in bad_names() {
        for (method, suffix, body) in routes() {
            let url = format!("{base}/v2/{name}{suffix}");
            let headers: &[(&str, &str)] = if suffix.starts_with("/manifests/") {
                &[("Content-Type", http::OCI_MANIFEST)]
            } else {
                &[]
            };
            let resp = http::request(method, &url, headers, &body);
            let what = format!("{method} /v2/{name}{suffix}");
            if method == "HEAD" {
                assert_eq!(resp.status, 400, "{what}: {resp:?}");
                assert!(resp.body.is_empty(), "{what}: {resp:?}");
            } else {
                assert_eq!(resp.error_codes(), ["NAME_INVALID"], "{what}: {resp:?}");
                assert_error(&resp, 400, "NAME_INVALID");
            }
        }
    }
    // Nothing was created under any of them.
    let catalog = http::get(&format!("{base}/v2/_catalog"));
    assert_eq!(catalog.json(), serde_json::json!({"repositories": []}));
}

#[test]
fn valid_name_forms_are_accepted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127)); // 255 chars
    assert_eq!(longest.len(), 255);
    let names = [
        "a",
        "0",
        "a-b",
        "a--b",
        "a.b",
        "a_b",
        "a__b",
        "a/b/c/d/e",
        "library/ubuntu",
        "my-org.io/team_x/app-01",
        longest.as_str(),
    ];
    for name in names {
        let digest = http::push_blob(&base, name, name.as_bytes());
        let resp = http::get(&http::blob_url(&base, name, &digest));
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
        http::push_image(&base, name, Some("v1"), 7);
        let resp = http::get(&format!("{base}/v2/{name}/tags/list"));
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
        assert_eq!(resp.json()["name"], name);
    }
    let catalog = http::get(&format!("{base}/v2/_catalog"));
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort();
    assert_eq!(
        catalog.json(),
        serde_json::json!({ "repositories": expected })
    );
}

#[test]
fn invalid_digests_on_blob_routes_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "lib/app", b"exists");
    for digest in bad_digests() {
        let url = http::blob_url(&base, "lib/app", &digest);
        assert_error(&http::get(&url), 400, "DIGEST_INVALID");
        assert_error(&http::delete(&url), 400, "DIGEST_INVALID");
        let resp = http::head(&url);
        assert_eq!(resp.status, 400, "HEAD {digest}: {resp:?}");
        assert!(resp.body.is_empty(), "{resp:?}");
    }
}

#[test]
fn invalid_digests_on_monolithic_post_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for digest in bad_digests() {
        let url = http::with_query(
            &http::uploads_url(&base, "lib/app"),
            &format!("digest={digest}"),
        );
        assert_error(&http::post(&url, &[], b"data"), 400, "DIGEST_INVALID");
    }
}

#[test]
fn invalid_digests_on_upload_put_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for digest in bad_digests() {
        let upload = http::start_upload(&base, "lib/app");
        let resp = http::put(
            &http::with_query(&upload, &format!("digest={digest}")),
            &[],
            b"data",
        );
        assert_error(&resp, 400, "DIGEST_INVALID");
    }
}

#[test]
fn invalid_digests_on_manifest_routes_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("v1"), 3);
    for digest in bad_digests().into_iter().filter(|d| d.contains(':')) {
        let url = http::manifest_url(&base, "lib/app", &digest);
        assert_error(&http::get(&url), 400, "DIGEST_INVALID");
        assert_error(&http::delete(&url), 400, "DIGEST_INVALID");
        assert_error(
            &http::put(
                &url,
                &[("Content-Type", http::OCI_MANIFEST)],
                &image.manifest,
            ),
            400,
            "DIGEST_INVALID",
        );
    }
}

#[test]
fn invalid_digests_on_referrers_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "lib/app", b"exists");
    for digest in bad_digests() {
        let url = format!("{base}/v2/lib/app/referrers/{digest}");
        assert_error(&http::get(&url), 400, "DIGEST_INVALID");
    }
}

#[test]
fn conformance_delete_of_unknown_tag_has_an_oci_error_code() {
    // Content management: the answer to DELETE of a tag must carry a code
    // from the spec's list.
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 4);
    let resp = http::delete(&http::manifest_url(&base, "lib/app", "tagtest0"));
    assert_error(&resp, 404, "MANIFEST_UNKNOWN");
}

#[test]
fn names_containing_route_words_are_routed_by_their_last_segments() {
    // Valid names may contain "blobs", "manifests", "tags", "uploads",
    // "referrers" as components; the route is decided by the end of the path.
    let reg = TestRegistry::start();
    let base = reg.url();
    let names = [
        "lib/blobs",
        "lib/blobs/uploads",
        "lib/manifests/app",
        "tags/list",
        "x/referrers",
        "v2",
    ];
    for name in names {
        let data = format!("content of {name}");
        let digest = http::push_blob(&base, name, data.as_bytes());
        let resp = http::get(&http::blob_url(&base, name, &digest));
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
        assert_eq!(resp.body, data.as_bytes(), "{name}");

        let upload = http::start_upload(&base, name);
        assert!(
            http::path_of(&upload).starts_with(&format!("/v2/{name}/blobs/uploads/")),
            "{name}: {upload}"
        );
        assert_eq!(http::get(&upload).status, 204, "{name}");
        assert_eq!(http::delete(&upload).status, 204, "{name}");

        let image = http::push_image(&base, name, Some("v1"), 9);
        let resp = http::get(&http::manifest_url(&base, name, "v1"));
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
        assert_eq!(resp.body, image.manifest, "{name}");
        let resp = http::get(&format!("{base}/v2/{name}/tags/list"));
        assert_eq!(
            resp.json(),
            serde_json::json!({"name": name, "tags": ["v1"]}),
            "{name}"
        );
        let resp = http::get(&format!("{base}/v2/{name}/referrers/{}", image.digest));
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
    }
    // Each landed in its own repository, not in a prefix of it.
    assert_eq!(
        http::head(&http::blob_url(
            &base,
            "lib",
            &http::sha256_digest(b"content of lib/blobs")
        ))
        .status,
        404
    );
    let catalog = http::get(&format!("{base}/v2/_catalog"));
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(
        catalog.json(),
        serde_json::json!({ "repositories": expected })
    );
}
}
