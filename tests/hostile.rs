//! Bad and hostile input: truncated and lying bodies, bad ranges, wrong digests, huge and
//! deeply nested manifests, idle and slow connections, garbage on the wire. None of it may
//! crash the server, answer 5xx, or change data: after each attack the server still answers
//! `GET /v2/`, a sentinel image pushed beforehand still reads back byte for byte, and upload
//! sessions hold exactly what was committed before the attack.
//!
//! Raw requests go through `common::http::raw`/`send_and_close` or plain sockets; every
//! socket read has a deadline and every loop a fixed count, so a misbehaving server fails a
//! test instead of hanging it. Everything is on loopback.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, Response, assert_error};
use serde_json::json;

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// Tests that measure the process's memory take this, so no other big test runs beside them.
static MEMORY: Mutex<()> = Mutex::new(());

// ---- helpers -------------------------------------------------------------------------------

/// An image and a blob pushed before an attack; `check` proves the server is alive and they
/// are intact.
struct Sentinel {
    image: http::Image,
    blob: Vec<u8>,
    blob_digest: String,
}

const SENTINEL_REPO: &str = "sentinel/app";

impl Sentinel {
    fn push(base: &str) -> Sentinel {
        let image = http::push_image(base, SENTINEL_REPO, Some("v1"), 99);
        let blob = http::random_bytes(300 * 1024, 98);
        let blob_digest = http::push_blob_put(base, SENTINEL_REPO, &blob);
        Sentinel {
            image,
            blob,
            blob_digest,
        }
    }

    #[track_caller]
    fn check(&self, base: &str) {
        let resp = http::get(&format!("{base}/v2/"));
        assert_eq!(resp.status, 200, "GET /v2/ after the attack: {resp:?}");
        for (digest, data) in [
            (&self.blob_digest, &self.blob),
            (&self.image.layer_digest, &self.image.layer),
            (&self.image.config_digest, &self.image.config),
        ] {
            let resp = http::get(&http::blob_url(base, SENTINEL_REPO, digest));
            assert_eq!(resp.status, 200, "sentinel blob {digest}: {resp:?}");
            assert!(resp.body == *data, "sentinel blob {digest} has other bytes");
        }
        let resp = http::get(&http::manifest_url(base, SENTINEL_REPO, "v1"));
        assert_eq!(resp.status, 200, "sentinel manifest: {resp:?}");
        assert!(
            resp.body == self.image.manifest,
            "sentinel manifest has other bytes"
        );
    }
}

/// `<start>-<end>` of an upload holding `offset` bytes, as berth reports it (`0-0` when empty).
fn upload_range(offset: usize) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// Asserts the upload's committed range, as `GET` on the session reports it.
#[track_caller]
fn assert_offset(upload: &str, offset: usize, when: &str) {
    let status = http::get(upload);
    assert_eq!(status.status, 204, "upload status {when}: {status:?}");
    assert_eq!(
        status.header("range"),
        Some(upload_range(offset).as_str()),
        "committed range {when}: {status:?}"
    );
}

/// Asserts the offset now and again a little later, so a commit that a failed request makes
/// late (after the client saw its connection die) is caught too.
#[track_caller]
fn assert_offset_stays(upload: &str, offset: usize, when: &str) {
    assert_offset(upload, offset, when);
    thread::sleep(Duration::from_millis(400));
    assert_offset(upload, offset, &format!("{when} (400 ms later)"));
}

fn patch_range(upload: &str, start: usize, chunk: &[u8]) -> Response {
    let range = format!("{}-{}", start, start + chunk.len() - 1);
    http::patch(upload, &[OCTETS, ("Content-Range", &range)], chunk)
}

/// PATCHes a chunk at `start`, retrying (at most 50 times, 100 ms apart) while the server
/// answers 416 with the range still at `start`: it may take a moment to notice that an
/// earlier request on the session died. Asserts the final 202.
#[track_caller]
fn patch_eventually(upload: &str, start: usize, chunk: &[u8]) -> Response {
    for attempt in 0..50 {
        let resp = patch_range(upload, start, chunk);
        if resp.status == 416 && resp.header("range") == Some(upload_range(start).as_str()) {
            println!("PATCH at {start}: 416 on attempt {attempt} (session still busy), retrying");
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(resp.status, 202, "PATCH at {start}: {resp:?}");
        assert_eq!(
            resp.header("range"),
            Some(upload_range(start + chunk.len()).as_str()),
            "{resp:?}"
        );
        return resp;
    }
    panic!("the session at {upload} stayed busy for 5 s after its request died");
}

/// Finishes a session with its last chunk and checks that the blob is exactly `data`.
#[track_caller]
fn finish_and_check(base: &str, repo: &str, upload: &str, committed: usize, data: &[u8]) {
    let digest = http::sha256_digest(data);
    let resp = http::put(
        &http::with_query(upload, &format!("digest={digest}")),
        &[OCTETS],
        &data[committed..],
    );
    assert_eq!(resp.status, 201, "PUT ?digest= to finish: {resp:?}");
    let got = http::get(&http::blob_url(base, repo, &digest));
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body == data, "the finished blob has other bytes");
}

#[track_caller]
fn assert_invisible(base: &str, repo: &str, digest: &str) {
    let head = http::head(&http::blob_url(base, repo, digest));
    assert_eq!(head.status, 404, "HEAD {repo}@{digest}: {head:?}");
}

/// The request head of a raw request (no `Connection` header unless given).
fn raw_head(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every `HTTP/1.x NNN` status in a byte stream (a reply may hold more than one response).
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..bytes.len().saturating_sub(12) {
        if &bytes[i..i + 7] == b"HTTP/1."
            && bytes[i + 8] == b' '
            && let Some(code) = std::str::from_utf8(&bytes[i + 9..i + 12])
                .ok()
                .and_then(|c| c.parse().ok())
        {
            out.push(code);
        }
    }
    out
}

/// A raw reply must be a 4xx, or nothing (the server closed): never 2xx/3xx/5xx.
#[track_caller]
fn assert_refused_or_closed(reply: &http::RawReply, what: &str) {
    assert!(
        !reply.timed_out(),
        "{what}: the server neither answered nor closed: {:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    for status in statuses(&reply.bytes) {
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status}: {:?}",
            String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(600)])
        );
    }
}

