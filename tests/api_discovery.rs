//! Content discovery: tags/list, _catalog, referrers.

mod common;

use common::TestRegistry;
use common::http::{self, OCI_INDEX, OCI_MANIFEST, assert_error};
use serde_json::{Value, json};

/// Tags `image` (already pushed) with each of `tags`.
fn tag_all(base: &str, name: &str, image: &http::Image, tags: &[&str]) {
    for tag in tags {
        http::push_manifest(base, name, tag, OCI_MANIFEST, &image.manifest);
    }
}

fn tags_url(base: &str, name: &str, query: &str) -> String {
    let url = format!("{base}/v2/{name}/tags/list");
    if query.is_empty() {
        url
    } else {
        http::with_query(&url, query)
    }
}

fn catalog_url(base: &str, query: &str) -> String {
    let url = format!("{base}/v2/_catalog");
    if query.is_empty() {
        url
    } else {
        http::with_query(&url, query)
    }
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(resp: &http::Response) -> Option<String> {
    let link = resp.header("link")?;
    assert!(
        link.ends_with(r#">; rel="next""#),
        "odd Link header {link:?}"
    );
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    Some(link[start..end].to_owned())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

// --- tags/list -----------------------------------------------------------------

// --- _catalog ----------------------------------------------------------------------------

// --- referrers ----------------------------------------------------------------------------

const TYPE_A: &str = "application/vnd.example.peanut.butter";
const TYPE_B: &str = "application/vnd.example.strawberry.jam";
const TYPE_INDEX: &str = "application/vnd.example.food.stand";
const NOTE: &str = "org.example.note";

/// The pushed fixtures for the referrers tests.
struct Referrers {
    subject: http::Image,
    /// (manifest bytes, media type, expected artifactType, annotation value)
    referrers: Vec<(Vec<u8>, &'static str, &'static str, &'static str)>,
    /// A referrer of a subject that was never pushed.
    orphan: Vec<u8>,
    orphan_subject: String,
}

fn manifest_bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Pushes a subject image and five referrers of it to `name`, as the
/// conformance suite does: two with the artifact type in config.mediaType,
/// two in artifactType (config is the empty descriptor), and one index.
fn push_referrers(base: &str, name: &str) -> Referrers {
    let subject = http::push_image(base, name, Some("subject"), 100);
    let empty = http::descriptor(http::OCI_EMPTY, b"{}");
    let blob_a = b"peanut butter on my bagel".to_vec();
    let blob_b = b"strawberry jam on my croissant".to_vec();
    http::push_blob(base, name, b"{}");
    http::push_blob(base, name, &blob_a);
    http::push_blob(base, name, &blob_b);

    let config_a = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": http::descriptor(TYPE_A, &blob_a),
        "layers": [empty],
        "subject": subject.descriptor(),
        "annotations": {NOTE: "config a"},
    }));
    let config_b = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": http::descriptor(TYPE_B, &blob_b),
        "layers": [empty],
        "subject": subject.descriptor(),
        "annotations": {NOTE: "config b"},
    }));
    let layer_a = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": TYPE_A,
        "config": empty,
        "layers": [http::descriptor(TYPE_A, &blob_a)],
        "subject": subject.descriptor(),
        "annotations": {NOTE: "layer a"},
    }));
    let layer_b = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": TYPE_B,
        "config": empty,
        "layers": [http::descriptor(TYPE_B, &blob_b)],
        "subject": subject.descriptor(),
        "annotations": {NOTE: "layer b"},
    }));
    for body in [&config_a, &config_b, &layer_a, &layer_b] {
        let resp = http::put_manifest(base, name, &http::sha256_digest(body), OCI_MANIFEST, body);
        assert_eq!(resp.status, 201, "{resp:?}");
        assert_eq!(
            resp.header("oci-subject"),
            Some(subject.digest.as_str()),
            "{resp:?}"
        );
    }
    let index = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "artifactType": TYPE_INDEX,
        "manifests": [http::descriptor(OCI_MANIFEST, &config_a), http::descriptor(OCI_MANIFEST, &layer_a)],
        "subject": subject.descriptor(),
        "annotations": {NOTE: "index"},
    }));
    let resp = http::put_manifest(base, name, &http::sha256_digest(&index), OCI_INDEX, &index);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.header("oci-subject"),
        Some(subject.digest.as_str()),
        "{resp:?}"
    );

    let missing = http::build_image(101);
    let orphan = manifest_bytes(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": TYPE_B,
        "config": empty,
        "layers": [http::descriptor(TYPE_B, &blob_b)],
        "subject": missing.descriptor(),
    }));
    let resp = http::put_manifest(
        base,
        name,
        &http::sha256_digest(&orphan),
        OCI_MANIFEST,
        &orphan,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.header("oci-subject"),
        Some(missing.digest.as_str()),
        "{resp:?}"
    );

    Referrers {
        subject,
        referrers: vec![
            (config_a, OCI_MANIFEST, TYPE_A, "config a"),
            (config_b, OCI_MANIFEST, TYPE_B, "config b"),
            (layer_a, OCI_MANIFEST, TYPE_A, "layer a"),
            (layer_b, OCI_MANIFEST, TYPE_B, "layer b"),
            (index, OCI_INDEX, TYPE_INDEX, "index"),
        ],
        orphan,
        orphan_subject: missing.digest,
    }
}

