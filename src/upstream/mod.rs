//! A client of other registries: what pull-through asks of an upstream.
//! Every request is bounded in time; TLS is verified against the system's
//! roots and any extra CA given; a Bearer token is fetched as a docker
//! client does and kept until it expires. Nothing here trusts the bytes it
//! gets: the caller verifies every digest before anything is stored.

mod auth;
mod dns;
mod push;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use auth::Credentials;
use auth::{Challenge, TokenResponse};

use crate::oci::Digest;
use crate::oci::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::pace::Pace;

/// Redirects followed for one blob (registries send blobs from elsewhere).
const MAX_REDIRECTS: usize = 5;
/// Pages of a referrers list followed at most.
const MAX_PAGES: usize = 10;
/// Scopes whose tokens are kept at most.
const MAX_TOKENS: usize = 1_000;
/// Token answers and error bodies are small; more is refused.
const MAX_SMALL_BODY: usize = 64 << 10;
/// A page of tags: a thousand names, with room to spare.
const MAX_PAGE_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream {upstream} cannot be reached: {why}")]
    Unreachable { upstream: String, why: String },
    #[error("upstream {upstream} did not answer within {after:?}")]
    Timeout { upstream: String, after: Duration },
    #[error("upstream {upstream} answered {status}")]
    Refused { upstream: String, status: u16 },
    #[error("upstream {upstream} sent a bad answer: {why}")]
    Invalid { upstream: String, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How long an upstream may take, and whom to trust.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// For the answer's head, and between any two pieces of its body.
    pub read_timeout: Duration,
    pub credentials: Credentials,
    /// PEM certificates trusted beside the system's roots.
    pub extra_ca: Option<std::path::PathBuf>,
    /// A body must bring at least this many bytes in every window of this
    /// length, as a client's must: one that sends a byte within each read
    /// timeout would otherwise hold a fetch, and those waiting on it, for
    /// ever.
    pub min_pace: (u64, Duration),
}

impl Settings {
    pub fn new() -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            credentials: Credentials::default(),
            extra_ca: None,
            min_pace: (60 << 10, Duration::from_secs(60)),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::new()
    }
}

/// What a request carries: nothing, a few bytes, or a stream sent once.
type RequestBody = BoxBody<Bytes, io::Error>;

/// The HTTP client every upstream shares.
#[derive(Clone)]
pub struct Connector {
    client: Client<HttpsConnector<HttpConnector<dns::Resolver>>, RequestBody>,
    settings: Arc<Settings>,
}

impl Connector {
    pub fn new(settings: Settings) -> io::Result<Connector> {
        let tls = crate::tls::client_config(settings.extra_ca.as_deref())?;
        let mut http = HttpConnector::new_with_resolver(dns::Resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Connector {
            client,
            settings: Arc::new(settings),
        })
    }

    /// A client of the registry at `url` (`http[s]://host[:port]`).
    pub fn upstream(&self, url: &str) -> io::Result<Upstream> {
        let base: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url:?}: {e}")))?;
        let authority = match (base.scheme_str(), base.authority()) {
            (Some("http" | "https"), Some(authority)) => authority.as_str().to_owned(),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{url:?} is not an http(s) URL like https://registry.example"),
                ));
            }
        };
        let credentials = self.settings.credentials.for_host(&authority).cloned();
        Ok(Upstream {
            base: url.trim_end_matches('/').to_owned(),
            connector: self.clone(),
            credentials,
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }
}

/// A manifest as an upstream sent it.
pub struct Manifest {
    pub media_type: String,
    pub body: Vec<u8>,
}

/// A blob's answer: its declared size, and the body to read.
pub struct Blob {
    pub size: Option<u64>,
    pub body: Body,
}

/// An answer's body, and how fast it comes.
pub struct Body {
    inner: Incoming,
    pace: Pace,
}

/// One request, as [`Upstream::send`] makes it and makes it again after
/// logging in.
struct Ask<'a> {
    method: Method,
    url: &'a str,
    /// What a token for it must allow: `repository:NAME:pull` and the like.
    scopes: Vec<String>,
    headers: Vec<(header::HeaderName, String)>,
    /// Bytes that can be sent twice; streams go by `send_stream`.
    body: Option<Bytes>,
}