/// Files under `uploads/` of the registry's data directory.
fn upload_files(reg: &TestRegistry) -> Vec<String> {
    std::fs::read_dir(reg.data.path().join("uploads"))
        .expect("read uploads/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits (at most 3 s) until `uploads/` holds no file but those of the live sessions `ids`.
#[track_caller]
fn assert_no_stray_upload_files(reg: &TestRegistry, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stray: Vec<String> = upload_files(reg)
            .into_iter()
            .filter(|f| !ids.contains(&f.as_str()))
            .collect();
        if stray.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "upload files left by failed requests: {stray:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn upload_id(upload: &str) -> &str {
    http::path_of(upload)
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
}

// ---- truncated bodies and disconnects --------------------------------------------------------

/// A PATCH that declares Content-Length 1000 but sends 500 bytes and closes the connection
/// (with and without Content-Range), and a chunked PATCH cut off after a 500-byte chunk: the
/// committed offset stays where it was, the next PATCH at that offset is accepted, and the
/// finished blob has the right digest and bytes.
#[test]
fn truncated_patch_bodies_commit_nothing() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let data = http::random_bytes(3000, 1);
    let upload = http::start_upload(&base, "hostile/truncated");
    let path = http::path_of(&upload).to_owned();
    assert_eq!(patch_range(&upload, 0, &data[..1000]).status, 202);

    let cut = [
        raw_head(
            reg.addr,
            "PATCH",
            &path,
            &[
                OCTETS,
                ("Content-Length", "1000"),
                ("Content-Range", "1000-1999"),
            ],
        ),
        raw_head(
            reg.addr,
            "PATCH",
            &path,
            &[OCTETS, ("Content-Length", "1000")],
        ),
    ];
    for (n, head) in cut.iter().enumerate() {
        http::send_and_close(reg.addr, &concat(&[head, &data[1000..1500]]));
        assert_offset_stays(&upload, 1000, &format!("after truncated PATCH {n}"));
    }
    let chunked = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[OCTETS, ("Transfer-Encoding", "chunked")],
    );
    let chunk = concat(&[b"1f4\r\n", &data[1000..1500], b"\r\n"]);
    http::send_and_close(reg.addr, &concat(&[&chunked, &chunk]));
    assert_offset_stays(&upload, 1000, "after a chunked PATCH cut off");

    patch_eventually(&upload, 1000, &data[1000..2000]);
    finish_and_check(&base, "hostile/truncated", &upload, 2000, &data);
    sentinel.check(&base);
}

/// Clients that drop mid-request: a PATCH half sent then half-closed (the server may still
/// answer: only a 4xx is acceptable) or fully closed; a monolithic `POST ?digest=` and a
/// finishing `PUT ?digest=` half sent then closed. The session keeps its committed offset and
/// can still be finished; the blobs of the cut-off POST and PUT never become visible, and no
/// upload file of theirs stays behind.
#[test]
fn disconnects_mid_request_change_nothing() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/disconnect";
    let data = http::random_bytes(2 << 20, 2);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, repo);
    let path = http::path_of(&upload).to_owned();
    assert_eq!(patch_range(&upload, 0, &data[..1 << 20]).status, 202);
    let rest = &data[1 << 20..];
    let half = &rest[..rest.len() / 2];
    let len = rest.len().to_string();
    let range = format!("{}-{}", 1 << 20, data.len() - 1);

    // Mid-chunk, half close: the server sees EOF and may answer.
    let head = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[OCTETS, ("Content-Length", &len), ("Content-Range", &range)],
    );
    let reply = http::raw(
        reg.addr,
        &concat(&[&head, half]),
        true,
        Duration::from_secs(10),
    );
    assert_refused_or_closed(&reply, "PATCH cut off by a half close");
    assert_offset_stays(&upload, 1 << 20, "after a PATCH cut off by a half close");

    // Mid-chunk, full close, no Content-Range.
    let head = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[OCTETS, ("Content-Length", &len)],
    );
    http::send_and_close(reg.addr, &concat(&[&head, half]));
    assert_offset_stays(&upload, 1 << 20, "after a PATCH cut off by a close");

    // Mid finishing PUT: the blob must not appear, the session keeps its offset.
    let target = http::path_of(&http::with_query(&upload, &format!("digest={digest}"))).to_owned();
    let head = raw_head(
        reg.addr,
        "PUT",
        &target,
        &[OCTETS, ("Content-Length", &len)],
    );
    http::send_and_close(reg.addr, &concat(&[&head, half]));
    thread::sleep(Duration::from_millis(300));
    assert_invisible(&base, repo, &digest);
    assert_offset_stays(&upload, 1 << 20, "after a PUT cut off by a close");

    // Mid monolithic POST of another blob, fully closed and half closed: never visible, and
    // its temporary file goes away.
    let other = http::random_bytes(2 << 20, 3);
    let other_digest = http::sha256_digest(&other);
    let target = format!("/v2/{repo}/blobs/uploads/?digest={other_digest}");
    let head = raw_head(
        reg.addr,
        "POST",
        &target,
        &[OCTETS, ("Content-Length", &other.len().to_string())],
    );
    http::send_and_close(reg.addr, &concat(&[&head, &other[..other.len() / 2]]));
    let reply = http::raw(
        reg.addr,
        &concat(&[&head, &other[..other.len() / 2]]),
        true,
        Duration::from_secs(10),
    );
    assert_refused_or_closed(&reply, "monolithic POST cut off by a half close");
    thread::sleep(Duration::from_millis(300));
    assert_invisible(&base, repo, &other_digest);
    assert_no_stray_upload_files(&reg, &[upload_id(&upload)]);

    patch_eventually(&upload, 1 << 20, rest);
    finish_and_check(&base, repo, &upload, data.len(), &data);
    assert_invisible(&base, repo, &other_digest);
    sentinel.check(&base);
}

// ---- lying lengths and ranges ----------------------------------------------------------------