fn referrers_url(base: &str, name: &str, digest: &str) -> String {
    format!("{base}/v2/{name}/referrers/{digest}")
}

/// Checks the index envelope and returns its descriptors sorted by digest.
#[track_caller]
fn referrers_index(resp: &http::Response) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some(OCI_INDEX), "{resp:?}");
    let body = resp.json();
    assert_eq!(body["schemaVersion"], 2, "{resp:?}");
    assert_eq!(body["mediaType"], OCI_INDEX, "{resp:?}");
    let mut manifests = body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array: {resp:?}"))
        .clone();
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    manifests
}

/// The descriptor the referrers API must list for a manifest.
fn expected_descriptor(
    body: &[u8],
    media_type: &str,
    artifact_type: &str,
    note: Option<&str>,
) -> Value {
    let mut d = http::descriptor(media_type, body);
    d["artifactType"] = json!(artifact_type);
    if let Some(note) = note {
        d["annotations"] = json!({NOTE: note});
    }
    d
}

#[track_caller]
fn assert_descriptors(actual: &[Value], expected: &[Value]) {
    let mut expected = expected.to_vec();
    expected.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    assert_eq!(actual.len(), expected.len(), "referrers: {actual:#?}");
    for (a, e) in actual.iter().zip(&expected) {
        for key in ["mediaType", "digest", "size", "artifactType"] {
            assert_eq!(a[key], e[key], "{key} of {a}");
        }
        match e.get("annotations") {
            Some(annotations) => assert_eq!(&a["annotations"], annotations, "annotations of {a}"),
            None => assert!(
                a.get("annotations")
                    .is_none_or(|v| v.is_null() || v.as_object().is_some_and(|o| o.is_empty())),
                "annotations where the manifest has none: {a}"
            ),
        }
    }
}

common::both_engines! {
#[test]
fn tags_list_is_sorted_and_names_the_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("b"), 1);
    tag_all(&base, "lib/app", &image, &["a", "C", "1.0", "a-1", "_z"]);
    let resp = http::get(&tags_url(&base, "lib/app", ""));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("link"), None, "{resp:?}");
    assert_eq!(
        resp.json(),
        json!({"name": "lib/app", "tags": ["1.0", "C", "_z", "a", "a-1", "b"]})
    );
}

#[test]
fn tags_list_includes_tags_of_every_manifest_in_the_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "x/y/z", Some("one"), 2);
    http::push_image(&base, "x/y/z", Some("two"), 3);
    http::push_image(&base, "x/y", Some("not-in-z"), 4);
    let resp = http::get(&tags_url(&base, "x/y/z", ""));
    assert_eq!(
        resp.json(),
        json!({"name": "x/y/z", "tags": ["one", "two"]})
    );
}