impl<'a> Ask<'a> {
    fn new(method: Method, url: &'a str, scopes: Vec<String>) -> Ask<'a> {
        Ask {
            method,
            url,
            scopes,
            headers: Vec::new(),
            body: None,
        }
    }

    /// To pull from `repo`.
    fn pull(method: Method, url: &'a str, repo: &str) -> Ask<'a> {
        Ask::new(method, url, vec![format!("repository:{repo}:pull")])
    }

    /// For a manifest: every manifest type berth stores is accepted.
    fn manifest(mut self) -> Ask<'a> {
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        self.headers.push((header::ACCEPT, accept));
        self
    }

    fn header(mut self, name: header::HeaderName, value: String) -> Ask<'a> {
        self.headers.push((name, value));
        self
    }

    fn with_body(mut self, body: Bytes) -> Ask<'a> {
        self.body = Some(body);
        self
    }

    /// The key its authorization is kept under.
    fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    fn body(&self) -> RequestBody {
        match &self.body {
            Some(bytes) => Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
            None => Empty::new().map_err(|never| match never {}).boxed(),
        }
    }
}

/// One upstream registry.
pub struct Upstream {
    base: String,
    connector: Connector,
    credentials: Option<(String, String)>,
    /// `Authorization` values by scope, until they expire.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Requests sent, and those that got no answer or a server error.
    requests: AtomicU64,
    failures: AtomicU64,
}

impl Upstream {
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Requests sent since the start, and how many of them failed (no
    /// answer in time, or a 5xx).
    pub fn requests(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    fn read_timeout(&self) -> Duration {
        self.connector.settings.read_timeout
    }

    /// The digest a tag names now, from a HEAD; `None` if the upstream has
    /// no such tag. An upstream that names no digest in its answer has the tag's bytes
    /// fetched (at most `limit`) and hashed instead.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
        limit: usize,
    ) -> Result<Option<Digest>> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let resp = self
            .send(&Ask::pull(Method::HEAD, &url, repo).manifest())
            .await?;
        let Some(resp) = self.found(resp)? else {
            return Ok(None);
        };
        let named = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(Digest::parse);
        if named.is_some() {
            return Ok(named);
        }
        Ok(self
            .manifest(repo, tag, limit)
            .await?
            .map(|manifest| Digest::of(&manifest.body)))
    }

