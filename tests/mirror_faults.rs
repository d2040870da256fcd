//! Pull-through from an upstream that misbehaves: a small registry in this
//! file serves one image and can corrupt, cut or stall a blob. Nothing
//! wrong is ever stored or completed; a failed fetch leaves nothing, so the
//! next pull fetches again; many clients asking at once cause one fetch;
//! and a kill -9 during a fetch leaves nothing partial visible.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, OCI_MANIFEST};
use common::process::ServerProcess;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Whole,
    /// One byte of the blob flipped.
    Corrupt,
    /// The connection closed halfway through the blob.
    Cut,
    /// Half the blob, then nothing for a minute.
    Stall,
    /// A byte every 200 ms, each within any read timeout.
    Trickle,
}

/// A registry that serves what it is given, the way it is told to.
struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    mode: Mutex<Mode>,
    /// Blob GETs answered, by digest.
    blob_gets: Mutex<HashMap<String, usize>>,
    /// Held before a blob's body, so that concurrent askers overlap.
    delay: Mutex<Duration>,
    /// Manifests answered without Docker-Content-Digest, as some
    /// registries (and proxies in front of them) do.
    hide_digests: AtomicBool,
    open: AtomicUsize,
    stop: AtomicBool,
    /// Every request's head, as it came.
    heads: Mutex<Vec<String>>,
    /// Answers a request without Basic credentials with a challenge.
    require_basic: AtomicBool,
    /// Answers every request with a Bearer challenge naming this realm.
    bearer_realm: Mutex<Option<String>>,
    /// Answers tag lists and referrers lists 500.
    fail_lists: AtomicBool,
    /// Held before a manifest's answer; manifests being answered now, and
    /// the most at once.
    manifest_delay: Mutex<Duration>,
    answering: AtomicUsize,
    most_answering: AtomicUsize,
    /// The `Link` a tag list names as its next page.
    tags_link: Mutex<Option<String>>,
    /// The tags a tag list names.
    tags: Mutex<Vec<String>>,
    /// Referrers lists by subject: the pages, each a JSON body.
    referrers: Mutex<HashMap<String, Vec<String>>>,
    /// Blob bodies being sent now, and the most at once.
    sending: AtomicUsize,
    most_sending: AtomicUsize,
    /// Manifest GETs (not HEADs) answered 429, as a rate-limited Docker Hub
    /// does.
    limit_manifest_gets: AtomicBool,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Whole),
            blob_gets: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            hide_digests: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            heads: Mutex::new(Vec::new()),
            require_basic: AtomicBool::new(false),
            bearer_realm: Mutex::new(None),
            fail_lists: AtomicBool::new(false),
            manifest_delay: Mutex::new(Duration::ZERO),
            answering: AtomicUsize::new(0),
            most_answering: AtomicUsize::new(0),
            tags_link: Mutex::new(None),
            tags: Mutex::new(vec!["1".into()]),
            referrers: Mutex::new(HashMap::new()),
            sending: AtomicUsize::new(0),
            most_sending: AtomicUsize::new(0),
            limit_manifest_gets: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // Bounded: the test process ends, or stop is set on drop.
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let state = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, &state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeUpstream { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn add_image(&self, repo: &str, tag: &str, image: &http::Image) {
        let mut manifests = self.state.manifests.lock().unwrap();
        for reference in [tag, image.digest.as_str()] {
            manifests.insert(
                format!("/v2/{repo}/manifests/{reference}"),
                (image.digest.clone(), image.manifest.clone()),
            );
        }
        let mut blobs = self.state.blobs.lock().unwrap();
        blobs.insert(image.config_digest.clone(), image.config.clone());
        blobs.insert(image.layer_digest.clone(), image.layer.clone());
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    fn blob_gets(&self, digest: &str) -> usize {
        self.state
            .blob_gets
            .lock()
            .unwrap()
            .get(digest)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, state: &State) {
    state.open.fetch_add(1, Ordering::Relaxed);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    state.heads.lock().unwrap().push(head.clone());
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let reply = |stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        if method != "HEAD" {
            let _ = stream.write_all(body);
        }
    };
    let authorized = head
        .to_ascii_lowercase()
        .contains("\r\nauthorization: basic ");
    if let Some(realm) = state.bearer_realm.lock().unwrap().clone() {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\n");
        return reply(
            &mut stream,
            "401 Unauthorized",
            &challenge,
            b"{\"errors\":[]}",
        );
    }
    if state.require_basic.load(Ordering::Relaxed) && !authorized {
        let challenge = "WWW-Authenticate: Basic realm=\"fake\"\r\n";
        return reply(
            &mut stream,
            "401 Unauthorized",
            challenge,
            b"{\"errors\":[]}",
        );
    }
    if (path.starts_with("/v2/team/app/tags/list") || path.starts_with("/v2/team/app/referrers/"))
        && state.fail_lists.load(Ordering::Relaxed)
    {
        return reply(
            &mut stream,
            "500 Internal Server Error",
            "",
            b"{\"errors\":[]}",
        );
    }
    if path.starts_with("/v2/team/app/tags/list") {
        let link = state.tags_link.lock().unwrap().clone();
        let link = link.map_or(String::new(), |l| format!("Link: <{l}>; rel=\"next\"\r\n"));
        let tags = state.tags.lock().unwrap().clone();
        let body = serde_json::json!({"name": "team/app", "tags": tags}).to_string();
        return reply(&mut stream, "200 OK", &link, body.as_bytes());
    }
    if let Some(rest) = path.strip_prefix("/v2/team/app/referrers/") {
        // Page N+1 is asked for with ?page=N+1, as its Link says.
        let (subject, page) = match rest.split_once("?page=") {
            Some((subject, page)) => (subject, page.parse().unwrap_or(usize::MAX)),
            None => (rest, 0),
        };
        let pages = state.referrers.lock().unwrap().get(subject).cloned();
        let Some(body) = pages.as_ref().and_then(|p| p.get(page)) else {
            return reply(&mut stream, "404 Not Found", "", b"{\"errors\":[]}");
        };
        let more = pages.as_ref().is_some_and(|p| page + 1 < p.len());
        let link = match more {
            true => format!(
                "Link: </v2/team/app/referrers/{subject}?page={}>; rel=\"next\"\r\n",
                page + 1
            ),
            false => String::new(),
        };
        let headers = format!("Content-Type: application/vnd.oci.image.index.v1+json\r\n{link}");
        return reply(&mut stream, "200 OK", &headers, body.as_bytes());
    }
    if method == "GET"
        && path.contains("/manifests/")
        && state.limit_manifest_gets.load(Ordering::Relaxed)
    {
        return reply(&mut stream, "429 Too Many Requests", "", b"{\"errors\":[]}");
    }
    let manifest = state.manifests.lock().unwrap().get(path).cloned();
    if let Some((digest, body)) = manifest {
        let answering = state.answering.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_answering.fetch_max(answering, Ordering::SeqCst);
        let _answered = Sent(&state.answering);
        let delay = *state.manifest_delay.lock().unwrap();
        std::thread::sleep(delay);
        let headers = if state.hide_digests.load(Ordering::Relaxed) {
            format!("Content-Type: {OCI_MANIFEST}\r\n")
        } else {
            format!("Content-Type: {OCI_MANIFEST}\r\nDocker-Content-Digest: {digest}\r\n")
        };
        return reply(&mut stream, "200 OK", &headers, &body);
    }
    let digest = path.rsplit('/').next().unwrap_or("").to_owned();
    let blob = state.blobs.lock().unwrap().get(&digest).cloned();
    let Some(mut blob) = blob.filter(|_| path.contains("/blobs/")) else {
        return reply(&mut stream, "404 Not Found", "", b"{\"errors\":[]}");
    };
    if method == "HEAD" {
        return reply(&mut stream, "200 OK", "", &blob);
    }
    *state.blob_gets.lock().unwrap().entry(digest).or_default() += 1;
    let mode = *state.mode.lock().unwrap();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        blob.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let sending = state.sending.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_sending.fetch_max(sending, Ordering::SeqCst);
    // Read first: sleeping with the lock held would hold every other
    // blob's answer back too.
    let delay = *state.delay.lock().unwrap();
    std::thread::sleep(delay);
    let _sent = Sent(&state.sending);
    let half = blob.len() / 2;
    match mode {
        Mode::Whole => {
            let _ = stream.write_all(&blob);
        }
        Mode::Corrupt => {
            blob[half] ^= 0xff;
            let _ = stream.write_all(&blob);
        }
        Mode::Cut => {
            let _ = stream.write_all(&blob[..half]);
        }
        Mode::Trickle => {
            // Bounded, and cut short when the test ends or the reader goes.
            for byte in blob.iter().take(300) {
                if state.stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                let _ = stream.flush();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Mode::Stall => {
            let _ = stream.write_all(&blob[..half]);
            let _ = stream.flush();
            // Bounded, and cut short when the test ends.
            for _ in 0..600 {
                if state.stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Counts a blob body as sent once it is.
struct Sent<'a>(&'a AtomicUsize);

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An image with a layer of `size` bytes, loaded into `upstream` as `team/app:1`.
fn image_of(upstream: &FakeUpstream, seed: u64, size: usize) -> http::Image {
    let mut image = http::build_image(seed);
    image.layer = http::random_bytes(size, seed);
    image.layer_digest = http::sha256_digest(&image.layer);
    image.manifest = http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &image.config),
        &[http::descriptor(http::OCI_LAYER, &image.layer)],
    );
    image.digest = http::sha256_digest(&image.manifest);
    upstream.add_image("team/app", "1", &image);
    image
}

fn mirror_of(upstream: &FakeUpstream) -> TestRegistry {
    let url = upstream.url();
    TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_timeout = Duration::from_secs(1);
    })
}

/// The digests the mirror lists as referrers of `subject` in `up.test/team/app`.
fn referrers_through(mirror: &TestRegistry, subject: &str) -> Vec<String> {
    let url = format!("{}/v2/up.test/team/app/referrers/{subject}", mirror.url());
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// A GET of the layer through the mirror: `Ok` with the bytes only when a
/// whole, well-framed response came.
fn get_layer(base: &str, image: &http::Image) -> Result<Vec<u8>, String> {
    let url = http::blob_url(base, "up.test/team/app", &image.layer_digest);
    match http::try_request_within("GET", &url, &[], b"", Duration::from_secs(20)) {
        Ok(resp) if resp.status == 200 => Ok(resp.body),
        Ok(resp) => Err(format!("HTTP {}", resp.status)),
        Err(e) => Err(e.to_string()),
    }
}

common::both_engines! {
#[test]
fn corrupt_cut_or_stalled_blobs_are_never_stored_or_completed() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 1, 3 << 20);
    let mirror = mirror_of(&upstream);
    let base = mirror.url();
    for (round, mode) in [Mode::Corrupt, Mode::Cut, Mode::Stall]
        .into_iter()
        .enumerate()
    {
        upstream.set_mode(mode);
        let started = Instant::now();
        let got = get_layer(&base, &image);
        assert!(got.is_err(), "{mode:?}: the mirror completed a body");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{mode:?}: took {:?}",
            started.elapsed()
        );
        // Nothing was kept: the next pull fetches again.
        let _ = get_layer(&base, &image);
        assert_eq!(
            upstream.blob_gets(&image.layer_digest),
            2 * (round + 1),
            "{mode:?}"
        );
    }
    upstream.set_mode(Mode::Whole);
    assert_eq!(
        get_layer(&base, &image).as_deref(),
        Ok(image.layer.as_slice())
    );
    assert_eq!(
        get_layer(&base, &image).as_deref(),
        Ok(image.layer.as_slice())
    );
    assert_eq!(
        upstream.blob_gets(&image.layer_digest),
        7,
        "the good copy is cached"
    );
}

#[test]
fn a_manifest_whose_bytes_are_not_its_digest_is_refused_as_the_upstreams_fault() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 2, 1000);
    let other = http::build_image(3);
    // The tag's HEAD names one digest; the manifest served is another.
    upstream.state.manifests.lock().unwrap().insert(
        format!("/v2/team/app/manifests/{}", image.digest),
        (image.digest.clone(), other.manifest.clone()),
    );
    let mirror = mirror_of(&upstream);
    let base = mirror.url();
    for reference in ["1", image.digest.as_str()] {
        let resp = http::get(&http::manifest_url(&base, "up.test/team/app", reference));
        http::assert_error(&resp, 502, "UNAVAILABLE");
    }
}

