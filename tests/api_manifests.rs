//! Pushing, pulling and deleting manifests and indexes.

mod common;

use common::TestRegistry;
use common::http::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, assert_error};
use serde_json::json;

const FOUR_MIB: usize = 4 * 1024 * 1024;

/// Pushes the config and layer blobs of image `seed` into `name` without its
/// manifest.
fn push_blobs_of(base: &str, name: &str, seed: u64) -> http::Image {
    let image = http::build_image(seed);
    http::push_blob(base, name, &image.config);
    http::push_blob(base, name, &image.layer);
    image
}

/// A valid image manifest over the image's blobs with odd formatting: keys out
/// of the usual order, mixed whitespace, CRLF, a trailing newline.
fn oddly_formatted_manifest(image: &http::Image) -> Vec<u8> {
    format!(
        "{{\n  \"layers\" : [ {{\"size\":{},\"digest\":\"{}\",\"mediaType\":\"{}\"}} ],\r\n\t\"schemaVersion\":2,\
         \"config\":{{\"digest\":\"{}\",  \"mediaType\":\"{}\",\"size\":{}}},\n\"mediaType\":\"{}\",\
         \"annotations\":{{\"z\":\"last\",\"a\":\"first\"}}   }}\n\n",
        image.layer.len(),
        image.layer_digest,
        http::OCI_LAYER,
        image.config_digest,
        http::OCI_CONFIG,
        image.config.len(),
        OCI_MANIFEST
    )
    .into_bytes()
}

#[track_caller]
fn assert_manifest(resp: &http::Response, body: &[u8], media_type: &str) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body, "manifest bytes differ: {resp:?}");
    assert_eq!(resp.header("content-type"), Some(media_type), "{resp:?}");
    let digest = http::sha256_digest(body);
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(digest.as_str()),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{resp:?}"
    );
}

#[track_caller]
fn assert_manifest_unknown(base: &str, name: &str, reference: &str) {
    let url = http::manifest_url(base, name, reference);
    assert_error(&http::get(&url), 404, "MANIFEST_UNKNOWN");
    let resp = http::head(&url);
    assert_eq!(resp.status, 404, "HEAD {reference}: {resp:?}");
    assert!(resp.body.is_empty(), "{resp:?}");
}

// --- push ---------------------------------------------------------------------

// --- references to blobs and manifests -------------------------------------------

// --- invalid manifests -----------------------------------------------------------

// --- pull ----------------------------------------------------------------------------

// --- delete --------------------------------------------------------------------------

common::both_engines! {
#[test]
fn put_manifest_by_tag_is_201_with_location_and_digest() {
    let reg = TestRegistry::start();
    let image = push_blobs_of(&reg.url(), "lib/app", 1);
    let resp = http::put_manifest(&reg.url(), "lib/app", "v1", OCI_MANIFEST, &image.manifest);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.location(),
        format!("/v2/lib/app/manifests/{}", image.digest)
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    assert_eq!(
        resp.header("oci-subject"),
        None,
        "no subject was given: {resp:?}"
    );
}

#[test]
fn put_manifest_by_digest_is_201_and_creates_no_tag() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 2);
    let resp = http::put_manifest(
        &base,
        "lib/app",
        &image.digest,
        OCI_MANIFEST,
        &image.manifest,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.location(),
        format!("/v2/lib/app/manifests/{}", image.digest)
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &image.digest)),
        &image.manifest,
        OCI_MANIFEST,
    );
    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(tags.status, 200, "{tags:?}");
    assert_eq!(tags.json(), json!({"name": "lib/app", "tags": []}));
}

#[test]
fn put_manifest_by_digest_not_matching_the_body_is_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 3);
    let other = http::sha256_digest(b"not the manifest");
    let resp = http::put_manifest(&base, "lib/app", &other, OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_manifest_unknown(&base, "lib/app", &other);
    assert_manifest_unknown(&base, "lib/app", &image.digest);
}