/// Content-Length smaller than what is sent: the server takes exactly Content-Length bytes as
/// the chunk (the rest is not upload data; as a next request it is garbage, answered 4xx or
/// dropped). A Content-Range whose length differs from the body (shorter or longer, on PATCH
/// and on the finishing PUT) is 400 SIZE_INVALID and commits nothing.
#[test]
fn lying_lengths_are_refused_or_cut_at_content_length() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/lies";
    let data = http::random_bytes(4000, 4);
    let upload = http::start_upload(&base, repo);
    let path = http::path_of(&upload).to_owned();
    assert_eq!(patch_range(&upload, 0, &data[..1000]).status, 202);

    // Content-Range says 1000 bytes, the body has 500 (Content-Length honest).
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", "1000-1999")],
        &data[1000..1500],
    );
    assert_error(&resp, 400, "SIZE_INVALID");
    assert_offset_stays(&upload, 1000, "after a Content-Range longer than the body");
    // Content-Range says 500, the body has 1000.
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", "1000-1499")],
        &data[1000..2000],
    );
    assert_error(&resp, 400, "SIZE_INVALID");
    assert_offset_stays(&upload, 1000, "after a Content-Range shorter than the body");
    // The same on the finishing PUT: refused, nothing visible, the session stays.
    let digest = http::sha256_digest(&data);
    let put_url = http::with_query(&upload, &format!("digest={digest}"));
    let resp = http::put(
        &put_url,
        &[OCTETS, ("Content-Range", "1000-3999")],
        &data[1000..2000],
    );
    assert_error(&resp, 400, "SIZE_INVALID");
    assert_invisible(&base, repo, &digest);
    assert_offset_stays(&upload, 1000, "after a PUT whose Content-Range lies");

    // Content-Length 500 with 1000 bytes sent, connection: close: exactly 500 are taken.
    let head = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[OCTETS, ("Content-Length", "500"), ("Connection", "close")],
    );
    let reply = http::raw(
        reg.addr,
        &concat(&[&head, &data[1000..2000]]),
        true,
        Duration::from_secs(10),
    );
    let resp = reply
        .response()
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&reply.bytes)));
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-1499"), "{resp:?}");
    assert!(
        statuses(&reply.bytes).iter().all(|s| *s < 500),
        "{:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert_offset_stays(
        &upload,
        1500,
        "after Content-Length 500 with 1000 bytes sent",
    );

    // The same on a kept-alive connection: the surplus is parsed as a request and refused.
    let head = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[OCTETS, ("Content-Length", "500")],
    );
    let reply = http::raw(
        reg.addr,
        &concat(&[&head, &data[1500..2500]]),
        true,
        Duration::from_secs(10),
    );
    assert!(!reply.timed_out(), "the server neither answered nor closed");
    let seen = statuses(&reply.bytes);
    assert_eq!(
        seen.first(),
        Some(&202),
        "{:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert!(
        seen[1..].iter().all(|s| (400..500).contains(s)),
        "the surplus bytes must be refused as a request: {seen:?}"
    );
    assert_offset_stays(&upload, 2000, "after a surplus on a kept-alive connection");

    finish_and_check(&base, repo, &upload, 2000, &data);
    sentinel.check(&base);
}

/// A request that carries both Transfer-Encoding and Content-Length frames
/// its body two ways, and a proxy in front may read it the other way
/// (request smuggling). RFC 9112 section 6.3: Transfer-Encoding wins and the
/// connection closes after the response, so whatever follows the chunked
/// body is never read as a request. (hyper drops the Content-Length before
/// a service could see it, so refusing with 400, the RFC's other choice,
/// is not open to us.)
#[test]
fn transfer_encoding_with_content_length_is_framed_by_chunks_and_closes() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = http::start_upload(&base, "hostile/te");
    let path = http::path_of(&upload).to_owned();
    let head = raw_head(
        reg.addr,
        "PATCH",
        &path,
        &[
            OCTETS,
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "3"),
        ],
    );
    let smuggled = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", reg.addr);
    let reply = http::raw(
        reg.addr,
        &concat(&[&head, b"5\r\nhello\r\n0\r\n\r\n", smuggled.as_bytes()]),
        false,
        Duration::from_secs(10),
    );
    assert!(!reply.timed_out(), "the connection stayed open");
    let text = String::from_utf8_lossy(&reply.bytes);
    assert_eq!(
        statuses(&reply.bytes),
        [202],
        "only the PATCH is answered: {text}"
    );
    assert_offset(&upload, 5, "after a request framed two ways");
    let digest = http::sha256_digest(b"hello");
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={digest}")),
        &[OCTETS],
        b"",
    );
    assert_eq!(
        resp.status, 201,
        "the five chunked bytes were taken: {resp:?}"
    );
}

/// A PATCH whose Content-Range overlaps the committed range or skips past its end is 416
/// BLOB_UPLOAD_INVALID with `Range: 0-<last committed>` and the session's Location; a
/// malformed Content-Range is 416 BLOB_UPLOAD_INVALID. None moves the offset; the session
/// then finishes normally.
#[test]
fn overlapping_skipping_and_malformed_content_ranges_are_416() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/ranges";
    let data = http::random_bytes(3000, 5);
    let upload = http::start_upload(&base, repo);
    assert_eq!(patch_range(&upload, 0, &data[..1000]).status, 202);

    for (start, end) in [
        (0, 999),
        (0, 1999),
        (500, 1499),
        (999, 1998),
        (1001, 2000),
        (2000, 2999),
    ] {
        let range = format!("{start}-{end}");
        let resp = http::patch(
            &upload,
            &[OCTETS, ("Content-Range", &range)],
            &data[start..=end],
        );
        assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
        assert_eq!(
            resp.header("range"),
            Some("0-999"),
            "Content-Range {range}: {resp:?}"
        );
        assert!(resp.header("location").is_some(), "{resp:?}");
        assert_offset(&upload, 1000, &format!("after Content-Range {range}"));
    }
    for bad in [
        "",
        "abc",
        "1000",
        "1000-",
        "-1999",
        "1999-1000",
        "bytes=1000-1999",
        "1000-1999-2999",
        "0x3e8-0x7cf",
        "99999999999999999999-99999999999999999999",
        "1000--1999",
    ] {
        let resp = http::patch(
            &upload,
            &[OCTETS, ("Content-Range", bad)],
            &data[1000..2000],
        );
        assert_eq!(resp.status, 416, "Content-Range {bad:?}: {resp:?}");
        assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
        assert_offset(&upload, 1000, &format!("after Content-Range {bad:?}"));
    }
    assert_offset_stays(&upload, 1000, "after every bad Content-Range");
    patch_eventually(&upload, 1000, &data[1000..2000]);
    finish_and_check(&base, repo, &upload, 2000, &data);
    sentinel.check(&base);
}