#[test]
fn thirty_two_clients_asking_for_one_uncached_64_mib_blob_cause_one_fetch() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 4, 64 << 20);
    upstream.set_delay(Duration::from_millis(500));
    let mirror = mirror_of(&upstream);
    let base = mirror.url();
    let image = Arc::new(image);
    let pulls: Vec<_> = (0..32)
        .map(|_| {
            let (base, image) = (base.clone(), Arc::clone(&image));
            std::thread::spawn(move || get_layer(&base, &image))
        })
        .collect();
    for pull in pulls {
        let got = pull.join().unwrap();
        assert!(
            got.as_deref() == Ok(image.layer.as_slice()),
            "a pull failed: {:?}",
            got.err()
        );
    }
    assert_eq!(upstream.blob_gets(&image.layer_digest), 1);
}

#[test]
fn a_kill_during_a_fetch_leaves_nothing_and_the_next_pull_fetches_again() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 5, 4 << 20);
    upstream.set_mode(Mode::Stall);
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let args = [
        "--upstream",
        &format!("up.test={}", upstream.url()),
        "--upstream-timeout",
        "30s",
    ];
    let server = ServerProcess::start_with(&data, &log, &args);
    let url = http::blob_url(&server.url(), "up.test/team/app", &image.layer_digest);
    let fetching = {
        let url = url.clone();
        std::thread::spawn(move || {
            http::try_request_within("GET", &url, &[], b"", Duration::from_secs(10))
        })
    };
    // Wait until half the blob is in the upload file, then kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.blob_gets(&image.layer_digest) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let _ = fetching.join();

    upstream.set_mode(Mode::Whole);
    let server = ServerProcess::start_with(&data, &log, &args);
    let url = http::blob_url(&server.url(), "up.test/team/app", &image.layer_digest);
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.body == image.layer,
        "the blob after the kill has other bytes"
    );
    assert_eq!(
        upstream.blob_gets(&image.layer_digest),
        2,
        "the next pull fetched again"
    );
    server.stop();
}

