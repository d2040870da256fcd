//! A small blocking HTTP/1.1 client for the integration tests, written on
//! `std::net::TcpStream` so the tests need no HTTP crate.
//!
//! One connection per request, always `Connection: close`. Every socket has a
//! 30 s read and write timeout, so a hung server fails the test instead of
//! hanging it. The request is written on a helper thread while the response
//! is read, so a server that answers early (413, 400...) without reading the
//! whole body is still heard.
//!
//! Besides the plain client this module has the registry-protocol helpers the
//! `api_*` tests share: digests, media types, blob and manifest pushes, and
//! `assert_error` for the OCI error body.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Read/write timeout of every test socket.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for stray bytes after a response that has no body.
const TRAILING_WAIT: Duration = Duration::from_secs(3);

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Digest of the empty blob.
pub const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ---------------------------------------------------------------------------
// Responses

pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header names as sent by the server; look them up with `header`.
    pub headers: Vec<(String, String)>,
    /// The body. For HEAD, 204 and 304 this holds whatever (wrongly) followed
    /// the headers before the server closed, normally nothing.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, case-insensitive, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A header that must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("response has no {name} header: {self:?}"))
    }

    /// The body parsed as JSON; panics with the body text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `code` of every entry of an OCI error body (empty if none).
    pub fn error_codes(&self) -> Vec<String> {
        let Ok(v) = serde_json::from_slice::<Value>(&self.body) else {
            return Vec::new();
        };
        v["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Location header, which must be present.
    pub fn location(&self) -> &str {
        self.must_header("location")
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {} {}", self.status, self.reason)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {v}")?;
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(2048)]);
        write!(f, "  body ({} bytes): {text}", self.body.len())
    }
}

// ---------------------------------------------------------------------------
// URLs

/// Splits `http://host:port/path?query` into (`host:port`, `/path?query`).
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs are supported: {url}"));
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// The path and query of an absolute URL (or the argument itself if it is
/// already a path).
pub fn path_of(url: &str) -> &str {
    if url.starts_with('/') {
        url
    } else {
        split_url(url).1
    }
}

/// Resolves a Location the server returned (absolute, or relative like
/// `/v2/...`) against the base URL `http://host:port[/...]`.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let (authority, path) = split_url(base);
    if location.starts_with('/') {
        return format!("http://{authority}{location}");
    }
    // Relative to the base path's directory.
    let path = path.split('?').next().unwrap_or("/");
    let dir = &path[..=path.rfind('/').unwrap_or(0)];
    format!("http://{authority}{dir}{location}")
}

/// Appends a query parameter string (`a=b&c=d`) to a URL that may already
/// carry a query.
pub fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

// ---------------------------------------------------------------------------
// The client

/// Opens a connection with the test timeouts set. `authority` is `host:port`.
pub fn connect(authority: &str) -> io::Result<TcpStream> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("cannot resolve {authority}")))?;
    connect_addr(addr)
}

pub fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request and reads the response; panics on I/O errors (a server
/// that hangs past the timeout, resets the connection, or answers garbage).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Like `request`, but hands back I/O errors.
///
/// Adds `Host`, `Connection: close`, and `Content-Length` (when the body is
/// not empty or the method is POST/PUT/PATCH) unless the caller sets
/// `Content-Length` or `Transfer-Encoding` itself.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let (authority, target) = split_url(url);
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if !has("content-length")
        && !has("transfer-encoding")
        && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);

    let stream = connect(authority)?;
    exchange(stream, &bytes, method.eq_ignore_ascii_case("HEAD"))
}

/// Writes `bytes` on a helper thread while reading the response here.
fn exchange(stream: TcpStream, bytes: &[u8], head_request: bool) -> io::Result<Response> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    std::thread::scope(|s| {
        let written = s.spawn(move || writer.write_all(bytes).and_then(|()| writer.flush()));
        let read = read_response(&mut reader, head_request);
        // Unblocks the writer if the server answered without reading it all.
        let _ = reader.shutdown(Shutdown::Both);
        let written = written.join().expect("writer thread");
        match (read, written) {
            (Ok(resp), _) => Ok(resp),
            (Err(e), Ok(())) => Err(e),
            (Err(read), Err(write)) => Err(io::Error::new(
                read.kind(),
                format!("{read} (and writing the request failed: {write})"),
            )),
        }
    })
}

