//! HTTPS: berth with a certificate and key serves HTTP/1.1 and HTTP/2 over
//! TLS, says `https` in its URL and token realm, refuses to start with a
//! missing, garbage or mismatched certificate or key, and carries a real
//! client (skopeo) through the token flow over TLS.
//!
//! Every test makes its own throw-away CA and a server certificate for
//! `IP:127.0.0.1` with the `openssl` command, and talks HTTPS with `curl`
//! and `skopeo` processes (Debian packages `openssl`, `curl`, `skopeo`).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use berth::config::TlsConfig;
use common::layout;
use common::process::wait_timeout;
use common::skopeo::Skopeo;
use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Every child process (openssl, curl, skopeo, berth) is killed after this.
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Processes

/// Runs a command to its end (killed after [`TIMEOUT`]) with `stdin` fed
/// in; stdout and stderr are collected. `None` status: it was killed.
fn run(mut cmd: Command, stdin: &[u8]) -> (Option<ExitStatus>, Vec<u8>, String) {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    {
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).ok();
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        err.read_to_end(&mut buf).ok();
        buf
    });
    let status = wait_timeout(&mut child, TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        status,
        out.join().unwrap(),
        String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    )
}

/// Panics with the Debian package to install when `program` does not run.
fn require(program: &str, version_arg: &str, package: &str) {
    let runs = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "the TLS tests need {program} (Debian: apt-get install -y {package})"
    );
}

// ---------------------------------------------------------------------------
// Certificates

/// A throw-away CA and a certificate it signed for `IP:127.0.0.1`, plus a
/// key that belongs to neither.
struct Certs {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM).
    ca: PathBuf,
    /// The server certificate (PEM) and its key (PKCS#8 PEM).
    cert: PathBuf,
    key: PathBuf,
    /// Another key, which does not match `cert`.
    other_key: PathBuf,
    /// A directory holding only `ca.crt`, for skopeo's `--cert-dir`.
    cert_dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    require("openssl", "version", "openssl");
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    let program = format!("{cmd:?}");
    let (status, _, stderr) = run(cmd, b"");
    assert!(
        status.is_some_and(|s| s.success()),
        "{program} failed ({status:?}); the TLS tests need the openssl command \
         (Debian: apt-get install -y openssl):\n{stderr}"
    );
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-nodes"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "7",
        "-subj",
        "/CN=berth test CA",
    ]);
    openssl(d, &ca_args);
    let mut csr_args = vec!["req", "-nodes"];
    csr_args.extend(ec);
    csr_args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(d, &csr_args);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "7",
            "-extfile",
            "server.ext",
        ],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "other.key",
        ],
    );
    let cert_dir = d.join("certs.d");
    std::fs::create_dir(&cert_dir).unwrap();
    std::fs::copy(d.join("ca.pem"), cert_dir.join("ca.crt")).unwrap();
    Certs {
        ca: d.join("ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server.key"),
        other_key: d.join("other.key"),
        cert_dir,
        dir,
    }
}