#[test]
fn an_upstream_that_names_no_digest_is_pulled_by_the_tags_bytes() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 6, 1000);
    upstream.state.hide_digests.store(true, Ordering::Relaxed);
    let mirror = mirror_of(&upstream);
    let base = mirror.url();
    let resp = http::get(&http::manifest_url(&base, "up.test/team/app", "1"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == image.manifest);
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
}
}

/// The upstream's credentials go to the upstream only: a tag list whose
/// next page is on another host (a hostile or misconfigured upstream) is
/// asked for there without them.
#[test]
fn credentials_go_to_the_upstream_and_nowhere_its_links_point() {
    let upstream = FakeUpstream::start();
    let elsewhere = FakeUpstream::start();
    upstream.state.require_basic.store(true, Ordering::Relaxed);
    *upstream.state.tags_link.lock().unwrap() =
        Some(format!("{}/v2/team/app/tags/list?last=1", elsewhere.url()));
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("config.json");
    // alice:secret
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6c2VjcmV0"}}}}}}"#,
        upstream.addr
    );
    std::fs::write(&auth, config).unwrap();
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_timeout = Duration::from_secs(1);
        c.upstream_auth = Some(auth);
    });
    let resp = http::get(&format!("{}/v2/up.test/team/app/tags/list", mirror.url()));
    assert_eq!(resp.status, 200, "{resp:?}");
    let asked = upstream.state.heads.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("authorization: basic")),
        "the upstream was never given its credentials: {asked:?}"
    );
    let elsewhere_asked = elsewhere.state.heads.lock().unwrap().clone();
    assert!(
        !elsewhere_asked.is_empty(),
        "the next page was not asked for"
    );
    for head in &elsewhere_asked {
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "credentials went to another host: {head}"
        );
    }
}