pub fn get(url: &str) -> Response {
    request("GET", url, &[], b"")
}

pub fn head(url: &str) -> Response {
    request("HEAD", url, &[], b"")
}

pub fn delete(url: &str) -> Response {
    request("DELETE", url, &[], b"")
}

pub fn put(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request("PUT", url, headers, body)
}

pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request("POST", url, headers, body)
}

pub fn patch(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request("PATCH", url, headers, body)
}

// ---------------------------------------------------------------------------
// Response parsing

/// Unread input: bytes already received plus the stream they came from.
struct Input<'a, R: Read> {
    stream: &'a mut R,
    buf: Vec<u8>,
}

impl<R: Read> Input<'_, R> {
    /// Reads more bytes into the buffer; false at end of stream.
    fn more(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Everything before the next `delim`, consuming the delimiter too.
    fn take_until(&mut self, delim: &[u8], what: &str) -> io::Result<Vec<u8>> {
        let mut searched: usize = 0;
        loop {
            let from = searched.saturating_sub(delim.len());
            if let Some(i) = find(&self.buf[from..], delim) {
                let end = from + i;
                let out = self.buf[..end].to_vec();
                self.buf.drain(..end + delim.len());
                return Ok(out);
            }
            searched = self.buf.len();
            if !self.more()? {
                return Err(eof(what, &self.buf));
            }
        }
    }

    fn take(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more()? {
                return Err(eof(what, &self.buf));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn take_rest(&mut self) -> io::Result<Vec<u8>> {
        while self.more()? {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn eof(what: &str, got: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "connection closed while reading {what} (had {} bytes: {:?})",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(200)])
        ),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from a stream (skipping `100 Continue`s).
pub fn read_response(stream: &mut TcpStream, head_request: bool) -> io::Result<Response> {
    let mut input = Input {
        stream,
        buf: Vec::new(),
    };
    let (status, reason, headers) = read_head(&mut input)?;
    let bodiless = head_request || status == 204 || status == 304;
    let body = if bodiless {
        // Nothing should follow; collect anything that does so tests can see it.
        let _ = input.stream.set_read_timeout(Some(TRAILING_WAIT));
        let mut rest = std::mem::take(&mut input.buf);
        let mut chunk = [0u8; 4096];
        while let Ok(n) = input.stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        let _ = input.stream.set_read_timeout(Some(TIMEOUT));
        rest
    } else {
        read_body(&mut input, &headers)?
    };
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

/// Parses a response from bytes already received (for the raw mode).
pub fn parse_response(bytes: &[u8], head_request: bool) -> io::Result<Response> {
    let mut slice = bytes;
    let mut input = Input {
        stream: &mut slice,
        buf: Vec::new(),
    };
    let (status, reason, headers) = read_head(&mut input)?;
    let body = if head_request || status == 204 || status == 304 {
        input.take_rest()?
    } else {
        read_body(&mut input, &headers)?
    };
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

type Head = (u16, String, Vec<(String, String)>);

fn read_head<R: Read>(input: &mut Input<'_, R>) -> io::Result<Head> {
    loop {
        let raw = input.take_until(b"\r\n\r\n", "the response headers")?;
        let text = String::from_utf8(raw)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        };
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().ok_or_else(bad)?;
        if !version.starts_with("HTTP/1.") {
            return Err(bad());
        }
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line.split_once(':').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
            })?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue; // 100 Continue and friends: the real answer follows
        }
        return Ok((status, reason, headers));
    }
}

fn read_body<R: Read>(
    input: &mut Input<'_, R>,
    headers: &[(String, String)],
) -> io::Result<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line = input.take_until(b"\r\n", "a chunk size")?;
            let line = String::from_utf8_lossy(&line);
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, up to an empty line.
                while !input.take_until(b"\r\n", "the chunked trailer")?.is_empty() {}
                return Ok(body);
            }
            body.extend(input.take(size, "a chunk")?);
            let end = input.take_until(b"\r\n", "a chunk end")?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk longer than its size",
                ));
            }
        }
    }
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad Content-Length {len:?}"),
            )
        })?;
        return input.take(len, "the body");
    }
    input.take_rest()
}