/// A Content-Range that is not ASCII (fullwidth digits spelling `2000-2999`, which would skip
/// past the 1000 committed bytes) is as malformed as any other: 416 BLOB_UPLOAD_INVALID and
/// the offset unchanged. It must not be ignored, which would append the body at the end of
/// the upload as if no range had been given.
#[test]
fn non_ascii_content_range_is_416_not_ignored() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/unicode";
    let data = http::random_bytes(3000, 11);
    let upload = http::start_upload(&base, repo);
    assert_eq!(patch_range(&upload, 0, &data[..1000]).status, 202);
    let bad = "２０００-２９９９";
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", bad)],
        &data[2000..3000],
    );
    assert_eq!(
        resp.status, 416,
        "PATCH with Content-Range {bad:?}: {resp:?}"
    );
    assert_error(&resp, 416, "BLOB_UPLOAD_INVALID");
    assert_offset_stays(&upload, 1000, &format!("after Content-Range {bad:?}"));
    patch_eventually(&upload, 1000, &data[1000..2000]);
    finish_and_check(&base, repo, &upload, 2000, &data);
    sentinel.check(&base);
}

/// `Content-Range: 0-18446744073709551615` (a chunk of 2^64 bytes) on PATCH and on the
/// finishing PUT: the length does not fit in a u64, so the range can only be refused with a
/// 4xx; the server must answer (not drop the connection) and commit nothing.
#[test]
fn content_range_of_2_pow_64_bytes_is_refused() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/maxrange";
    let data = http::random_bytes(100, 6);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, repo);
    let range = ("Content-Range", "0-18446744073709551615");
    let put_url = http::with_query(&upload, &format!("digest={digest}"));
    for (method, url, body) in [
        ("PATCH", upload.as_str(), &data[..]),
        ("PATCH", upload.as_str(), &b""[..]),
        ("PUT", put_url.as_str(), &data[..]),
    ] {
        let resp = http::try_request(method, url, &[OCTETS, range], body);
        let resp = resp.unwrap_or_else(|e| {
            panic!(
                "{method} with Content-Range {}: no answer ({e}); the server dropped the \
                 connection instead of refusing the range",
                range.1
            )
        });
        assert!(
            (400..500).contains(&resp.status),
            "{method} with Content-Range {}: {resp:?}",
            range.1
        );
        assert_offset(
            &upload,
            0,
            &format!("after {method} with Content-Range {}", range.1),
        );
    }
    assert_invisible(&base, repo, &digest);
    finish_and_check(&base, repo, &upload, 0, &data);
    sentinel.check(&base);
}

/// A PUT whose digest does not match the content is 400 DIGEST_INVALID, and the session is
/// gone (status 404 BLOB_UPLOAD_UNKNOWN, PATCH 404, its file removed); the blob is visible
/// neither under the wrong digest nor under the right one. The same for a monolithic POST.
#[test]
fn wrong_digest_discards_the_upload_and_stores_nothing() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/digest";
    let data = http::random_bytes(5000, 7);
    let right = http::sha256_digest(&data);
    let wrong = http::sha256_digest(b"something else");

    let upload = http::start_upload(&base, repo);
    assert_eq!(patch_range(&upload, 0, &data[..2000]).status, 202);
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={wrong}")),
        &[OCTETS],
        &data[2000..],
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_error(&http::get(&upload), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &patch_range(&upload, 5000, b"more"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_invisible(&base, repo, &wrong);
    assert_invisible(&base, repo, &right);
    assert_no_stray_upload_files(&reg, &[]);

    let resp = http::post(
        &http::with_query(&http::uploads_url(&base, repo), &format!("digest={wrong}")),
        &[OCTETS],
        &data,
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_invisible(&base, repo, &wrong);
    assert_invisible(&base, repo, &right);
    assert_no_stray_upload_files(&reg, &[]);

    // A malformed digest is refused the same way, and leaves nothing either.
    let upload = http::start_upload(&base, repo);
    let resp = http::put(
        &http::with_query(&upload, "digest=sha256:../../berth.redb"),
        &[OCTETS],
        &data,
    );
    assert_error(&resp, 400, "DIGEST_INVALID");
    assert_invisible(&base, repo, &right);
    sentinel.check(&base);
}

// ---- manifests -------------------------------------------------------------------------------

/// Resident memory of this process (server and tests), from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}

/// Samples RSS every 20 ms while `work` runs; returns its result and the peak growth.
fn peak_rss_growth<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let baseline = rss_bytes();
    let done = AtomicBool::new(false);
    let peak = AtomicUsize::new(baseline as usize);
    let out = thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..30_000 {
                peak.fetch_max(rss_bytes() as usize, Ordering::Relaxed);
                if done.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    });
    let growth = (peak.load(Ordering::Relaxed) as u64).saturating_sub(baseline);
    (out, growth)
}

const HUNDRED_MIB: usize = 100 << 20;