#[test]
fn manifest_is_stored_byte_for_byte() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 4);
    let body = oddly_formatted_manifest(&image);
    let digest = http::sha256_digest(&body);
    let resp = http::put_manifest(&base, "lib/app", "odd", OCI_MANIFEST, &body);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));

    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "odd")),
        &body,
        OCI_MANIFEST,
    );
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &digest)),
        &body,
        OCI_MANIFEST,
    );
}

#[test]
fn manifest_with_unknown_fields_and_inline_data_is_accepted_verbatim() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 5);
    let mut config = http::descriptor(http::OCI_CONFIG, &image.config);
    config["data"] = json!("eyJhIjoxfQ==");
    config["newUnspecifiedField"] = json!("aGVsbG8gd29ybGQ=");
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [http::descriptor(http::OCI_LAYER, &image.layer)],
        "x-vendor-extension": {"nested": [1, 2, 3]},
    }))
    .unwrap();
    http::push_manifest(&base, "lib/app", "extra", OCI_MANIFEST, &body);
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "extra")),
        &body,
        OCI_MANIFEST,
    );
}

#[test]
fn manifest_with_no_layers_is_accepted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 6);
    // Like the conformance suite's: no mediaType field, empty layers.
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "config": http::descriptor(http::OCI_CONFIG, &image.config),
        "layers": [],
    }))
    .unwrap();
    let resp = http::put_manifest(&base, "lib/app", "empty", OCI_MANIFEST, &body);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "empty")),
        &body,
        OCI_MANIFEST,
    );
}

#[test]
fn the_same_manifest_can_carry_several_tags() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 7);
    for tag in ["test0", "test1", "test2", "test3"] {
        let resp = http::put_manifest(&base, "lib/app", tag, OCI_MANIFEST, &image.manifest);
        assert_eq!(resp.status, 201, "{resp:?}");
        assert_eq!(
            resp.location(),
            format!("/v2/lib/app/manifests/{}", image.digest)
        );
    }
    for tag in ["test0", "test1", "test2", "test3"] {
        assert_manifest(
            &http::get(&http::manifest_url(&base, "lib/app", tag)),
            &image.manifest,
            OCI_MANIFEST,
        );
    }
}

#[test]
fn valid_tag_forms_are_accepted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 8);
    let longest = format!("a{}", "b".repeat(127));
    for tag in [
        "latest",
        "1",
        "_private",
        "A.b-C_9",
        "v1.2.3-rc.1",
        "UPPER",
        longest.as_str(),
    ] {
        let resp = http::put_manifest(&base, "lib/app", tag, OCI_MANIFEST, &image.manifest);
        assert_eq!(resp.status, 201, "tag {tag}: {resp:?}");
        let resp = http::get(&http::manifest_url(&base, "lib/app", tag));
        assert_eq!(resp.status, 200, "tag {tag}: {resp:?}");
    }
}

#[test]
fn invalid_tags_on_put_are_400_tag_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 9);
    let too_long = "a".repeat(129);
    for tag in ["-bad", ".bad", "bad!", too_long.as_str()] {
        let resp = http::put_manifest(&base, "lib/app", tag, OCI_MANIFEST, &image.manifest);
        assert_error(&resp, 400, "TAG_INVALID");
    }
    // None of them created anything.
    assert_manifest_unknown(&base, "lib/app", &image.digest);
}

#[test]
fn put_with_colon_reference_that_is_no_digest_is_400_digest_invalid() {
    // `a:b` cannot be a tag (no ':' in tags), so it is read as a digest of
    // an unknown algorithm.
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 9);
    let resp = http::put_manifest(&base, "lib/app", "a:b", OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_manifest_unknown(&base, "lib/app", &image.digest);
}

#[test]
fn retagging_moves_the_tag_to_the_new_manifest() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let old = http::push_image(&base, "lib/app", Some("latest"), 10);
    let new = http::push_image(&base, "lib/app", Some("latest"), 11);
    assert_ne!(old.digest, new.digest);
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "latest")),
        &new.manifest,
        OCI_MANIFEST,
    );
    // The old manifest stays reachable by digest.
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &old.digest)),
        &old.manifest,
        OCI_MANIFEST,
    );
    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(tags.json(), json!({"name": "lib/app", "tags": ["latest"]}));
}

