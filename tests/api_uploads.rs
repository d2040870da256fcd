//! Pushing blobs: monolithic, streamed and chunked uploads, upload status,
//! cancellation, cross-repository mounts.

mod common;

use common::TestRegistry;
use common::http::{self, Response, assert_error};

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// The upload id at the end of an upload Location.
fn upload_id(location: &str) -> &str {
    let path = http::path_of(location);
    let path = path.split('?').next().unwrap();
    path.rsplit('/').next().unwrap()
}

/// Asserts the headers every upload-progress answer (202 to POST and PATCH,
/// 204 to GET) carries, and returns the absolute Location.
#[track_caller]
fn assert_progress(base: &str, resp: &Response, name: &str, id: &str, range: &str) -> String {
    let location = resp.location();
    assert_eq!(
        http::path_of(location).split('?').next().unwrap(),
        format!("/v2/{name}/blobs/uploads/{id}"),
        "Location: {resp:?}"
    );
    assert_eq!(resp.header("docker-upload-uuid"), Some(id), "{resp:?}");
    assert_eq!(resp.header("range"), Some(range), "{resp:?}");
    http::resolve(base, location)
}

fn post_upload(base: &str, name: &str) -> Response {
    http::post(&http::uploads_url(base, name), &[], b"")
}

fn put_digest(upload: &str, digest: &str, body: &[u8]) -> Response {
    http::put(
        &http::with_query(upload, &format!("digest={digest}")),
        &[OCTETS],
        body,
    )
}

fn patch_range(upload: &str, start: usize, chunk: &[u8]) -> Response {
    let range = format!("{}-{}", start, start + chunk.len() - 1);
    http::patch(upload, &[OCTETS, ("Content-Range", &range)], chunk)
}

#[track_caller]
fn assert_blob(base: &str, name: &str, digest: &str, data: &[u8]) {
    let resp = http::get(&http::blob_url(base, name, digest));
    assert_eq!(resp.status, 200, "GET blob {digest} in {name}: {resp:?}");
    assert!(resp.body == data, "blob {digest} in {name} has other bytes");
}

#[track_caller]
fn assert_no_blob(base: &str, name: &str, digest: &str) {
    let resp = http::head(&http::blob_url(base, name, digest));
    assert_eq!(resp.status, 404, "HEAD blob {digest} in {name}: {resp:?}");
}

// --- starting uploads ----------------------------------------------------

// --- monolithic ------------------------------------------------------------

// --- streamed ---------------------------------------------------------------

// --- chunked ------------------------------------------------------------------

// --- status ----------------------------------------------------------------------

// --- finishing with errors ---------------------------------------------------------

// --- cancel and unknown ids ------------------------------------------------------------

// --- cross-repository mount ---------------------------------------------------------------

fn mount_url(base: &str, name: &str, query: &str) -> String {
    http::with_query(&http::uploads_url(base, name), query)
}

#[track_caller]
fn assert_fallback_upload(base: &str, resp: &Response, name: &str) -> String {
    assert_eq!(resp.status, 202, "{resp:?}");
    let location = resp.location();
    let prefix = format!("/v2/{name}/blobs/uploads/");
    assert!(location.starts_with(&prefix), "Location: {resp:?}");
    assert_eq!(
        resp.header("docker-upload-uuid"),
        Some(upload_id(location)),
        "{resp:?}"
    );
    http::resolve(base, location)
}

common::both_engines! {
#[test]
fn post_starts_an_upload_with_relative_location_uuid_and_empty_range() {
    let reg = TestRegistry::start();
    let resp = post_upload(&reg.url(), "lib/app");
    assert_eq!(resp.status, 202, "{resp:?}");
    let location = resp.location();
    let prefix = "/v2/lib/app/blobs/uploads/";
    assert!(
        location.starts_with(prefix),
        "Location not relative under {prefix}: {resp:?}"
    );
    let id = &location[prefix.len()..];
    let id = id.split('?').next().unwrap();
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("upload id {id:?} is not a UUID: {e}"));
    assert_eq!(resp.header("docker-upload-uuid"), Some(id));
    assert_eq!(resp.header("range"), Some("0-0"));
}