#[test]
fn tags_list_n_limits_and_links_to_the_next_page() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("test0"), 5);
    tag_all(&base, "lib/app", &image, &["test1", "test2", "test3"]);

    let resp = http::get(&tags_url(&base, "lib/app", "n=2"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json(),
        json!({"name": "lib/app", "tags": ["test0", "test1"]})
    );
    assert_eq!(
        resp.header("link"),
        Some(r#"</v2/lib/app/tags/list?last=test1&n=2>; rel="next""#),
        "{resp:?}"
    );

    let resp = http::get(&http::resolve(&base, &next_link(&resp).unwrap()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json(),
        json!({"name": "lib/app", "tags": ["test2", "test3"]})
    );
    assert_eq!(resp.header("link"), None, "nothing remains: {resp:?}");
}

#[test]
fn following_tags_links_visits_every_tag_once() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("t00"), 6);
    let mut expected: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    tag_all(&base, "lib/app", &image, &refs[1..]);
    expected.sort();

    let mut seen = Vec::new();
    let mut url = tags_url(&base, "lib/app", "n=3");
    let mut pages = 0;
    loop {
        let resp = http::get(&url);
        assert_eq!(resp.status, 200, "{resp:?}");
        let tags = strings(&resp.json()["tags"]);
        assert!(tags.len() <= 3, "{resp:?}");
        seen.extend(tags);
        pages += 1;
        match next_link(&resp) {
            Some(link) => url = http::resolve(&base, &link),
            None => break,
        }
        assert!(pages < 10, "too many pages");
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4);
}

#[test]
fn tags_list_last_starts_after_the_given_tag() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("a"), 7);
    tag_all(&base, "lib/app", &image, &["b", "c", "d"]);

    let resp = http::get(&tags_url(&base, "lib/app", "last=b"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": ["c", "d"]}));
    assert_eq!(resp.header("link"), None, "{resp:?}");

    // `last` need not be an existing tag.
    let resp = http::get(&tags_url(&base, "lib/app", "last=b0"));
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": ["c", "d"]}));

    let resp = http::get(&tags_url(&base, "lib/app", "n=1&last=a"));
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": ["b"]}));
    assert_eq!(
        resp.header("link"),
        Some(r#"</v2/lib/app/tags/list?last=b&n=1>; rel="next""#),
        "{resp:?}"
    );
}

#[test]
fn tags_list_n_equal_to_the_remaining_count_has_no_link() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("a"), 8);
    tag_all(&base, "lib/app", &image, &["b", "c"]);
    for query in ["n=3", "n=100", "n=2&last=a"] {
        let resp = http::get(&tags_url(&base, "lib/app", query));
        assert_eq!(resp.status, 200, "{query}: {resp:?}");
        assert_eq!(resp.header("link"), None, "{query}: {resp:?}");
    }
    let resp = http::get(&tags_url(&base, "lib/app", "n=3"));
    assert_eq!(
        resp.json(),
        json!({"name": "lib/app", "tags": ["a", "b", "c"]})
    );
}

#[test]
fn tags_list_n_zero_is_an_empty_list_without_link() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("a"), 9);
    let resp = http::get(&tags_url(&base, "lib/app", "n=0"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": []}));
    assert_eq!(resp.header("link"), None, "{resp:?}");
}

#[test]
fn tags_list_last_past_the_end_is_empty() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("a"), 10);
    let resp = http::get(&tags_url(&base, "lib/app", "last=zzz"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": []}));
    assert_eq!(resp.header("link"), None, "{resp:?}");
}

#[test]
fn tags_list_of_unknown_repository_is_404_name_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("a"), 11);
    assert_error(
        &http::get(&tags_url(&base, "nobody/here", "")),
        404,
        "NAME_UNKNOWN",
    );
    assert_error(&http::get(&tags_url(&base, "lib", "")), 404, "NAME_UNKNOWN");
    assert_error(
        &http::get(&tags_url(&base, "lib/app/sub", "")),
        404,
        "NAME_UNKNOWN",
    );
}