impl Certs {
    fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Writes `text` to a file in the certificate directory.
    fn file(&self, name: &str, text: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------
// An in-process registry with TLS

struct TlsRegistry {
    url: String,
    _data: tempfile::TempDir,
    registry: Option<berth::Registry>,
    runtime: tokio::runtime::Runtime,
}

impl TlsRegistry {
    fn start(tune: impl FnOnce(&mut berth::Config)) -> TlsRegistry {
        let data = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = berth::Config::new(data.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        tune(&mut config);
        let registry = runtime
            .block_on(berth::Registry::start(config))
            .expect("registry starts");
        TlsRegistry {
            url: registry.url(),
            _data: data,
            registry: Some(registry),
            runtime,
        }
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.take() {
            self.runtime.block_on(registry.shutdown());
        }
    }
}

/// The error `Registry::start` gives for this TLS config (panics if it starts).
fn start_error(tls: TlsConfig) -> String {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = berth::Config::new(data.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(tls.clone());
    match runtime.block_on(berth::Registry::start(config)) {
        Ok(registry) => {
            let url = registry.url();
            runtime.block_on(registry.shutdown());
            panic!("the registry started on {url} with {tls:?}")
        }
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// curl

struct Curl {
    /// curl's exit code (0: a response came).
    exit: Option<i32>,
    stderr: String,
    /// The status line, e.g. `HTTP/2 200`.
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
}

impl std::fmt::Debug for Curl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "curl exit {:?}: {}", self.exit, self.stderr.trim())?;
        writeln!(f, "{}", self.status_line)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {v}")?;
        }
        write!(
            f,
            "  body: {}",
            String::from_utf8_lossy(&self.body[..self.body.len().min(1000)])
        )
    }
}

/// Runs `curl -sS ARGS URL`, keeping the headers of the final response and
/// the body.
fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (headers_file, body_file) = (dir.path().join("headers"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-D"])
        .arg(&headers_file)
        .arg("-o")
        .arg(&body_file)
        .args(args)
        .arg(url);
    require("curl", "--version", "curl");
    let (status, _, stderr) = run(cmd, b"");
    let head = std::fs::read_to_string(&headers_file).unwrap_or_default();
    // With 100 Continue and the like there are several blocks: keep the last.
    let block = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let mut lines = block.lines();
    let status_line = lines.next().unwrap_or("").trim().to_owned();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Curl {
        exit: status.and_then(|s| s.code()),
        stderr,
        status_line,
        status: code,
        headers,
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// Users

fn htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    let lines: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(i, (user, pw))| {
                let file = path.with_extension(format!("part{i}"));
                s.spawn(move || {
                    let mut cmd = Command::new(BERTH);
                    cmd.args(["passwd", "--htpasswd"]).arg(&file).arg(user);
                    let (status, _, stderr) = run(cmd, format!("{pw}\n").as_bytes());
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "berth passwd {user}: {stderr}"
                    );
                    std::fs::read_to_string(&file).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for line in lines {
        text.push_str(&line);
    }
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------
// HTTPS with curl

/// With a certificate and key the registry's URL is `https://`, and curl
/// (trusting only the test CA) talks to it over HTTP/1.1 and over HTTP/2:
/// the base route, a blob pushed over HTTP/2 and read back byte for byte
/// over HTTP/1.1, and the other way round. Plain HTTP gets no answer.
#[test]
fn https_serves_http1_and_http2_with_the_configured_certificate() {
    let certs = make_certs();
    let reg = TlsRegistry::start(|config| config.tls = Some(certs.tls()));
    assert!(
        reg.url.starts_with("https://127.0.0.1:"),
        "Registry::url() with TLS: {}",
        reg.url
    );
    let ca = certs.ca.to_str().unwrap();
    let base = reg.url.as_str();

    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let resp = curl(&["--cacert", ca, flag], &format!("{base}/v2/"));
        assert_eq!(resp.exit, Some(0), "{flag}: {resp:?}");
        assert!(
            resp.status_line.starts_with(&format!("{version} 200")),
            "{flag}: expected `{version} 200`: {resp:?}"
        );
        assert_eq!(
            resp.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{resp:?}"
        );
        assert_eq!(resp.json(), serde_json::json!({}));
    }

    let work = tempfile::tempdir().unwrap();
    for (n, (push, pull)) in [("--http2", "--http1.1"), ("--http1.1", "--http2")]
        .into_iter()
        .enumerate()
    {
        let data = common::http::random_bytes(300_000 + n, 40 + n as u64);
        let digest = common::http::sha256_digest(&data);
        let file = work.path().join(format!("blob{n}"));
        std::fs::write(&file, &data).unwrap();
        let resp = curl(
            &[
                "--cacert",
                ca,
                push,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", file.display()),
            ],
            &format!("{base}/v2/tls/app/blobs/uploads/?digest={digest}"),
        );
        assert_eq!(resp.status, 201, "push over {push}: {resp:?}");
        let resp = curl(
            &["--cacert", ca, pull],
            &format!("{base}/v2/tls/app/blobs/{digest}"),
        );
        assert_eq!(resp.status, 200, "pull over {pull}: {resp:?}");
        assert!(
            resp.body == data,
            "the blob pushed over {push} came back different over {pull} ({} bytes, {} expected)",
            resp.body.len(),
            data.len()
        );
    }

    // Trusting nothing but the system roots, curl refuses the certificate:
    // the server really presents the test CA's certificate.
    let resp = curl(&[], &format!("{base}/v2/"));
    assert_eq!(
        resp.exit,
        Some(60),
        "curl without the test CA should fail verification: {resp:?}"
    );
    // Plain HTTP to the TLS port is no request.
    let plain = base.replacen("https://", "http://", 1);
    let resp = curl(&["--max-time", "15"], &format!("{plain}/v2/"));
    assert!(
        resp.exit != Some(0) || resp.status != 200,
        "plain HTTP was served on the TLS port: {resp:?}"
    );
}

/// With auth and TLS, the challenge's realm is `https://HOST/token` over
/// HTTP/1.1 and over HTTP/2 (which has no Host header, only :authority),
/// and the whole token flow runs over HTTP/2.
#[test]
fn auth_over_tls_challenges_with_an_https_realm_and_tokens_work_over_http2() {
    let certs = make_certs();
    let files = tempfile::tempdir().unwrap();
    let users = files.path().join("htpasswd");
    htpasswd(&users, &[("alice", "alice-tls-pw")]);
    let reg = TlsRegistry::start(|config| {
        config.tls = Some(certs.tls());
        config.auth = Some(berth::auth::AuthConfig::new(&users));
    });
    let base = reg.url.as_str();
    let ca = certs.ca.to_str().unwrap();
    let realm = format!("realm=\"{base}/token\"");
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let resp = curl(&["--cacert", ca, flag], &format!("{base}/v2/"));
        assert!(
            resp.status_line.starts_with(&format!("{version} 401")),
            "{flag}: {resp:?}"
        );
        let challenge = resp
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("no challenge: {resp:?}"));
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(&realm),
            "{flag}: expected {realm} in {challenge:?}"
        );
        let resp = curl(
            &["--cacert", ca, flag],
            &format!("{base}/v2/tls/app/manifests/v1"),
        );
        let challenge = resp.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(&realm) && challenge.contains("scope=\"repository:tls/app:pull\""),
            "{flag}: {resp:?}"
        );
    }
    let resp = curl(
        &["--cacert", ca, "--http2", "-u", "alice:alice-tls-pw"],
        &format!("{base}/token?service=berth&scope=repository%3Atls%2Fapp%3Apull%2Cpush"),
    );
    assert!(resp.status_line.starts_with("HTTP/2 200"), "{resp:?}");
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Authorization: Bearer {token}");
    let data = b"pushed with a token over HTTP/2";
    let digest = common::http::sha256_digest(data);
    let resp = curl(
        &[
            "--cacert",
            ca,
            "--http2",
            "-H",
            &bearer,
            "-X",
            "POST",
            "--data-binary",
            std::str::from_utf8(data).unwrap(),
        ],
        &format!("{base}/v2/tls/app/blobs/uploads/?digest={digest}"),
    );
    assert!(resp.status_line.starts_with("HTTP/2 201"), "{resp:?}");
    let resp = curl(
        &["--cacert", ca, "--http2", "-H", &bearer],
        &format!("{base}/v2/tls/app/blobs/{digest}"),
    );
    assert!(resp.status_line.starts_with("HTTP/2 200"), "{resp:?}");
    assert_eq!(resp.body, data);
    let resp = curl(
        &["--cacert", ca, "--http2", "-u", "alice:wrong"],
        &format!("{base}/v2/"),
    );
    assert!(resp.status_line.starts_with("HTTP/2 401"), "{resp:?}");
}

// ---------------------------------------------------------------------------
// Bad files

/// A missing, empty or garbage certificate, a file with a key where the
/// certificate should be, a missing or garbage key, and a key that does not
/// match the certificate: `Registry::start` fails, and says which file.
#[test]
fn bad_certificate_or_key_files_stop_the_start_naming_the_file() {
    let certs = make_certs();
    let key_pem = std::fs::read(&certs.key).unwrap();
    let missing = certs.dir.path().join("no-such.pem");
    let empty = certs.file("empty.pem", b"");
    let garbage = certs.file("garbage.pem", b"this is not a certificate\n");
    let bad_pem = certs.file(
        "bad-base64.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    // Well-formed PEM and base64 around bytes that are no certificate.
    let junk_der = certs.file(
        "junk-der.pem",
        b"-----BEGIN CERTIFICATE-----\nVGhlc2UgYnl0ZXMgYXJlIG5vIERFUiBjZXJ0aWZpY2F0ZS4=\n-----END CERTIFICATE-----\n",
    );
    let key_as_cert = certs.file("key-as-cert.pem", &key_pem);
    let garbage_key = certs.file("garbage.key", b"not a key at all\n");
    let cert_as_key = certs.file("cert-as-key.pem", &std::fs::read(&certs.cert).unwrap());

    let tls = |cert: &Path, key: &Path| TlsConfig {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let cases = [
        ("missing certificate", tls(&missing, &certs.key), &missing),
        ("empty certificate", tls(&empty, &certs.key), &empty),
        ("garbage certificate", tls(&garbage, &certs.key), &garbage),
        (
            "broken PEM certificate",
            tls(&bad_pem, &certs.key),
            &bad_pem,
        ),
        (
            "junk DER certificate",
            tls(&junk_der, &certs.key),
            &junk_der,
        ),
        (
            "a key as certificate",
            tls(&key_as_cert, &certs.key),
            &key_as_cert,
        ),
        ("missing key", tls(&certs.cert, &missing), &missing),
        ("garbage key", tls(&certs.cert, &garbage_key), &garbage_key),
        (
            "a certificate as key",
            tls(&certs.cert, &cert_as_key),
            &cert_as_key,
        ),
        (
            "mismatched key",
            tls(&certs.cert, &certs.other_key),
            &certs.other_key,
        ),
    ];
    for (what, config, named) in cases {
        let error = start_error(config);
        assert!(
            error.contains(&named.display().to_string()),
            "{what}: the error does not name {}: {error}",
            named.display()
        );
        println!("{what}: {error}");
    }
}

/// A 1024-bit RSA key, which rustls refuses (RSA keys need 2048 bits or
/// more), stops the start with a message that names the key file and says
/// why, not one claiming that certificate and key do not match.
#[test]
fn a_1024_bit_rsa_key_is_refused_as_too_small_naming_the_file() {
    let certs = make_certs();
    let d = certs.dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "rsa:1024",
            "-keyout",
            "rsa1024.key",
            "-out",
            "rsa1024.pem",
            "-days",
            "7",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let key = d.join("rsa1024.key");
    let error = start_error(TlsConfig {
        cert: d.join("rsa1024.pem"),
        key: key.clone(),
    });
    assert!(
        error.contains(&key.display().to_string()),
        "the error does not name {}: {error}",
        key.display()
    );
    assert!(
        error.contains("2048") && !error.contains("do not go together"),
        "the error does not say the key is too small: {error}"
    );
}

/// `berth serve` with bad TLS files exits non-zero at once with a message
/// naming the file, and never says it is listening; `--tls-cert` without
/// `--tls-key` is refused.
#[test]
fn berth_serve_with_bad_tls_files_exits_with_a_message_naming_the_file() {
    let certs = make_certs();
    let data = tempfile::tempdir().unwrap();
    let missing = certs.dir.path().join("missing.pem");
    let garbage = certs.file("garbage.pem", b"garbage\n");
    let (cert, key, other) = (
        certs.cert.to_str().unwrap(),
        certs.key.to_str().unwrap(),
        certs.other_key.to_str().unwrap(),
    );
    let (missing, garbage) = (missing.to_str().unwrap(), garbage.to_str().unwrap());
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", missing, "--tls-key", key], missing),
        (&["--tls-cert", garbage, "--tls-key", key], garbage),
        (&["--tls-cert", cert, "--tls-key", missing], missing),
        (&["--tls-cert", cert, "--tls-key", other], other),
        (&["--tls-cert", cert], "--tls-key"),
    ];
    for (args, named) in cases {
        let mut cmd = Command::new(BERTH);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path().join("d"))
            .args(args)
            .env("RUST_LOG", "info");
        let (status, stdout, stderr) = run(cmd, b"");
        let status = status.unwrap_or_else(|| panic!("berth serve {args:?} kept running"));
        assert!(!status.success(), "berth serve {args:?} exited 0");
        assert!(
            stderr.contains(named),
            "berth serve {args:?}: stderr does not name {named}:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&stdout).contains("listening"),
            "berth serve {args:?} said it was listening"
        );
    }
}

// ---------------------------------------------------------------------------
// skopeo through auth and TLS

/// `berth serve` as a child process, killed on drop.
struct Served {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Served {
    fn start(args: &[&str], log: &Path) -> Served {
        let log_file = std::fs::File::create(log).unwrap();
        let (child, url) = common::process::spawn_serve(args, "info", log_file, log);
        Served {
            child: Some(child),
            url,
            log: log.to_path_buf(),
        }
    }

    fn host(&self) -> &str {
        self.url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("not an https URL: {}", self.url))
    }

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

/// A certificate and key valid from `not_before` to `not_after`
/// (`YYYYMMDDHHMMSSZ`), self-signed for `IP:127.0.0.1` by `openssl ca`
/// (`openssl req` cannot date a certificate in the past), in files named
/// after `name`.
fn dated_cert(certs: &Certs, name: &str, not_before: &str, not_after: &str) -> TlsConfig {
    let d = certs.dir.path();
    let file = |ext: &str| format!("{name}.{ext}");
    std::fs::write(
        d.join(file("cnf")),
        format!(
            "[ca]\ndefault_ca = dated\n[dated]\ndatabase = {}\n\
             new_certs_dir = .\nserial = {}\ndefault_md = sha256\n\
             policy = policy\nx509_extensions = ext\n[policy]\ncommonName = supplied\n\
             [ext]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
            file("index"),
            file("serial")
        ),
    )
    .unwrap();
    std::fs::write(d.join(file("index")), "").unwrap();
    std::fs::write(d.join(file("serial")), "01\n").unwrap();
    let (cnf, key, csr, pem) = (file("cnf"), file("key"), file("csr"), file("pem"));
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(d, &req);
    openssl(
        d,
        &[
            "ca",
            "-batch",
            "-config",
            &cnf,
            "-selfsign",
            "-keyfile",
            &key,
            "-in",
            &csr,
            "-out",
            &pem,
            "-notext",
            "-startdate",
            not_before,
            "-enddate",
            not_after,
        ],
    );
    TlsConfig {
        cert: d.join(pem),
        key: d.join(key),
    }
}

/// An expired certificate, or one not valid yet, does not stop the start
/// (it may be being renewed), but `berth serve` warns about it in its log,
/// naming the file; a current one draws no warning.
#[test]
fn an_out_of_date_certificate_is_served_with_a_warning() {
    let certs = make_certs();
    let expired = dated_cert(&certs, "expired", "20200101000000Z", "20200201000000Z");
    let early = dated_cert(&certs, "early", "20900101000000Z", "20900201000000Z");
    let logs = tempfile::tempdir().unwrap();
    let cases = [
        (&expired, Some("expired")),
        (&early, Some("not valid")),
        (&certs.tls(), None),
    ];
    for (n, (tls, warning)) in cases.into_iter().enumerate() {
        let log = logs.path().join(format!("berth-{n}.log"));
        let (cert, key) = (tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
        let data = logs.path().join(format!("data-{n}"));
        let served = Served::start(
            &[
                "--data",
                data.to_str().unwrap(),
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            &log,
        );
        // The warning comes before the address line; nothing to wait for.
        drop(served);
        let text = std::fs::read_to_string(&log).unwrap();
        let warned = text
            .lines()
            .find(|l| l.contains("WARN") && l.contains(cert));
        match warning {
            Some(word) => assert!(
                warned.is_some_and(|l| l.contains(word)),
                "no warning that {cert} is {word} in the log:\n{text}"
            ),
            None => assert!(warned.is_none(), "a current certificate:\n{text}"),
        }
    }
}

/// skopeo failing for the right reason, so a TLS failure cannot pass for
/// an auth one.
trait FailsBecause {
    fn fails_because(&self, args: &[&str], why: &[&str]) -> String;
}

impl FailsBecause for Skopeo {
    fn fails_because(&self, args: &[&str], why: &[&str]) -> String {
        let stderr = self.fails(args);
        let lower = stderr.to_lowercase();
        assert!(
            why.iter().any(|w| lower.contains(w)),
            "skopeo failed, but not with any of {why:?}: {stderr}"
        );
        stderr
    }
}

const UNAUTHORIZED: &[&str] = &["unauthorized", "authentication required", "401"];
const DENIED: &[&str] = &["denied", "403", "unauthorized", "authentication required"];

/// The real-client suite once more, with auth and TLS on (`berth serve
/// --htpasswd --access --tls-cert --tls-key`): skopeo pushes with
/// `--dest-creds`, inspects and lists with `--creds`, pulls back with
/// `--src-creds` (byte for byte), all trusting only the test CA through
/// `--cert-dir`; a pull-only user cannot push; anonymous callers, a wrong
/// password and a client without the CA get nothing. Restarted with
/// `--anonymous-pull`, anyone pulls and still nobody anonymous pushes; the
/// pushing user deletes the image.
#[test]
fn skopeo_pushes_pulls_and_deletes_through_auth_and_tls() {
    let skopeo = Skopeo::new();
    let certs = make_certs();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let (alice_pw, bob_pw) = ("alice-skopeo-Pw1", "bob-skopeo-Pw2");
    htpasswd(&path("htpasswd"), &[("alice", alice_pw), ("bob", bob_pw)]);
    std::fs::write(path("access"), "alice push *\nbob pull *\n").unwrap();
    let owned: Vec<String> = [
        "--data".into(),
        path("data").display().to_string(),
        "--htpasswd".into(),
        path("htpasswd").display().to_string(),
        "--access".into(),
        path("access").display().to_string(),
        "--tls-cert".into(),
        certs.cert.display().to_string(),
        "--tls-key".into(),
        certs.key.display().to_string(),
    ]
    .into();
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let server = Served::start(&args, &path("berth.log"));
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "berth serve with TLS prints {}",
        server.url
    );
    let host = server.host().to_owned();
    let cert_dir = certs.cert_dir.to_str().unwrap();
    let alice = format!("alice:{alice_pw}");
    let bob = format!("bob:{bob_pw}");
    // skopeo's blob-info cache outlives the test and ports get reused: a
    // fresh seed keeps stale cache entries from naming these digests.
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    println!("layout seed {seed}");
    let image = layout::write_image(&path("src"), "v1", seed);
    let src = format!("oci:{}:v1", path("src").display());
    let repo = format!("docker://{host}/secure/app");
    let v1 = format!("{repo}:v1");

    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--dest-creds",
        &alice,
        "--dest-cert-dir",
        cert_dir,
        &src,
        &v1,
    ]);
    let inspected = skopeo.json(&["inspect", "--creds", &alice, "--cert-dir", cert_dir, &v1]);
    assert_eq!(
        inspected["Digest"],
        image.manifest.digest.as_str(),
        "{inspected}"
    );
    let raw = skopeo.ok(&[
        "inspect",
        "--raw",
        "--creds",
        &bob,
        "--cert-dir",
        cert_dir,
        &v1,
    ]);
    assert!(
        raw.stdout == image.manifest_bytes,
        "the manifest came back different: {}",
        raw.describe()
    );
    let tags = skopeo.json(&["list-tags", "--creds", &bob, "--cert-dir", cert_dir, &repo]);
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]), "{tags}");
    let back = format!("oci:{}:v1", path("back").display());
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--src-creds",
        &bob,
        "--src-cert-dir",
        cert_dir,
        &v1,
        &back,
    ]);
    layout::assert_copy_matches(&path("back"), "v1", &image.manifest, &image.blobs());

    // bob may pull, not push.
    skopeo.fails_because(
        &[
            "copy",
            "--dest-creds",
            &bob,
            "--dest-cert-dir",
            cert_dir,
            &src,
            &format!("{repo}:bob"),
        ],
        DENIED,
    );
    // No credentials, wrong password: no pull.
    skopeo.fails_because(&["inspect", "--cert-dir", cert_dir, &v1], UNAUTHORIZED);
    skopeo.fails_because(
        &[
            "inspect",
            "--creds",
            "alice:not-the-password",
            "--cert-dir",
            cert_dir,
            &v1,
        ],
        UNAUTHORIZED,
    );
    // Without the CA the certificate is not trusted.
    skopeo.fails_because(
        &["inspect", "--creds", &alice, &v1],
        &["x509", "certificate"],
    );
    let tags = skopeo.json(&[
        "list-tags",
        "--creds",
        &alice,
        "--cert-dir",
        cert_dir,
        &repo,
    ]);
    assert_eq!(
        tags["Tags"],
        serde_json::json!(["v1"]),
        "bob's refused push left a tag: {tags}"
    );
    server.stop();

    // The same data with --anonymous-pull.
    let mut open_args = args.clone();
    open_args.push("--anonymous-pull");
    let server = Served::start(&open_args, &path("berth2.log"));
    let host = server.host().to_owned();
    let repo = format!("docker://{host}/secure/app");
    let v1 = format!("{repo}:v1");
    let inspected = skopeo.json(&["inspect", "--cert-dir", cert_dir, &v1]);
    assert_eq!(
        inspected["Digest"],
        image.manifest.digest.as_str(),
        "{inspected}"
    );
    let anon = format!("oci:{}:v1", path("anonymous").display());
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--src-cert-dir",
        cert_dir,
        &v1,
        &anon,
    ]);
    layout::assert_copy_matches(&path("anonymous"), "v1", &image.manifest, &image.blobs());
    skopeo.fails_because(
        &[
            "copy",
            "--dest-cert-dir",
            cert_dir,
            &src,
            &format!("{repo}:anonymous"),
        ],
        UNAUTHORIZED,
    );

    skopeo.ok(&["delete", "--creds", &alice, "--cert-dir", cert_dir, &v1]);
    skopeo.fails_because(
        &["inspect", "--creds", &alice, "--cert-dir", cert_dir, &v1],
        &["manifest unknown", "not found", "404"],
    );
    server.stop();
}