/// GETs are answered from what earlier GETs read while nothing has
/// committed since: each change below follows a read of what it changes.
#[test]
fn a_manifest_read_before_it_moves_or_goes_is_read_anew_after() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let latest = http::manifest_url(&base, "lib/app", "latest");
    let old = http::push_image(&base, "lib/app", Some("latest"), 12);
    for _ in 0..3 {
        assert_manifest(&http::get(&latest), &old.manifest, OCI_MANIFEST);
    }
    let new = http::push_image(&base, "lib/app", Some("latest"), 13);
    assert_manifest(&http::get(&latest), &new.manifest, OCI_MANIFEST);
    assert_eq!(http::delete(&latest).status, 202);
    assert_manifest_unknown(&base, "lib/app", "latest");
    let by_digest = http::manifest_url(&base, "lib/app", &old.digest);
    assert_manifest(&http::get(&by_digest), &old.manifest, OCI_MANIFEST);
    assert_eq!(http::delete(&by_digest).status, 202);
    assert_manifest_unknown(&base, "lib/app", &old.digest);
}

#[test]
fn manifest_exactly_4_mib_is_accepted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 12);
    let mut body = b"{".to_vec();
    body.resize(FOUR_MIB - (image.manifest.len() - 1), b' ');
    body.extend_from_slice(&image.manifest[1..]);
    assert_eq!(body.len(), FOUR_MIB);
    let resp = http::put_manifest(&base, "lib/app", "big", OCI_MANIFEST, &body);
    assert_eq!(resp.status, 201, "{resp:?}");
    let resp = http::get(&http::manifest_url(&base, "lib/app", "big"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), FOUR_MIB);
    assert_eq!(http::sha256_digest(&resp.body), http::sha256_digest(&body));
}

#[test]
fn manifest_over_4_mib_is_413_size_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 13);
    let mut body = b"{".to_vec();
    body.resize(FOUR_MIB + 1 - (image.manifest.len() - 1), b' ');
    body.extend_from_slice(&image.manifest[1..]);
    assert_eq!(body.len(), FOUR_MIB + 1);
    let resp = http::put_manifest(&base, "lib/app", "huge", OCI_MANIFEST, &body);
    assert_error(&resp, 413, "SIZE_INVALID");
    assert_manifest_unknown(&base, "lib/app", "huge");
}

#[test]
fn manifest_with_missing_config_blob_is_400_manifest_blob_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::build_image(20);
    http::push_blob(&base, "lib/app", &image.layer);
    let resp = http::put_manifest(&base, "lib/app", "v1", OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_manifest_unknown(&base, "lib/app", "v1");
}

#[test]
fn manifest_with_missing_layer_blob_is_400_manifest_blob_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::build_image(21);
    http::push_blob(&base, "lib/app", &image.config);
    let resp = http::put_manifest(&base, "lib/app", "v1", OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_manifest_unknown(&base, "lib/app", &image.digest);
}

#[test]
fn manifest_blobs_must_be_in_the_same_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "team/a", 22);
    let resp = http::put_manifest(&base, "team/b", "v1", OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn manifest_referencing_a_deleted_blob_is_400_manifest_blob_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 23);
    assert_eq!(
        http::delete(&http::blob_url(&base, "lib/app", &image.layer_digest)).status,
        202
    );
    let resp = http::put_manifest(&base, "lib/app", "v1", OCI_MANIFEST, &image.manifest);
    assert_error(&resp, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn manifest_with_mounted_blobs_is_accepted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "team/a", 24);
    for digest in [&image.config_digest, &image.layer_digest] {
        let url = http::with_query(
            &http::uploads_url(&base, "team/b"),
            &format!("mount={digest}&from=team/a"),
        );
        assert_eq!(http::post(&url, &[], b"").status, 201);
    }
    let resp = http::put_manifest(&base, "team/b", "v1", OCI_MANIFEST, &image.manifest);
    assert_eq!(resp.status, 201, "{resp:?}");
}