/// A 100 MiB manifest PUT is 413 SIZE_INVALID: with an honest Content-Length it is refused
/// before any body byte is sent (the request head alone gets the answer); with chunked
/// transfer encoding it is refused once the limit (4 MiB) is passed, long before 100 MiB are
/// sent. The process's memory does not grow by anything like the manifest's size, and the
/// server lives on.
#[test]
fn manifest_of_100_mib_is_413_without_reading_it() {
    let _memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let target = "/v2/hostile/huge/manifests/v1";

    // Honest Content-Length, no body at all: the answer must come anyway.
    let len = HUNDRED_MIB.to_string();
    let head = raw_head(
        reg.addr,
        "PUT",
        target,
        &[
            ("Content-Type", http::OCI_MANIFEST),
            ("Content-Length", &len),
        ],
    );
    let mut stream = http::connect_addr(reg.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&head).unwrap();
    let resp = http::read_response(&mut stream, false).unwrap_or_else(|e| {
        panic!("a 100 MiB Content-Length must be refused before the body is sent: {e}")
    });
    assert_error(&resp, 413, "SIZE_INVALID");
    drop(stream);

    // Chunked: stream 1 MiB chunks until the server answers.
    let (sent_at_answer, growth) = peak_rss_growth(|| {
        let head = raw_head(
            reg.addr,
            "PUT",
            target,
            &[
                ("Content-Type", http::OCI_MANIFEST),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        let mut stream = http::connect_addr(reg.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sent = AtomicUsize::new(0);
        let chunk = {
            let payload = vec![b' '; 1 << 20];
            concat(&[
                format!("{:x}\r\n", payload.len()).as_bytes(),
                &payload,
                b"\r\n",
            ])
        };
        thread::scope(|s| {
            let sent = &sent;
            s.spawn(move || {
                if writer.write_all(&head).is_err() {
                    return;
                }
                for _ in 0..HUNDRED_MIB >> 20 {
                    if writer.write_all(&chunk).is_err() {
                        return;
                    }
                    sent.fetch_add(1 << 20, Ordering::Relaxed);
                }
                let _ = writer.write_all(b"0\r\n\r\n");
            });
            let resp = http::read_response(&mut stream, false);
            let at_answer = sent.load(Ordering::Relaxed);
            // Unblocks the writer.
            let _ = stream.shutdown(Shutdown::Both);
            let resp = resp.unwrap_or_else(|e| panic!("chunked 100 MiB manifest: no answer: {e}"));
            assert_error(&resp, 413, "SIZE_INVALID");
            at_answer
        })
    });
    println!(
        "chunked manifest refused after {} MiB were sent; RSS grew by {} MiB at most",
        sent_at_answer >> 20,
        growth >> 20
    );
    assert!(
        sent_at_answer < 64 << 20,
        "the server read on to {} MiB before refusing a manifest over 4 MiB",
        sent_at_answer >> 20
    );
    assert!(
        growth < 64 << 20,
        "memory grew by {} MiB while a 100 MiB manifest was refused",
        growth >> 20
    );
    assert_error(
        &http::get(&http::manifest_url(&base, "hostile/huge", "v1")),
        404,
        "MANIFEST_UNKNOWN",
    );
    sentinel.check(&base);
}

/// Manifests of deeply nested JSON (100,000 `[`, 50,000 nested objects, a valid-looking
/// manifest whose annotation holds nested arrays) are 400 MANIFEST_INVALID, not a stack
/// overflow; and nothing is stored under the tag.
#[test]
fn deeply_nested_json_manifest_is_400_manifest_invalid() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/nested";
    let depth = 100_000;
    let open_only = "[".repeat(depth).into_bytes();
    let balanced = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let objects =
        format!("{}1{}", r#"{"a":"#.repeat(depth / 2), "}".repeat(depth / 2)).into_bytes();
    let inside = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[],"annotations":{{"x":{}{}}}}}"#,
        http::OCI_MANIFEST,
        http::descriptor(http::OCI_CONFIG, &sentinel.image.config),
        "[".repeat(depth),
        "]".repeat(depth),
    )
    .into_bytes();
    for (what, body) in [
        ("100,000 [", &open_only),
        ("100,000 balanced brackets", &balanced),
        ("50,000 nested objects", &objects),
        ("nested arrays in an annotation", &inside),
    ] {
        for media_type in [http::OCI_MANIFEST, http::OCI_INDEX, http::DOCKER_MANIFEST] {
            let resp = http::put_manifest(&base, repo, "v1", media_type, body);
            assert_eq!(resp.status, 400, "{what} as {media_type}: {resp:?}");
            assert_error(&resp, 400, "MANIFEST_INVALID");
        }
    }
    assert_error(
        &http::get(&http::manifest_url(&base, repo, "v1")),
        404,
        "MANIFEST_UNKNOWN",
    );
    sentinel.check(&base);
}

/// A manifest just under the limit, 3 MiB of it annotations: accepted (and then served byte
/// for byte, by tag and digest) or refused with a 4xx, never a 5xx.
#[test]
fn manifest_with_3_mib_of_annotations_is_handled_cleanly() {
    let _memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = SENTINEL_REPO;
    let annotations: serde_json::Map<String, serde_json::Value> = (0..24_000)
        .map(|i| {
            (
                format!("org.example.annotation.{i:05}"),
                json!(format!("{i:0>100}")),
            )
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": http::OCI_MANIFEST,
        "config": http::descriptor(http::OCI_CONFIG, &sentinel.image.config),
        "layers": [http::descriptor(http::OCI_LAYER, &sentinel.image.layer)],
        "annotations": annotations,
    }))
    .unwrap();
    assert!(
        (3 << 20..4 << 20).contains(&manifest.len()),
        "{} bytes",
        manifest.len()
    );
    let resp = http::put_manifest(&base, repo, "annotated", http::OCI_MANIFEST, &manifest);
    println!("3 MiB of annotations: {} {}", resp.status, resp.text());
    assert!(
        resp.status == 201 || (400..500).contains(&resp.status),
        "{resp:?}"
    );
    if resp.status == 201 {
        let digest = http::sha256_digest(&manifest);
        for reference in ["annotated", digest.as_str()] {
            let got = http::get(&http::manifest_url(&base, repo, reference));
            assert_eq!(got.status, 200, "{got:?}");
            assert!(got.body == manifest, "the big manifest comes back changed");
        }
    }
    sentinel.check(&base);
}

// ---- idle and slow connections ---------------------------------------------------------------

/// The soft limit on open files, from /proc.
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// How many idle connections to open: 2,000, or fewer when the open-file limit is low (each
/// connection costs two descriptors here, since the server runs in this process).
fn idle_count(wanted: usize) -> usize {
    let limit = open_file_limit();
    let count = wanted.min(limit.saturating_sub(300) / 2);
    println!("open-file limit {limit}: using {count} idle connections");
    assert!(
        count >= 100,
        "the open-file limit {limit} is too low for this test"
    );
    count
}