/// Opens a TLS connection to `addr` trusting `ca`, finishes the handshake,
/// and then says nothing.
fn silent_tls(addr: std::net::SocketAddr, ca: &Path) -> std::net::TcpStream {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("TLS handshake");
    }
    tcp
}

/// Connections that finish the TLS handshake and then stay silent are
/// closed after the header timeout, like silent plain ones: enough of them
/// to take every connection slot lock nobody out for long.
#[test]
fn silent_connections_after_the_tls_handshake_are_closed() {
    let certs = make_certs();
    let reg = TlsRegistry::start(|config| {
        config.tls = Some(certs.tls());
        config.header_timeout = Duration::from_secs(1);
        config.max_connections = 20;
    });
    let addr: std::net::SocketAddr = reg.url.trim_start_matches("https://").parse().unwrap();
    let mut silent: Vec<_> = (0..20).map(|_| silent_tls(addr, &certs.ca)).collect();

    // Every slot is held: a new client waits until the silent ones go.
    let started = std::time::Instant::now();
    let ca = certs.ca.to_str().unwrap();
    let resp = curl(
        &["--cacert", ca, "--max-time", "20"],
        &format!("{}/v2/", reg.url),
    );
    let took = started.elapsed();
    assert_eq!(resp.exit, Some(0), "{resp:?}");
    assert!(resp.status_line.contains(" 200"), "{resp:?}");
    assert!(
        took < Duration::from_secs(5),
        "with a 1 s header timeout, a client waited {took:?} behind 20 silent TLS connections"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let closed = silent
        .iter_mut()
        .map(|s| common::http::read_until_closed(s, deadline).1)
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        closed, 20,
        "{closed} of 20 silent TLS connections were closed"
    );
}