#[test]
fn index_over_present_manifests_is_201_and_served_as_an_index() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let amd = http::push_image(&base, "lib/app", None, 30);
    let arm = http::push_image(&base, "lib/app", None, 31);
    let mut d1 = amd.descriptor();
    d1["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut d2 = arm.descriptor();
    d2["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let index = http::image_index(&[d1, d2]);
    let digest = http::sha256_digest(&index);

    let resp = http::put_manifest(&base, "lib/app", "multi", OCI_INDEX, &index);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/lib/app/manifests/{digest}"));
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "multi")),
        &index,
        OCI_INDEX,
    );
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &digest)),
        &index,
        OCI_INDEX,
    );
}

#[test]
fn a_sparse_index_is_accepted_and_served_and_its_absent_child_is_404() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let present = http::push_image(&base, "lib/app", None, 32);
    let absent = push_blobs_of(&base, "lib/app", 33); // blobs, but no manifest
    let index = http::image_index(&[present.descriptor(), absent.descriptor()]);
    let resp = http::put_manifest(&base, "lib/app", "multi", OCI_INDEX, &index);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "multi")),
        &index,
        OCI_INDEX,
    );
    assert_manifest_unknown(&base, "lib/app", &absent.digest);

    // The child pushed later is served like any other manifest.
    let resp = http::put_manifest(
        &base,
        "lib/app",
        &absent.digest,
        OCI_MANIFEST,
        &absent.manifest,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &absent.digest)),
        &absent.manifest,
        OCI_MANIFEST,
    );
}

#[test]
fn a_sparse_index_does_not_reach_into_another_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let elsewhere = http::push_image(&base, "team/a", None, 34);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [elsewhere.descriptor()],
    }))
    .unwrap();
    let resp = http::put_manifest(&base, "team/b", "multi", DOCKER_LIST, &list);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_manifest_unknown(&base, "team/b", &elsewhere.digest);
}

#[test]
fn docker_v2_manifest_and_manifest_list_are_accepted_and_served_with_their_types() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = http::random_bytes(777, 35);
    http::push_blob(&base, "lib/docker", config);
    http::push_blob(&base, "lib/docker", &layer);
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": http::descriptor(http::DOCKER_CONFIG, config),
        "layers": [http::descriptor(http::DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    let digest = http::push_manifest(&base, "lib/docker", "v2", DOCKER_MANIFEST, &manifest);
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/docker", "v2")),
        &manifest,
        DOCKER_MANIFEST,
    );

    let mut entry = http::descriptor(DOCKER_MANIFEST, &manifest);
    entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [entry],
    }))
    .unwrap();
    let resp = http::put_manifest(&base, "lib/docker", "list", DOCKER_LIST, &list);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/docker", "list")),
        &list,
        DOCKER_LIST,
    );
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/docker", &digest)),
        &manifest,
        DOCKER_MANIFEST,
    );
}

#[test]
fn invalid_manifests_are_400_manifest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = push_blobs_of(&base, "lib/app", 40);
    let config = http::descriptor(http::OCI_CONFIG, &image.config);
    let layers = json!([http::descriptor(http::OCI_LAYER, &image.layer)]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"blablabla".to_vec()),
        ("truncated JSON", image.manifest[..image.manifest.len() / 2].to_vec()),
        ("empty body", Vec::new()),
        ("JSON array", b"[]".to_vec()),
        (
            "schemaVersion 1",
            serde_json::to_vec(&json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": config, "layers": layers})).unwrap(),
        ),
        (
            "no schemaVersion",
            serde_json::to_vec(&json!({"mediaType": OCI_MANIFEST, "config": config, "layers": layers})).unwrap(),
        ),
        (
            "no config",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers})).unwrap(),
        ),
    ];
    for (what, body) in cases {
        let resp = http::put_manifest(&base, "lib/app", "bad", OCI_MANIFEST, &body);
        assert_eq!(resp.status, 400, "{what}: {resp:?}");
        assert_error(&resp, 400, "MANIFEST_INVALID");
    }
    assert_manifest_unknown(&base, "lib/app", "bad");
}