#[test]
fn each_post_starts_a_distinct_upload() {
    let reg = TestRegistry::start();
    let a = post_upload(&reg.url(), "lib/app");
    let b = post_upload(&reg.url(), "lib/app");
    assert_ne!(upload_id(a.location()), upload_id(b.location()));
}

#[test]
fn post_with_digest_and_body_stores_blob_with_201() {
    let reg = TestRegistry::start();
    let data = http::random_bytes(5000, 10);
    let digest = http::sha256_digest(&data);
    let url = http::with_query(
        &http::uploads_url(&reg.url(), "lib/app"),
        &format!("digest={digest}"),
    );
    let resp = http::post(&url, &[OCTETS], &data);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/lib/app/blobs/{digest}"));
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_blob(&reg.url(), "lib/app", &digest, &data);
}

#[test]
fn post_with_wrong_digest_is_400_digest_invalid_and_stores_nothing() {
    let reg = TestRegistry::start();
    let data = b"the real content".to_vec();
    let claimed = http::sha256_digest(b"something else");
    let url = http::with_query(
        &http::uploads_url(&reg.url(), "lib/app"),
        &format!("digest={claimed}"),
    );
    let resp = http::post(&url, &[OCTETS], &data);
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_no_blob(&reg.url(), "lib/app", &claimed);
    assert_no_blob(&reg.url(), "lib/app", &http::sha256_digest(&data));
}

#[test]
fn post_then_put_with_whole_body_stores_blob_with_201() {
    let reg = TestRegistry::start();
    let data = http::random_bytes(7777, 11);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&reg.url(), "lib/app");
    let resp = put_digest(&upload, &digest, &data);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/lib/app/blobs/{digest}"));
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_blob(&reg.url(), "lib/app", &digest, &data);
}

#[test]
fn zero_length_blob_via_post_then_put_without_body() {
    let reg = TestRegistry::start();
    let upload = http::start_upload(&reg.url(), "lib/app");
    let resp = put_digest(&upload, http::EMPTY_DIGEST, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.location(),
        format!("/v2/lib/app/blobs/{}", http::EMPTY_DIGEST)
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(http::EMPTY_DIGEST)
    );
    assert_blob(&reg.url(), "lib/app", http::EMPTY_DIGEST, b"");
}

#[test]
fn zero_length_blob_via_monolithic_post() {
    let reg = TestRegistry::start();
    let url = http::with_query(
        &http::uploads_url(&reg.url(), "lib/app"),
        &format!("digest={}", http::EMPTY_DIGEST),
    );
    let resp = http::post(&url, &[OCTETS], b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(http::EMPTY_DIGEST)
    );
    assert_blob(&reg.url(), "lib/app", http::EMPTY_DIGEST, b"");
}

#[test]
fn pushing_the_same_blob_twice_is_fine() {
    let reg = TestRegistry::start();
    let data = b"twice".to_vec();
    let d1 = http::push_blob(&reg.url(), "lib/app", &data);
    let d2 = http::push_blob_put(&reg.url(), "lib/app", &data);
    assert_eq!(d1, d2);
    assert_blob(&reg.url(), "lib/app", &d1, &data);
}