/// A pull-through cache of a registry served over TLS with a certificate
/// from a private CA: trusted through `upstream_ca`, refused without it.
#[test]
fn a_mirror_trusts_an_https_upstream_through_its_ca_file_only() {
    let certs = make_certs();
    // The upstream's content, pushed over plain HTTP, then served over TLS.
    let data = tempfile::tempdir().unwrap();
    let plain = common::TestRegistry::start_in(data);
    let image = common::http::push_image(&plain.url(), "team/app", Some("1"), 1);
    let data = plain.stop();
    let upstream = TlsRegistry::start(|config| {
        config.data_dir = data.path().to_path_buf();
        config.tls = Some(certs.tls());
    });
    let mirror_with = |ca: Option<PathBuf>| {
        let url = upstream.url.clone();
        common::TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
            c.upstreams = vec![("tls.test".into(), url)];
            c.upstream_ca = ca;
            c.upstream_timeout = Duration::from_secs(5);
        })
    };
    let trusting = mirror_with(Some(certs.ca.clone()));
    let manifest = common::http::manifest_url(&trusting.url(), "tls.test/team/app", "1");
    let resp = common::http::get(&manifest);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == image.manifest);
    let layer = common::http::blob_url(&trusting.url(), "tls.test/team/app", &image.layer_digest);
    assert!(common::http::get(&layer).body == image.layer);

    let doubting = mirror_with(None);
    let manifest = common::http::manifest_url(&doubting.url(), "tls.test/team/app", "1");
    let resp = common::http::get(&manifest);
    common::http::assert_error(&resp, 502, "UNAVAILABLE");
    assert!(
        resp.text().to_lowercase().contains("certificate"),
        "{resp:?}"
    );
    drop(data);
}