/// Opens `n` connections and writes `greeting` (maybe nothing) on each.
fn open_idle(addr: SocketAddr, n: usize, greeting: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            if !greeting.is_empty() {
                s.write_all(greeting).unwrap();
            }
            s
        })
        .collect()
}

/// How many of `streams` the server closes by `deadline` (each read until EOF, reset or the
/// deadline; once the deadline has passed, each still gets a 1 ms look).
fn count_closed(streams: &mut [TcpStream], deadline: Instant) -> usize {
    streams
        .iter_mut()
        .map(|s| http::read_until_closed(s, deadline).1)
        .filter(|closed| *closed)
        .count()
}

/// 2,000 connections that send nothing (fewer if `ulimit -n` is low) do not keep a new client
/// from being served promptly, and a blob push and pull still work beside them.
#[test]
fn two_thousand_idle_connections_do_not_starve_a_new_client() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let n = idle_count(2000);
    let idle = open_idle(reg.addr, n, b"");
    let started = Instant::now();
    let resp = http::try_request_within(
        "GET",
        &format!("{base}/v2/"),
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("GET /v2/ beside {n} idle connections: {e}"));
    assert_eq!(resp.status, 200, "{resp:?}");
    println!(
        "GET /v2/ beside {n} idle connections: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "GET /v2/ took {:?} beside {n} idle connections",
        started.elapsed()
    );
    let data = http::random_bytes(100_000, 8);
    http::push_blob(&base, "hostile/idle", &data);
    assert_eq!(
        http::get(&http::blob_url(
            &base,
            "hostile/idle",
            &http::sha256_digest(&data)
        ))
        .body,
        data
    );
    sentinel.check(&base);
    drop(idle);
}

/// With `header_timeout` = 1 s, 2,000 connections that never send a byte are closed by the
/// server within 15 s (a generous bound: the property is that they close at all, and a busy
/// CI machine accepts 2,000 connections slowly).
#[test]
fn silent_connections_are_closed_after_the_header_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
    });
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let n = idle_count(2000);
    let opened = Instant::now();
    let mut idle = open_idle(reg.addr, n, b"");
    let closed = count_closed(&mut idle, opened + Duration::from_secs(15));
    println!("{closed} of {n} silent connections closed within 15 s");
    sentinel.check(&base);
    drop(idle);
    assert_eq!(
        closed, n,
        "header_timeout is 1 s, yet only {closed} of {n} connections that sent nothing were \
         closed within 15 s"
    );
}

/// With `header_timeout` = 1 s, connections that sent part of a request head, and a
/// kept-alive connection idle after a complete request, are closed within 5 s.
#[test]
fn partial_heads_and_idle_keep_alive_are_closed_after_the_header_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
    });
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let opened = Instant::now();
    let mut partial = open_idle(reg.addr, 200, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    let mut one_byte = open_idle(reg.addr, 200, b"G");
    let mut kept = TcpStream::connect(reg.addr).unwrap();
    kept.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", reg.addr).as_bytes())
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resp = http::read_response(&mut kept, false).expect("a kept-alive response");
    assert_eq!(resp.status, 200);
    let deadline = opened + Duration::from_secs(5);
    let closed_partial = count_closed(&mut partial, deadline);
    let closed_one = count_closed(&mut one_byte, deadline);
    let (_, kept_closed) = http::read_until_closed(&mut kept, deadline);
    sentinel.check(&base);
    assert_eq!(
        closed_partial, 200,
        "connections with half a request head closed"
    );
    assert_eq!(closed_one, 200, "connections that sent one byte closed");
    assert!(kept_closed, "an idle kept-alive connection was not closed");
}

/// With `max_connections` = 16 and `header_timeout` = 1 s, 16 connections that send nothing
/// take every slot; a 17th client must still be served once they time out (within 8 s).
#[test]
fn max_connections_frees_slots_of_silent_connections() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
        c.max_connections = 16;
    });
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let idle = open_idle(reg.addr, 16, b"");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let resp = http::try_request_within(
        "GET",
        &format!("{base}/v2/"),
        &[],
        b"",
        Duration::from_secs(8),
    );
    println!(
        "17th client: {:?} after {:?}",
        resp.as_ref().map(|r| r.status),
        started.elapsed()
    );
    drop(idle);
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "16 connections that sent nothing hold all 16 slots; header_timeout is 1 s, yet a \
             17th client got no answer in 8 s: {e}"
        )
    });
    assert_eq!(resp.status, 200, "{resp:?}");
    sentinel.check(&base);
}

/// With `max_connections` = 16 and `header_timeout` = 1 s, 16 connections stalled halfway
/// through a request head take every slot; a 17th client is served once they time out.
#[test]
fn max_connections_frees_slots_of_stalled_request_heads() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
        c.max_connections = 16;
    });
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let idle = open_idle(reg.addr, 16, b"GET /v2/ HTTP/1.1\r\n");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let resp = http::try_request_within(
        "GET",
        &format!("{base}/v2/"),
        &[],
        b"",
        Duration::from_secs(8),
    )
    .unwrap_or_else(|e| panic!("a 17th client got no answer in 8 s: {e}"));
    assert_eq!(resp.status, 200, "{resp:?}");
    println!("17th client served after {:?}", started.elapsed());
    drop(idle);
    sentinel.check(&base);
}

