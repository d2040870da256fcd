//! Slow and stalled clients. No thread may wait on a client: hundreds of
//! downloads nobody reads and uploads that trickle a byte at a time must
//! leave the real binary's thread count and memory flat and every other
//! client answered within a second; a transfer that moves less than the
//! minimum rate over the body timeout is cut, however often it sends a
//! byte; and connections that stay silent after the HTTP/2 preface are
//! closed like silent HTTP/1 ones.
//!
//! Every socket read has a deadline and every loop a fixed count; all
//! traffic is on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, *};
use common::process::ServerProcess;

/// A field of /proc/PID/status, such as `Threads` or `VmRSS` (in kB).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Asserts that other clients are answered within a second while the
/// stalled ones hold their connections, and that the server holds few
/// threads and little memory.
#[track_caller]
fn assert_others_served(server: &ServerProcess, image: &Image, what: &str) {
    let base = server.url();
    for round in 0..5 {
        let started = Instant::now();
        let resp = http::try_request_within(
            "GET",
            &manifest_url(&base, "app", "v1"),
            &[("Accept", OCI_MANIFEST)],
            b"",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("manifest GET {round} beside {what}: {e}"));
        assert_eq!(resp.body, image.manifest, "{what}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "manifest GET {round} took {took:?} beside {what}"
        );
    }
    let threads = proc_status(server.pid(), "Threads");
    let rss_mib = proc_status(server.pid(), "VmRSS") / 1024;
    println!("beside {what}: {threads} threads, {rss_mib} MiB resident");
    assert!(threads < 64, "{threads} threads beside {what}");
    assert!(rss_mib < 512, "{rss_mib} MiB resident beside {what}");
}

fn start_with_blob(dir: &Path, blob: &[u8]) -> (ServerProcess, Image, String) {
    let server = ServerProcess::start(&dir.join("data"), &dir.join("log"));
    let image = push_image(&server.url(), "app", Some("v1"), 1);
    let digest = push_blob(&server.url(), "app", blob);
    (server, image, digest)
}

fn connect_all(addr: SocketAddr, n: usize, request: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.write_all(request).unwrap();
            s
        })
        .collect()
}

#[test]
fn downloads_nobody_reads_hold_no_thread_and_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let blob = random_bytes(16 << 20, 2);
    let (server, image, digest) = start_with_blob(dir.path(), &blob);
    let request = format!(
        "GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    let stalled = connect_all(server.addr, 530, request.as_bytes());
    // Time for every response to fill its socket buffers and stall.
    std::thread::sleep(Duration::from_secs(3));
    assert_others_served(&server, &image, "530 downloads nobody reads");
    drop(stalled);
}

#[test]
fn uploads_trickling_a_byte_at_a_time_hold_no_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (server, image, _) = start_with_blob(dir.path(), b"unused");
    let n = 520;
    let mut trickles: Vec<TcpStream> = (0..n)
        .map(|i| {
            let upload = start_upload(&server.url(), "app");
            let head = format!(
                "PATCH {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: 1000\r\n\r\n",
                path_of(&upload),
                server.addr
            );
            let mut s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("trickle {i}: {e}"));
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    for _ in 0..3 {
        for s in &mut trickles {
            s.write_all(b"x").unwrap();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_others_served(&server, &image, "520 uploads trickling");
    drop(trickles);
}

/// Sends one byte every 200 ms: never a gap as long as the 2 s body
/// timeout, but far below the minimum rate.
fn trickle_until_cut(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = Vec::new();
    while started.elapsed() < within {
        if stream.write_all(b"x").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return (answer, true),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (answer, true),
        }
    }
    let (rest, closed) = http::read_until_closed(stream, Instant::now() + Duration::from_secs(1));
    answer.extend(rest);
    (answer, closed)
}

#[test]
fn an_upload_below_the_minimum_rate_is_cut_though_bytes_keep_coming() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.body_idle_timeout = Duration::from_secs(2);
    });
    let base = reg.url();
    let upload = start_upload(&base, "app");
    let mut stream = http::connect_addr(reg.addr).unwrap();
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
        path_of(&upload),
        reg.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let (answer, closed) = trickle_until_cut(&mut stream, Duration::from_secs(12));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        closed,
        "a 5 byte/s upload still runs {:?} later: {answer:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer:?}"
    );
    // Nothing of the cut chunk was committed.
    let resp = http::get(&resolve(&base, &upload));
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-0"), "{resp:?}");
}

#[test]
fn a_download_nobody_reads_is_cut_after_the_body_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.body_idle_timeout = Duration::from_secs(2);
    });
    let blob = random_bytes(32 << 20, 3);
    let digest = push_blob(&reg.url(), "app", &blob);
    let mut stream = http::connect_addr(reg.addr).unwrap();
    let request = format!(
        "GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\n\r\n",
        reg.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let (bytes, closed) =
        http::read_until_closed(&mut stream, Instant::now() + Duration::from_secs(5));
    assert!(
        closed && bytes.len() < blob.len(),
        "a download not read for 8 s with a 2 s body timeout was not cut \
         (closed: {closed}, {} of {} bytes came)",
        bytes.len(),
        blob.len()
    );
    // The server is fine, and the blob is whole for a client that reads.
    assert_eq!(http::get(&blob_url(&reg.url(), "app", &digest)).body, blob);
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn connections_silent_after_the_http2_preface_are_closed() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
    });
    let opened = Instant::now();
    let mut silent = connect_all(reg.addr, 200, H2_PREFACE);
    let deadline = opened + Duration::from_secs(6);
    let closed = silent
        .iter_mut()
        .map(|s| http::read_until_closed(s, deadline).1)
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        closed, 200,
        "header timeout 1 s, yet {closed} of 200 silent HTTP/2 connections closed within 6 s"
    );
    assert_eq!(http::get(&format!("{}/v2/", reg.url())).status, 200);
}

