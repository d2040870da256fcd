//! Authentication and authorization: htpasswd users, access rules, Basic
//! auth, the Docker token flow (challenge, `/token`, Bearer), the catalog
//! filter, cross-repository mounts, the failed-login limiter, start-up
//! errors, `berth passwd`, and passwords kept out of the log.
//!
//! The htpasswd file is written once per test binary by the real
//! `berth passwd` (bcrypt, cost 12: slow on purpose, so every test logs in
//! as few distinct users as it can). Every request here is plain HTTP/1.1
//! from 127.0.0.1; one check also connects from 127.0.0.2 with `curl
//! --interface` (Debian package `curl`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth::auth::AuthConfig;
use berth::auth::token::{Claims, Grant};
use common::TestRegistry;
use common::http::{
    self, OCI_MANIFEST, Response, assert_error, blob_url, build_image, manifest_url, resolve,
    uploads_url, with_query,
};
use common::process::wait_timeout;
use serde_json::{Value, json};

/// The binary under test.
const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Users in the htpasswd file and their passwords. The passwords are
/// distinctive so a search of the log for them cannot hit anything else.
const USERS: &[(&str, &str)] = &[
    ("alice", "Alice-pw-7d1c9e-plaintext"),
    ("bob", "Bob-pw-4f20aa-plaintext"),
    ("carol", "Carol-pw-91b3e5-plaintext"),
];