#[test]
fn tags_list_of_repository_with_only_blobs_is_404_name_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "lib/blobs-only", b"just a blob");
    assert_error(
        &http::get(&tags_url(&base, "lib/blobs-only", "")),
        404,
        "NAME_UNKNOWN",
    );
}

#[test]
fn tags_list_invalid_n_is_400_pagination_number_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("a"), 12);
    for n in ["-1", "abc", "1.5"] {
        let resp = http::get(&tags_url(&base, "lib/app", &format!("n={n}")));
        assert_error(&resp, 400, "PAGINATION_NUMBER_INVALID");
    }
}

#[test]
fn tags_list_reflects_tag_and_manifest_deletion() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("keep"), 13);
    let doomed = http::push_image(&base, "lib/app", Some("doomed"), 14);
    tag_all(&base, "lib/app", &image, &["drop"]);
    let resp = http::get(&tags_url(&base, "lib/app", ""));
    assert_eq!(strings(&resp.json()["tags"]), ["doomed", "drop", "keep"]);

    assert_eq!(
        http::delete(&http::manifest_url(&base, "lib/app", "drop")).status,
        202
    );
    assert_eq!(
        http::delete(&http::manifest_url(&base, "lib/app", &doomed.digest)).status,
        202
    );
    let resp = http::get(&tags_url(&base, "lib/app", ""));
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": ["keep"]}));
}

#[test]
fn catalog_of_an_empty_registry_is_empty() {
    let reg = TestRegistry::start();
    let resp = http::get(&catalog_url(&reg.url(), ""));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"repositories": []}));
    assert_eq!(resp.header("link"), None, "{resp:?}");
}

#[test]
fn catalog_lists_every_repository_with_a_blob_or_manifest_sorted() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "zeta", b"z");
    http::push_image(&base, "alpha/one", Some("v1"), 20);
    http::push_blob(&base, "beta", b"b");
    http::push_blob(&base, "alpha", b"a");
    http::push_blob_put(&base, "gamma/x/y", b"g");
    let resp = http::get(&catalog_url(&base, ""));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json(),
        json!({"repositories": ["alpha", "alpha/one", "beta", "gamma/x/y", "zeta"]})
    );
}

#[test]
fn catalog_n_limits_and_links_to_the_next_page() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for name in ["e", "d", "c", "b", "a"] {
        http::push_blob(&base, name, name.as_bytes());
    }
    let resp = http::get(&catalog_url(&base, "n=2"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"repositories": ["a", "b"]}));
    assert_eq!(
        resp.header("link"),
        Some(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
        "{resp:?}"
    );

    let resp = http::get(&http::resolve(&base, &next_link(&resp).unwrap()));
    assert_eq!(resp.json(), json!({"repositories": ["c", "d"]}));
    assert_eq!(
        resp.header("link"),
        Some(r#"</v2/_catalog?last=d&n=2>; rel="next""#),
        "{resp:?}"
    );

    let resp = http::get(&http::resolve(&base, &next_link(&resp).unwrap()));
    assert_eq!(resp.json(), json!({"repositories": ["e"]}));
    assert_eq!(resp.header("link"), None, "{resp:?}");
}

#[test]
fn catalog_last_n_zero_and_past_the_end() {
    let reg = TestRegistry::start();
    let base = reg.url();
    for name in ["a", "b", "c"] {
        http::push_blob(&base, name, name.as_bytes());
    }
    let resp = http::get(&catalog_url(&base, "last=a"));
    assert_eq!(resp.json(), json!({"repositories": ["b", "c"]}));
    assert_eq!(resp.header("link"), None, "{resp:?}");

    let resp = http::get(&catalog_url(&base, "n=0"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"repositories": []}));
    assert_eq!(resp.header("link"), None, "{resp:?}");

    let resp = http::get(&catalog_url(&base, "last=zzz"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"repositories": []}));

    let resp = http::get(&catalog_url(&base, "n=3"));
    assert_eq!(resp.json(), json!({"repositories": ["a", "b", "c"]}));
    assert_eq!(resp.header("link"), None, "{resp:?}");
}

