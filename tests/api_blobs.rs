//! Pulling and deleting blobs: HEAD, GET, ranges, repository isolation.

mod common;

use common::TestRegistry;
use common::http::{self, assert_error};

fn content_length(resp: &http::Response) -> u64 {
    resp.must_header("content-length")
        .parse()
        .unwrap_or_else(|_| panic!("bad Content-Length: {resp:?}"))
}

common::both_engines! {
#[test]
fn head_existing_blob_gives_size_digest_and_accept_ranges_without_body() {
    let reg = TestRegistry::start();
    let data = http::random_bytes(12_345, 1);
    let digest = http::push_blob(&reg.url(), "lib/app", &data);

    let resp = http::head(&http::blob_url(&reg.url(), "lib/app", &digest));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(content_length(&resp), 12_345);
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(resp.header("accept-ranges"), Some("bytes"));
    assert!(resp.body.is_empty(), "HEAD sent a body: {resp:?}");
}

#[test]
fn get_existing_blob_returns_exact_bytes_as_octet_stream() {
    let reg = TestRegistry::start();
    let data = http::random_bytes(54_321, 2);
    let digest = http::push_blob(&reg.url(), "lib/app", &data);

    let resp = http::get(&http::blob_url(&reg.url(), "lib/app", &digest));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(content_length(&resp), data.len() as u64);
    if let Some(d) = resp.header("docker-content-digest") {
        assert_eq!(d, digest);
    }
    assert!(resp.body == data, "blob bytes differ");
}

#[test]
fn get_large_blob_round_trips() {
    let reg = TestRegistry::start();
    let data = http::random_bytes(3 * 1024 * 1024 + 17, 3);
    let digest = http::push_blob(&reg.url(), "lib/big", &data);

    let resp = http::get(&http::blob_url(&reg.url(), "lib/big", &digest));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), data.len());
    assert_eq!(http::sha256_digest(&resp.body), digest);
}

#[test]
fn head_unknown_blob_is_404_without_body() {
    let reg = TestRegistry::start();
    http::push_blob(&reg.url(), "lib/app", b"something else");
    let digest = http::sha256_digest(b"hello world");
    let resp = http::head(&http::blob_url(&reg.url(), "lib/app", &digest));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(resp.body.is_empty(), "HEAD sent a body: {resp:?}");
}

#[test]
fn get_unknown_blob_is_404_blob_unknown() {
    let reg = TestRegistry::start();
    http::push_blob(&reg.url(), "lib/app", b"something else");
    let digest = http::sha256_digest(b"hello world");
    let resp = http::get(&http::blob_url(&reg.url(), "lib/app", &digest));
    assert_error(&resp, 404, "BLOB_UNKNOWN");
}

#[test]
fn get_blob_in_never_used_repository_is_404_blob_unknown() {
    let reg = TestRegistry::start();
    let digest = http::sha256_digest(b"hello world");
    assert_error(
        &http::get(&http::blob_url(&reg.url(), "nobody/here", &digest)),
        404,
        "BLOB_UNKNOWN",
    );
    assert_eq!(
        http::head(&http::blob_url(&reg.url(), "nobody/here", &digest)).status,
        404
    );
}

#[test]
fn range_request_returns_206_with_content_range_and_those_bytes() {
    let reg = TestRegistry::start();
    let data: Vec<u8> = (0..100u8).collect();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    let resp = http::request("GET", &url, &[("Range", "bytes=10-19")], b"");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(content_length(&resp), 10);
    assert_eq!(resp.body, &data[10..20]);

    let resp = http::request("GET", &url, &[("Range", "bytes=0-0")], b"");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 0-0/100"));
    assert_eq!(resp.body, &data[0..1]);

    let resp = http::request("GET", &url, &[("Range", "bytes=99-99")], b"");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 99-99/100"));
    assert_eq!(resp.body, &data[99..]);
}

#[test]
fn open_ended_range_returns_the_rest_of_the_blob() {
    let reg = TestRegistry::start();
    let data: Vec<u8> = (0..100u8).collect();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    let resp = http::request("GET", &url, &[("Range", "bytes=42-")], b"");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 42-99/100"));
    assert_eq!(content_length(&resp), 58);
    assert_eq!(resp.body, &data[42..]);
}