/// An upstream's tag list may name what is no tag (a control character
/// cannot go into the `Link` of a page that ends with it): such names are
/// left out of the list.
#[test]
fn names_in_an_upstreams_tag_list_that_are_no_tags_are_left_out() {
    let upstream = FakeUpstream::start();
    *upstream.state.tags.lock().unwrap() = vec!["a\u{1}".into(), "b".into(), "c".into()];
    let mirror = mirror_of(&upstream);
    let resp = http::get(&format!(
        "{}/v2/up.test/team/app/tags/list?n=1",
        mirror.url()
    ));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["tags"], serde_json::json!(["b"]));
    let resp = http::get(&format!("{}/v2/up.test/team/app/tags/list", mirror.url()));
    assert_eq!(resp.json()["tags"], serde_json::json!(["b", "c"]));
}

/// An upstream that sends a byte now and then, each within the read
/// timeout, is given up once it falls below the minimum transfer rate over
/// the body timeout, as a client would be: the pull fails in seconds, and
/// holds nobody waiting on that blob for ever.
#[test]
fn an_upstream_trickling_below_the_minimum_rate_is_given_up() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 96, 64 << 10);
    upstream.set_mode(Mode::Trickle);
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_timeout = Duration::from_secs(1);
        c.body_idle_timeout = Duration::from_secs(2);
    });
    let started = Instant::now();
    let got = get_layer(&mirror.url(), &image);
    assert!(got.is_err(), "a trickled blob was served whole");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "given up after {:?}",
        started.elapsed()
    );
}