#[test]
fn put_with_malformed_digest_reference_is_400_digest_invalid() {
    // The conformance suite's "400 response body should contain
    // OCI-conforming JSON message" request.
    let reg = TestRegistry::start();
    let resp = http::put_manifest(
        &reg.url(),
        "lib/app",
        "sha256:totallywrong",
        OCI_MANIFEST,
        b"blablabla",
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
}

#[test]
fn get_and_head_by_tag_and_by_digest() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("v1"), 50);
    for reference in ["v1", image.digest.as_str()] {
        let url = http::manifest_url(&base, "lib/app", reference);
        let resp = http::request("GET", &url, &[("Accept", OCI_MANIFEST)], b"");
        assert_manifest(&resp, &image.manifest, OCI_MANIFEST);

        let resp = http::request("HEAD", &url, &[("Accept", OCI_MANIFEST)], b"");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.body.is_empty(), "HEAD sent a body: {resp:?}");
        assert_eq!(resp.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            resp.header("docker-content-digest"),
            Some(image.digest.as_str())
        );
        assert_eq!(
            resp.header("content-length"),
            Some(image.manifest.len().to_string().as_str())
        );
    }
}

#[test]
fn get_without_accept_header_still_returns_the_stored_type() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("v1"), 51);
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "v1")),
        &image.manifest,
        OCI_MANIFEST,
    );
}

#[test]
fn unknown_tag_and_digest_are_404_manifest_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 52);
    assert_manifest_unknown(&base, "lib/app", "v2");
    assert_manifest_unknown(&base, "lib/app", &http::sha256_digest(b"hello world"));
    // And in a repository nobody used.
    assert_manifest_unknown(&base, "nobody/here", "latest");
}

#[test]
fn conformance_nonexistent_manifest_reference_is_404() {
    // The OCI conformance suite pulls ".INVALID_MANIFEST_NAME" (pull and push
    // workflows) and requires exactly 404 for GET and HEAD.
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 53);
    let url = http::manifest_url(&base, "lib/app", ".INVALID_MANIFEST_NAME");
    let resp = http::request("GET", &url, &[("Accept", OCI_MANIFEST)], b"");
    assert_eq!(resp.status, 404, "{resp:?}");
    let resp = http::head(&url);
    assert_eq!(resp.status, 404, "{resp:?}");
}

#[test]
fn malformed_digest_references_are_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 54);
    let upper = format!("sha256:{}", "A".repeat(64));
    for reference in ["sha256:abc", "sha256:totallywrong", upper.as_str()] {
        let url = http::manifest_url(&base, "lib/app", reference);
        assert_error(&http::get(&url), 400, "DIGEST_INVALID");
        assert_error(&http::delete(&url), 400, "DIGEST_INVALID");
        let resp = http::head(&url);
        assert_eq!(resp.status, 400, "HEAD {reference}: {resp:?}");
        assert!(resp.body.is_empty(), "{resp:?}");
    }
}

#[test]
fn delete_with_invalid_tag_is_400_tag_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 55);
    let too_long = "a".repeat(129);
    for tag in ["-bad", too_long.as_str()] {
        assert_error(
            &http::delete(&http::manifest_url(&base, "lib/app", tag)),
            400,
            "TAG_INVALID",
        );
    }
}

#[test]
fn subject_is_echoed_in_oci_subject_even_when_absent_from_the_registry() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let subject = http::build_image(60); // never pushed
    let artifact = br#"{"signature":"..."}"#;
    http::push_blob(&base, "lib/app", b"{}");
    http::push_blob(&base, "lib/app", artifact);
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": http::descriptor(http::OCI_EMPTY, b"{}"),
        "layers": [http::descriptor("application/vnd.example.signature", artifact)],
        "subject": subject.descriptor(),
    }))
    .unwrap();
    let digest = http::sha256_digest(&body);
    let resp = http::put_manifest(&base, "lib/app", &digest, OCI_MANIFEST, &body);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.header("oci-subject"),
        Some(subject.digest.as_str()),
        "{resp:?}"
    );
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &digest)),
        &body,
        OCI_MANIFEST,
    );
}