#[test]
fn streamed_patch_is_202_with_range_and_put_without_body_completes() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(42, 12);
    let digest = http::sha256_digest(&data);
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let upload = http::resolve(&base, start.location());

    let resp = http::patch(&upload, &[OCTETS], &data);
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = assert_progress(&base, &resp, "lib/app", &id, "0-41");

    let resp = put_digest(&upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/lib/app/blobs/{digest}"));
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn several_streamed_patches_append_in_order() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(300_000, 13);
    let digest = http::sha256_digest(&data);
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let mut upload = http::resolve(&base, start.location());

    let mut offset = 0;
    for chunk in data.chunks(70_000) {
        let resp = http::patch(&upload, &[OCTETS], chunk);
        assert_eq!(resp.status, 202, "{resp:?}");
        offset += chunk.len();
        upload = assert_progress(&base, &resp, "lib/app", &id, &format!("0-{}", offset - 1));
    }
    let resp = put_digest(&upload, &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn put_may_carry_the_final_chunk_after_patches() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(10_000, 14);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, "lib/app");
    let resp = http::patch(&upload, &[OCTETS], &data[..6000]);
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = http::resolve(&base, resp.location());

    let resp = put_digest(&upload, &digest, &data[6000..]);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn chunked_upload_with_content_range_completes() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(42, 15);
    let digest = http::sha256_digest(&data);
    let (first, second) = data.split_at(22);
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let upload = http::resolve(&base, start.location());

    let resp = patch_range(&upload, 0, first);
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = assert_progress(&base, &resp, "lib/app", &id, "0-21");

    let resp = patch_range(&upload, 22, second);
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = assert_progress(&base, &resp, "lib/app", &id, "0-41");

    let resp = http::put(
        &http::with_query(&upload, &format!("digest={digest}")),
        &[OCTETS, ("Content-Length", "0")],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/lib/app/blobs/{digest}"));
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn out_of_order_first_chunk_is_416_with_range_and_location() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(42, 16);
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let upload = http::resolve(&base, start.location());

    let resp = patch_range(&upload, 22, &data[22..]);
    assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(resp.header("range"), Some("0-0"), "{resp:?}");
    assert_eq!(
        http::path_of(resp.location()),
        format!("/v2/lib/app/blobs/uploads/{id}"),
        "{resp:?}"
    );

    // Nothing was written: the upload is still empty and usable.
    let status = http::get(&upload);
    assert_eq!(status.status, 204, "{status:?}");
    assert_eq!(status.header("range"), Some("0-0"));
    let resp = patch_range(&upload, 0, &data);
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = put_digest(
        &http::resolve(&base, resp.location()),
        &http::sha256_digest(&data),
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
}

#[test]
fn retrying_a_committed_chunk_is_416_and_upload_continues_from_status() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(42, 17);
    let digest = http::sha256_digest(&data);
    let (first, second) = data.split_at(22);
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let original = http::resolve(&base, start.location());

    let resp = patch_range(&original, 0, first);
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-21"));

    // The same chunk again, at the original Location: start 0 != offset 22.
    let resp = patch_range(&original, 0, first);
    assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(resp.header("range"), Some("0-21"), "{resp:?}");
    assert!(resp.header("location").is_some(), "{resp:?}");

    // A chunk that skips ahead is refused too.
    let resp = patch_range(&original, 30, &second[8..]);
    assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(resp.header("range"), Some("0-21"), "{resp:?}");

    // Status tells where to resume.
    let status = http::get(&original);
    assert_eq!(status.status, 204, "{status:?}");
    let upload = assert_progress(&base, &status, "lib/app", &id, "0-21");
    assert!(status.body.is_empty(), "{status:?}");

    let resp = patch_range(&upload, 22, second);
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-41"));
    let resp = put_digest(&http::resolve(&base, resp.location()), &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn streamed_and_ranged_patches_can_be_mixed() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(3000, 18);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, "lib/app");
    let resp = http::patch(&upload, &[OCTETS], &data[..1000]);
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = patch_range(
        &http::resolve(&base, resp.location()),
        1000,
        &data[1000..2000],
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-1999"));
    let resp = http::patch(
        &http::resolve(&base, resp.location()),
        &[OCTETS],
        &data[2000..],
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-2999"));
    let resp = put_digest(&http::resolve(&base, resp.location()), &digest, b"");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "lib/app", &digest, &data);
}

#[test]
fn interleaved_uploads_to_one_repository_stay_separate() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let a = http::random_bytes(5000, 19);
    let b = http::random_bytes(5000, 20);
    let ua = http::start_upload(&base, "lib/app");
    let ub = http::start_upload(&base, "lib/app");
    let ra = http::patch(&ua, &[OCTETS], &a[..2500]);
    let rb = http::patch(&ub, &[OCTETS], &b[..2500]);
    assert_eq!((ra.status, rb.status), (202, 202));
    let ra = http::patch(&http::resolve(&base, ra.location()), &[OCTETS], &a[2500..]);
    let rb = http::patch(&http::resolve(&base, rb.location()), &[OCTETS], &b[2500..]);
    assert_eq!((ra.status, rb.status), (202, 202));
    let da = http::sha256_digest(&a);
    let db = http::sha256_digest(&b);
    assert_eq!(
        put_digest(&http::resolve(&base, rb.location()), &db, b"").status,
        201
    );
    assert_eq!(
        put_digest(&http::resolve(&base, ra.location()), &da, b"").status,
        201
    );
    assert_blob(&base, "lib/app", &da, &a);
    assert_blob(&base, "lib/app", &db, &b);
}

#[test]
fn status_of_an_empty_upload_is_204_with_range_0_0() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let resp = http::get(&http::resolve(&base, start.location()));
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_progress(&base, &resp, "lib/app", &id, "0-0");
    assert!(resp.body.is_empty(), "{resp:?}");
}