#[test]
fn catalog_invalid_n_is_400_pagination_number_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "a", b"a");
    for n in ["-1", "abc"] {
        assert_error(
            &http::get(&catalog_url(&base, &format!("n={n}"))),
            400,
            "PAGINATION_NUMBER_INVALID",
        );
    }
}

#[test]
fn referrers_of_unknown_digest_is_an_empty_index() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 110);
    let resp = http::get(&referrers_url(
        &base,
        "lib/app",
        &http::sha256_digest(b"hello world"),
    ));
    assert!(referrers_index(&resp).is_empty(), "{resp:?}");
    assert_eq!(resp.header("oci-filters-applied"), None, "{resp:?}");
    // Also in a repository nobody used.
    let resp = http::get(&referrers_url(
        &base,
        "nobody/here",
        &http::sha256_digest(b"x"),
    ));
    assert!(referrers_index(&resp).is_empty(), "{resp:?}");
}

#[test]
fn referrers_lists_every_manifest_and_index_with_the_subject() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let resp = http::get(&referrers_url(&base, "lib/app", &fx.subject.digest));
    let actual = referrers_index(&resp);
    let expected: Vec<Value> = fx
        .referrers
        .iter()
        .map(|(body, mt, at, note)| expected_descriptor(body, mt, at, Some(note)))
        .collect();
    assert_descriptors(&actual, &expected);
    assert_eq!(resp.header("oci-filters-applied"), None, "{resp:?}");
}

#[test]
fn referrers_filter_by_artifact_type() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let url = http::with_query(
        &referrers_url(&base, "lib/app", &fx.subject.digest),
        &format!("artifactType={TYPE_A}"),
    );
    let resp = http::get(&url);
    let actual = referrers_index(&resp);
    assert_eq!(
        resp.header("oci-filters-applied"),
        Some("artifactType"),
        "{resp:?}"
    );
    let expected: Vec<Value> = fx
        .referrers
        .iter()
        .filter(|(_, _, at, _)| *at == TYPE_A)
        .map(|(body, mt, at, note)| expected_descriptor(body, mt, at, Some(note)))
        .collect();
    assert_eq!(expected.len(), 2);
    assert_descriptors(&actual, &expected);

    let url = http::with_query(
        &referrers_url(&base, "lib/app", &fx.subject.digest),
        &format!("artifactType={TYPE_INDEX}"),
    );
    let resp = http::get(&url);
    let actual = referrers_index(&resp);
    assert_eq!(actual.len(), 1, "{resp:?}");
    assert_eq!(actual[0]["mediaType"], OCI_INDEX);
}

#[test]
fn referrers_filter_without_match_is_empty_with_filter_header() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let url = http::with_query(
        &referrers_url(&base, "lib/app", &fx.subject.digest),
        "artifactType=application/vnd.example.nothing",
    );
    let resp = http::get(&url);
    assert!(referrers_index(&resp).is_empty(), "{resp:?}");
    assert_eq!(
        resp.header("oci-filters-applied"),
        Some("artifactType"),
        "{resp:?}"
    );
}

#[test]
fn referrers_of_a_subject_never_pushed_are_listed() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let resp = http::get(&referrers_url(&base, "lib/app", &fx.orphan_subject));
    let actual = referrers_index(&resp);
    assert_descriptors(
        &actual,
        &[expected_descriptor(&fx.orphan, OCI_MANIFEST, TYPE_B, None)],
    );
}

#[test]
fn deleted_referrer_disappears_from_the_list() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let (gone, ..) = &fx.referrers[2];
    let resp = http::delete(&http::manifest_url(
        &base,
        "lib/app",
        &http::sha256_digest(gone),
    ));
    assert_eq!(resp.status, 202, "{resp:?}");

    let resp = http::get(&referrers_url(&base, "lib/app", &fx.subject.digest));
    let actual = referrers_index(&resp);
    let expected: Vec<Value> = fx
        .referrers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, (body, mt, at, note))| expected_descriptor(body, mt, at, Some(note)))
        .collect();
    assert_descriptors(&actual, &expected);
}