/// A push into the namespace that skipped layers the upstream holds has
/// them brought in a few at once: its manifest PUT answers after the
/// slowest fetch, not after their sum (here the upstream holds each blob
/// back half a second, and sends both at once).
#[test]
fn a_push_brings_the_upstream_blobs_it_skipped_at_once() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 97, 4 << 10);
    upstream.set_delay(Duration::from_millis(500));
    let mirror = mirror_of(&upstream);
    let resp = http::put_manifest(
        &mirror.url(),
        "up.test/team/app",
        "2",
        OCI_MANIFEST,
        &image.manifest,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(upstream.blob_gets(&image.layer_digest), 1);
    assert_eq!(upstream.blob_gets(&image.config_digest), 1);
    assert_eq!(upstream.state.most_sending.load(Ordering::SeqCst), 2);
}

/// An artifact of `kind` whose subject is `image`, loaded into `upstream`
/// by its digest: that digest, and its descriptor for a referrers list.
fn referrer_of(
    upstream: &FakeUpstream,
    image: &http::Image,
    kind: &str,
) -> (String, serde_json::Value) {
    let empty = "application/vnd.oci.empty.v1+json";
    let empty_digest = http::sha256_digest(b"{}");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": kind,
        "config": {"mediaType": empty, "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": empty, "digest": empty_digest, "size": 2}],
        "subject": image.descriptor(),
    }))
    .unwrap();
    let digest = http::sha256_digest(&manifest);
    let descriptor = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": manifest.len(),
        "artifactType": kind,
    });
    upstream.state.manifests.lock().unwrap().insert(
        format!("/v2/team/app/manifests/{digest}"),
        (digest.clone(), manifest),
    );
    (digest, descriptor)
}

/// A referrers list: an OCI index of `descriptors`.
fn referrers_index(descriptors: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    })
}

/// An upstream may give a subject's referrers in pages, each naming the
/// next in its `Link`: every page's referrers come into the cache.
#[test]
fn referrers_the_upstream_lists_in_pages_all_come() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 98, 1 << 10);
    let referrer = |kind: &str| {
        let (digest, descriptor) = referrer_of(&upstream, &image, kind);
        (digest, referrers_index(vec![descriptor]).to_string())
    };
    let (signature, first) = referrer("application/x.signature");
    let (sbom, second) = referrer("application/x.sbom");
    upstream
        .state
        .referrers
        .lock()
        .unwrap()
        .insert(image.digest.clone(), vec![first, second]);
    let mirror = mirror_of(&upstream);
    let listed = referrers_through(&mirror, &image.digest);
    assert!(listed.contains(&signature), "{listed:?}");
    assert!(
        listed.contains(&sbom),
        "the second page's referrer is missing: {listed:?}"
    );
}