/// With `body_idle_timeout` = 1 s, a PATCH (with and without `Connection: close`), a
/// monolithic POST and a manifest PUT that send part of their body and then stall get their
/// connection answered with a 4xx or closed within 5 s; the upload keeps its offset (and
/// finishes normally), and nothing stalled becomes visible.
#[test]
fn stalled_bodies_fail_after_the_body_idle_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.body_idle_timeout = Duration::from_secs(1);
    });
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let repo = "hostile/slow";
    let data = http::random_bytes(3000, 9);
    // Two sessions, so that both stalled PATCHes meet the body timeout (not each other).
    let upload = http::start_upload(&base, repo);
    let path = http::path_of(&upload).to_owned();
    assert_eq!(patch_range(&upload, 0, &data[..1000]).status, 202);
    let upload2 = http::start_upload(&base, repo);
    let path2 = http::path_of(&upload2).to_owned();
    assert_eq!(patch_range(&upload2, 0, &data[..1000]).status, 202);
    let other = http::random_bytes(2000, 10);
    let other_digest = http::sha256_digest(&other);

    let stalls: Vec<(&str, Vec<u8>)> = vec![
        (
            "PATCH",
            concat(&[
                &raw_head(
                    reg.addr,
                    "PATCH",
                    &path,
                    &[
                        OCTETS,
                        ("Content-Length", "1000"),
                        ("Content-Range", "1000-1999"),
                    ],
                ),
                &data[1000..1500],
            ]),
        ),
        (
            "PATCH, Connection: close",
            concat(&[
                &raw_head(
                    reg.addr,
                    "PATCH",
                    &path2,
                    &[OCTETS, ("Content-Length", "1000"), ("Connection", "close")],
                ),
                &data[1000..1500],
            ]),
        ),
        (
            "monolithic POST",
            concat(&[
                &raw_head(
                    reg.addr,
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?digest={other_digest}"),
                    &[OCTETS, ("Content-Length", "2000")],
                ),
                &other[..1000],
            ]),
        ),
        (
            "manifest PUT",
            concat(&[
                &raw_head(
                    reg.addr,
                    "PUT",
                    &format!("/v2/{repo}/manifests/stalled"),
                    &[
                        ("Content-Type", http::OCI_MANIFEST),
                        ("Content-Length", "1000"),
                    ],
                ),
                b"{\"schemaVersion\":2,",
            ]),
        ),
    ];
    // All four stall at once; each must be over within 5 s of being sent.
    let mut streams: Vec<(&str, TcpStream, Instant)> = stalls
        .iter()
        .map(|(what, bytes)| {
            let mut s = http::connect_addr(reg.addr).unwrap();
            s.write_all(bytes).unwrap();
            (*what, s, Instant::now())
        })
        .collect();
    for (what, stream, sent) in &mut streams {
        let (bytes, closed) = http::read_until_closed(stream, *sent + Duration::from_secs(5));
        println!(
            "stalled {what}: closed={closed}, answer {:?}",
            statuses(&bytes)
        );
        for status in statuses(&bytes) {
            assert!(
                (400..500).contains(&status),
                "stalled {what} answered {status}: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert!(
            closed,
            "body_idle_timeout is 1 s, yet a stalled {what} still holds its connection 5 s \
             later (answer so far: {:?})",
            String::from_utf8_lossy(&bytes)
        );
    }
    drop(streams);
    assert_offset_stays(&upload, 1000, "after a stalled PATCH");
    assert_offset_stays(
        &upload2,
        1000,
        "after a stalled PATCH with Connection: close",
    );
    assert_invisible(&base, repo, &other_digest);
    assert_error(
        &http::get(&http::manifest_url(&base, repo, "stalled")),
        404,
        "MANIFEST_UNKNOWN",
    );
    patch_eventually(&upload, 1000, &data[1000..2000]);
    finish_and_check(&base, repo, &upload, 2000, &data);
    patch_eventually(&upload2, 1000, &data[1000..2000]);
    finish_and_check(&base, repo, &upload2, 2000, &data);
    assert_no_stray_upload_files(&reg, &[]);
    sentinel.check(&base);
}

// ---- garbage on the wire ---------------------------------------------------------------------

