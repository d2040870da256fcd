//! The base route, the error envelope, unknown routes and methods, and
//! persistence across restarts.

mod common;

use common::TestRegistry;
use common::http::{self, assert_error, assert_json_error};

common::both_engines! {
#[test]
fn base_route_answers_200_with_api_version_and_empty_json() {
    let reg = TestRegistry::start();
    let resp = http::get(&format!("{}/v2/", reg.url()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{resp:?}"
    );
    assert_eq!(resp.json(), serde_json::json!({}), "{resp:?}");
}

#[test]
fn error_bodies_are_json_with_code_message_and_detail_fields() {
    let reg = TestRegistry::start();
    let digest = http::sha256_digest(b"never pushed");
    let resp = http::get(&http::blob_url(&reg.url(), "lib/app", &digest));
    assert_error(&resp, 404, "BLOB_UNKNOWN");
    let body = resp.json();
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{resp:?}");
    let error = errors[0].as_object().unwrap();
    assert!(!error["message"].as_str().unwrap().is_empty(), "{resp:?}");
    // Only code, message and detail are defined by the spec.
    for key in error.keys() {
        assert!(
            ["code", "message", "detail"].contains(&key.as_str()),
            "unexpected key {key} in {resp:?}"
        );
    }
}

#[test]
fn unknown_paths_answer_404_with_a_json_errors_body() {
    let reg = TestRegistry::start();
    // `/` is the web page (tests/ui.rs).
    for path in [
        "/v1/",
        "/v3/",
        "/favicon.ico",
        "/v2/lib/app/nothing/here",
        "/v2/lib/app/blobs",
        "/v2/lib/app/tags",
    ] {
        let resp = http::get(&format!("{}{path}", reg.url()));
        assert_json_error(&resp, 404);
    }
}

#[test]
fn unknown_methods_on_known_routes_answer_405_unsupported() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let digest = http::sha256_digest(b"x");
    let cases = [
        ("DELETE", format!("{base}/v2/lib/app/tags/list")),
        ("PUT", format!("{base}/v2/lib/app/tags/list")),
        ("POST", format!("{base}/v2/lib/app/manifests/latest")),
        ("PATCH", format!("{base}/v2/lib/app/manifests/latest")),
        ("PUT", format!("{base}/v2/lib/app/blobs/{digest}")),
        ("POST", format!("{base}/v2/lib/app/blobs/{digest}")),
        ("DELETE", format!("{base}/v2/_catalog")),
        ("POST", format!("{base}/v2/_catalog")),
        ("DELETE", format!("{base}/v2/lib/app/referrers/{digest}")),
    ];
    for (method, url) in cases {
        let resp = http::request(method, &url, &[], b"");
        assert_error(&resp, 405, "UNSUPPORTED");
    }
}

#[test]
fn blobs_manifests_and_tags_survive_a_restart() {
    let reg = TestRegistry::start();
    let image = http::push_image(&reg.url(), "lib/app", Some("v1"), 1);
    let other = http::push_blob(&reg.url(), "lib/other", b"only a blob");
    let data = reg.stop();

    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    let blob = http::get(&http::blob_url(&base, "lib/app", &image.layer_digest));
    assert_eq!(blob.status, 200, "{blob:?}");
    assert_eq!(blob.body, image.layer);
    let blob = http::get(&http::blob_url(&base, "lib/other", &other));
    assert_eq!(blob.status, 200, "{blob:?}");
    assert_eq!(blob.body, b"only a blob");

    let manifest = http::get(&http::manifest_url(&base, "lib/app", "v1"));
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.body, image.manifest);
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    assert_eq!(manifest.header("content-type"), Some(http::OCI_MANIFEST));

    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(tags.status, 200, "{tags:?}");
    assert_eq!(
        tags.json(),
        serde_json::json!({"name": "lib/app", "tags": ["v1"]})
    );

    let catalog = http::get(&format!("{base}/v2/_catalog"));
    assert_eq!(catalog.status, 200, "{catalog:?}");
    assert_eq!(
        catalog.json(),
        serde_json::json!({"repositories": ["lib/app", "lib/other"]})
    );
}

#[test]
fn deletions_survive_a_restart() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("v1"), 2);
    let kept = http::push_image(&base, "lib/app", Some("v2"), 3);
    assert_eq!(
        http::delete(&http::manifest_url(&base, "lib/app", &image.digest)).status,
        202
    );
    assert_eq!(
        http::delete(&http::blob_url(&base, "lib/app", &image.layer_digest)).status,
        202
    );
    let data = reg.stop();

    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    assert_error(
        &http::get(&http::manifest_url(&base, "lib/app", &image.digest)),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        &http::get(&http::manifest_url(&base, "lib/app", "v1")),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        &http::get(&http::blob_url(&base, "lib/app", &image.layer_digest)),
        404,
        "BLOB_UNKNOWN",
    );
    assert_eq!(
        http::get(&http::manifest_url(&base, "lib/app", "v2")).body,
        kept.manifest
    );
    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(
        tags.json(),
        serde_json::json!({"name": "lib/app", "tags": ["v2"]})
    );
}

#[test]
fn an_upload_started_before_a_restart_continues_after_it() {
    let data_bytes = http::random_bytes(100_000, 7);
    let digest = http::sha256_digest(&data_bytes);
    let (first, second) = data_bytes.split_at(40_000);

    let reg = TestRegistry::start();
    let upload = http::start_upload(&reg.url(), "lib/app");
    let resp = http::patch(
        &upload,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", "0-39999"),
        ],
        first,
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-39999"));
    let path = http::path_of(&upload).to_owned();
    let data = reg.stop();

    let reg = TestRegistry::start_in(data);
    let base = reg.url();
    let upload = http::resolve(&base, &path);

    let status = http::get(&upload);
    assert_eq!(status.status, 204, "{status:?}");
    assert_eq!(status.header("range"), Some("0-39999"), "{status:?}");

    // A chunk at the wrong offset is still refused after the restart.
    let resp = http::patch(&upload, &[("Content-Range", "100-199")], &second[..100]);
    assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(resp.header("range"), Some("0-39999"), "{resp:?}");

    let resp = http::patch(
        &http::resolve(&base, status.location()),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", "40000-99999"),
        ],
        second,
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-99999"));

    let resp = http::put(
        &http::with_query(
            &http::resolve(&base, resp.location()),
            &format!("digest={digest}"),
        ),
        &[],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));

    let blob = http::get(&http::blob_url(&base, "lib/app", &digest));
    assert_eq!(blob.status, 200, "{blob:?}");
    assert!(blob.body == data_bytes, "blob bytes differ after a restart");
}
}