#[test]
fn range_ending_past_the_blob_is_clamped_to_its_end() {
    // RFC 9110 14.1.2: a last-pos past the end means "up to the end".
    let reg = TestRegistry::start();
    let data: Vec<u8> = (0..100u8).collect();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    let resp = http::request("GET", &url, &[("Range", "bytes=90-1000")], b"");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 90-99/100"));
    assert_eq!(resp.body, &data[90..]);
}

#[test]
fn unsatisfiable_range_is_416() {
    let reg = TestRegistry::start();
    let data: Vec<u8> = (0..100u8).collect();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    for range in ["bytes=100-", "bytes=100-200", "bytes=500-600"] {
        let resp = http::request("GET", &url, &[("Range", range)], b"");
        // Not BLOB_UNKNOWN: the blob is there, and a client told so may
        // push it again or give up on it.
        assert_error(&resp, 416, "RANGE_INVALID");
        assert_eq!(
            resp.header("content-range"),
            Some("bytes */100"),
            "{resp:?}"
        );
    }
}

#[test]
fn delete_blob_is_202_and_then_it_is_gone_from_that_repository() {
    let reg = TestRegistry::start();
    let data = b"short-lived".to_vec();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    let resp = http::delete(&url);
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = http::head(&url);
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_error(&http::get(&url), 404, "BLOB_UNKNOWN");
    // And a second delete finds nothing.
    assert_error(&http::delete(&url), 404, "BLOB_UNKNOWN");
}

#[test]
fn delete_unknown_blob_is_404_blob_unknown() {
    let reg = TestRegistry::start();
    http::push_blob(&reg.url(), "lib/app", b"other");
    let digest = http::sha256_digest(b"never pushed");
    assert_error(
        &http::delete(&http::blob_url(&reg.url(), "lib/app", &digest)),
        404,
        "BLOB_UNKNOWN",
    );
}

#[test]
fn deleting_a_blob_in_one_repository_leaves_it_in_another() {
    let reg = TestRegistry::start();
    let data = b"shared content".to_vec();
    let digest = http::push_blob(&reg.url(), "team/a", &data);
    http::push_blob(&reg.url(), "team/b", &data);

    assert_eq!(
        http::delete(&http::blob_url(&reg.url(), "team/a", &digest)).status,
        202
    );
    assert_eq!(
        http::head(&http::blob_url(&reg.url(), "team/a", &digest)).status,
        404
    );
    let resp = http::get(&http::blob_url(&reg.url(), "team/b", &digest));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, data);
}

#[test]
fn deleted_blob_can_be_pushed_again() {
    let reg = TestRegistry::start();
    let data = b"phoenix".to_vec();
    let digest = http::push_blob(&reg.url(), "lib/app", &data);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);
    assert_eq!(http::delete(&url).status, 202);
    assert_eq!(http::push_blob_put(&reg.url(), "lib/app", &data), digest);
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, data);
}

#[test]
fn blob_pushed_into_one_repository_is_not_visible_in_another() {
    let reg = TestRegistry::start();
    let digest = http::push_blob(&reg.url(), "team/a", b"private to a");
    http::push_blob(&reg.url(), "team/b", b"something in b");

    let resp = http::head(&http::blob_url(&reg.url(), "team/b", &digest));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_error(
        &http::get(&http::blob_url(&reg.url(), "team/b", &digest)),
        404,
        "BLOB_UNKNOWN",
    );
    // Nor in a repository whose name extends the first one.
    assert_eq!(
        http::head(&http::blob_url(&reg.url(), "team/a/sub", &digest)).status,
        404
    );
    assert_eq!(
        http::head(&http::blob_url(&reg.url(), "team", &digest)).status,
        404
    );
}

#[test]
fn zero_length_blob_can_be_pulled() {
    let reg = TestRegistry::start();
    let digest = http::push_blob(&reg.url(), "lib/app", b"");
    assert_eq!(digest, http::EMPTY_DIGEST);
    let url = http::blob_url(&reg.url(), "lib/app", &digest);

    let resp = http::head(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(content_length(&resp), 0);
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(http::EMPTY_DIGEST)
    );

    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.is_empty(), "{resp:?}");
}

#[test]
fn blobs_work_in_deeply_nested_repository_names() {
    let reg = TestRegistry::start();
    let name = "a/b.c/d-e/f__g/h_i/0";
    let digest = http::push_blob(&reg.url(), name, b"nested");
    let resp = http::get(&http::blob_url(&reg.url(), name, &digest));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"nested");
}
}