#[test]
fn export_and_import_reach_a_tls_registry_trusting_the_ca_they_are_given() {
    let certs = make_certs();
    let reg = TlsRegistry::start(|config| config.tls = Some(certs.tls()));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let image = layout::write_image(&src, "1", 61);
    let berth = |args: &[&str]| {
        let out = Command::new(BERTH).args(args).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let src = src.to_str().unwrap();
    let ca = certs.ca.to_str().unwrap();
    let (ok, said) = berth(&["import", "--registry", &reg.url, "--into", "team/app", src]);
    assert!(!ok, "a certificate of an unknown CA was trusted: {said}");
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    let into = [
        "--registry",
        &reg.url,
        "--ca",
        ca,
        "--into",
        "team/app",
        src,
    ];
    let (ok, said) = berth(&[&["import"], &into[..]].concat());
    assert!(ok && said.contains("imported 1 images"), "{said}");

    let archive = work.path().join("out.tar");
    let out = archive.to_str().unwrap();
    let from = [
        "--registry",
        &reg.url,
        "--ca",
        ca,
        "--out",
        out,
        "team/app:1",
    ];
    let (ok, said) = berth(&[&["export"], &from[..]].concat());
    assert!(ok, "{said}");
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let held: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    let manifest = format!("blobs/sha256/{}", &image.manifest.digest[7..]);
    assert!(held.contains(&manifest), "{held:?}");
}