// ---------------------------------------------------------------------------
// Raw mode, for hostile tests

/// What came back on a raw connection.
pub struct RawReply {
    /// Every byte received before EOF, an error, or the timeout.
    pub bytes: Vec<u8>,
    /// The error that ended reading, if not a clean EOF (a timeout shows up
    /// as `WouldBlock`/`TimedOut`).
    pub error: Option<io::Error>,
}

impl RawReply {
    /// The first response in the received bytes, if they hold one.
    pub fn response(&self) -> Option<Response> {
        parse_response(&self.bytes, false).ok()
    }

    pub fn timed_out(&self) -> bool {
        matches!(
            self.error.as_ref().map(io::Error::kind),
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        )
    }
}

/// Sends arbitrary bytes on a fresh connection, optionally closes the write
/// side, then reads until EOF, an error, or `timeout`.
pub fn raw(addr: SocketAddr, data: &[u8], close_write: bool, timeout: Duration) -> RawReply {
    let mut stream = connect_addr(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut error = stream.write_all(data).err();
    if close_write && error.is_none() {
        error = stream.shutdown(Shutdown::Write).err();
    }
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    RawReply { bytes, error }
}

/// Sends arbitrary bytes (e.g. headers promising more body than follows)
/// and drops the connection at once, without reading anything.
pub fn send_and_close(addr: SocketAddr, data: &[u8]) {
    let mut stream = connect_addr(addr).expect("connect");
    let _ = stream.write_all(data);
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Registry helpers

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Asserts an OCI error response: the status, `Content-Type:
/// application/json`, and a body `{"errors":[{"code":CODE,"message":"..."}]}`
/// whose first code is `code`.
#[track_caller]
pub fn assert_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(
        resp.status, status,
        "status; expected {status} {code}, got {resp:?}"
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "content type of an error: {resp:?}"
    );
    let body = resp.json();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("error body has no errors array: {resp:?}"));
    assert!(!errors.is_empty(), "errors array is empty: {resp:?}");
    for e in errors {
        assert!(
            e["code"].is_string(),
            "error without a string code: {resp:?}"
        );
        assert!(
            e["message"].is_string(),
            "error without a string message: {resp:?}"
        );
    }
    assert_eq!(errors[0]["code"], code, "error code: {resp:?}");
}

/// Asserts a 404 or similar error that must have a JSON errors body, without
/// pinning the code.
#[track_caller]
pub fn assert_json_error(resp: &Response, status: u16) {
    assert_eq!(resp.status, status, "status: {resp:?}");
    let body = resp.json();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("error body has no errors array: {resp:?}"));
    assert!(!errors.is_empty(), "errors array is empty: {resp:?}");
    assert!(
        errors[0]["code"].is_string(),
        "error without a code: {resp:?}"
    );
}

pub fn blob_url(base: &str, name: &str, digest: &str) -> String {
    format!("{base}/v2/{name}/blobs/{digest}")
}

pub fn manifest_url(base: &str, name: &str, reference: &str) -> String {
    format!("{base}/v2/{name}/manifests/{reference}")
}

pub fn uploads_url(base: &str, name: &str) -> String {
    format!("{base}/v2/{name}/blobs/uploads/")
}

/// Starts an upload session (asserting 202) and returns its absolute URL.
#[track_caller]
pub fn start_upload(base: &str, name: &str) -> String {
    let resp = post(&uploads_url(base, name), &[], b"");
    assert_eq!(resp.status, 202, "POST {name} upload: {resp:?}");
    resolve(base, resp.location())
}