/// A fetch goes on after its client leaves (the next pull finds the blob
/// stored), so clients asking for many blobs and leaving at once could
/// start fetches without end: at most a bounded number run at once, the
/// rest wait their turn.
#[test]
fn clients_that_leave_cannot_start_fetches_without_end() {
    let upstream = FakeUpstream::start();
    image_of(&upstream, 98, 1 << 10);
    let blobs: Vec<String> = (0..48u64)
        .map(|i| {
            let bytes = http::random_bytes(1 << 10, 2000 + i);
            let digest = http::sha256_digest(&bytes);
            upstream
                .state
                .blobs
                .lock()
                .unwrap()
                .insert(digest.clone(), bytes);
            digest
        })
        .collect();
    upstream.set_delay(Duration::from_secs(2));
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_timeout = Duration::from_secs(10);
    });
    let base = mirror.url();
    std::thread::scope(|s| {
        for digest in &blobs {
            let url = http::blob_url(&base, "up.test/team/app", digest);
            s.spawn(move || {
                // Gone before the upstream sends a byte.
                let _ = http::try_request_within("GET", &url, &[], b"", Duration::from_millis(300));
            });
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let most = upstream.state.most_sending.load(Ordering::SeqCst);
    assert!(most <= 32, "{most} fetches at once");
    // The ones that waited come in their turn: each blob is fetched once,
    // and a pull after its fetch is served from the store.
    for digest in &blobs {
        let url = http::blob_url(&base, "up.test/team/app", digest);
        let resp = http::try_request_within("GET", &url, &[], b"", Duration::from_secs(30));
        assert!(
            matches!(resp, Ok(ref r) if r.status == 200),
            "{digest}: {resp:?}"
        );
    }
    for digest in &blobs {
        assert_eq!(upstream.blob_gets(digest), 1, "{digest}");
    }
}

/// A tag list is asked of the upstream at most once per TTL, as a tag is:
/// a client paging through the list (or listing often) asked for the
/// upstream's whole list with each request.
#[test]
fn an_upstreams_tag_list_is_asked_once_per_ttl() {
    let upstream = FakeUpstream::start();
    *upstream.state.tags.lock().unwrap() = vec!["a".into(), "b".into(), "c".into()];
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_ttl = Duration::from_secs(2);
    });
    let asked = || {
        upstream
            .state
            .heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains("/tags/list"))
            .count()
    };
    let list = format!("{}/v2/up.test/team/app/tags/list", mirror.url());
    let mut seen = Vec::new();
    let mut page = format!("{list}?n=1");
    for _ in 0..3 {
        let resp = http::get(&page);
        assert_eq!(resp.status, 200, "{resp:?}");
        seen.extend(resp.json()["tags"].as_array().unwrap().clone());
        match resp.header("link") {
            Some(link) => {
                let path = link.split_once('<').unwrap().1.split_once('>').unwrap().0;
                page = format!("{}{path}", mirror.url());
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        serde_json::json!(["a", "b", "c"])
            .as_array()
            .unwrap()
            .clone()
    );
    assert_eq!(asked(), 1, "three pages, one question upstream");
    std::thread::sleep(Duration::from_millis(2200));
    *upstream.state.tags.lock().unwrap() = vec!["a".into(), "d".into()];
    let resp = http::get(&list);
    assert_eq!(resp.json()["tags"], serde_json::json!(["a", "d"]));
    assert_eq!(asked(), 2, "asked again once the TTL passed");

    // A failure is not asked again by each request in turn either.
    upstream.state.fail_lists.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2200));
    for _ in 0..3 {
        http::get(&list);
    }
    assert_eq!(asked(), 3, "a failed list asked again at once");
}

