//! A length a client claims costs nothing until its bytes arrive: many
//! requests that declare the largest manifest, a terabyte blob or a
//! terabyte chunk, and then send a few bytes, hold the server's memory to
//! what a connection costs. Untouched allocations do not show in RSS, so
//! this binary counts the bytes its allocator hands out (the registry runs
//! in this process); it is its own binary so that no other test allocates
//! beside it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http;

/// Bytes allocated and not yet freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only watches.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Requests of each kind held open at once.
const EACH: usize = 60;
const TERABYTE: u64 = 1 << 40;

/// Opens a connection, sends `head` and a few body bytes, and keeps it.
fn claim(reg: &TestRegistry, head: String) -> TcpStream {
    let mut stream = http::connect_addr(reg.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b'{'; 100]).unwrap();
    stream
}

#[test]
fn claimed_lengths_allocate_nothing_before_their_bytes_come() {
    let reg = TestRegistry::start();
    let addr = reg.addr;
    // Sessions to PATCH, one per request (a session takes one at a time).
    let sessions: Vec<String> = (0..EACH)
        .map(|i| http::path_of(&http::start_upload(&reg.url(), &format!("claims/s{i}"))).to_owned())
        .collect();
    let baseline = LIVE.load(Ordering::Relaxed);
    let manifest_limit = 4 << 20;
    let mut held = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        held.push(claim(
            &reg,
            format!(
                "PUT /v2/claims/m/manifests/t{i} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
                http::OCI_MANIFEST,
                manifest_limit - 1
            ),
        ));
        let digest = http::sha256_digest(format!("blob {i}").as_bytes());
        held.push(claim(
            &reg,
            format!(
                "POST /v2/claims/b/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {TERABYTE}\r\n\r\n"
            ),
        ));
        held.push(claim(
            &reg,
            format!(
                "PATCH {} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Range: 0-{}\r\n\
                 Content-Length: {TERABYTE}\r\n\r\n",
                session,
                TERABYTE - 1
            ),
        ));
    }
    // The server reads each head and the bytes that came at once; watch a
    // while for what it holds meanwhile.
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        peak = peak.max(LIVE.load(Ordering::Relaxed) - baseline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let requests = held.len();
    let per_request = peak / requests as isize;
    println!(
        "{requests} requests claiming {} MiB in all hold {} KiB more, {per_request} bytes each",
        (EACH as u64 * (manifest_limit as u64 + 2 * TERABYTE)) >> 20,
        peak >> 10
    );
    // A connection with a request in progress costs tens of KiB (hyper's
    // buffers, the handler's state); a claim honoured up front would cost
    // at least the 4 MiB of a manifest's.
    assert!(
        per_request < 256 << 10,
        "{per_request} bytes held per request claiming a length it never sent"
    );
    // Each is still waiting for its body: what was measured is a request
    // in progress, not one refused at its head.
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        let early = std::io::Read::read(stream, &mut byte);
        assert!(
            early.is_err(),
            "a request was answered or closed before its body came: {early:?}"
        );
    }
    drop(held);
    let resp = http::get(&format!("{}/v2/", reg.url()));
    assert_eq!(resp.status, 200, "{resp:?}");
}