#[test]
fn deleting_only_a_referrers_tag_keeps_it_listed() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "lib/app");
    let (body, ..) = &fx.referrers[0];
    http::push_manifest(&base, "lib/app", "sig", OCI_MANIFEST, body);
    assert_eq!(
        http::delete(&http::manifest_url(&base, "lib/app", "sig")).status,
        202
    );
    let resp = http::get(&referrers_url(&base, "lib/app", &fx.subject.digest));
    assert_eq!(referrers_index(&resp).len(), 5, "{resp:?}");
}

#[test]
fn referrers_are_scoped_to_the_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let fx = push_referrers(&base, "team/a");
    http::push_blob(&base, "team/b", b"b exists");
    let resp = http::get(&referrers_url(&base, "team/b", &fx.subject.digest));
    assert!(referrers_index(&resp).is_empty(), "{resp:?}");
}

#[test]
fn referrers_with_malformed_digest_is_400_digest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_image(&base, "lib/app", Some("v1"), 120);
    for digest in [
        "sha256:abc",
        "latest",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        assert_error(
            &http::get(&referrers_url(&base, "lib/app", digest)),
            400,
            "DIGEST_INVALID",
        );
    }
}

#[test]
fn following_catalog_links_with_nested_names_visits_every_repository_once() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let mut expected = vec!["lib/a", "lib/a/b", "lib/b", "org/team/app", "z"];
    for name in &expected {
        http::push_blob(&base, name, name.as_bytes());
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut url = catalog_url(&base, "n=2");
    for _ in 0..10 {
        let resp = http::get(&url);
        assert_eq!(resp.status, 200, "{resp:?}");
        seen.extend(strings(&resp.json()["repositories"]));
        match next_link(&resp) {
            Some(link) => {
                assert!(link.starts_with("/v2/_catalog?"), "{link}");
                url = http::resolve(&base, &link);
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

/// No name, tag or artifact type holds a NUL, but a query may: it is a
/// position or a filter like any other, never a storage error (the
/// clustered store's PostgreSQL refuses NUL in text).
#[test]
fn a_nul_in_a_query_is_a_position_or_a_filter_like_any_other() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("a"), 7);
    tag_all(&base, "lib/app", &image, &["b", "c"]);
    let resp = http::get(&tags_url(&base, "lib/app", "last=b%00x"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"name": "lib/app", "tags": ["c"]}));
    let resp = http::get(&catalog_url(&base, "last=lib%00"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(strings(&resp.json()["repositories"]), ["lib/app"]);
    let resp = http::get(&format!(
        "{}?artifactType=a%00b",
        referrers_url(&base, "lib/app", &image.digest)
    ));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(referrers_index(&resp), Vec::<Value>::new());
}

/// An artifact type is a media type: one with a control character in it
/// is no manifest to keep.
#[test]
fn a_manifest_whose_artifact_type_holds_a_control_character_is_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, "lib/app", Some("a"), 8);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [image.descriptor()],
    }))
    .unwrap();
    for field in ["artifactType", "config", "index"] {
        let source = if field == "index" { &index } else { &image.manifest };
        let mut doc: Value = serde_json::from_slice(source).unwrap();
        // serde_json writes the NUL as \u0000.
        let bad = Value::String("application/x\u{0}y".into());
        match field {
            "config" => doc["config"]["mediaType"] = bad,
            _ => doc["artifactType"] = bad,
        }
        let body = serde_json::to_vec(&doc).unwrap();
        let media_type = doc["mediaType"].as_str().unwrap_or(http::OCI_MANIFEST);
        let resp = http::put_manifest(&base, "lib/app", "bad", media_type, &body);
        assert_error(&resp, 400, "MANIFEST_INVALID");
    }
}
}