/// Opens `connections` h2c connections, each asking for `streams` GETs of
/// `path` with a flow-control window of zero, so no body byte can be sent.
/// Returns once every answer's head came (or `within` passed) with the
/// streams still open, and how many heads came.
async fn h2_zero_window(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    streams: usize,
    within: Duration,
) -> (Vec<h2::client::ResponseFuture>, Vec<h2::RecvStream>, usize) {
    let mut pending = Vec::new();
    for _ in 0..connections {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(connection);
        for _ in 0..streams {
            let request = ::http::Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap();
            let mut client = client.clone().ready().await.unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            pending.push(response);
        }
    }
    let mut bodies = Vec::new();
    let mut waiting = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    for mut response in pending {
        match tokio::time::timeout_at(deadline, &mut response).await {
            Ok(Ok(response)) => bodies.push(response.into_body()),
            // Opened before the server's SETTINGS came, over its limit.
            Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {}
            Ok(Err(e)) => panic!("an h2 stream failed before its head: {e}"),
            // Past the server's stream limit: queued, still a stall.
            Err(_) => waiting.push(response),
        }
    }
    let heads = bodies.len();
    (waiting, bodies, heads)
}

#[test]
fn http2_downloads_held_at_a_zero_window_hold_no_thread_and_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let blob = random_bytes(16 << 20, 4);
    let (server, image, digest) = start_with_blob(dir.path(), &blob);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let path = format!("/v2/app/blobs/{digest}");
    let (_queued, _stalled, heads) = runtime.block_on(h2_zero_window(
        server.addr,
        &path,
        3,
        200,
        Duration::from_secs(4),
    ));
    // The server answers at most its stream limit (100) per connection at
    // once; the rest wait in the client or are refused, as the protocol has it.
    assert!(
        heads >= 3 * 100,
        "only {heads} heads came over 3 connections"
    );
    assert!(heads <= 3 * 100, "{heads} streams open over 3 connections");
    std::thread::sleep(Duration::from_secs(2));
    assert_others_served(
        &server,
        &image,
        "3 h2c connections x 200 streams at a zero window",
    );
}

#[test]
fn an_http2_download_held_at_a_zero_window_is_cut_after_the_body_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.body_idle_timeout = Duration::from_secs(2);
    });
    let blob = random_bytes(4 << 20, 5);
    let digest = push_blob(&reg.url(), "app", &blob);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path = format!("/v2/app/blobs/{digest}");
        let (_, mut bodies, heads) =
            h2_zero_window(reg.addr, &path, 1, 1, Duration::from_secs(5)).await;
        assert_eq!(heads, 1);
        let mut body = bodies.pop().unwrap();
        // Nothing can come while the window is zero; the stream must end
        // in an error (a reset, or the connection cut) within the timeout
        // and a margin, never hang.
        let outcome = tokio::time::timeout(Duration::from_secs(10), body.data()).await;
        match outcome {
            Ok(Some(Err(_))) => {}
            Ok(None) => panic!("the stream ended cleanly with no body"),
            Ok(Some(Ok(data))) => panic!("{} bytes came through a zero window", data.len()),
            Err(_) => panic!("a zero-window stream was not cut 10 s into a 2 s body timeout"),
        }
    });
    assert_eq!(http::get(&blob_url(&reg.url(), "app", &digest)).body, blob);
}

/// With `header_timeout` = 1 s and a 30 s body window, an HTTP/2 connection
/// whose one request outlived the idle limit is closed about a second after
/// that request ends, not when the window ends: the watchdog, asleep with
/// no idle deadline while the request ran, is told when it ends. (HTTP/1.1
/// keep-alive is cut by hyper's own header timeout; HTTP/2 only by this.)
#[test]
fn an_http2_connection_idle_after_a_long_request_is_closed_after_the_header_timeout() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_idle_timeout = Duration::from_secs(30);
    });
    let upload = http::start_upload(&reg.url(), "app");
    let path = http::path_of(&upload).to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(reg.addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let request = ::http::Request::patch(format!("http://{}{path}", reg.addr))
            .header("content-type", "application/octet-stream")
            .header("content-length", "3000")
            .body(())
            .unwrap();
        let mut client = client.ready().await.unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        for last in [false, false, true] {
            tokio::time::sleep(Duration::from_secs(1)).await;
            body.send_data(bytes::Bytes::from(vec![7u8; 1000]), last)
                .unwrap();
        }
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("the PATCH's answer within 10 s")
            .unwrap();
        assert_eq!(response.status(), 202);
        drop(client);
        let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(
            closed.is_ok(),
            "an HTTP/2 connection idle for 5 s after a 3 s request was not closed \
             (header_timeout 1 s, body window 30 s)"
        );
    });
}
