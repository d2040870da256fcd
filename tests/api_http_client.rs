//! Self-tests of the test HTTP client (`common::http`) against a scripted
//! fake server, so the registry tests can trust what it reports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use common::http;

/// What the fake server does after reading the request head.
enum Script {
    /// Reads the whole request (by Content-Length), then answers.
    Answer(Vec<u8>),
    /// Answers right after the head without reading the body, waits, closes.
    AnswerEarly(Vec<u8>),
}

/// A one-connection fake server; the handle yields the request it read.
fn fake(script: Script) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed before the request head ended");
            request.extend_from_slice(&chunk[..n]);
        };
        match script {
            Script::Answer(response) => {
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while request.len() < head_end + len {
                    let n = stream.read(&mut chunk).unwrap();
                    assert!(n > 0, "client closed before the request body ended");
                    request.extend_from_slice(&chunk[..n]);
                }
                stream.write_all(&response).unwrap();
            }
            Script::AnswerEarly(response) => {
                stream.write_all(&response).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        request
    });
    (addr, handle)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

common::both_engines! {
#[test]
fn sends_host_connection_close_and_content_length() {
    let (addr, server) = fake(Script::Answer(
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    let resp = http::put(
        &url(addr, "/v2/x?digest=y"),
        &[("Content-Type", "a/b")],
        b"hello",
    );
    assert_eq!(resp.status, 201);
    let request = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(
        request.starts_with("PUT /v2/x?digest=y HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("\r\nHost: {addr}\r\n")),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    assert!(request.contains("\r\nContent-Length: 5\r\n"), "{request}");
    assert!(request.contains("\r\nContent-Type: a/b\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nhello"), "{request}");
}

#[test]
fn empty_post_sends_content_length_zero_and_get_sends_none() {
    let (addr, server) = fake(Script::Answer(
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    http::post(&url(addr, "/"), &[], b"");
    assert!(
        String::from_utf8(server.join().unwrap())
            .unwrap()
            .contains("Content-Length: 0\r\n")
    );

    let (addr, server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    http::get(&url(addr, "/"));
    let request = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(
        !request.to_ascii_lowercase().contains("content-length"),
        "{request}"
    );
}

#[test]
fn reads_body_by_content_length_and_headers_case_insensitively() {
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:x\r\nX-Multi: 1\r\nx-multi: 2\r\nContent-Length: 5\r\n\r\nhello"
            .to_vec(),
    ));
    let resp = http::get(&url(addr, "/"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert_eq!(resp.body, b"hello");
    assert_eq!(resp.header("docker-content-digest"), Some("sha256:x"));
    assert_eq!(resp.header("DOCKER-CONTENT-DIGEST"), Some("sha256:x"));
    assert_eq!(resp.header_all("X-MULTI"), ["1", "2"]);
    assert_eq!(resp.header("missing"), None);
}

#[test]
fn decodes_chunked_bodies_with_extensions_and_trailers() {
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n"
            .to_vec(),
    ));
    let resp = http::get(&url(addr, "/"));
    assert_eq!(resp.body, b"hello, world!!!");
}

#[test]
fn reads_until_eof_without_length() {
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
    ));
    assert_eq!(http::get(&url(addr, "/")).body, b"until the end");
}

#[test]
fn head_and_204_have_no_body_but_stray_bytes_are_reported() {
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(),
    ));
    let resp = http::head(&url(addr, "/"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1000"));
    assert!(resp.body.is_empty());

    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 204 No Content\r\nRange: 0-0\r\n\r\n".to_vec(),
    ));
    let resp = http::get(&url(addr, "/"));
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty());

    // A server that wrongly sends a body on HEAD is caught.
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad".to_vec(),
    ));
    assert_eq!(http::head(&url(addr, "/")).body, b"bad");
}

#[test]
fn skips_100_continue() {
    let (addr, _server) = fake(Script::Answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
            .to_vec(),
    ));
    let resp = http::put(&url(addr, "/"), &[], b"x");
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body, b"ok");
}

#[test]
fn hears_an_early_answer_to_a_large_upload() {
    let error = br#"{"errors":[{"code":"SIZE_INVALID","message":"too big","detail":1}]}"#;
    let mut answer = format!(
        "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        error.len()
    )
    .into_bytes();
    answer.extend_from_slice(error);
    let (addr, _server) = fake(Script::AnswerEarly(answer));
    let body = vec![b' '; 16 * 1024 * 1024];
    let resp = http::put(&url(addr, "/v2/x/manifests/y"), &[], &body);
    http::assert_error(&resp, 413, "SIZE_INVALID");
}

#[test]
fn error_helpers_check_status_type_and_code() {
    let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":null}]}"#;
    let ok = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = ok.into_bytes();
    bytes.extend_from_slice(body);
    let resp = http::parse_response(&bytes, false).unwrap();
    http::assert_error(&resp, 404, "BLOB_UNKNOWN");
    assert_eq!(resp.error_codes(), ["BLOB_UNKNOWN"]);
    for (status, code) in [(400, "BLOB_UNKNOWN"), (404, "MANIFEST_UNKNOWN")] {
        let caught = std::panic::catch_unwind(|| http::assert_error(&resp, status, code));
        assert!(caught.is_err(), "assert_error({status}, {code}) passed");
    }
    let text = http::parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"m\"}]}", false).unwrap();
    assert!(std::panic::catch_unwind(|| http::assert_error(&text, 404, "BLOB_UNKNOWN")).is_err());
}

#[test]
fn raw_mode_sends_arbitrary_bytes_and_collects_the_reply() {
    let (addr, server) = fake(Script::AnswerEarly(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    let reply = http::raw(
        addr,
        b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
        true,
        Duration::from_secs(5),
    );
    assert_eq!(reply.response().map(|r| r.status), Some(400));
    assert!(!reply.timed_out());
    let request = server.join().unwrap();
    assert!(request.starts_with(b"PUT / HTTP/1.1\r\n"));
}

#[test]
fn locations_resolve_against_the_base() {
    let base = "http://127.0.0.1:5000";
    assert_eq!(
        http::resolve(base, "/v2/a/blobs/uploads/u?x=1"),
        "http://127.0.0.1:5000/v2/a/blobs/uploads/u?x=1"
    );
    assert_eq!(
        http::resolve(base, "http://other:1/v2/"),
        "http://other:1/v2/"
    );
    assert_eq!(
        http::resolve("http://h:1/v2/a/blobs/uploads/", "u"),
        "http://h:1/v2/a/blobs/uploads/u"
    );
    assert_eq!(http::path_of("http://h:1/v2/x?y"), "/v2/x?y");
    assert_eq!(http::path_of("/v2/x"), "/v2/x");
    assert_eq!(http::with_query("http://h/a", "n=1"), "http://h/a?n=1");
    assert_eq!(
        http::with_query("http://h/a?last=b", "n=1"),
        "http://h/a?last=b&n=1"
    );
}

#[test]
fn sha256_digests_are_lowercase_hex() {
    assert_eq!(http::sha256_digest(b""), http::EMPTY_DIGEST);
    assert_eq!(
        http::sha256_digest(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
}