    /// A manifest by tag or digest, at most `limit` bytes; `None` if the
    /// upstream has no such manifest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        limit: usize,
    ) -> Result<Option<Manifest>> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = self
            .send(&Ask::pull(Method::GET, &url, repo).manifest())
            .await?;
        let Some(resp) = self.found(resp)? else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = self.read_all(resp.into_body(), limit).await?;
        Ok(Some(Manifest { media_type, body }))
    }

    /// The digests of the manifests whose subject is `subject`, from the
    /// referrers API, or from the referrers tag (the OCI tag schema) of an
    /// upstream without it; `None` if it has neither.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        limit: usize,
    ) -> Result<Option<Vec<Digest>>> {
        let mut url = format!("{}/v2/{repo}/referrers/{subject}", self.base);
        let mut referrers = Vec::new();
        // A registry may give the list in pages, each naming the next.
        for page in 0..MAX_PAGES {
            let resp = self.send(&Ask::pull(Method::GET, &url, repo)).await?;
            let resp = match self.found(resp)? {
                Some(resp) => resp,
                None if page == 0 => return self.referrers_tag(repo, subject, limit).await,
                None => break,
            };
            let next = next_page(&resp, &url);
            let body = self.read_all(resp.into_body(), limit).await?;
            referrers.extend(self.listed_manifests(&body)?);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(Some(referrers))
    }

    /// The referrers a registry without the referrers API keeps as the OCI
    /// tag schema says: an index tagged `<alg>-<hex>` (cut at 32 and 64
    /// characters); `None` if there is no such tag.
    async fn referrers_tag(
        &self,
        repo: &str,
        subject: &Digest,
        limit: usize,
    ) -> Result<Option<Vec<Digest>>> {
        let algorithm: String = subject.algorithm().name().chars().take(32).collect();
        let hex: String = subject.hex().chars().take(64).collect();
        match self
            .manifest(repo, &format!("{algorithm}-{hex}"), limit)
            .await?
        {
            Some(index) => self.listed_manifests(&index.body).map(Some),
            None => Ok(None),
        }
    }

    /// The digests an index (a referrers list) names.
    fn listed_manifests(&self, body: &[u8]) -> Result<Vec<Digest>> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        let index: Index = serde_json::from_slice(body)
            .map_err(|e| self.invalid(format!("a referrers list that is no index: {e}")))?;
        index
            .manifests
            .iter()
            .map(|d| {
                Digest::parse(&d.digest)
                    .ok_or_else(|| self.invalid(format!("a referrer {:?}", d.digest)))
            })
            .collect()
    }

    /// The repository's tags, following the `Link` of each page, at most
    /// `max`; `None` if the upstream has no such repository.
    pub async fn tags(&self, repo: &str, max: usize) -> Result<Option<Vec<String>>> {
        let url = format!("{}/v2/{repo}/tags/list?n=1000", self.base);
        let scope = format!("repository:{repo}:pull");
        self.list(url, scope, "tags", max).await
    }

    /// The registry's repositories from `_catalog`, at most `max`.
    pub async fn catalog(&self, max: usize) -> Result<Vec<String>> {
        let url = format!("{}/v2/_catalog?n=1000", self.base);
        let scope = "registry:catalog:*".to_owned();
        let names = self.list(url, scope, "repositories", max).await?;
        names.ok_or_else(|| self.invalid("no _catalog (404): name what to export".into()))
    }

    /// The names under `key` of a paginated list, following the `Link`
    /// of each page, at most `max`; `None` for a 404 on the first page.
    async fn list(
        &self,
        mut url: String,
        scope: String,
        key: &str,
        max: usize,
    ) -> Result<Option<Vec<String>>> {
        let mut names = Vec::new();
        while names.len() < max {
            let resp = self
                .send(&Ask::new(Method::GET, &url, vec![scope.clone()]))
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok((!names.is_empty()).then_some(names));
            }
            self.expect_ok(&resp)?;
            let next = next_page(&resp, &url);
            let body = self.read_all(resp.into_body(), MAX_PAGE_BODY).await?;
            let list: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| self.invalid(format!("a list that is no JSON: {e}")))?;
            let page: Vec<String> = list[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect();
            if page.is_empty() {
                break;
            }
            names.extend(page);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        names.truncate(max);
        Ok(Some(names))
    }

    /// A blob's size from a HEAD, following redirects; `None` if the
    /// upstream has no such blob (or does not say its size).
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let resp = self.blob_answer(Method::HEAD, repo, digest).await?;
        let Some(resp) = self.found(resp)? else {
            return Ok(None);
        };
        Ok(content_length(&resp))
    }

    /// A blob's bytes, following redirects; `None` if the upstream has no
    /// such blob.
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<Blob>> {
        let resp = self.blob_answer(Method::GET, repo, digest).await?;
        let Some(resp) = self.found(resp)? else {
            return Ok(None);
        };
        Ok(Some(Blob {
            size: content_length(&resp),
            body: self.body(resp.into_body()),
        }))
    }

    /// The answer to a blob request, after any redirects.
    async fn blob_answer(
        &self,
        method: Method,
        repo: &str,
        digest: &Digest,
    ) -> Result<Response<Incoming>> {
        let mut url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let mut resp = self.send(&Ask::pull(method.clone(), &url, repo)).await?;
        for _ in 0..MAX_REDIRECTS {
            if !resp.status().is_redirection() {
                break;
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.invalid("a redirect without a Location".into()))?;
            let next = resolve(&url, location).ok_or_else(|| {
                self.invalid(format!("a redirect to {location:?}, which is no URL"))
            })?;
            if !may_redirect(&url, &next) {
                return Err(self.invalid(format!("a redirect from {url} to {next}: refused")));
            }
            url = next;
            // Elsewhere, the registry's credentials are not sent.
            let ask = Ask::new(method.clone(), &url, Vec::new());
            resp = self.request(&ask, None, ask.body()).await?;
        }
        Ok(resp)
    }

    /// An answer's body, held to the minimum pace.
    fn body(&self, inner: Incoming) -> Body {
        let (min, window) = self.connector.settings.min_pace;
        Body {
            inner,
            pace: Pace::new(min, window),
        }
    }

    /// The next piece of a body, within the read timeout and the minimum
    /// pace; `None` at its end.
    pub async fn next_chunk(&self, body: &mut Body) -> Result<Option<Bytes>> {
        let read_by = tokio::time::Instant::now() + self.read_timeout();
        loop {
            let wake = read_by.min(body.pace.deadline().into());
            match tokio::time::timeout_at(wake, body.inner.frame()).await {
                Err(_) if tokio::time::Instant::now() >= read_by => return Err(self.timeout()),
                Err(_) => body
                    .pace
                    .next_window()
                    .map_err(|why| self.invalid(format!("a body too slow: {why}")))?,
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.unreachable(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        body.pace.moved(data.len());
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    async fn read_all(&self, body: Incoming, limit: usize) -> Result<Vec<u8>> {
        let mut body = self.body(body);
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut body).await? {
            if out.len() + chunk.len() > limit {
                return Err(self.invalid(format!("a body over {limit} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The answer if it is a success; `None` for a 404, which the callers
    /// report as "the upstream has no such thing"; an error otherwise.
    fn found(&self, resp: Response<Incoming>) -> Result<Option<Response<Incoming>>> {
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.expect_ok(&resp)?;
        Ok(Some(resp))
    }

    fn expect_ok(&self, resp: &Response<Incoming>) -> Result<()> {
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Refused {
                upstream: self.base.clone(),
                status: resp.status().as_u16(),
            })
        }
    }

    /// Sends `ask`, logging in when challenged (once) with what the
    /// challenge asks for; the authorization is kept for its scopes.
    /// Anywhere but the upstream's own origin (a `Link` or `Location`
    /// naming another host, port or scheme) it goes without credentials.
    async fn send(&self, ask: &Ask<'_>) -> Result<Response<Incoming>> {
        if !same_origin(&self.base, ask.url) {
            return self.request(ask, None, ask.body()).await;
        }
        let cached = self.cached_token(&ask.scope());
        let resp = self.request(ask, cached.as_deref(), ask.body()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        match self.log_in(&resp, ask).await? {
            Some(authorization) => self.request(ask, Some(&authorization), ask.body()).await,
            None => Ok(resp),
        }
    }

    /// The authorization a 401 answer's challenge asks for, kept until it
    /// expires; `None` when there is nothing to answer it with.
    async fn log_in(&self, resp: &Response<Incoming>, ask: &Ask<'_>) -> Result<Option<String>> {
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        let (authorization, life) = match challenge.scheme.as_str() {
            "bearer" => self.token(&challenge, &ask.scopes).await?,
            "basic" => match &self.credentials {
                Some((user, password)) => (auth::basic(user, password), Duration::from_secs(3600)),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        keep_token(
            &mut self.tokens.lock().unwrap_or_else(|p| p.into_inner()),
            ask.scope(),
            authorization.clone(),
            Instant::now() + life,
        );
        Ok(Some(authorization))
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    /// Fetches a Bearer token for `scopes` from the challenge's realm, as a
    /// client does: the token, and how long to keep it.
    async fn token(&self, challenge: &Challenge, scopes: &[String]) -> Result<(String, Duration)> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| self.invalid("a Bearer challenge without a realm".into()))?;
        // Where a redirect may not go, no token is fetched from either.
        if !may_redirect(&self.base, realm) {
            return Err(self.invalid(format!("a token realm at {realm}: refused")));
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = challenge.params.get("service") {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
            query.finish()
        };
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{query}");
        // Not in the clear to a realm of an upstream reached over TLS.
        let clear = realm.starts_with("http://") && self.base.starts_with("https://");
        let basic = self
            .credentials
            .as_ref()
            .filter(|_| !clear)
            .map(|(user, password)| auth::basic(user, password));
        let ask = Ask::new(Method::GET, &url, Vec::new());
        let resp = self.request(&ask, basic.as_deref(), ask.body()).await?;
        self.expect_ok(&resp)?;
        let body = self.read_all(resp.into_body(), MAX_SMALL_BODY).await?;
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(format!("a token answer that is no JSON: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| self.invalid("a token answer without a token".into()))?;
        Ok((format!("Bearer {token}"), token_life(answer.expires_in)))
    }

    /// Sends `ask` once with `body`, and waits for the answer's head
    /// within the timeouts.
    async fn request(
        &self,
        ask: &Ask<'_>,
        authorization: Option<&str>,
        body: RequestBody,
    ) -> Result<Response<Incoming>> {
        let req = self.build(ask, authorization, body)?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = match tokio::time::timeout(
            self.connector.settings.connect_timeout + self.read_timeout(),
            self.connector.client.request(req),
        )
        .await
        {
            Err(_) => Err(self.timeout()),
            Ok(Err(e)) => Err(self.unreachable(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        };
        if answer.as_ref().is_ok_and(|r| !r.status().is_server_error()) {
            return answer;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        answer
    }

    fn build(
        &self,
        ask: &Ask<'_>,
        authorization: Option<&str>,
        body: RequestBody,
    ) -> Result<Request<RequestBody>> {
        let mut req = Request::builder().method(ask.method.clone()).uri(ask.url);
        for (name, value) in &ask.headers {
            req = req.header(name, value);
        }
        if let Some(authorization) = authorization {
            let value = HeaderValue::from_str(authorization)
                .map_err(|_| self.invalid("an unusable token".into()))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        req.body(body)
            .map_err(|e| self.invalid(format!("a URL that cannot be asked for: {e}")))
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            upstream: self.base.clone(),
            after: self.read_timeout(),
        }
    }

    fn unreachable(&self, why: String) -> Error {
        Error::Unreachable {
            upstream: self.base.clone(),
            why,
        }
    }

    /// The error for an answer that is wrong, here or once checked.
    pub fn invalid(&self, why: String) -> Error {
        Error::Invalid {
            upstream: self.base.clone(),
            why,
        }
    }
}

/// How long a token is kept: a little shorter than it lives, so it is
/// never sent stale (a streamed upload cannot be sent again after a 401).
/// Docker's token servers default to 60 s when they say nothing.
/// A token that says it lives longer than a day is kept for a day.
fn token_life(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(60).min(86_400)) * 9 / 10
}

/// Keeps `authorization` for `scope` until `until`. Clients name the
/// repositories, so scopes are many: past [`MAX_TOKENS`] the expired go,
/// and all if none has.
fn keep_token(
    tokens: &mut HashMap<String, (String, Instant)>,
    scope: String,
    authorization: String,
    until: Instant,
) {
    let now = Instant::now();
    let live = |(_, expires): &(String, Instant)| now < *expires;
    crate::bounded::insert(tokens, scope, (authorization, until), MAX_TOKENS, live);
}

/// Whether a redirect (or a page's `Link`) from `from` may be followed to
/// `to`: never to an address where clouds serve their instance metadata and
/// credentials (see `dns::is_metadata`), nor to this host's own loopback unless the
/// upstream is on it too. A hostile upstream would have berth fetch, and
/// pass on, what only berth can reach. Private networks and plain http
/// stay allowed: an upstream named in DNS may well send its blobs to a
/// store at 10.0.0.5 over http, and docker follows such redirects too.
fn may_redirect(from: &str, to: &str) -> bool {
    let host = |url: &str| Some(url.parse::<Uri>().ok()?.host()?.to_ascii_lowercase());
    let (Some(from), Some(to)) = (host(from), host(to)) else {
        return false;
    };
    let (to_ip, from_ip) = (address(&to), address(&from));
    let loopback = |host: &str, ip: Option<std::net::IpAddr>| {
        host == "localhost"
            || host.ends_with(".localhost")
            || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
    };
    !to_ip.is_some_and(dns::is_metadata) && (!loopback(&to, to_ip) || loopback(&from, from_ip))
}

/// The address a URL's host names, if it is one (an IPv4-mapped IPv6
/// address as its IPv4 one).
fn address(host: &str) -> Option<std::net::IpAddr> {
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(ip.to_canonical())
}

fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The next page a paginated answer to `url` names in its `Link`, if it
/// may be followed (see [`may_redirect`]).
fn next_page(resp: &Response<Incoming>, url: &str) -> Option<String> {
    let link = resp.headers().get(header::LINK)?.to_str().ok()?;
    let next = link.split_once('<')?.1.split_once('>')?.0;
    resolve(url, next).filter(|next| may_redirect(url, next))
}

/// A Location resolved against the URL it answered.
fn resolve(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let uri: Uri = base.parse().ok()?;
    let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?);
    if location.starts_with('/') {
        Some(format!("{origin}{location}"))
    } else {
        let path = uri.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        Some(format!("{origin}{dir}{location}"))
    }
}

/// Whether two URLs share scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    let origin = |url: &str| {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some((scheme, uri.host()?.to_ascii_lowercase(), port))
    };
    origin(a).is_some_and(|a| origin(b) == Some(a))
}

/// An error with its causes, which hyper's client keeps in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_kept_past_its_life() {
        assert_eq!(token_life(Some(1)), Duration::from_millis(900));
        assert_eq!(token_life(Some(300)), Duration::from_secs(270));
        assert_eq!(token_life(None), Duration::from_secs(54));
    }

    #[test]
    fn a_token_of_any_claimed_life_is_kept_at_most_a_day() {
        assert_eq!(token_life(Some(u64::MAX)), Duration::from_secs(77_760));
    }

    #[test]
    fn tokens_kept_are_bounded() {
        let mut tokens = HashMap::new();
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..3 * MAX_TOKENS {
            keep_token(
                &mut tokens,
                format!("repository:r{i}:pull"),
                "t".into(),
                later,
            );
            assert!(tokens.len() <= MAX_TOKENS);
        }
        assert!(tokens.contains_key(&format!("repository:r{}:pull", 3 * MAX_TOKENS - 1)));
        // The expired go first.
        let mut tokens = HashMap::new();
        for i in 0..MAX_TOKENS - 1 {
            keep_token(&mut tokens, format!("old{i}"), "t".into(), Instant::now());
        }
        keep_token(&mut tokens, "live".into(), "t".into(), later);
        keep_token(&mut tokens, "new".into(), "t".into(), later);
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn redirects_never_reach_link_local_or_this_hosts_loopback() {
        let hub = "https://registry.example/v2/a/blobs/sha256:x";
        assert!(may_redirect(hub, "https://cdn.example/b?sig=1"));
        // On premises: a store on a private network, in the clear.
        assert!(may_redirect(
            "https://harbor.corp/v2/",
            "http://10.0.0.5:9000/b"
        ));
        for refused in [
            "https://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://100.100.100.200/latest/meta-data/",
            "https://127.0.0.1/x",
            "https://localhost:8080/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "http://0.0.0.0/x",
        ] {
            assert!(!may_redirect(hub, refused), "{refused}");
        }
        // An upstream on this host may send its own there.
        let local = "http://127.0.0.1:5001/v2/a/blobs/sha256:x";
        assert!(may_redirect(local, "http://127.0.0.1:9000/bucket/b"));
        assert!(!may_redirect(local, "http://169.254.169.254/x"));
    }

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        let base = "https://Registry.example";
        assert!(same_origin(
            base,
            "https://registry.example:443/v2/a/tags/list"
        ));
        assert!(!same_origin(base, "http://registry.example/v2/"));
        assert!(!same_origin(base, "https://registry.example:8443/v2/"));
        assert!(!same_origin(base, "https://registry.example.evil/v2/"));
        assert!(same_origin(
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/v2/x"
        ));
        assert!(!same_origin("http://127.0.0.1:5000", "not a url"));
    }

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let base = "https://r.example:5000/v2/a/blobs/sha256:x";
        assert_eq!(
            resolve(base, "https://cdn.example/b?sig=1").as_deref(),
            Some("https://cdn.example/b?sig=1")
        );
        assert_eq!(
            resolve(base, "/storage/b").as_deref(),
            Some("https://r.example:5000/storage/b")
        );
        assert_eq!(
            resolve(base, "c").as_deref(),
            Some("https://r.example:5000/v2/a/blobs/c")
        );
    }
}