/// Every file and directory under `root`, relative, sorted.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    for _ in 0..100_000 {
        let Some(dir) = stack.pop() else { break };
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The hostile requests of the barrage; `marker` names the files a path escape would create.
fn barrage(addr: SocketAddr, marker: &str) -> Vec<(String, Vec<u8>)> {
    let host = addr.to_string();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |what: String, bytes: Vec<u8>| out.push((what, bytes));
    // Random bytes, bare and ending like a request head.
    for seed in 0..24u64 {
        let len = 1 + (seed as usize * 397) % 4096;
        let mut bytes = http::random_bytes(len, 100 + seed);
        if seed % 2 == 1 {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        add(format!("{len} random bytes (seed {seed})"), bytes);
    }
    add(
        "random bytes after a request line".into(),
        concat(&[b"GET /v2/ HTTP/1.1\r\n", &http::random_bytes(2000, 7)]),
    );
    // Huge heads.
    add(
        "a 1 MiB header".into(),
        format!(
            "GET /v2/ HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    );
    add(
        "a 1 MiB request target".into(),
        format!(
            "GET /v2/{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    );
    add(
        "10,000 headers".into(),
        format!(
            "GET /v2/ HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
            (0..10_000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        )
        .into_bytes(),
    );
    // Paths that try to leave the data directory, with every method.
    let digest = http::sha256_digest(b"escape");
    let paths = [
        "/v2/../../../../etc/passwd".to_string(),
        format!("/v2/../../{marker}/blobs/uploads/"),
        format!("/v2/%2e%2e/%2e%2e/{marker}/blobs/uploads/"),
        format!("/v2/a/blobs/uploads/../../../../{marker}"),
        format!("/v2/a/blobs/uploads/..%2f..%2f..%2f{marker}"),
        format!("/v2/a/blobs/uploads/%2e%2e%2f%2e%2e%2f{marker}"),
        "/v2/a/blobs/uploads/..".to_string(),
        "/v2/a/blobs/sha256:../../../berth.redb".to_string(),
        format!("/v2/a/blobs/sha256:..%2f..%2f{marker}"),
        "/v2/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000%00"
            .to_string(),
        format!("/v2/a/manifests/..%2f..%2f{marker}"),
        "/v2/a/manifests/..".to_string(),
        "/v2/a%00b/tags/list".to_string(),
        format!("/v2/a/blobs/uploads/?digest=sha256:..%2f..%2f{marker}"),
        format!("/v2/a/blobs/uploads/?digest={digest}&x=../../{marker}"),
        format!("/v2/a/blobs/uploads/?mount=sha256:../../{marker}&from=../.."),
        format!("/v2/a/blobs/uploads/?mount={digest}&from=..%2f..%2f{marker}"),
        "/v2/_catalog?n=-1&last=../..".to_string(),
        "/v2/a/tags/list?n=99999999999999999999999".to_string(),
        format!("/v2/a/referrers/sha256:../../{marker}"),
        "/v2//blobs/uploads/".to_string(),
        "/v2/a//b/blobs/uploads/".to_string(),
        format!("//v2/../{marker}"),
        "/%76%32/".to_string(),
    ];
    for path in &paths {
        for method in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"] {
            add(
                format!("{method} {path}"),
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\nescape"
                )
                .into_bytes(),
            );
        }
    }
    // Broken request lines and headers.
    let raw: [&[u8]; 24] = [
        b"GET /v2/a\0b/tags/list HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /v2/ HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
        b"G\x01T /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://evil.example/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/\nHost: x\n\n",
        b"GET /v2/ HTTP/1.0\r\n\r\n",
        b"PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcdefg",
        b"PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v2/ HTTP/1.1\r\n\r\n",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage garbage garbage",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS client hello",
    ];
    for (i, bytes) in raw.iter().enumerate() {
        add(
            format!(
                "raw #{i}: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
            ),
            bytes.to_vec(),
        );
    }
    out
}

/// `GET /v2/` with a bearer token of `token_len` bytes, closing after it.
fn bearer_get_head(addr: SocketAddr, token_len: usize) -> Vec<u8> {
    let token = format!("Bearer {}", "t".repeat(token_len));
    raw_head(
        addr,
        "GET",
        "/v2/",
        &[("Authorization", &token), ("Connection", "close")],
    )
}

/// A head with a big bearer token (24 KiB: large tokens run to a few) is
/// served; one past the connection's 32 KiB buffer is 431, and the server
/// lives on.
#[test]
fn a_big_request_head_is_served_and_an_oversized_one_is_431() {
    let reg = TestRegistry::start();
    let head = |token_len| bearer_get_head(reg.addr, token_len);
    let big = http::raw(reg.addr, &head(24 << 10), true, Duration::from_secs(10));
    assert_eq!(
        statuses(&big.bytes),
        [200],
        "{}",
        String::from_utf8_lossy(&big.bytes)
    );
    let oversized = http::raw(reg.addr, &head(40 << 10), true, Duration::from_secs(10));
    assert_eq!(
        statuses(&oversized.bytes),
        [431],
        "{}",
        String::from_utf8_lossy(&oversized.bytes)
    );
    assert_eq!(http::get(&format!("{}/v2/", reg.url())).status, 200);
}

/// A client may close its side of the connection once its request is sent
/// (a script writing a request through netcat, an HTTP/1.0-style client):
/// the answer still comes, every time, whatever the head's size.
#[test]
fn a_client_that_closes_its_write_side_after_the_request_is_answered() {
    let reg = TestRegistry::start();
    for token_len in [16, 24 << 10] {
        let head = bearer_get_head(reg.addr, token_len);
        for round in 0..50 {
            let reply = http::raw(reg.addr, &head, true, Duration::from_secs(10));
            assert_eq!(
                statuses(&reply.bytes),
                [200],
                "a {token_len}-byte token, round {round}: {:?}",
                reply.error
            );
        }
    }
}

/// A barrage of garbage: random bytes, a 1 MiB header, a 1 MiB target, 10,000 headers, paths
/// with `..`, `%2e%2e`, `%2f` and NUL bytes on every method, broken request lines, lying and
/// duplicate lengths, smuggling attempts, an HTTP/2 preface with garbage, a TLS hello. Each
/// is answered with a 4xx or the connection is closed, never 5xx, never hanging (each
/// connection's write side is closed after the request); the server then still serves the
/// sentinel; and nothing appeared outside `blobs/`, `uploads/` and `berth.redb`, nor outside
/// the data directory.
#[test]
fn garbage_requests_get_4xx_or_a_close_and_touch_no_file() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir_in(parent.path()).unwrap();
    let data_name = data_dir.path().file_name().unwrap().to_owned();
    let reg = TestRegistry::start_with(data_dir, |_| {});
    let base = reg.url();
    let sentinel = Sentinel::push(&base);
    let marker = format!("berth-escape-{}", uuid::Uuid::new_v4().simple());
    let requests = barrage(reg.addr, &marker);
    let started = Instant::now();
    let mut answers = std::collections::BTreeMap::new();
    for (what, bytes) in &requests {
        let reply = http::raw(reg.addr, bytes, true, Duration::from_secs(10));
        *answers
            .entry(statuses(&reply.bytes).first().copied())
            .or_insert(0) += 1;
        assert!(
            !reply.timed_out(),
            "{what}: the server neither answered nor closed within 10 s"
        );
        for status in statuses(&reply.bytes) {
            assert!(
                status < 500,
                "{what}: answered {status}: {:?}",
                String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(600)])
            );
        }
    }
    println!(
        "{} hostile requests in {:?}; first status of each reply (None: closed): {answers:?}",
        requests.len(),
        started.elapsed()
    );
    sentinel.check(&base);

    // Nothing outside the data directory...
    let beside: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        beside,
        vec![data_name.to_string_lossy().into_owned()],
        "files appeared beside the data directory"
    );
    let tmp_escapes: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.contains(&marker).then_some(name)
        })
        .collect();
    assert!(
        tmp_escapes.is_empty(),
        "escaped into the temp dir: {tmp_escapes:?}"
    );
    // ...and inside it, only the database, blob files and upload files by their rules.
    let data = reg.data.path();
    for entry in walk(data) {
        assert!(!entry.contains(&marker), "an escape created {entry}");
        let parts: Vec<&str> = entry.split('/').collect();
        let ok = match parts.as_slice() {
            ["berth.redb"] | ["blobs"] | ["uploads"] | ["blobs", "sha256" | "sha512"] => true,
            ["uploads", id] => uuid::Uuid::parse_str(id).is_ok(),
            ["blobs", "sha256" | "sha512", dir] => dir.len() == 2,
            ["blobs", algorithm, dir, hex] => {
                hex.len() == if *algorithm == "sha256" { 64 } else { 128 }
                    && hex.starts_with(dir)
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }
            _ => false,
        };
        assert!(ok, "unexpected entry in the data directory: {entry}");
    }
}