/// Pushes a blob in one request (`POST ...?digest=`), asserting 201; returns
/// its digest.
#[track_caller]
pub fn push_blob(base: &str, name: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let url = with_query(&uploads_url(base, name), &format!("digest={digest}"));
    let resp = post(&url, &[("Content-Type", "application/octet-stream")], data);
    assert_eq!(resp.status, 201, "monolithic push to {name}: {resp:?}");
    digest
}

/// Pushes a blob with POST then one PUT (the two-step monolithic upload),
/// asserting 201; returns its digest.
#[track_caller]
pub fn push_blob_put(base: &str, name: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let upload = start_upload(base, name);
    let resp = put(
        &with_query(&upload, &format!("digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(resp.status, 201, "PUT upload to {name}: {resp:?}");
    digest
}

/// PUTs a manifest and returns the response, whatever it is.
pub fn put_manifest(
    base: &str,
    name: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    put(
        &manifest_url(base, name, reference),
        &[("Content-Type", media_type)],
        body,
    )
}

/// PUTs a manifest, asserting 201; returns its digest.
#[track_caller]
pub fn push_manifest(
    base: &str,
    name: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let resp = put_manifest(base, name, reference, media_type, body);
    assert_eq!(
        resp.status, 201,
        "PUT manifest {name}:{reference}: {resp:?}"
    );
    sha256_digest(body)
}

/// A descriptor for content of the given media type.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256_digest(data),
        "size": data.len(),
    })
}

/// Serializes an OCI image manifest with the given config and layers.
pub fn image_manifest(config: &Value, layers: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

/// Serializes an OCI image index over the given manifest descriptors.
pub fn image_index(manifests: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap()
}

/// An image pushed by `push_image`.
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// A descriptor of this image's manifest, for indexes and subjects.
    pub fn descriptor(&self) -> Value {
        descriptor(OCI_MANIFEST, &self.manifest)
    }
}

/// Builds the blobs and OCI manifest of a small image unique to `seed`,
/// without pushing anything.
pub fn build_image(seed: u64) -> Image {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#
    )
    .into_bytes();
    let layer = random_bytes(1000 + (seed % 97) as usize, seed);
    let manifest = image_manifest(
        &descriptor(OCI_CONFIG, &config),
        &[descriptor(OCI_LAYER, &layer)],
    );
    Image {
        config_digest: sha256_digest(&config),
        layer_digest: sha256_digest(&layer),
        digest: sha256_digest(&manifest),
        config,
        layer,
        manifest,
    }
}

/// Pushes the blobs of a fresh image and its manifest under `reference`
/// (a tag, or its digest when `None`).
#[track_caller]
pub fn push_image(base: &str, name: &str, reference: Option<&str>, seed: u64) -> Image {
    let image = build_image(seed);
    push_blob(base, name, &image.config);
    push_blob(base, name, &image.layer);
    let reference = reference.unwrap_or(&image.digest).to_owned();
    push_manifest(base, name, &reference, OCI_MANIFEST, &image.manifest);
    image
}

// ---------------------------------------------------------------------------
// Bounded waits, for the concurrency and hostile tests

/// Like `try_request`, but connecting, writing and reading each give up after
/// `timeout` instead of [`TIMEOUT`], so a test can bound how long "promptly" is.
pub fn try_request_within(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let (authority, target) = split_url(url);
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if !has("content-length")
        && !has("transfer-encoding")
        && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);

    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("cannot resolve {authority}")))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    exchange(stream, &bytes, method.eq_ignore_ascii_case("HEAD"))
}

/// Reads from `stream` until the peer closes it (EOF or reset) or `deadline`
/// passes; returns every byte read and whether the connection was closed.
pub fn read_until_closed(stream: &mut TcpStream, deadline: std::time::Instant) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // A zero timeout means "block for ever" to std: poll briefly instead.
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut chunk) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if std::time::Instant::now() >= deadline {
                    return (bytes, false);
                }
            }
            // Reset, aborted...: the server dropped the connection.
            Err(_) => return (bytes, true),
        }
    }
}