/// A tag moved upstream whose new manifest the upstream will not give
/// (Docker Hub answers HEADs past its pull limit, not GETs): the manifest
/// the cache holds for the tag is served, and the upstream is not asked
/// again by each pull in turn.
#[test]
fn a_moved_tag_whose_manifest_the_upstream_withholds_is_served_as_cached() {
    let upstream = FakeUpstream::start();
    let first = image_of(&upstream, 99, 1 << 10);
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![("up.test".into(), url)];
        c.upstream_ttl = Duration::from_secs(1);
    });
    let tag = http::manifest_url(&mirror.url(), "up.test/team/app", "1");
    let pull = || http::request("GET", &tag, &[("Accept", OCI_MANIFEST)], b"");
    let resp = pull();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, first.manifest);

    image_of(&upstream, 100, 1 << 10);
    upstream
        .state
        .limit_manifest_gets
        .store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1100));
    let asked = || upstream.state.heads.lock().unwrap().len();
    let before = asked();
    let resp = pull();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, first.manifest, "the manifest the cache holds");
    let after = asked();
    assert!(after > before, "the upstream was asked once the TTL passed");
    for _ in 0..3 {
        assert_eq!(pull().status, 200);
    }
    assert_eq!(asked(), after, "asked again at once after it failed");
}

/// A Bearer challenge names where to fetch a token: a realm where clouds
/// serve instance metadata is refused as a redirect there is, never asked.
#[test]
fn a_token_realm_where_clouds_serve_metadata_is_refused() {
    let upstream = FakeUpstream::start();
    *upstream.state.bearer_realm.lock().unwrap() =
        Some("http://169.254.169.254/latest/meta-data/iam/".into());
    let mirror = mirror_of(&upstream);
    let resp = http::get(&http::manifest_url(&mirror.url(), "up.test/team/app", "1"));
    assert_eq!(resp.status, 502, "{resp:?}");
    let body = resp.text();
    assert!(body.contains("realm") && body.contains("refused"), "{body}");
}

/// An upstream without the referrers API (404) may keep a subject's
/// referrers as the OCI tag schema says, in an index tagged
/// `sha256-<hex>`: they come into the cache from there.
#[test]
fn referrers_of_an_upstream_without_the_api_come_from_its_referrers_tag() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 101, 1 << 10);
    let (signature_digest, descriptor) = referrer_of(&upstream, &image, "application/x.signature");
    let tagged = serde_json::to_vec(&referrers_index(vec![descriptor])).unwrap();
    let tag = image.digest.replace(':', "-");
    upstream.state.manifests.lock().unwrap().insert(
        format!("/v2/team/app/manifests/{tag}"),
        (http::sha256_digest(&tagged), tagged),
    );
    let mirror = mirror_of(&upstream);
    assert_eq!(
        referrers_through(&mirror, &image.digest),
        [signature_digest]
    );
}

/// A referrers list the upstream fails is served as cached, and not asked
/// again by each request in turn.
#[test]
fn a_failed_referrers_list_is_not_asked_again_at_once() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 102, 1 << 10);
    upstream.state.fail_lists.store(true, Ordering::Relaxed);
    let mirror = mirror_of(&upstream);
    let url = format!(
        "{}/v2/up.test/team/app/referrers/{}",
        mirror.url(),
        image.digest
    );
    for _ in 0..3 {
        assert_eq!(http::get(&url).status, 200);
    }
    let asked = upstream
        .state
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.contains("/referrers/"))
        .count();
    assert_eq!(asked, 1);
}

/// A subject's referrers come into the cache a few at once: one by one, a
/// subject with many signatures and attestations took their sum.
#[test]
fn a_subjects_referrers_are_fetched_a_few_at_once() {
    let upstream = FakeUpstream::start();
    let image = image_of(&upstream, 103, 1 << 10);
    let listed = (0..4)
        .map(|n| referrer_of(&upstream, &image, &format!("application/x.kind{n}")).1)
        .collect();
    let page = referrers_index(listed);
    upstream
        .state
        .referrers
        .lock()
        .unwrap()
        .insert(image.digest.clone(), vec![page.to_string()]);
    *upstream.state.manifest_delay.lock().unwrap() = Duration::from_millis(300);
    let mirror = mirror_of(&upstream);
    assert_eq!(referrers_through(&mirror, &image.digest).len(), 4);
    let most = upstream.state.most_answering.load(Ordering::SeqCst);
    assert!(most >= 2, "{most} referrer at once");
}