/// The rules most tests use. `mallory` has a rule but no htpasswd entry.
const RULES: &str = "\
# USER  ACTION  PATTERN
alice   push    *
bob     pull    team/*
bob     push    bob/*       # bob's own space
carol   pull    team/app
mallory push    *
*       pull    public/*
";

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no test user {user}"))
}

/// Runs `berth passwd --htpasswd FILE USER` with `password` on stdin;
/// returns its exit status and stdout + stderr.
fn berth_passwd(file: &Path, user: &str, password: &str) -> (ExitStatus, String) {
    let mut child = Command::new(BERTH)
        .args(["passwd", "--htpasswd"])
        .arg(file)
        .arg(user)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth passwd");
    {
        let mut stdin = child.stdin.take().unwrap();
        if !password.is_empty() {
            writeln!(stdin, "{password}").unwrap();
        }
    }
    let out = child.wait_with_output().expect("berth passwd runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// The htpasswd text for [`USERS`], made once (in parallel) by `berth passwd`.
fn htpasswd_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = USERS
                .iter()
                .map(|(user, pw)| {
                    let file = dir.path().join(user);
                    s.spawn(move || {
                        let (status, output) = berth_passwd(&file, user, pw);
                        assert!(status.success(), "berth passwd {user}: {status}: {output}");
                        assert!(
                            !output.contains(pw),
                            "berth passwd echoed the password: {output}"
                        );
                        std::fs::read_to_string(&file).expect("berth passwd wrote the file")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let text = lines.concat();
        for (user, _) in USERS {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{user}:$2"))),
                "no bcrypt line for {user} in:\n{text}"
            );
        }
        text
    })
}

// ---------------------------------------------------------------------------
// Registries with auth on

/// An in-process registry with auth on; its htpasswd and access files live
/// in `files`.
struct Secured {
    registry: TestRegistry,
    files: tempfile::TempDir,
    url: String,
}

impl Secured {
    fn start(access: Option<&str>, tune: impl FnOnce(&mut AuthConfig)) -> Secured {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            access,
            tune,
        )
    }

    /// Over an existing data directory and files directory (for restarts).
    /// The htpasswd file is (re)written with [`USERS`]; `tune` may point the
    /// config elsewhere.
    fn start_in(
        data: tempfile::TempDir,
        files: tempfile::TempDir,
        access: Option<&str>,
        tune: impl FnOnce(&mut AuthConfig),
    ) -> Secured {
        let htpasswd = files.path().join("htpasswd");
        std::fs::write(&htpasswd, htpasswd_text()).unwrap();
        let mut auth = AuthConfig::new(&htpasswd);
        if let Some(rules) = access {
            let path = files.path().join("access");
            std::fs::write(&path, rules).unwrap();
            auth.access = Some(path);
        }
        tune(&mut auth);
        let registry = TestRegistry::start_with(data, |config| config.auth = Some(auth));
        let url = registry.url();
        Secured {
            registry,
            files,
            url,
        }
    }

    /// Stops the server; hands back the data and files directories.
    fn stop(self) -> (tempfile::TempDir, tempfile::TempDir) {
        (self.registry.stop(), self.files)
    }

    fn data(&self) -> &Path {
        self.registry.data.path()
    }
}

// ---------------------------------------------------------------------------
// Requests as someone

#[derive(Clone, Copy, Debug)]
enum Who<'a> {
    Anonymous,
    /// A test user with the right password.
    User(&'a str),
    /// Any user name and password.
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    /// A raw `Authorization` value.
    Raw(&'a str),
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn authorization(who: Who<'_>) -> Option<String> {
    match who {
        Who::Anonymous => None,
        Who::User(user) => Some(basic(user, password(user))),
        Who::Basic(user, pw) => Some(basic(user, pw)),
        Who::Bearer(token) => Some(format!("Bearer {token}")),
        Who::Raw(value) => Some(value.to_owned()),
    }
}

fn call(method: &str, url: &str, who: Who<'_>, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let auth = authorization(who);
    let mut all = headers.to_vec();
    if let Some(auth) = &auth {
        all.push(("Authorization", auth.as_str()));
    }
    http::request(method, url, &all, body)
}

fn get(url: &str, who: Who<'_>) -> Response {
    call("GET", url, who, &[], b"")
}

fn head(url: &str, who: Who<'_>) -> Response {
    call("HEAD", url, who, &[], b"")
}

fn get_manifest(base: &str, name: &str, reference: &str, who: Who<'_>) -> Response {
    call(
        "GET",
        &manifest_url(base, name, reference),
        who,
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
}

fn put_manifest(base: &str, name: &str, reference: &str, who: Who<'_>, body: &[u8]) -> Response {
    call(
        "PUT",
        &manifest_url(base, name, reference),
        who,
        &[("Content-Type", OCI_MANIFEST)],
        body,
    )
}

/// A monolithic blob push (`POST ...?digest=`).
fn post_blob(base: &str, name: &str, data: &[u8], who: Who<'_>) -> Response {
    let url = with_query(
        &uploads_url(base, name),
        &format!("digest={}", http::sha256_digest(data)),
    );
    call(
        "POST",
        &url,
        who,
        &[("Content-Type", "application/octet-stream")],
        data,
    )
}

/// Pushes a small image's blobs and manifest as `who`, asserting 201s.
#[track_caller]
fn push_image(base: &str, name: &str, tag: &str, who: Who<'_>, seed: u64) -> http::Image {
    let image = build_image(seed);
    for blob in [&image.config, &image.layer] {
        let resp = post_blob(base, name, blob, who);
        assert_eq!(resp.status, 201, "blob push to {name} as {who:?}: {resp:?}");
    }
    let resp = put_manifest(base, name, tag, who, &image.manifest);
    assert_eq!(
        resp.status, 201,
        "manifest push to {name}:{tag} as {who:?}: {resp:?}"
    );
    image
}

/// The parameters of a `Bearer k="v",k="v"` challenge.
fn challenge_params(value: &str) -> BTreeMap<String, String> {
    let rest = value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {value:?}"));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s
            .split_once('=')
            .unwrap_or_else(|| panic!("bad challenge {value:?}"));
        let after = after
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted value in challenge {value:?}"));
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated value in challenge {value:?}"));
        params.insert(key.trim().to_owned(), after[..end].to_owned());
        s = after[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s).trim_start();
    }
    params
}

/// A 401 whose `WWW-Authenticate` starts the token flow: realm
/// `<base>/token`, service `berth`, and exactly `scope` (none for `None`).
/// `head`: the response to a HEAD, so there is no body to check.
#[track_caller]
fn assert_challenge_of(resp: &Response, base: &str, scope: Option<&str>, head: bool) {
    if head {
        assert_eq!(resp.status, 401, "expected a 401 challenge: {resp:?}");
    } else {
        assert_error(resp, 401, "UNAUTHORIZED");
    }
    let values = resp.header_all("www-authenticate");
    assert_eq!(values.len(), 1, "one WWW-Authenticate: {resp:?}");
    let params = challenge_params(values[0]);
    assert_eq!(
        params.get("realm").map(String::as_str),
        Some(format!("{base}/token").as_str()),
        "realm: {resp:?}"
    );
    assert_eq!(
        params.get("service").map(String::as_str),
        Some("berth"),
        "service: {resp:?}"
    );
    assert_eq!(
        params.get("scope").map(String::as_str),
        scope,
        "scope: {resp:?}"
    );
}

#[track_caller]
fn assert_challenge(resp: &Response, base: &str, scope: Option<&str>) {
    assert_challenge_of(resp, base, scope, false)
}

/// 403 DENIED: a known user the rules refuse.
#[track_caller]
fn assert_denied(resp: &Response) {
    assert_error(resp, 403, "DENIED");
    assert!(
        resp.header("www-authenticate").is_none(),
        "no token helps a refused user, so no challenge: {resp:?}"
    );
}

// ---------------------------------------------------------------------------
// Tokens

/// Percent-encodes a query value the way clients do.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn token_url(base: &str, scopes: &[&str]) -> String {
    let mut url = format!("{base}/token?service=berth");
    for scope in scopes {
        url.push_str("&scope=");
        url.push_str(&encode(scope));
    }
    url
}

fn token_response(base: &str, who: Who<'_>, scopes: &[&str]) -> Response {
    get(&token_url(base, scopes), who)
}

/// A token for `scopes`, asserting the response's shape; returns it and
/// the whole JSON body.
#[track_caller]
fn token_and_body(base: &str, who: Who<'_>, scopes: &[&str]) -> (String, Value) {
    let resp = token_response(base, who, scopes);
    assert_eq!(
        resp.status, 200,
        "token for {scopes:?} as {who:?}: {resp:?}"
    );
    let body = resp.json();
    let token = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned();
    assert!(!token.is_empty(), "empty token: {body}");
    assert_eq!(
        body["access_token"], body["token"],
        "access_token is the token too: {body}"
    );
    (token, body)
}

#[track_caller]
fn token(base: &str, who: Who<'_>, scopes: &[&str]) -> String {
    token_and_body(base, who, scopes).0
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn parse_utc(s: &str) -> Option<u64> {
    let main = s.strip_suffix('Z')?;
    let main = main.split('.').next()?;
    let b = main.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| main[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn catalog(base: &str, who: Who<'_>) -> Vec<String> {
    let resp = get(&format!("{base}/v2/_catalog"), who);
    assert_eq!(resp.status, 200, "catalog as {who:?}: {resp:?}");
    let body = resp.json();
    body["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("no repositories array: {resp:?}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Off by default

// ---------------------------------------------------------------------------
// The challenge

// ---------------------------------------------------------------------------
// Basic auth

// ---------------------------------------------------------------------------
// Access rules

// ---------------------------------------------------------------------------
// The catalog

// ---------------------------------------------------------------------------
// The token flow

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Each registry makes its own random 32-byte key in DATA/token.key (mode
/// 0600) on first start and keeps it: its tokens survive a restart, another
/// registry (same users, same rules) refuses them, and a user taken out of
/// the htpasswd file loses the tokens it holds.
#[test]
fn token_keys_are_per_registry_private_and_kept_across_restarts() {
    let a = Secured::start(Some(RULES), |_| {});
    let b = Secured::start(Some(RULES), |_| {});
    let (key_a, key_b) = (a.data().join("token.key"), b.data().join("token.key"));
    let bytes_a = std::fs::read(&key_a).expect("DATA/token.key exists");
    let bytes_b = std::fs::read(&key_b).expect("DATA/token.key exists");
    assert_eq!(bytes_a.len(), 32, "a 32-byte key");
    assert_eq!(bytes_b.len(), 32, "a 32-byte key");
    assert_ne!(bytes_a, bytes_b, "two registries, two keys");
    assert!(bytes_a.iter().any(|&b| b != 0), "a random key, not zeros");
    assert_eq!(
        mode(&key_a),
        0o600,
        "token.key is readable by its owner only"
    );

    let image = push_image(&a.url, "team/app", "v1", Who::User("alice"), 1000);
    push_image(&b.url, "team/app", "v1", Who::User("alice"), 1000);
    let t = token(&a.url, Who::User("bob"), &["repository:team/app:pull"]);
    assert_eq!(
        get_manifest(&a.url, "team/app", "v1", Who::Bearer(&t)).status,
        200
    );
    let resp = get_manifest(&b.url, "team/app", "v1", Who::Bearer(&t));
    assert_error(&resp, 401, "UNAUTHORIZED");
    assert_eq!(get(&format!("{}/v2/", b.url), Who::Bearer(&t)).status, 401);
    drop(b);

    let (data, files) = a.stop();
    let a = Secured::start_in(data, files, Some(RULES), |_| {});
    assert_eq!(
        std::fs::read(&key_a).unwrap(),
        bytes_a,
        "the key is kept across a restart"
    );
    let resp = get_manifest(&a.url, "team/app", "v1", Who::Bearer(&t));
    assert_eq!(resp.status, 200, "a token survives a restart: {resp:?}");
    assert_eq!(resp.body, image.manifest);

    // bob leaves the htpasswd file.
    let (data, files) = a.stop();
    let without_bob: String = htpasswd_text()
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let htpasswd = files.path().join("htpasswd-without-bob");
    std::fs::write(&htpasswd, without_bob).unwrap();
    let a = Secured::start_in(data, files, Some(RULES), |auth| {
        auth.htpasswd = htpasswd.clone()
    });
    let resp = get_manifest(&a.url, "team/app", "v1", Who::Bearer(&t));
    assert_error(&resp, 401, "UNAUTHORIZED");
}

/// A data directory berth creates is its owner's only (0700): blobs,
/// manifests and the token key are nobody else's business. One that
/// exists keeps the mode its owner gave it.
#[test]
fn a_new_data_directory_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let files = tempfile::tempdir().unwrap();
    let htpasswd = files.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_text()).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let fresh = parent.path().join("registry");
    let existing = parent.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
    for dir in [&fresh, &existing] {
        let registry = TestRegistry::start_with(tempfile::tempdir().unwrap(), |config| {
            config.data_dir = dir.clone();
            config.auth = Some(AuthConfig::new(&htpasswd));
        });
        push_image(&registry.url(), "a/b", "v1", Who::User("alice"), 1500);
        drop(registry);
        assert_eq!(mode(&dir.join("token.key")), 0o600, "{}", dir.display());
    }
    let (fresh, existing) = (mode(&fresh), mode(&existing));
    assert_eq!(fresh, 0o700, "a data directory berth created: {fresh:o}");
    assert_eq!(existing, 0o750, "an existing data directory: {existing:o}");
}

// ---------------------------------------------------------------------------
// Cross-repository mounts

/// Sends `GET /v2/` with exactly this Host header (and no credentials).
fn get_v2_with_host(addr: std::net::SocketAddr, host: &str) -> Response {
    let mut stream = http::connect_addr(addr).unwrap();
    let head = format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    http::read_response(&mut stream, false)
        .unwrap_or_else(|e| panic!("GET /v2/ with Host {host:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Failed logins

/// `curl` status code of a GET from another loopback address.
fn curl_from(source: &str, url: &str, user: &str, password: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args(["--interface", source, "-u"])
        .arg(format!("{user}:{password}"))
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!("curl is needed for this test (Debian: apt-get install -y curl): {e}")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl --interface {source} {url}: {} {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

// ---------------------------------------------------------------------------
// Start-up and the command line

fn start_error(data: &Path, auth: AuthConfig) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = berth::Config::new(data);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.auth = Some(auth);
    match runtime.block_on(berth::Registry::start(config)) {
        Ok(registry) => {
            runtime.block_on(registry.shutdown());
            panic!("the registry started")
        }
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The real binary and its log

/// `berth serve` as a child process, killed on drop.
struct Served {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Served {
    /// Starts `berth serve --listen 127.0.0.1:0 ARGS` with `RUST_LOG` and
    /// its stderr in `log`; waits for the address line.
    fn start(args: &[&str], rust_log: &str, log: &Path) -> Served {
        let log_file = std::fs::File::create(log).unwrap();
        let (child, url) = common::process::spawn_serve(args, rust_log, log_file, log);
        Served {
            child: Some(child),
            url,
            log: log.to_path_buf(),
        }
    }

    /// SIGTERM, and waits (bounded) for a clean exit.
    fn stop(mut self) {
        common::process::stop_cleanly(self.child.take().unwrap(), &self.log);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

common::both_engines! {
/// Without an htpasswd file nobody is asked for anything: anonymous callers
/// push, pull and list, and there is no token endpoint to speak of.
#[test]
fn without_auth_everyone_reads_and_writes() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let resp = get(&format!("{base}/v2/"), Who::Anonymous);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("www-authenticate").is_none(), "{resp:?}");
    let image = push_image(&base, "open/app", "v1", Who::Anonymous, 1);
    let resp = get_manifest(&base, "open/app", "v1", Who::Anonymous);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, image.manifest);
    assert_eq!(catalog(&base, Who::Anonymous), names(&["open/app"]));
    let resp = call(
        "DELETE",
        &manifest_url(&base, "open/app", &image.digest),
        Who::Anonymous,
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_ne!(
        token_response(&base, Who::Anonymous, &["repository:open/app:pull"]).status,
        200,
        "no tokens are handed out with auth off"
    );
}

/// Every endpoint asked without credentials answers 401 UNAUTHORIZED with
/// `WWW-Authenticate: Bearer realm="http://HOST/token",service="berth"`, and
/// the scope the request needs: `pull` for reads, `pull,push` for writes,
/// none for `/v2/`. Nothing is written by a refused write.
#[test]
fn requests_without_credentials_get_a_bearer_challenge_with_the_needed_scope() {
    let s = Secured::start(None, |_| {});
    let base = s.url.as_str();
    let digest = http::sha256_digest(b"some blob");
    let image = build_image(7);

    let resp = get(&format!("{base}/v2/"), Who::Anonymous);
    assert_challenge(&resp, base, None);
    assert_eq!(
        resp.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "clients check the API version on the 401 of /v2/: {resp:?}"
    );
    let resp = head(&format!("{base}/v2/"), Who::Anonymous);
    assert_challenge_of(&resp, base, None, true);

    let pull = Some("repository:team/app:pull");
    let push = Some("repository:team/app:pull,push");
    let delete = Some("repository:team/app:delete");
    let upload = format!("{base}/v2/team/app/blobs/uploads/0b4f4b0c-5d9e-4a53-9e0e-0d2a1f6f2c11");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", manifest_url(base, "team/app", "latest"), pull),
        ("GET", blob_url(base, "team/app", &digest), pull),
        ("GET", format!("{base}/v2/team/app/tags/list"), pull),
        (
            "GET",
            format!("{base}/v2/team/app/referrers/{digest}"),
            pull,
        ),
        ("GET", upload.clone(), push),
        ("POST", uploads_url(base, "team/app"), push),
        ("PATCH", upload.clone(), push),
        (
            "PUT",
            with_query(&upload, &format!("digest={digest}")),
            push,
        ),
        ("DELETE", upload, push),
        ("PUT", manifest_url(base, "team/app", "latest"), push),
        ("DELETE", manifest_url(base, "team/app", "latest"), delete),
        ("DELETE", blob_url(base, "team/app", &digest), delete),
    ];
    for (method, url, scope) in &cases {
        let body: &[u8] = if *method == "PUT" {
            &image.manifest
        } else {
            b""
        };
        let resp = call(
            method,
            url,
            Who::Anonymous,
            &[("Content-Type", OCI_MANIFEST)],
            body,
        );
        assert_challenge(&resp, base, *scope);
    }
    for url in [
        manifest_url(base, "team/app", "latest"),
        blob_url(base, "team/app", &digest),
    ] {
        let resp = head(&url, Who::Anonymous);
        assert_challenge_of(&resp, base, pull, true);
    }
    // A monolithic blob push without credentials stores nothing.
    let resp = post_blob(base, "team/app", &image.layer, Who::Anonymous);
    assert_challenge(&resp, base, push);
    let resp = head(
        &blob_url(base, "team/app", &image.layer_digest),
        Who::User("alice"),
    );
    assert_eq!(resp.status, 404, "a refused push stored the blob: {resp:?}");
    let resp = get(&format!("{base}/v2/team/app/tags/list"), Who::User("alice"));
    assert_error(&resp, 404, "NAME_UNKNOWN");
}

/// Basic credentials are accepted on every request of a whole push (both
/// upload styles), pull, listing and delete; a wrong password, an unknown
/// user, an empty password or a malformed header is 401 with the challenge.
#[test]
fn basic_credentials_work_on_every_request_and_wrong_ones_are_401() {
    // Many failures on purpose: keep the limiter out of the way.
    let s = Secured::start(None, |auth| auth.max_failures = 1000);
    let base = s.url.as_str();
    let alice = Who::User("alice");
    let image = build_image(11);

    let resp = get(&format!("{base}/v2/"), alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    // POST then PUT with the config.
    let resp = call("POST", &uploads_url(base, "team/app"), alice, &[], b"");
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = resolve(base, resp.location());
    let resp = call(
        "PUT",
        &with_query(&upload, &format!("digest={}", image.config_digest)),
        alice,
        &[("Content-Type", "application/octet-stream")],
        &image.config,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    // POST, PATCH, status, PUT with the layer.
    let resp = call("POST", &uploads_url(base, "team/app"), alice, &[], b"");
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = resolve(base, resp.location());
    let range = format!("0-{}", image.layer.len() - 1);
    let resp = call(
        "PATCH",
        &upload,
        alice,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        &image.layer,
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = resolve(base, resp.location());
    let resp = get(&upload, alice);
    assert_eq!(resp.status, 204, "upload status: {resp:?}");
    let resp = call(
        "PUT",
        &with_query(&upload, &format!("digest={}", image.layer_digest)),
        alice,
        &[],
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    let resp = put_manifest(base, "team/app", "v1", alice, &image.manifest);
    assert_eq!(resp.status, 201, "{resp:?}");

    let resp = get_manifest(base, "team/app", "v1", alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, image.manifest);
    let resp = head(&manifest_url(base, "team/app", &image.digest), alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = get(&blob_url(base, "team/app", &image.layer_digest), alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, image.layer);
    let resp = get(&format!("{base}/v2/team/app/tags/list"), alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["tags"], json!(["v1"]));
    assert_eq!(catalog(base, alice), names(&["team/app"]));
    // The scheme is case-insensitive (RFC 9110).
    let lower = basic("alice", password("alice")).replacen("Basic", "basic", 1);
    let resp = get(&format!("{base}/v2/"), Who::Raw(&lower));
    assert_eq!(resp.status, 200, "lower-case scheme: {resp:?}");

    // Wrong credentials never get through, whatever the endpoint. (A wrong
    // password of a real user costs a bcrypt: one endpoint each.)
    let urls = [
        format!("{base}/v2/"),
        manifest_url(base, "team/app", "v1"),
        format!("{base}/v2/_catalog"),
    ];
    let no_colon = format!("Basic {}", STANDARD.encode("alice"));
    let cheap = [
        Who::Basic("nobody", password("alice")),
        Who::Basic("mallory", "anything"),
        Who::Raw("Basic %%%not-base64%%%"),
        Who::Raw(&no_colon),
        Who::Raw("Digest username=\"alice\""),
    ];
    let mut cases: Vec<(Who<'_>, &str)> = vec![
        (Who::Basic("alice", "not-alices-password"), &urls[1]),
        (Who::Basic("alice", ""), &urls[2]),
    ];
    for who in cheap {
        cases.extend(urls.iter().map(|u| (who, u.as_str())));
    }
    for (who, url) in cases {
        let resp = get(url, who);
        assert_eq!(resp.status, 401, "{who:?} on {url}: {resp:?}");
        assert_error(&resp, 401, "UNAUTHORIZED");
        let challenge = resp.must_header("www-authenticate");
        assert_eq!(
            challenge_params(challenge).get("realm").map(String::as_str),
            Some(format!("{base}/token").as_str()),
            "{resp:?}"
        );
    }
    let resp = put_manifest(
        base,
        "team/app",
        "v2",
        Who::Basic("alice", "not-alices-password"),
        &image.manifest,
    );
    assert_error(&resp, 401, "UNAUTHORIZED");

    let resp = call(
        "DELETE",
        &manifest_url(base, "team/app", &image.digest),
        alice,
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let resp = get_manifest(base, "team/app", "v1", alice);
    assert_error(&resp, 404, "MANIFEST_UNKNOWN");
}

/// The rules decide per user and repository: exact names, `prefix/*` (which
/// does not match `prefix` itself nor `prefixx/...`), `*`, push implying pull
/// and delete, `*` as the user meaning anyone. A known user the rules refuse
/// gets 403 DENIED, and a refused write changes nothing; anonymous callers
/// get the challenge; a user with rules but no htpasswd entry gets 401.
#[test]
fn access_rules_decide_who_may_pull_and_push_what() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let alice = Who::User("alice");
    let (bob, carol) = (Who::User("bob"), Who::User("carol"));
    let mut images = BTreeMap::new();
    for (seed, repo) in [
        "team/app",
        "team/other",
        "teamx/app",
        "team",
        "public/x",
        "private/y",
    ]
    .into_iter()
    .enumerate()
    {
        images.insert(repo, push_image(base, repo, "v1", alice, 100 + seed as u64));
    }

    // bob: pull team/*, push bob/*, pull public/* as anyone.
    for repo in ["team/app", "team/other", "public/x"] {
        let resp = get_manifest(base, repo, "v1", bob);
        assert_eq!(resp.status, 200, "bob pulls {repo}: {resp:?}");
        assert_eq!(resp.body, images[repo].manifest);
        let resp = get(&blob_url(base, repo, &images[repo].layer_digest), bob);
        assert_eq!(resp.status, 200, "bob pulls a blob of {repo}: {resp:?}");
    }
    for repo in ["teamx/app", "team", "private/y"] {
        assert_denied(&get_manifest(base, repo, "v1", bob));
        assert_denied(&get(&format!("{base}/v2/{repo}/tags/list"), bob));
        let resp = head(&manifest_url(base, repo, "v1"), bob);
        assert_eq!(resp.status, 403, "bob HEADs {repo}: {resp:?}");
    }
    let other = build_image(999);
    for repo in ["team/app", "public/x"] {
        assert_denied(&put_manifest(base, repo, "v1", bob, &other.manifest));
        assert_denied(&call("POST", &uploads_url(base, repo), bob, &[], b""));
        assert_denied(&post_blob(base, repo, &other.layer, bob));
        assert_denied(&call(
            "DELETE",
            &manifest_url(base, repo, &images[repo].digest),
            bob,
            &[],
            b"",
        ));
        assert_denied(&call(
            "DELETE",
            &blob_url(base, repo, &images[repo].layer_digest),
            bob,
            &[],
            b"",
        ));
        // Nothing changed.
        let resp = get_manifest(base, repo, "v1", alice);
        assert_eq!(resp.body, images[repo].manifest, "{repo} after bob's tries");
        let resp = head(&blob_url(base, repo, &other.layer_digest), alice);
        assert_eq!(resp.status, 404, "bob's refused blob landed in {repo}");
    }
    // push implies pull and delete, in bob's own space.
    let mine = push_image(base, "bob/z", "v1", bob, 200);
    let resp = get_manifest(base, "bob/z", "v1", bob);
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = call(
        "DELETE",
        &manifest_url(base, "bob/z", &mine.digest),
        bob,
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "bob deletes in bob/*: {resp:?}");
    let resp = call(
        "DELETE",
        &blob_url(base, "bob/z", &mine.layer_digest),
        bob,
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "bob deletes a blob in bob/*: {resp:?}");

    // carol: team/app only (and public/*).
    for repo in ["team/app", "public/x"] {
        let resp = get_manifest(base, repo, "v1", carol);
        assert_eq!(resp.status, 200, "carol pulls {repo}: {resp:?}");
    }
    for repo in ["team/other", "private/y", "teamx/app"] {
        assert_denied(&get_manifest(base, repo, "v1", carol));
    }
    assert_denied(&put_manifest(
        base,
        "team/app",
        "v2",
        carol,
        &images["team/app"].manifest,
    ));

    // anonymous: public/* only, and no writes.
    let resp = get_manifest(base, "public/x", "v1", Who::Anonymous);
    assert_eq!(resp.status, 200, "anonymous pulls public/x: {resp:?}");
    let resp = get(
        &blob_url(base, "public/x", &images["public/x"].layer_digest),
        Who::Anonymous,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_challenge(
        &put_manifest(base, "public/x", "v2", Who::Anonymous, &other.manifest),
        base,
        Some("repository:public/x:pull,push"),
    );
    assert_challenge(
        &get_manifest(base, "team/app", "v1", Who::Anonymous),
        base,
        Some("repository:team/app:pull"),
    );
    // A rule is no login: mallory has no htpasswd entry.
    let resp = get_manifest(base, "team/app", "v1", Who::Basic("mallory", "x"));
    assert_error(&resp, 401, "UNAUTHORIZED");
}

/// `anonymous_pull` is `* pull *`: anyone reads everything and writes
/// nothing. Restarted without it, anonymous reads are challenged again.
#[test]
fn anonymous_pull_lets_anyone_read_and_nobody_anonymous_write() {
    let s = Secured::start(None, |auth| auth.anonymous_pull = true);
    let base = s.url.clone();
    let image = push_image(&base, "lib/app", "v1", Who::User("alice"), 300);

    let resp = get_manifest(&base, "lib/app", "v1", Who::Anonymous);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, image.manifest);
    let resp = get(
        &blob_url(&base, "lib/app", &image.layer_digest),
        Who::Anonymous,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, image.layer);
    let resp = get(&format!("{base}/v2/lib/app/tags/list"), Who::Anonymous);
    assert_eq!(resp.status, 200, "{resp:?}");
    // The catalog is not a pull: anonymous callers are asked to log in.
    let catalog_scope = Some("registry:catalog:*");
    assert_challenge(
        &get(&format!("{base}/v2/_catalog"), Who::Anonymous),
        &base,
        catalog_scope,
    );
    assert_eq!(catalog(&base, Who::User("bob")), names(&["lib/app"]));
    let push = Some("repository:lib/app:pull,push");
    assert_challenge(
        &put_manifest(&base, "lib/app", "v2", Who::Anonymous, &image.manifest),
        &base,
        push,
    );
    assert_challenge(
        &call(
            "POST",
            &uploads_url(&base, "lib/app"),
            Who::Anonymous,
            &[],
            b"",
        ),
        &base,
        push,
    );
    assert_challenge(
        &call(
            "DELETE",
            &manifest_url(&base, "lib/app", &image.digest),
            Who::Anonymous,
            &[],
            b"",
        ),
        &base,
        Some("repository:lib/app:delete"),
    );
    let (data, files) = s.stop();
    let s = Secured::start_in(data, files, None, |_| {});
    let base = s.url.clone();
    assert_challenge(
        &get_manifest(&base, "lib/app", "v1", Who::Anonymous),
        &base,
        Some("repository:lib/app:pull"),
    );
    assert_challenge(
        &get(&format!("{base}/v2/_catalog"), Who::Anonymous),
        &base,
        catalog_scope,
    );
    let resp = get_manifest(&base, "lib/app", "v1", Who::User("alice"));
    assert_eq!(resp.status, 200, "{resp:?}");
}

/// `_catalog` lists exactly the repositories the caller may pull by the
/// rules, for Basic and Bearer callers alike, also page by page (hidden
/// names neither listed nor used as page marks); anonymous callers, with a
/// token or without, get a 401 challenge for `registry:catalog:*` (an empty
/// list would tell a client there is nothing to log in for); bad
/// credentials get 401.
#[test]
fn catalog_lists_only_repositories_the_caller_may_pull() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let all = [
        "bob/z",
        "private/y",
        "public/x",
        "team/app",
        "team/other",
        "teamx/app",
    ];
    for (seed, repo) in all.iter().enumerate() {
        push_image(base, repo, "v1", Who::User("alice"), 400 + seed as u64);
    }
    let bob_sees = names(&["bob/z", "public/x", "team/app", "team/other"]);
    assert_eq!(catalog(base, Who::User("alice")), names(&all));
    assert_eq!(catalog(base, Who::User("bob")), bob_sees);
    assert_eq!(
        catalog(base, Who::User("carol")),
        names(&["public/x", "team/app"])
    );
    let catalog_url = format!("{base}/v2/_catalog");
    let catalog_scope = Some("registry:catalog:*");
    assert_challenge(&get(&catalog_url, Who::Anonymous), base, catalog_scope);
    // With tokens: the token's user decides, not its scopes.
    let bob_token = token(base, Who::User("bob"), &["repository:team/app:pull"]);
    assert_eq!(catalog(base, Who::Bearer(&bob_token)), bob_sees);
    let bob_token = token(base, Who::User("bob"), &["registry:catalog:*"]);
    assert_eq!(catalog(base, Who::Bearer(&bob_token)), bob_sees);
    let anonymous_token = token(base, Who::Anonymous, &["registry:catalog:*"]);
    assert_challenge(
        &get(&catalog_url, Who::Bearer(&anonymous_token)),
        base,
        catalog_scope,
    );
    // Page by page, following Link.
    let mut seen = Vec::new();
    let mut url = format!("{base}/v2/_catalog?n=1");
    for _ in 0..20 {
        let resp = get(&url, Who::User("bob"));
        assert_eq!(resp.status, 200, "{resp:?}");
        let page: Vec<String> = resp.json()["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        assert!(page.len() <= 1, "{resp:?}");
        seen.extend(page);
        match resp.header("link") {
            Some(link) => {
                let target = link
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(t, _)| t)
                    .unwrap_or_else(|| panic!("bad Link {link:?}"));
                for hidden in ["private/y", "teamx/app"] {
                    assert!(!target.contains(hidden), "Link reveals {hidden}: {link}");
                }
                url = resolve(base, target);
            }
            None => break,
        }
    }
    assert_eq!(seen, bob_sees, "bob's catalog page by page");
    let resp = get(
        &format!("{base}/v2/_catalog"),
        Who::Basic("nobody", "wrong-password"),
    );
    assert_error(&resp, 401, "UNAUTHORIZED");

    // Default rules: users see everything, anonymous callers are challenged.
    let plain = Secured::start(None, |_| {});
    push_image(&plain.url, "a/b", "v1", Who::User("alice"), 450);
    assert_challenge(
        &get(&format!("{}/v2/_catalog", plain.url), Who::Anonymous),
        &plain.url,
        catalog_scope,
    );
    assert_eq!(catalog(&plain.url, Who::User("alice")), names(&["a/b"]));
}

/// `/token` answers `{token, access_token, expires_in, issued_at}`; the token
/// grants what was asked and allowed, nothing more: a repository it does not
/// name, an action it lacks, a repository the user may not touch. Lacking a
/// scope the rules would allow is 401 with the challenge (fetch a new
/// token); refused by the rules is 403. Docker's login (no scope) works.
#[test]
fn tokens_grant_what_was_asked_and_allowed_and_nothing_else() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let alice = Who::User("alice");
    let bob = Who::User("bob");
    let app = push_image(base, "team/app", "v1", alice, 500);
    push_image(base, "team/other", "v1", alice, 501);
    push_image(base, "private/y", "v1", alice, 502);

    let before = now_secs();
    let (t, body) = token_and_body(base, bob, &["repository:team/app:pull,push"]);
    assert_eq!(body["expires_in"], json!(300), "default lifetime: {body}");
    let issued = body["issued_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no issued_at: {body}"));
    let issued = parse_utc(issued).unwrap_or_else(|| panic!("issued_at is not RFC 3339: {body}"));
    assert!(
        issued + 5 >= before && issued <= now_secs() + 5,
        "issued_at {issued} is not now ({before}): {body}"
    );
    let t = Who::Bearer(&t);
    let resp = get_manifest(base, "team/app", "v1", t);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, app.manifest);
    let resp = head(&blob_url(base, "team/app", &app.layer_digest), t);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(get(&format!("{base}/v2/"), t).status, 200);
    // Asked for push, not allowed it: the token has pull only, and bob is
    // refused by the rules, so no token would help.
    assert_denied(&put_manifest(base, "team/app", "v2", t, &app.manifest));
    // A token for team/app is no token for team/other, which bob may pull.
    assert_challenge(
        &get_manifest(base, "team/other", "v1", t),
        base,
        Some("repository:team/other:pull"),
    );
    assert_denied(&get_manifest(base, "private/y", "v1", t));

    // Pull only, where bob may push: a write asks for a new token.
    let t = token(base, bob, &["repository:bob/z:pull"]);
    assert_challenge(
        &call(
            "POST",
            &uploads_url(base, "bob/z"),
            Who::Bearer(&t),
            &[],
            b"",
        ),
        base,
        Some("repository:bob/z:pull,push"),
    );
    // Push only: writes but does not read; push implies delete.
    let t = token(base, bob, &["repository:bob/z:push"]);
    let mine = push_image(base, "bob/z", "v1", Who::Bearer(&t), 503);
    assert_challenge(
        &get_manifest(base, "bob/z", "v1", Who::Bearer(&t)),
        base,
        Some("repository:bob/z:pull"),
    );
    let resp = call(
        "DELETE",
        &manifest_url(base, "bob/z", &mine.digest),
        Who::Bearer(&t),
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "a push token deletes: {resp:?}");

    // alice may push anything, but a pull token is a pull token.
    let t = token(base, alice, &["repository:team/app:pull"]);
    assert_challenge(
        &put_manifest(base, "team/app", "v2", Who::Bearer(&t), &app.manifest),
        base,
        Some("repository:team/app:pull,push"),
    );
    // A token for nothing the user may have is still a token.
    let t = token(base, bob, &["repository:private/y:pull,push"]);
    assert_denied(&get_manifest(base, "private/y", "v1", Who::Bearer(&t)));

    // docker login: GET /token without a scope, then /v2/ with the token.
    let resp = get(
        &format!("{base}/token?account=carol&client_id=docker&offline_token=true&service=berth"),
        Who::User("carol"),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let t = resp.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&format!("{base}/v2/"), Who::Bearer(&t)).status, 200);
    assert_denied(&get_manifest(base, "team/other", "v1", Who::Bearer(&t)));
    // ... and a scope-less token is asked to fetch one for what carol may do.
    assert_challenge(
        &get_manifest(base, "team/app", "v1", Who::Bearer(&t)),
        base,
        Some("repository:team/app:pull"),
    );
}

/// Several `scope` parameters make one token good for each; `*` asks for
/// every action and gets what the rules allow.
#[test]
fn tokens_carry_several_scopes_and_a_star_asks_for_everything() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let bob = Who::User("bob");
    push_image(base, "team/app", "v1", Who::User("alice"), 600);
    push_image(base, "team/other", "v1", Who::User("alice"), 601);

    let t = token(
        base,
        bob,
        &["repository:team/app:pull", "repository:bob/multi:pull,push"],
    );
    let t = Who::Bearer(&t);
    assert_eq!(get_manifest(base, "team/app", "v1", t).status, 200);
    let mine = push_image(base, "bob/multi", "v1", t, 602);
    assert_eq!(get_manifest(base, "bob/multi", "v1", t).status, 200);
    assert_challenge(
        &get_manifest(base, "team/other", "v1", t),
        base,
        Some("repository:team/other:pull"),
    );

    let t = token(base, bob, &["repository:bob/star:*"]);
    let t = Who::Bearer(&t);
    let star = push_image(base, "bob/star", "v1", t, 603);
    assert_eq!(get_manifest(base, "bob/star", "v1", t).status, 200);
    let resp = call(
        "DELETE",
        &manifest_url(base, "bob/star", &star.digest),
        t,
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "`*` includes delete: {resp:?}");
    assert_challenge(
        &get_manifest(base, "bob/multi", "v1", t),
        base,
        Some("repository:bob/multi:pull"),
    );

    // `*` where bob may only pull: a pull token.
    let t = token(base, bob, &["repository:team/app:*"]);
    let t = Who::Bearer(&t);
    assert_eq!(get_manifest(base, "team/app", "v1", t).status, 200);
    assert_denied(&put_manifest(base, "team/app", "v2", t, &mine.manifest));
}

/// A token with the `delete` action (which the rules allow through push)
/// deletes: DELETE needs `delete` in the Docker token flow, as in
/// Distribution, and clients such as oras ask for exactly that scope.
#[test]
fn a_token_granted_delete_may_delete() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let bob = Who::User("bob");
    let image = push_image(base, "bob/d", "v1", bob, 650);
    let t = token(base, bob, &["repository:bob/d:delete"]);
    let resp = call(
        "DELETE",
        &manifest_url(base, "bob/d", &image.digest),
        Who::Bearer(&t),
        &[],
        b"",
    );
    assert_eq!(
        resp.status, 202,
        "DELETE with a token for repository:bob/d:delete: {resp:?}"
    );
    assert_error(
        &get_manifest(base, "bob/d", &image.digest, bob),
        404,
        "MANIFEST_UNKNOWN",
    );
}

/// Tokens for anonymous callers hold what anonymous callers may do and no
/// more; the token endpoint refuses wrong credentials instead of handing out
/// an anonymous token.
#[test]
fn anonymous_tokens_carry_only_what_anyone_may_do() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let public = push_image(base, "public/x", "v1", Who::User("alice"), 700);
    push_image(base, "private/y", "v1", Who::User("alice"), 701);

    let t = token(base, Who::Anonymous, &["repository:public/x:pull"]);
    let resp = get_manifest(base, "public/x", "v1", Who::Bearer(&t));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, public.manifest);
    assert_eq!(get(&format!("{base}/v2/"), Who::Bearer(&t)).status, 200);

    let t = token(base, Who::Anonymous, &["repository:public/x:pull,push"]);
    assert_challenge(
        &put_manifest(base, "public/x", "v2", Who::Bearer(&t), &public.manifest),
        base,
        Some("repository:public/x:pull,push"),
    );
    let t = token(base, Who::Anonymous, &["repository:private/y:*"]);
    assert_challenge(
        &get_manifest(base, "private/y", "v1", Who::Bearer(&t)),
        base,
        Some("repository:private/y:pull"),
    );

    for who in [
        Who::Basic("alice", "wrong-password"),
        Who::Basic("nobody", "whatever"),
        Who::Basic("mallory", "whatever"),
    ] {
        let resp = token_response(base, who, &["repository:public/x:pull"]);
        assert_error(&resp, 401, "UNAUTHORIZED");
        assert!(
            resp.json().get("token").is_none(),
            "a token for {who:?}: {resp:?}"
        );
    }
}

/// With a token lifetime of 1 s, a fresh token works and the same token is
/// 401 (with `error="invalid_token"`) two seconds later.
#[test]
fn expired_tokens_are_refused() {
    let s = Secured::start(Some(RULES), |auth| auth.token_ttl = Duration::from_secs(1));
    let base = s.url.as_str();
    push_image(base, "team/app", "v1", Who::User("alice"), 800);
    // Lifetimes count whole seconds: a token issued just before a second
    // ends may be stale at once, so take the first that works.
    let mut fresh = None;
    for _ in 0..5 {
        let (t, body) = token_and_body(base, Who::User("bob"), &["repository:team/app:pull"]);
        assert_eq!(body["expires_in"], json!(1), "{body}");
        if get_manifest(base, "team/app", "v1", Who::Bearer(&t)).status == 200 {
            fresh = Some(t);
            break;
        }
    }
    let t = fresh.expect("no fresh 1-second token was ever accepted");
    std::thread::sleep(Duration::from_millis(2100));
    for url in [manifest_url(base, "team/app", "v1"), format!("{base}/v2/")] {
        let resp = get(&url, Who::Bearer(&t));
        assert_error(&resp, 401, "UNAUTHORIZED");
        let params = challenge_params(resp.must_header("www-authenticate"));
        assert_eq!(
            params.get("realm").map(String::as_str),
            Some(format!("{base}/token").as_str()),
            "{resp:?}"
        );
        assert_eq!(
            params.get("error").map(String::as_str),
            Some("invalid_token"),
            "RFC 6750: {resp:?}"
        );
    }
}

/// A token carries what the rules granted when it was issued; tightened
/// rules (a restart with a new access file over the same token key) take
/// back what they no longer allow, before the token expires.
#[test]
fn a_token_is_good_for_no_more_than_the_rules_now_allow() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    push_image(base, "team/app", "v1", Who::User("alice"), 810);
    let t = token(
        base,
        Who::User("bob"),
        &["repository:team/app:pull", "repository:bob/x:push,pull"],
    );
    assert_eq!(get_manifest(base, "team/app", "v1", Who::Bearer(&t)).status, 200);
    assert_eq!(post_blob(base, "bob/x", b"before", Who::Bearer(&t)).status, 201);

    let (data, files) = s.stop();
    let tighter = "alice push *\nbob pull bob/*\n";
    let s = Secured::start_in(data, files, Some(tighter), |_| {});
    let base = s.url.as_str();
    assert!(
        get(&format!("{base}/v2/"), Who::Bearer(&t)).status == 200,
        "the token itself is still valid"
    );
    let pull = get_manifest(base, "team/app", "v1", Who::Bearer(&t));
    assert!(
        matches!(pull.status, 401 | 403),
        "a pull the rules no longer allow: {pull:?}"
    );
    let push = post_blob(base, "bob/x", b"after", Who::Bearer(&t));
    assert!(
        matches!(push.status, 401 | 403),
        "a push the rules no longer allow: {push:?}"
    );
    let blob = http::sha256_digest(b"before");
    let read = head(&format!("{base}/v2/bob/x/blobs/{blob}"), Who::Bearer(&t));
    assert_eq!(read.status, 200, "what the rules still allow: {read:?}");
}

/// Tokens are signed: changing the claims, the signature, or signing with a
/// guessable key gives 401, never more access.
#[test]
fn forged_and_tampered_tokens_are_refused() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let app = push_image(base, "team/app", "v1", Who::User("alice"), 900);
    push_image(base, "private/y", "v1", Who::User("alice"), 901);
    let t = token(base, Who::User("bob"), &["repository:team/app:pull"]);
    assert_eq!(
        get_manifest(base, "team/app", "v1", Who::Bearer(&t)).status,
        200,
        "the genuine token works"
    );
    let (payload, signature) = t
        .split_once('.')
        .unwrap_or_else(|| panic!("token {t:?} is not payload.signature"));

    let mut forged: Vec<String> = Vec::new();
    // The signature changed.
    let mut sig = signature.as_bytes().to_vec();
    sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
    forged.push(format!("{payload}.{}", String::from_utf8(sig).unwrap()));
    forged.push(format!("{payload}."));
    forged.push(payload.to_owned());
    forged.push(format!("{payload}.{signature}x"));
    // The claims changed, the signature kept: more actions, another user,
    // another repository, a later expiry. Each is a claims set the server
    // would honour but for its signature; a token whose claims cannot be
    // read fails here, for a test that forges none would still pass.
    let genuine: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| panic!("the token's payload {payload:?} is not base64url claims JSON"));
    let grant = |name: &str, actions: &[&str]| Grant {
        kind: "repository".to_owned(),
        name: name.to_owned(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    };
    let edits = [
        Claims {
            access: vec![grant("team/app", &["pull", "push", "delete"])],
            ..genuine.clone()
        },
        Claims {
            sub: Some("alice".to_owned()),
            access: vec![grant("private/y", &["pull", "push"])],
            ..genuine.clone()
        },
        Claims {
            exp: now_secs() + 86_400 * 365,
            ..genuine.clone()
        },
    ];
    for edit in &edits {
        assert_ne!(edit, &genuine, "a claims edit that changes nothing");
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(edit).unwrap());
        forged.push(format!("{p}.{signature}"));
        // Signed with keys an attacker might guess.
        for key in [&b""[..], &[0u8; 32][..], b"berth", b"secret"] {
            let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, p.as_bytes()));
            forged.push(format!("{p}.{sig}"));
        }
    }
    forged.push("not-a-token".to_owned());
    forged.push(String::new());

    for f in &forged {
        let value = format!("Bearer {f}");
        let who = Who::Raw(&value);
        for resp in [
            get_manifest(base, "team/app", "v1", who),
            put_manifest(base, "team/app", "v2", who, &app.manifest),
            get_manifest(base, "private/y", "v1", who),
            get(&format!("{base}/v2/"), who),
        ] {
            assert_eq!(resp.status, 401, "forged token {f:?}: {resp:?}");
            assert_error(&resp, 401, "UNAUTHORIZED");
        }
    }
    let resp = get_manifest(base, "team/app", "v2", Who::User("alice"));
    assert_error(&resp, 404, "MANIFEST_UNKNOWN");
}

/// A mount from a repository the caller may not pull is no mount: 202 and an
/// upload session, and the blob is not linked into the target; from one it
/// may pull it is 201. The same holds with tokens.
#[test]
fn mounting_from_a_repository_the_caller_may_not_pull_starts_an_upload() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let bob = Who::User("bob");
    let secret = push_image(base, "private/y", "v1", Who::User("alice"), 1100);
    let shared = push_image(base, "team/app", "v1", Who::User("alice"), 1101);

    let mount = |target: &str, digest: &str, from: &str, who: Who<'_>| {
        call(
            "POST",
            &with_query(
                &uploads_url(base, target),
                &format!("mount={digest}&from={from}"),
            ),
            who,
            &[],
            b"",
        )
    };
    let head =
        |repo: &str, digest: &str| head(&blob_url(base, repo, digest), Who::User("alice")).status;

    let resp = mount("bob/m", &secret.layer_digest, "private/y", bob);
    assert_eq!(
        resp.status, 202,
        "mount from a repository bob may not pull: {resp:?}"
    );
    let upload = resolve(base, resp.location());
    assert_eq!(head("bob/m", &secret.layer_digest), 404, "nothing mounted");
    // The session is a real one: bob can upload the bytes he has.
    let resp = call(
        "PUT",
        &with_query(&upload, &format!("digest={}", secret.layer_digest)),
        bob,
        &[("Content-Type", "application/octet-stream")],
        &secret.layer,
    );
    assert_eq!(resp.status, 201, "{resp:?}");

    let resp = mount("bob/m", &shared.layer_digest, "team/app", bob);
    assert_eq!(
        resp.status, 201,
        "mount from team/app, which bob may pull: {resp:?}"
    );
    assert_eq!(head("bob/m", &shared.layer_digest), 200);

    // Tokens: bob's grant on private/y is empty, on team/app pull.
    let t = token(
        base,
        bob,
        &[
            "repository:bob/t:pull,push",
            "repository:private/y:pull",
            "repository:team/app:pull",
        ],
    );
    let resp = mount("bob/t", &secret.config_digest, "private/y", Who::Bearer(&t));
    assert_eq!(resp.status, 202, "token mount from private/y: {resp:?}");
    assert_eq!(head("bob/t", &secret.config_digest), 404, "nothing mounted");
    let resp = mount("bob/t", &shared.config_digest, "team/app", Who::Bearer(&t));
    assert_eq!(resp.status, 201, "token mount from team/app: {resp:?}");
    // A token without pull on the source does not mount either.
    let t = token(base, bob, &["repository:bob/u:pull,push"]);
    let resp = mount("bob/u", &shared.config_digest, "team/app", Who::Bearer(&t));
    assert_eq!(
        resp.status, 202,
        "a token with no scope on the source mounts nothing: {resp:?}"
    );
    assert_eq!(head("bob/u", &shared.config_digest), 404);
}

/// The challenge for a mount asks for pull on the source as well as push on
/// the target, in one space-separated `scope` as Distribution writes it, so
/// a token client fetches a token that lets the mount happen (201) instead
/// of falling back to an upload. A `from` that is no repository name is
/// left out of the challenge, never echoed into it.
#[test]
fn a_mount_challenge_asks_for_pull_on_the_source_too() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let shared = push_image(base, "team/app", "v1", Who::User("alice"), 1150);
    let mount = |from: &str, who: Who<'_>| {
        call(
            "POST",
            &with_query(
                &uploads_url(base, "bob/t"),
                &format!("mount={}&from={}", shared.layer_digest, encode(from)),
            ),
            who,
            &[],
            b"",
        )
    };
    let resp = mount("team/app", Who::Anonymous);
    let both = "repository:bob/t:pull,push repository:team/app:pull";
    assert_challenge(&resp, base, Some(both));
    let t = token(base, Who::User("bob"), &[both]);
    let resp = mount("team/app", Who::Bearer(&t));
    assert_eq!(
        resp.status, 201,
        "a token with both scopes mounts: {resp:?}"
    );
    let resp = head(
        &blob_url(base, "bob/t", &shared.layer_digest),
        Who::User("bob"),
    );
    assert_eq!(resp.status, 200, "mounted: {resp:?}");

    let target_only = Some("repository:bob/t:pull,push");
    for from in ["bob/t", "Team/App", "x\",error=\"evil", ""] {
        assert_challenge(&mount(from, Who::Anonymous), base, target_only);
    }
}

/// A token grants nothing on a scope whose name is no repository name:
/// `bob/../secret/app` matches the rule `bob push bob/*` as text but names
/// nothing berth would serve, so it is left out of the token (as
/// Distribution ignores scopes it cannot parse); the valid scopes asked for
/// alongside are granted as usual.
#[test]
fn scopes_naming_no_valid_repository_are_not_granted() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let t = token(
        base,
        Who::User("bob"),
        &[
            "repository:bob/../secret/app:pull,push",
            "repository:bob/Upper:pull,push",
            "repository:bob//x:pull",
            "repository:bob/ok:pull,push",
        ],
    );
    let payload = t.split_once('.').map(|(p, _)| p).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "bob/ok", "actions": ["pull", "push"]}]),
        "{claims}"
    );
}

/// An upload session is reached only through its own repository, with the
/// rights on that repository: a user who may not push there is refused
/// (403), and naming the session under a repository the user may push to
/// finds nothing (404 BLOB_UPLOAD_UNKNOWN); the owner finishes it intact.
#[test]
fn upload_sessions_stay_with_their_repository_and_its_rights() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let (alice, bob) = (Who::User("alice"), Who::User("bob"));
    let data = http::random_bytes(5000, 1400);
    let digest = http::sha256_digest(&data);
    let resp = call("POST", &uploads_url(base, "private/y"), alice, &[], b"");
    assert_eq!(resp.status, 202, "{resp:?}");
    let location = resolve(base, resp.location());
    let id = http::path_of(&location)
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let octets = [("Content-Type", "application/octet-stream")];
    let put_query = format!("digest={digest}");

    let theirs = format!("{base}/v2/private/y/blobs/uploads/{id}");
    assert_denied(&get(&theirs, bob));
    assert_denied(&call("PATCH", &theirs, bob, &octets, &data));
    assert_denied(&call(
        "PUT",
        &with_query(&theirs, &put_query),
        bob,
        &octets,
        &data,
    ));
    assert_denied(&call("DELETE", &theirs, bob, &[], b""));
    assert_challenge(
        &call("PATCH", &theirs, Who::Anonymous, &octets, &data),
        base,
        Some("repository:private/y:pull,push"),
    );

    let mine = format!("{base}/v2/bob/z/blobs/uploads/{id}");
    assert_error(&get(&mine, bob), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &call("PATCH", &mine, bob, &octets, b"bob's bytes"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &call("PUT", &with_query(&mine, &put_query), bob, &octets, &data),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        &call("DELETE", &mine, bob, &[], b""),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );

    let resp = call(
        "PUT",
        &with_query(&location, &put_query),
        alice,
        &octets,
        &data,
    );
    assert_eq!(resp.status, 201, "alice finishes her upload: {resp:?}");
    let resp = get(&blob_url(base, "private/y", &digest), alice);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, data);
    let resp = head(&blob_url(base, "bob/z", &digest), bob);
    assert_eq!(resp.status, 404, "the blob leaked into bob/z: {resp:?}");
}

/// A request refused before its body is read (401 without credentials, 403
/// for a user the rules refuse) leaves its keep-alive connection usable: a
/// 64 KiB PATCH or PUT gets its answer whole, and the next request on the
/// same connection gets its own, unless the refusal said `Connection:
/// close` and the server then closed cleanly. (Closing without saying so
/// made clients' next request fail, e.g. Python's SSLEOFError.) A client
/// waiting for `100 Continue` before sending 1 MiB is told `Connection:
/// close` and the connection closes cleanly, so its body is never taken
/// for the next request.
#[test]
fn a_refusal_before_the_body_is_read_leaves_the_connection_usable() {
    use std::io::Read;
    let s = Secured::start(Some(RULES), |_| {});
    let addr = s.registry.addr;
    let body = http::random_bytes(64 * 1024, 1300);
    let upload = "/v2/private/y/blobs/uploads/2d5c4a1e-8f47-4a8e-9a43-6c1f1d0f7b2a";
    let bob = basic("bob", password("bob"));
    let cases = [
        ("PATCH", upload, None, false, 401),
        ("PUT", "/v2/private/y/manifests/v1", None, false, 401),
        ("PATCH", upload, Some(bob.as_str()), false, 403),
        ("PATCH", upload, None, true, 401),
    ];
    for (method, path, auth, expect_continue, status) in cases {
        let what = format!("{method} {path} ({status}, 100-continue: {expect_continue})");
        let mut stream = http::connect_addr(addr).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let (expect, length) = match expect_continue {
            true => ("Expect: 100-continue\r\n", 1 << 20),
            false => ("", body.len()),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{expect}\
             Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n",
        );
        stream.write_all(head.as_bytes()).unwrap();
        if !expect_continue {
            stream.write_all(&body).unwrap();
        }
        let first = http::read_response(&mut stream, false)
            .unwrap_or_else(|e| panic!("{what}: the refusal did not arrive whole: {e}"));
        assert_eq!(first.status, status, "{what}: {first:?}");
        let closing = first
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        assert!(
            closing || !expect_continue,
            "{what}: the unsent body must not be read as the next request: {first:?}"
        );
        if closing {
            let mut rest = Vec::new();
            let read = stream.read_to_end(&mut rest);
            assert!(
                matches!(read, Ok(0)),
                "{what}: after Connection: close, a clean close: {read:?}"
            );
            continue;
        }
        let next = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let second = stream
            .write_all(next.as_bytes())
            .and_then(|()| http::read_response(&mut stream, false))
            .unwrap_or_else(|e| {
                panic!(
                    "{what}: the connection was dropped after {first:?}\n\
                     without Connection: close; the next request failed: {e}"
                )
            });
        assert_challenge(&second, &format!("http://{addr}"), None);
    }
}

/// The token realm is built from the Host header, so with auth on a Host
/// that is not a host name, an IPv4 address or a bracketed IPv6 address
/// (with an optional port) is refused with 400, never written into
/// `WWW-Authenticate` (`Host: evil",error="x` was reflected as is).
#[test]
fn a_malformed_host_header_is_refused_never_reflected() {
    let s = Secured::start(None, |_| {});
    let addr = s.registry.addr;
    for good in [
        "registry.example:5000",
        "127.0.0.1",
        "[::1]:5000",
        "my_registry",
    ] {
        let resp = get_v2_with_host(addr, good);
        assert_challenge(&resp, &format!("http://{good}"), None);
    }
    for bad in [
        "evil\",error=\"x",
        "evil\\",
        "a b",
        "a/b",
        "a:1:2",
        "a:port",
        "a:99999",
        "[::1",
        "[not-v6]:80",
        "a@b",
    ] {
        let resp = get_v2_with_host(addr, bad);
        assert_eq!(resp.status, 400, "Host {bad:?}: {resp:?}");
        assert!(
            !resp.error_codes().is_empty(),
            "an OCI error body: {resp:?}"
        );
        assert!(
            resp.header("www-authenticate").is_none(),
            "Host {bad:?} reflected: {resp:?}"
        );
    }
}

/// Behind a proxy the Host header names the proxy's upstream, not what
/// clients reach: with a public URL the realm is `<public URL>/token`
/// whatever the Host says.
#[test]
fn a_public_url_names_the_token_realm() {
    let files = tempfile::tempdir().unwrap();
    let htpasswd = files.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_text()).unwrap();
    let registry = TestRegistry::start_with(tempfile::tempdir().unwrap(), |config| {
        config.auth = Some(AuthConfig::new(&htpasswd));
        config.public_url = Some("https://registry.example:8443/berth".to_owned());
    });
    for host in [registry.addr.to_string(), "internal:5000".to_owned()] {
        let resp = get_v2_with_host(registry.addr, &host);
        assert_challenge(&resp, "https://registry.example:8443/berth", None);
    }
}

/// An upload's status (`GET .../blobs/uploads/<id>`) is part of pushing:
/// a user who may only pull the repository is refused (403); an anonymous
/// caller with `--anonymous-pull`, and a pushing user's token with pull
/// only, are challenged for pull,push; the uploader reads it.
#[test]
fn upload_status_needs_push_rights() {
    let s = Secured::start(Some(RULES), |auth| auth.anonymous_pull = true);
    let base = s.url.as_str();
    let resp = call(
        "POST",
        &uploads_url(base, "team/app"),
        Who::User("alice"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let status_url = resolve(base, resp.location());
    let resp = get(&status_url, Who::User("alice"));
    assert_eq!(resp.status, 204, "the uploader reads the status: {resp:?}");
    assert_denied(&get(&status_url, Who::User("carol")));
    let push = Some("repository:team/app:pull,push");
    assert_challenge(&get(&status_url, Who::Anonymous), base, push);
    let t = token(base, Who::User("alice"), &["repository:team/app:pull"]);
    assert_challenge(&get(&status_url, Who::Bearer(&t)), base, push);
}

/// Behind a proxy every client comes from the proxy's address: with the
/// proxy named trusted (`--trusted-proxy`), the failed-login limit counts
/// the address its `X-Forwarded-For` gives (the last one it added, not
/// what a client wrote before it); from anywhere else the header is not
/// believed.
#[test]
fn behind_a_trusted_proxy_failed_logins_count_per_forwarded_client() {
    let start = |trusted: &[&str]| {
        let files = tempfile::tempdir().unwrap();
        let htpasswd = files.path().join("htpasswd");
        std::fs::write(&htpasswd, htpasswd_text()).unwrap();
        let mut auth = AuthConfig::new(&htpasswd);
        auth.max_failures = 2;
        auth.failure_window = Duration::from_secs(60);
        let trusted: Vec<_> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let registry = TestRegistry::start_with(tempfile::tempdir().unwrap(), |config| {
            config.auth = Some(auth);
            config.trusted_proxies = trusted;
        });
        (registry, files)
    };
    let login = |base: &str, forwarded: &str, who: Who<'_>| {
        call("GET", &format!("{base}/v2/"), who, &[("X-Forwarded-For", forwarded)], b"").status
    };
    let wrong = Who::Basic("alice", "wrong");

    let (proxied, _files) = start(&["127.0.0.0/8"]);
    let base = proxied.url();
    for _ in 0..2 {
        assert_eq!(login(&base, "192.0.2.1", wrong), 401);
    }
    assert_eq!(login(&base, "192.0.2.1", Who::User("alice")), 429);
    assert_eq!(
        login(&base, "192.0.2.2", Who::User("alice")),
        200,
        "another client behind the same proxy"
    );
    assert_eq!(
        login(&base, "192.0.2.2, 192.0.2.1", Who::User("alice")),
        429,
        "a client naming another address before the proxy's entry"
    );
    assert_eq!(
        login(&base, "192.0.2.1, 127.0.0.5", Who::User("alice")),
        429,
        "a chain of trusted proxies"
    );

    let (direct, _files) = start(&[]);
    let base = direct.url();
    for _ in 0..2 {
        assert_eq!(login(&base, "192.0.2.1", wrong), 401);
    }
    assert_eq!(
        login(&base, "192.0.2.2", Who::User("alice")),
        429,
        "the header believed from a client no proxy is"
    );
}

/// After `max_failures` failed logins from one address within the window,
/// Basic credentials from that address get 429 TOOMANYREQUESTS, the right
/// password too and at the token endpoint; anonymous callers and tokens are
/// not affected, nor is another address; after the window the right
/// password works again.
#[test]
fn failed_logins_from_one_address_get_429_until_the_window_passes() {
    // Long enough for three failed logins, each a full bcrypt check in a
    // debug build (unknown users cost what known ones do).
    let window = Duration::from_secs(8);
    let s = Secured::start(None, |auth| {
        auth.max_failures = 3;
        auth.failure_window = window;
    });
    let base = s.url.as_str();
    let v2 = format!("{base}/v2/");
    let alice = Who::User("alice");
    assert_eq!(get(&v2, alice).status, 200, "alice logs in");
    let t = token(base, alice, &["repository:a/b:pull,push"]);
    push_image(base, "a/b", "v1", alice, 1200);

    // Three failures, each a plain 401.
    let first_failure = Instant::now();
    for n in 0..3 {
        let resp = get(&v2, Who::Basic(&format!("intruder{n}"), "guess"));
        assert_error(&resp, 401, "UNAUTHORIZED");
    }
    let resp = get(&v2, alice);
    assert_error(&resp, 429, "TOOMANYREQUESTS");
    let resp = get_manifest(base, "a/b", "v1", alice);
    assert_error(&resp, 429, "TOOMANYREQUESTS");
    let resp = token_response(base, alice, &["repository:a/b:pull"]);
    assert_error(&resp, 429, "TOOMANYREQUESTS");
    let resp = get(&v2, Who::Basic("alice", "another-guess"));
    assert_error(&resp, 429, "TOOMANYREQUESTS");
    // Not credentials: a challenge, and tokens still work.
    assert_challenge(&get(&v2, Who::Anonymous), base, None);
    assert_eq!(get_manifest(base, "a/b", "v1", Who::Bearer(&t)).status, 200);
    // Another address is not blocked.
    assert_eq!(
        curl_from("127.0.0.2", &v2, "alice", password("alice")),
        200,
        "another source address logs in"
    );
    assert!(
        first_failure.elapsed() < window,
        "the checks above took longer than the window; the test proves nothing"
    );
    assert_error(&get(&v2, alice), 429, "TOOMANYREQUESTS");

    // The window opens at the first failure's answer, a bcrypt check after
    // `first_failure`; wait for it to close with room to spare.
    std::thread::sleep((window + Duration::from_secs(3)).saturating_sub(first_failure.elapsed()));
    let resp = get(&v2, alice);
    assert_eq!(resp.status, 200, "after the window: {resp:?}");
    let resp = get_manifest(base, "a/b", "v1", alice);
    assert_eq!(resp.status, 200, "{resp:?}");
}

/// Failures within the window count even when a correct login (here as
/// another user) comes in between; otherwise anyone holding one account
/// could guess other users' passwords without limit, resetting the count
/// with a (cached, instant) login of their own every few guesses.
#[test]
fn a_correct_login_in_between_does_not_reset_the_failure_count() {
    let s = Secured::start(None, |auth| {
        auth.max_failures = 3;
        auth.failure_window = Duration::from_secs(60);
    });
    let v2 = format!("{}/v2/", s.url);
    let bob = Who::User("bob");
    assert_eq!(get(&v2, bob).status, 200, "bob logs in");
    for n in 0..2 {
        let resp = get(&v2, Who::Basic(&format!("guess{n}"), "guess"));
        assert_error(&resp, 401, "UNAUTHORIZED");
    }
    assert_eq!(
        get(&v2, bob).status,
        200,
        "2 failures of 3: bob still logs in"
    );
    let resp = get(&v2, Who::Basic("guess2", "guess"));
    assert_error(&resp, 401, "UNAUTHORIZED");
    // Three failures from this address within the window.
    let resp = get(&v2, bob);
    assert_error(&resp, 429, "TOOMANYREQUESTS");
}

/// A wrong password for a real user counts as a failure too.
#[test]
fn wrong_passwords_of_real_users_count_as_failures() {
    let s = Secured::start(None, |auth| {
        auth.max_failures = 2;
        auth.failure_window = Duration::from_secs(60);
    });
    let v2 = format!("{}/v2/", s.url);
    for _ in 0..2 {
        assert_error(
            &get(&v2, Who::Basic("bob", "not-bobs-password")),
            401,
            "UNAUTHORIZED",
        );
    }
    assert_error(&get(&v2, Who::User("bob")), 429, "TOOMANYREQUESTS");
}

/// Guesses sent all at once are counted as they come, not as their bcrypt
/// checks end: with a limit of 3, twelve simultaneous wrong passwords from
/// one address get three 401s and nine 429s, and then the right password
/// gets 429 too. (Counted only at the end, all twelve were checked and the
/// limit never applied to them.)
#[test]
fn simultaneous_guesses_are_counted_before_they_are_checked() {
    let s = Secured::start(None, |auth| {
        auth.max_failures = 3;
        auth.failure_window = Duration::from_secs(120);
    });
    let v2 = format!("{}/v2/", s.url);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|n| {
                let v2 = v2.as_str();
                scope.spawn(move || {
                    let guess = format!("guess-{n}");
                    get(v2, Who::Basic("alice", &guess)).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let count = |status| statuses.iter().filter(|&&s| s == status).count();
    assert_eq!(
        (count(401), count(429)),
        (3, 9),
        "twelve simultaneous guesses against a limit of 3: {statuses:?}"
    );
    assert_error(&get(&v2, Who::User("alice")), 429, "TOOMANYREQUESTS");
}

/// At most `max_concurrent_logins` bcrypt checks run at once, whatever the
/// number of addresses guessing: with a bound of 1, four simultaneous bad
/// logins from four addresses are answered one at a time, a bcrypt check
/// apart. Unbounded, they share the CPUs and end together, and a burst of
/// them starves every other request.
#[test]
fn bcrypt_checks_are_bounded_whatever_the_number_of_addresses() {
    let s = Secured::start(None, |auth| auth.max_concurrent_logins = 1);
    let v2 = format!("{}/v2/", s.url);
    let alone = Instant::now();
    assert_error(&get(&v2, Who::Basic("alice", "wrong")), 401, "UNAUTHORIZED");
    let one_check = alone.elapsed();
    let start = Instant::now();
    let mut answers: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (2..6)
            .map(|n| {
                let v2 = v2.as_str();
                scope.spawn(move || {
                    let status = curl_from(&format!("127.0.0.{n}"), v2, "alice", "wrong");
                    (status, start.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    answers.sort_by_key(|(_, at)| *at);
    assert!(
        answers.iter().all(|(status, _)| *status == 401),
        "{answers:?}"
    );
    let gaps: Vec<Duration> = answers.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= one_check / 3),
        "with a bound of 1 the answers come a bcrypt check ({one_check:?} alone) \
         apart, not together: {answers:?}"
    );
}

/// An htpasswd file written by `htpasswd -B -C 8` (no cost-12 hash in it):
/// a login as an unknown user takes as long as a wrong password for a real
/// one, so timing does not tell who exists. (A stand-in hash of a fixed
/// cost 12 made unknown users many times slower than `htpasswd -B` users.)
#[test]
fn unknown_users_cost_what_the_files_own_hashes_cost() {
    let s = Secured::start(None, |auth| {
        let path = auth.htpasswd.with_file_name("htpasswd-cost-8");
        std::fs::write(
            &path,
            "dave:$2y$08$34Vj02jaHY3kQA02AoJPTe42mr4UhC8Ssz52.gxRRffKt9vNckzT.\n\
             erin:$2y$08$PO7WGXL7ieXht23SmNzoJ.eOJH8/nyVi1ru19k4hISXVcmHhS/h8C\n",
        )
        .unwrap();
        auth.htpasswd = path;
        auth.max_failures = 1000;
    });
    let v2 = format!("{}/v2/", s.url);
    assert_eq!(
        get(&v2, Who::Basic("dave", "Dave-pw-8c0st-plaintext")).status,
        200,
        "dave's cost-8 hash works"
    );
    let fastest = |user: &str| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let resp = get(&v2, Who::Basic(user, "not-the-password"));
                assert_error(&resp, 401, "UNAUTHORIZED");
                start.elapsed()
            })
            .min()
            .unwrap()
    };
    let (known, unknown) = (fastest("erin"), fastest("zoe"));
    assert!(
        unknown <= known * 2 && known <= unknown * 2,
        "a wrong password for a real user took {known:?}, an unknown user {unknown:?}"
    );
}

/// A missing or malformed htpasswd or access file stops the start with an
/// error naming the file.
#[test]
fn missing_or_malformed_auth_files_stop_the_start_with_the_file_named() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let good = files.path().join("htpasswd");
    std::fs::write(&good, htpasswd_text()).unwrap();
    let file = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cases: Vec<(PathBuf, AuthConfig)> = {
        let missing = files.path().join("no-such-htpasswd");
        let plain = file(
            "plain-htpasswd",
            "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        );
        let noise = file("noise-htpasswd", "this is not an htpasswd file\n");
        let missing_access = files.path().join("no-such-access");
        let bad_action = file("bad-action", "alice write *\n");
        let short = file("short-rule", "alice push\n");
        let mut v = Vec::new();
        for htpasswd in [missing, plain, noise] {
            v.push((htpasswd.clone(), AuthConfig::new(&htpasswd)));
        }
        for access in [missing_access, bad_action, short] {
            let mut auth = AuthConfig::new(&good);
            auth.access = Some(access.clone());
            v.push((access, auth));
        }
        v
    };
    for (path, auth) in cases {
        let error = start_error(data.path(), auth);
        assert!(
            error.contains(&path.display().to_string()),
            "the error does not name {}: {error}",
            path.display()
        );
    }
}

/// `berth serve` refuses `--access` and `--anonymous-pull` without
/// `--htpasswd` (they would silently do nothing), a missing htpasswd file,
/// and a `--public-url` that is no http(s) URL.
#[test]
fn berth_serve_refuses_auth_flags_that_cannot_work() {
    let data = tempfile::tempdir().unwrap();
    let access = data.path().join("access");
    std::fs::write(&access, RULES).unwrap();
    let missing = data.path().join("missing-htpasswd");
    let access = access.to_str().unwrap();
    let missing_str = missing.to_str().unwrap();
    let users = data.path().join("htpasswd");
    std::fs::write(&users, htpasswd_text()).unwrap();
    let users = users.to_str().unwrap();
    for (args, expect) in [
        (vec!["--access", access], "--htpasswd"),
        (vec!["--anonymous-pull"], "--htpasswd"),
        (vec!["--htpasswd", missing_str], missing_str),
        (vec!["--public-url", "registry.example"], "--public-url"),
        (
            vec!["--public-url", "ftp://registry.example"],
            "--public-url",
        ),
        (vec!["--public-url", "https://a/b?c=d"], "--public-url"),
        (
            vec!["--htpasswd", users, "--token-ttl", "25h"],
            "--token-ttl",
        ),
    ] {
        let mut child = Command::new(BERTH)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path().join("d"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth serve {args:?} kept running");
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "berth serve {args:?} succeeded");
        assert!(
            stderr.contains(expect),
            "berth serve {args:?}: the error does not mention {expect}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "berth serve {args:?} listened"
        );
    }
}

/// `berth passwd` writes `user:$2…` bcrypt lines, replaces a user's line
/// (keeping the others), never echoes the password, and refuses an empty one.
#[test]
fn berth_passwd_writes_and_replaces_bcrypt_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        "# our users\nzed:$2y$05$abcdefghijklmnopqrstuu5Jg0Y2bJ5x0H3tO2O9b8Wl6h8r6m1uG\n",
    )
    .unwrap();
    let (status, output) = berth_passwd(&file, "dave", "first-Password-x1");
    assert!(status.success(), "{output}");
    let first = std::fs::read_to_string(&file).unwrap();
    let first_hash = first
        .lines()
        .find_map(|l| l.strip_prefix("dave:"))
        .unwrap_or_else(|| panic!("no line for dave: {first}"))
        .to_owned();
    let (status, output) = berth_passwd(&file, "dave", "second-Password-y2");
    assert!(status.success(), "{output}");
    assert!(
        !output.contains("first-Password") && !output.contains("second-Password"),
        "the password was echoed: {output}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# our users\nzed:$2y$05$"), "{text}");
    let dave: Vec<&str> = text.lines().filter(|l| l.starts_with("dave:")).collect();
    assert_eq!(dave.len(), 1, "one line for dave: {text}");
    let hash = dave[0].strip_prefix("dave:").unwrap();
    assert!(hash.starts_with("$2"), "a bcrypt hash: {hash}");
    assert_ne!(hash, first_hash, "the first password's hash is gone");
    assert!(!text.contains("Password"), "plaintext in the file: {text}");
    assert!(bcrypt::verify("second-Password-y2", hash).unwrap());

    let (status, output) = berth_passwd(&file, "erin", "");
    assert!(
        !status.success(),
        "an empty password was accepted: {output}"
    );
    assert!(!std::fs::read_to_string(&file).unwrap().contains("erin:"));
}

/// `berth serve --htpasswd --access --token-ttl` at `RUST_LOG=trace`: good
/// and bad logins, a push, token requests with the password; the log then
/// holds the failed login (user and 127.0.0.1) but no password, in plain
/// text or as the Basic credential.
#[test]
fn passwords_never_reach_the_log_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_text()).unwrap();
    let access = dir.path().join("access");
    std::fs::write(&access, RULES).unwrap();
    let log = dir.path().join("berth.log");
    let data = dir.path().join("data");
    let server = Served::start(
        &[
            "--data",
            data.to_str().unwrap(),
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--access",
            access.to_str().unwrap(),
            "--token-ttl",
            "1m",
        ],
        "trace",
        &log,
    );
    let base = server.url.clone();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let wrong = "Wrong-pw-3e8d71-plaintext";
    let v2 = format!("{base}/v2/");

    assert_challenge(&get(&v2, Who::Anonymous), &base, None);
    assert_eq!(get(&v2, Who::User("alice")).status, 200);
    assert_error(&get(&v2, Who::Basic("alice", wrong)), 401, "UNAUTHORIZED");
    let image = push_image(&base, "team/app", "v1", Who::User("alice"), 1300);
    let (t, body) = token_and_body(&base, Who::User("bob"), &["repository:team/app:pull"]);
    assert_eq!(body["expires_in"], json!(60), "--token-ttl 1m: {body}");
    let resp = get_manifest(&base, "team/app", "v1", Who::Bearer(&t));
    assert_eq!(resp.body, image.manifest, "{resp:?}");
    assert_denied(&put_manifest(
        &base,
        "team/app",
        "v2",
        Who::User("bob"),
        &image.manifest,
    ));
    let resp = token_response(
        &base,
        Who::Basic("bob", wrong),
        &["repository:team/app:pull"],
    );
    assert_error(&resp, 401, "UNAUTHORIZED");
    assert_eq!(
        get_manifest(&base, "team/app", "v1", Who::User("carol")).status,
        200
    );
    // containerd asks for tokens with an OAuth2 POST first, the password in
    // the form body; whatever the answer, the body must not be logged.
    for pw in [password("carol"), wrong] {
        let form = format!(
            "grant_type=password&service=berth&client_id=containerd&username=carol&password={pw}&scope=repository%3Ateam%2Fapp%3Apull"
        );
        let resp = http::post(
            &format!("{base}/token"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        );
        assert_ne!(resp.status / 100, 5, "{resp:?}");
    }
    server.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG") || text.contains("TRACE"),
        "RUST_LOG=trace logged nothing below info; log:\n{text}"
    );
    let mut secrets: Vec<String> = vec![wrong.to_owned()];
    for (user, pw) in USERS {
        secrets.push((*pw).to_owned());
        secrets.push(STANDARD.encode(format!("{user}:{pw}")));
    }
    secrets.push(STANDARD.encode(format!("alice:{wrong}")));
    secrets.push(STANDARD.encode(format!("bob:{wrong}")));
    for secret in &secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            panic!("the log holds the secret {secret:?}: {line}");
        }
    }
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.to_lowercase().contains("failed login"))
        .collect();
    assert!(
        failed
            .iter()
            .any(|l| l.contains("127.0.0.1") && l.contains("alice")),
        "no failed-login line naming alice and 127.0.0.1; failed-login lines: {failed:?}"
    );
    assert!(
        failed.iter().any(|l| l.contains("bob")),
        "the failed token login is not logged: {failed:?}"
    );
}
}

/// docker writes a scope as its reference names the repository
/// (`docker.io/alpine`); berth serves it as `docker.io/library/alpine`. The
/// token grants the repository the name means, so it is good for it.
#[test]
fn a_token_for_a_short_docker_hub_name_is_good_for_the_repository_it_means() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let alice = Who::User("alice");
    let image = push_image(base, "docker.io/library/alpine", "v1", alice, 504);
    for short in ["docker.io/alpine", "index.docker.io/library/alpine"] {
        let t = token(base, alice, &[&format!("repository:{short}:pull")]);
        let resp = get_manifest(base, short, "v1", Who::Bearer(&t));
        assert_eq!(resp.status, 200, "{short}: {resp:?}");
        assert_eq!(resp.body, image.manifest);
    }
}

/// A browser keeps a Basic login (the web page's) and sends it with any
/// page's form posted here. A write that a browser says comes from another
/// site (`Origin`, `Sec-Fetch-Site`) is refused; registry clients send
/// neither, and a page of this registry's own may.
#[test]
fn a_write_a_browser_says_comes_from_another_site_is_refused() {
    let s = Secured::start(Some(RULES), |_| {});
    let base = s.url.as_str();
    let alice = Who::User("alice");
    let host = base.trim_start_matches("http://");
    let ours = format!("http://{host}");
    let uploads = uploads_url(base, "public/app");
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let resp = call("POST", &uploads, alice, &[(name, value)], b"");
        assert_error(&resp, 403, "DENIED");
    }
    for headers in [
        vec![],
        vec![("Origin", ours.as_str()), ("Sec-Fetch-Site", "same-origin")],
    ] {
        let resp = call("POST", &uploads, alice, &headers, b"");
        assert_eq!(resp.status, 202, "{headers:?}: {resp:?}");
    }
    // A token is sent by its holder only: a page elsewhere that holds
    // one (a registry UI on another origin) may write with it.
    let t = token(base, alice, &["repository:public/app:pull,push"]);
    let resp = call(
        "POST",
        &uploads,
        Who::Bearer(&t),
        &[
            ("Origin", "http://ui.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"",
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    // A read from another site's page is no write.
    let resp = call(
        "GET",
        &format!("{base}/v2/"),
        alice,
        &[("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
}
