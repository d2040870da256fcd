//! A small, fast, blocking HTTP/1.1 client for the benchmark: keep-alive,
//! bodies streamed from memory, responses read into reused buffers, and the
//! Docker token flow for registries that want it. Loopback only.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;

/// Where a registry listens, and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub creds: Option<(String, String)>,
    pub pid: Option<u32>,
    /// Every node of a registry that has several, `addr` first; clients
    /// of the many-client cases take them in turn.
    pub nodes: Vec<SocketAddr>,
}

impl Target {
    /// The target as client number `i` sees it: one of its nodes.
    pub fn node(&self, i: usize) -> Target {
        let mut target = self.clone();
        if !self.nodes.is_empty() {
            target.addr = self.nodes[i % self.nodes.len()];
        }
        target
    }
}

impl Target {
    /// `NAME=http://127.0.0.1:PORT[,creds=U:P][,pid=PID]`; loopback only.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (name, rest) = s.split_once('=').ok_or("expected NAME=URL")?;
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or("");
        let hostport = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are measured")?;
        let hostport = hostport
            .trim_end_matches('/')
            .replace("localhost", "127.0.0.1");
        let addr: SocketAddr = hostport.parse().map_err(|e| format!("{hostport}: {e}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{addr} is not a loopback address"));
        }
        let mut target = Target {
            name: name.to_owned(),
            addr,
            creds: None,
            pid: None,
            nodes: Vec::new(),
        };
        for part in parts {
            match part.split_once('=') {
                Some(("creds", c)) => {
                    let (u, p) = c.split_once(':').ok_or("creds=USER:PASS")?;
                    target.creds = Some((u.to_owned(), p.to_owned()));
                }
                Some(("pid", p)) => target.pid = Some(p.parse().map_err(|_| "pid=NUMBER")?),
                _ => return Err(format!("unknown option {part:?}")),
            }
        }
        Ok(target)
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection, reconnecting when the server closes it.
pub struct Conn {
    target: Target,
    stream: Option<BufReader<TcpStream>>,
    /// Bearer token for registries that ask for one; refetched whenever a
    /// request needs another scope.
    token: Option<String>,
}

/// What a body to send is made of.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len(),
        }
    }
}

/// How much of a response body to keep: GETs of big blobs only count bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Keep {
    All,
    CountOnly,
}

impl Conn {
    pub fn new(target: &Target) -> Conn {
        Conn {
            target: target.clone(),
            stream: None,
            token: None,
        }
    }

    fn stream(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(10))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(300)))?;
            self.stream = Some(BufReader::with_capacity(1 << 20, stream));
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Sends a request; on a 401 with a Bearer challenge fetches a token and
    /// sends it once more.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        keep: Keep,
    ) -> io::Result<(Response, u64)> {
        let first = self.send(method, path, headers, &body, keep)?;
        if first.0.status != 401 {
            return Ok(first);
        }
        let Some(challenge) = first.0.header("www-authenticate").map(str::to_owned) else {
            return Ok(first);
        };
        self.token = Some(self.fetch_token(&challenge)?);
        self.send(method, path, headers, &body, keep)
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Body,
        keep: Keep,
    ) -> io::Result<(Response, u64)> {
        // One retry on a fresh connection if the kept-alive one was closed.
        for attempt in 0..2 {
            match self.try_send(method, path, headers, body, keep) {
                Err(e) if attempt == 0 && self.stream.is_some() => {
                    self.stream = None;
                    let _ = e;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Body,
        keep: Keep,
    ) -> io::Result<(Response, u64)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        } else if let Some((u, p)) = &self.target.creds {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            head.push_str(&format!("Authorization: Basic {basic}\r\n"));
        }
        if !matches!(method, "GET" | "HEAD") || body.len() > 0 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let head_request = method == "HEAD";
        let reader = self.stream()?;
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes())?;
        if let Body::Bytes(bytes) = body {
            for chunk in bytes.chunks(1 << 20) {
                stream.write_all(chunk)?;
            }
        }
        let result = read_response(reader, head_request, keep);
        if result.as_ref().map_or(true, |(r, _)| {
            r.header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        }) {
            self.stream = None;
        }
        result
    }

    fn fetch_token(&mut self, challenge: &str) -> io::Result<String> {
        let field = |name: &str| {
            challenge
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        let realm = field("realm").ok_or_else(|| io::Error::other("no realm in challenge"))?;
        let path = realm
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
            .ok_or_else(|| io::Error::other("realm must be an http:// URL"))?;
        let mut query = format!("service={}", field("service").unwrap_or_default());
        if let Some(scope) = field("scope") {
            query.push_str(&format!("&scope={scope}"));
        }
        self.token = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        let (resp, _) = self.send(
            "GET",
            &format!("{path}{sep}{query}"),
            &[],
            &Body::Empty,
            Keep::All,
        )?;
        let json: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(io::Error::other)?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("no token from {path}: {}", resp.status)))
    }
}

/// Reads one response; returns it and the body's length.
fn read_response(
    reader: &mut BufReader<TcpStream>,
    head_request: bool,
    keep: Keep,
) -> io::Result<(Response, u64)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "headers cut short",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok((response, 0));
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let mut total = 0u64;
    let mut take =
        |reader: &mut BufReader<TcpStream>, mut n: u64, body: &mut Vec<u8>| -> io::Result<()> {
            while n > 0 {
                // Straight from the reader's buffer: no scratch copy, no
                // allocation per response.
                let buf = reader.fill_buf()?;
                if buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body cut short",
                    ));
                }
                let got = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                if keep == Keep::All {
                    body.extend_from_slice(&buf[..got]);
                }
                reader.consume(got);
                n -= got as u64;
                total += got as u64;
            }
            Ok(())
        };
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                line.clear();
                reader.read_line(&mut line)?;
                break;
            }
            take(reader, size, &mut response.body)?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        take(reader, len, &mut response.body)?;
    }
    Ok((response, total))
}
