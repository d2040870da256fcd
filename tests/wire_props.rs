//! Generated requests over a real socket: any method, any path made of
//! the router's segments and odd bytes, any of the headers a handler reads
//! (Content-Range, Range, Content-Type, Accept, Authorization, digests in
//! the query) with odd values, and small bodies, sent raw to a running
//! berth that holds an image, an open upload and a tag. Every request must
//! get an answer below 500, and afterwards everything stored must be
//! served as before. Cases are drawn from a fixed seed; BERTH_FUZZ_CASES
//! and BERTH_FUZZ_SEED=random make a longer run, as for the unit-level
//! property tests (src/props.rs).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::TestRegistry;
use common::http;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

const REPO: &str = "wire/app";

fn config() -> Config {
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rng_seed = match std::env::var("BERTH_FUZZ_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(seed) => RngSeed::Fixed(seed.parse().expect("BERTH_FUZZ_SEED: a number, or random")),
        None => RngSeed::Fixed(0x7a1e_5eed),
    };
    Config {
        cases,
        rng_seed,
        failure_persistence: None,
        ..Config::default()
    }
}

/// What the server holds before the requests start, for paths that reach
/// past the router into the handlers.
struct Known {
    upload_path: String,
    digests: Vec<String>,
}

#[derive(Debug, Clone)]
struct Wire {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn segment(known: &Known) -> impl Strategy<Value = String> {
    let digests = known.digests.clone();
    prop_oneof![
        Just("v2".to_owned()),
        Just("wire".to_owned()),
        Just("app".to_owned()),
        Just("blobs".to_owned()),
        Just("uploads".to_owned()),
        Just("manifests".to_owned()),
        Just("tags".to_owned()),
        Just("list".to_owned()),
        Just("referrers".to_owned()),
        Just("_catalog".to_owned()),
        Just("v1".to_owned()),
        Just("..".to_owned()),
        Just(String::new()),
        prop::sample::select(digests),
        "sha(256|512):[0-9a-fA-F]{0,130}",
        "[a-zA-Z0-9._~:@!$&'()*+,;=-]{1,16}",
        "(%[0-9a-fA-F]{2}){1,4}",
        "\\PC{1,4}",
    ]
}

fn path(known: &Known) -> impl Strategy<Value = String> {
    let upload = known.upload_path.clone();
    let query = prop_oneof![
        Just(String::new()),
        "\\?(digest|mount|from|n|last|ns|digest-algorithm)=[a-z0-9:%/.=&-]{0,80}",
    ];
    let built = (prop::collection::vec(segment(known), 0..8), query)
        .prop_map(|(segs, query)| format!("/{}{query}", segs.join("/")));
    let at_upload = "\\?digest=sha256:[0-9a-f]{64}|".prop_map(move |q| format!("{upload}{q}"));
    prop_oneof![
        4 => built,
        2 => at_upload,
        1 => Just(format!("/v2/{REPO}/manifests/v1")),
        1 => "(\\?digest=sha256:[0-9a-f]{64})?".prop_map(|q| format!("/v2/{REPO}/blobs/uploads/{q}")),
        1 => "/[ -~]{0,300}",
    ]
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("Content-Range"),
        Just("Range"),
        Just("Content-Type"),
        Just("Accept"),
        Just("Authorization"),
        Just("If-None-Match"),
        Just("X-Anything"),
    ];
    let value = prop_oneof![
        "bytes=[0-9]{0,20}-[0-9]{0,20}",
        "[0-9]{0,20}-[0-9]{0,20}(/[0-9*]{0,20})?",
        "application/vnd\\.(oci|docker)\\.[a-z.]{0,40}\\+json",
        "(Basic|Bearer|basic) [A-Za-z0-9+/=._-]{0,80}",
        "[ -~]{0,120}",
        prop::collection::vec(0x80u8..=0xff, 1..20)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    (name, value).prop_map(|(n, v)| (n.to_owned(), v.into_bytes()))
}

fn request(known: &Known) -> impl Strategy<Value = Wire> {
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("PUT"),
        Just("POST"),
        Just("PATCH"),
        Just("DELETE"),
        Just("OPTIONS"),
        Just("BREW"),
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..300),
        Just(
            br#"{"schemaVersion":2,"config":{"digest":"sha256:00","size":1},"layers":[]}"#.to_vec()
        ),
    ];
    (
        method,
        path(known),
        prop::collection::vec(header(), 0..4),
        body,
    )
        .prop_map(|(method, path, headers, body)| Wire {
            method: method.to_owned(),
            path,
            headers,
            body,
        })
}

/// Sends one request on a connection of its own and reads the status.
fn send(addr: SocketAddr, wire: &Wire) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut raw =
        format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", wire.method, wire.path).into_bytes();
    for (name, value) in &wire.headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            wire.body.len()
        )
        .as_bytes(),
    );
    raw.extend_from_slice(&wire.body);
    stream.write_all(&raw).map_err(|e| format!("write: {e}"))?;
    let response = http::read_response(&mut stream, wire.method == "HEAD")
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(response.status)
}

#[test]
fn any_request_gets_an_answer_below_500_and_nothing_stored_changes() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let image = http::push_image(&base, REPO, Some("v1"), 5);
    let upload = http::start_upload(&base, REPO);
    let known = Known {
        upload_path: http::path_of(&upload).to_owned(),
        digests: vec![
            http::sha256_digest(&image.config),
            http::sha256_digest(&image.layer),
            image.digest.clone(),
        ],
    };
    let mut runner = TestRunner::new(config());
    let answers = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let outcome = runner.run(&request(&known), |wire| {
        let status = send(reg.addr, &wire).map_err(TestCaseError::fail)?;
        *answers.borrow_mut().entry(status).or_default() += 1;
        prop_assert!(status < 500, "{} for {:?}", status, wire);
        Ok(())
    });
    let answers = answers.into_inner();
    println!("answers by status: {answers:?}");
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Statuses of every kind came up: the requests reached the handlers.
    assert!(
        answers.keys().filter(|s| (200..300).contains(*s)).count() >= 2
            && answers.keys().filter(|s| (400..500).contains(*s)).count() >= 4,
        "too few kinds of answer to have reached the handlers: {answers:?}"
    );

    // Requests with odd bytes may have done what they asked (a DELETE of
    // the tag, a PUT), but the blobs are whole wherever they are served.
    for (digest, data) in [
        (http::sha256_digest(&image.config), &image.config),
        (http::sha256_digest(&image.layer), &image.layer),
    ] {
        let got = http::get(&http::blob_url(&base, REPO, &digest));
        if got.status == 200 {
            assert!(&got.body == data, "{digest} is served changed");
        } else {
            assert_eq!(got.status, 404, "{digest}: {got:?}");
        }
    }
    assert_eq!(http::get(&format!("{base}/v2/")).status, 200);
}