#[test]
fn status_reports_the_committed_range() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let start = post_upload(&base, "lib/app");
    let id = upload_id(start.location()).to_owned();
    let upload = http::resolve(&base, start.location());
    assert_eq!(http::patch(&upload, &[OCTETS], &[7u8; 1234]).status, 202);
    let resp = http::get(&upload);
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_progress(&base, &resp, "lib/app", &id, "0-1233");
}

#[test]
fn put_without_digest_is_400_digest_invalid() {
    let reg = TestRegistry::start();
    let upload = http::start_upload(&reg.url(), "lib/app");
    let resp = http::put(&upload, &[OCTETS], b"some data");
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_no_blob(&reg.url(), "lib/app", &http::sha256_digest(b"some data"));
}

#[test]
fn put_with_wrong_digest_is_400_and_the_upload_is_gone() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = b"actual bytes".to_vec();
    let wrong = http::sha256_digest(b"claimed bytes");
    let upload = http::start_upload(&base, "lib/app");
    let resp = http::patch(&upload, &[OCTETS], &data);
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = http::resolve(&base, resp.location());

    let resp = put_digest(&upload, &wrong, b"");
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_error(&http::get(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_no_blob(&base, "lib/app", &wrong);
    assert_no_blob(&base, "lib/app", &http::sha256_digest(&data));
}

#[test]
fn put_with_malformed_digest_is_400_digest_invalid() {
    let reg = TestRegistry::start();
    let upload = http::start_upload(&reg.url(), "lib/app");
    let resp = put_digest(&upload, "sha256:abc", b"x");
    assert_error(&resp, 400, "DIGEST_INVALID");
}

#[test]
fn delete_cancels_an_upload_and_later_requests_are_404() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = http::start_upload(&base, "lib/app");
    assert_eq!(http::patch(&upload, &[OCTETS], b"partial").status, 202);

    let resp = http::delete(&upload);
    assert_eq!(resp.status, 204, "{resp:?}");
    assert!(resp.body.is_empty(), "{resp:?}");

    assert_error(&http::get(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &http::patch(&upload, &[OCTETS], b"more"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &put_digest(&upload, &http::sha256_digest(b"partial"), b""),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&http::delete(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_no_blob(&base, "lib/app", &http::sha256_digest(b"partial"));
}

#[test]
fn unknown_upload_uuid_is_404_blob_upload_unknown() {
    let reg = TestRegistry::start();
    http::start_upload(&reg.url(), "lib/app");
    let url = format!(
        "{}/v2/lib/app/blobs/uploads/{}",
        reg.url(),
        uuid::Uuid::new_v4()
    );
    assert_error(&http::get(&url), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &http::patch(&url, &[OCTETS], b"data"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &put_digest(&url, &http::sha256_digest(b"data"), b"data"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&http::delete(&url), 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn non_uuid_upload_id_is_404_blob_upload_unknown() {
    let reg = TestRegistry::start();
    for id in [
        "not-a-uuid",
        "12345",
        "deadbeef",
        "0123456789abcdef0123456789abcdef0",
    ] {
        let url = format!("{}/v2/lib/app/blobs/uploads/{id}", reg.url());
        assert_error(&http::get(&url), 404, "BLOB_UPLOAD_UNKNOWN");
        assert_error(
            &http::patch(&url, &[OCTETS], b"data"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        );
        assert_error(&http::delete(&url), 404, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[test]
fn upload_id_under_another_repository_is_404_blob_upload_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = http::start_upload(&base, "team/a");
    let id = upload_id(&upload).to_owned();
    let foreign = format!("{base}/v2/team/b/blobs/uploads/{id}");
    assert_error(&http::get(&foreign), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &http::patch(&foreign, &[OCTETS], b"x"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &put_digest(&foreign, &http::sha256_digest(b"x"), b"x"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&http::delete(&foreign), 404, "BLOB_UPLOAD_UNKNOWN");
    // The real one is untouched.
    let resp = http::get(&upload);
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-0"));
    assert_no_blob(&base, "team/b", &http::sha256_digest(b"x"));
}

#[test]
fn finished_upload_id_is_gone() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = b"finished".to_vec();
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, "lib/app");
    assert_eq!(put_digest(&upload, &digest, &data).status, 201);

    assert_error(&http::get(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &http::patch(&upload, &[OCTETS], b"more"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &put_digest(&upload, &digest, b""),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
}

#[test]
fn mount_from_repository_with_the_blob_is_201() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = http::random_bytes(2048, 21);
    let digest = http::push_blob(&base, "team/a", &data);
    assert_no_blob(&base, "team/b", &digest);

    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}&from=team/a")),
        &[],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.location(), format!("/v2/team/b/blobs/{digest}"));
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));

    assert_blob(&base, "team/b", &digest, &data);
    assert_blob(&base, "team/a", &digest, &data);
}

#[test]
fn mounted_blob_survives_deletion_in_the_source_repository() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let data = b"mount me".to_vec();
    let digest = http::push_blob(&base, "team/a", &data);
    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}&from=team/a")),
        &[],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        http::delete(&http::blob_url(&base, "team/a", &digest)).status,
        202
    );
    assert_no_blob(&base, "team/a", &digest);
    assert_blob(&base, "team/b", &digest, &data);
}

#[test]
fn mount_of_missing_blob_falls_back_to_a_usable_upload() {
    let reg = TestRegistry::start();
    let base = reg.url();
    http::push_blob(&base, "team/a", b"unrelated");
    let data = b"not in team/a".to_vec();
    let digest = http::sha256_digest(&data);
    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}&from=team/a")),
        &[],
        b"",
    );
    let upload = assert_fallback_upload(&base, &resp, "team/b");
    assert_no_blob(&base, "team/b", &digest);

    let resp = put_digest(&upload, &digest, &data);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_blob(&base, "team/b", &digest, &data);
}

#[test]
fn mount_from_repository_lacking_the_blob_falls_back_even_if_another_has_it() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let digest = http::push_blob(&base, "team/a", b"only in a");
    http::push_blob(&base, "team/c", b"c has other things");
    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}&from=team/c")),
        &[],
        b"",
    );
    assert_fallback_upload(&base, &resp, "team/b");
    assert_no_blob(&base, "team/b", &digest);
}

#[test]
fn mount_without_from_falls_back_to_an_upload() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let digest = http::push_blob(&base, "team/a", b"blob");
    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}")),
        &[],
        b"",
    );
    assert_fallback_upload(&base, &resp, "team/b");
    assert_no_blob(&base, "team/b", &digest);
}

#[test]
fn mount_with_invalid_from_falls_back_to_an_upload() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let digest = http::push_blob(&base, "team/a", b"blob");
    for from in ["Team/A", "team//a", "", "team/a/"] {
        let resp = http::post(
            &mount_url(&base, "team/b", &format!("mount={digest}&from={from}")),
            &[],
            b"",
        );
        assert_fallback_upload(&base, &resp, "team/b");
    }
    assert_no_blob(&base, "team/b", &digest);
}

#[test]
fn mount_from_a_never_used_repository_falls_back_to_an_upload() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let digest = http::sha256_digest(b"hello world");
    let resp = http::post(
        &mount_url(&base, "team/b", &format!("mount={digest}&from=nobody/here")),
        &[],
        b"",
    );
    assert_fallback_upload(&base, &resp, "team/b");
}
}