#[test]
fn index_with_subject_is_echoed_in_oci_subject() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let subject = http::push_image(&base, "lib/app", Some("v1"), 61);
    let child = http::push_image(&base, "lib/app", None, 62);
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.descriptor()],
        "subject": subject.descriptor(),
    }))
    .unwrap();
    let resp = http::put_manifest(
        &base,
        "lib/app",
        &http::sha256_digest(&body),
        OCI_INDEX,
        &body,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.header("oci-subject"),
        Some(subject.digest.as_str()),
        "{resp:?}"
    );
}

#[test]
fn delete_by_digest_removes_the_manifest_and_every_tag_pointing_to_it() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("t1"), 70);
    http::push_manifest(&base, "lib/app", "t2", OCI_MANIFEST, &image.manifest);
    let other = http::push_image(&base, "lib/app", Some("other"), 71);

    let resp = http::delete(&http::manifest_url(&base, "lib/app", &image.digest));
    assert_eq!(resp.status, 202, "{resp:?}");

    assert_manifest_unknown(&base, "lib/app", &image.digest);
    assert_manifest_unknown(&base, "lib/app", "t1");
    assert_manifest_unknown(&base, "lib/app", "t2");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "other")),
        &other.manifest,
        OCI_MANIFEST,
    );
    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(tags.json(), json!({"name": "lib/app", "tags": ["other"]}));
    // Deleting it again finds nothing.
    assert_error(
        &http::delete(&http::manifest_url(&base, "lib/app", &image.digest)),
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn delete_by_tag_removes_only_the_tag() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("t1"), 72);
    http::push_manifest(&base, "lib/app", "t2", OCI_MANIFEST, &image.manifest);

    let resp = http::delete(&http::manifest_url(&base, "lib/app", "t1"));
    assert_eq!(resp.status, 202, "{resp:?}");

    assert_manifest_unknown(&base, "lib/app", "t1");
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "t2")),
        &image.manifest,
        OCI_MANIFEST,
    );
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", &image.digest)),
        &image.manifest,
        OCI_MANIFEST,
    );
    let tags = http::get(&format!("{base}/v2/lib/app/tags/list"));
    assert_eq!(tags.json(), json!({"name": "lib/app", "tags": ["t2"]}));
    assert_error(
        &http::delete(&http::manifest_url(&base, "lib/app", "t1")),
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn delete_unknown_manifest_is_404_manifest_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 73);
    assert_error(
        &http::delete(&http::manifest_url(&base, "lib/app", "nope")),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        &http::delete(&http::manifest_url(
            &base,
            "lib/app",
            &http::sha256_digest(b"nope"),
        )),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        &http::delete(&http::manifest_url(&base, "nobody/here", "v1")),
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn deleted_manifest_can_be_pushed_again() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("v1"), 74);
    assert_eq!(
        http::delete(&http::manifest_url(&base, "lib/app", &image.digest)).status,
        202
    );
    http::push_manifest(&base, "lib/app", "v1", OCI_MANIFEST, &image.manifest);
    assert_manifest(
        &http::get(&http::manifest_url(&base, "lib/app", "v1")),
        &image.manifest,
        OCI_MANIFEST,
    );
}

#[test]
fn manifests_are_scoped_to_their_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "team/a", Some("v1"), 75);
    http::push_image(&base, "team/b", Some("other"), 76);
    assert_manifest_unknown(&base, "team/b", &image.digest);
    assert_manifest_unknown(&base, "team/b", "v1");
    // Deleting in b does not touch a.
    assert_error(
        &http::delete(&http::manifest_url(&base, "team/b", &image.digest)),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_eq!(
        http::get(&http::manifest_url(&base, "team/a", "v1")).status,
        200
    );
}
}
