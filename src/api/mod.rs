//! The HTTP side: parse and check a request, call one store method, turn the
//! result into a response. Nothing here touches files.

mod auth;
mod blobs;
mod body;
mod catalog;
mod error;
pub mod forwarded;
mod manifests;
pub(crate) mod origin;
mod referrers;
mod route;
mod tags;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

pub use body::{Keep, Kept, ResBody};
use error::ApiError;
use route::Route;

use crate::oci::name::BadReference;

use crate::auth::Authority;
use crate::config::Config;
use crate::conn::Activity;
use crate::mirror::Mirrors;
use crate::ops::{Exchange, Ops};
use crate::store::{self, Store};

/// Manifests above this size are refused: they are held in memory and in
/// the database, and real ones are a few KiB.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The header that names what a response's bytes hash to.
const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

/// On every answer. A constant: a name given as a string is copied into a
/// fresh allocation on every insert.
const DOCKER_API_VERSION: header::HeaderName =
    header::HeaderName::from_static("docker-distribution-api-version");

pub struct Api {
    store: Arc<Store>,
    /// The namespaces that cache an upstream.
    mirrors: Arc<Mirrors>,
    ops: Arc<Ops>,
    ui: crate::ui::Ui,
    /// Whether `/metrics` and the probes are served here (not when they
    /// have an address of their own).
    serves_ops: bool,
    authority: Option<Arc<Authority>>,
    /// Whether clients reach us over TLS, for the token realm's scheme.
    tls: bool,
    /// Where clients reach us through a proxy, for the token realm.
    public_url: Option<String>,
    /// Proxies believed about who their clients are.
    trusted_proxies: Vec<ipnet::IpNet>,
    max_manifest_bytes: usize,
    limits: crate::conn::Limits,
    next_request: AtomicU64,
}

type Handled = Result<Response<ResBody>, ApiError>;

impl Api {
    pub fn new(
        store: Arc<Store>,
        authority: Option<Arc<Authority>>,
        mirrors: Arc<Mirrors>,
        ops: Arc<Ops>,
        config: &Config,
        page_key: Option<&[u8]>,
    ) -> Api {
        Api {
            ui: crate::ui::Ui::new(
                Arc::clone(&store),
                authority.clone(),
                Arc::clone(&mirrors),
                config,
                page_key,
            ),
            store,
            mirrors,
            ops,
            serves_ops: config.metrics_listen.is_none(),
            authority,
            tls: config.tls.is_some(),
            public_url: config.public_url.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            max_manifest_bytes: config.max_manifest_bytes,
            limits: config.conn_limits(),
            next_request: AtomicU64::new(1),
        }
    }

    pub async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        connection: &Arc<Activity>,
    ) -> Response<Kept<ResBody, Arc<Exchange>>> {
        let peer = match self.trusted_proxies.is_empty() {
            true => peer,
            false => forwarded::client(peer, req.headers(), &self.trusted_proxies),
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let class = route::class(req.uri().path());
        let exchange = Exchange::start(&self.ops, peer, &method, req.uri().path(), class);
        let path = exchange.path();
        let mut response = match self.dispatch(req, peer, &exchange, connection).await {
            Ok(response) => response,
            Err(e) => {
                log::debug!(
                    "req {id}: {method} {path}: {} {}",
                    e.status.as_u16(),
                    e.code
                );
                error_response(&method, e)
            }
        };
        log::debug!(
            "req {id}: {method} {path} -> {}",
            response.status().as_u16()
        );
        response
            .headers_mut()
            .insert(DOCKER_API_VERSION, HeaderValue::from_static("registry/2.0"));
        exchange.status(response.status().as_u16());
        if class == "upload"
            && let Some(id) = upload_id(path, response.headers())
        {
            exchange.upload(id);
        }
        // The exchange ends, counted and logged, with the answer's body.
        response.map(|body| Kept::new(body, exchange))
    }

    /// Serves only `/metrics` and the probes: the second address's service.
    pub async fn serve_ops(&self, req: Request<Incoming>) -> Response<ResBody> {
        let method = req.method().clone();
        let answer = match (req.uri().path(), &method) {
            ("/metrics", &Method::GET) => self.metrics().await,
            ("/healthz", &Method::GET | &Method::HEAD) => Ok(text_response(StatusCode::OK, "ok\n")),
            ("/readyz", &Method::GET | &Method::HEAD) => self.readiness().await,
            _ => Err(ApiError::not_found()),
        };
        answer.unwrap_or_else(|e| error_response(&method, e))
    }

    // Every route but a manifest GET runs boxed, as do the page, the token
    // and a refusal: unboxed, each request's future was as large as the
    // largest handler's, and hyper and tokio move it several times per
    // request (callgrind put those moves at ~1,300 of a manifest GET's
    // 22,800 instructions).
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        exchange: &Arc<Exchange>,
        connection: &Arc<Activity>,
    ) -> Handled {
        if crate::ui::handles(req.uri().path()) {
            let (response, user) = Box::pin(self.ui.serve(req, peer)).await;
            if let Some(user) = user {
                exchange.user(&user);
            }
            return Ok(response.map(body::full));
        }
        let namespace = query_param(&query(&req), "ns");
        let route = Route::parse(req.uri().path(), namespace.as_deref())?;
        if route == Route::Token {
            return Box::pin(auth::token(self, &req, peer)).await;
        }
        if matches!(route, Route::Metrics | Route::Health | Route::Ready) && !self.serves_ops {
            return Err(ApiError::not_found());
        }
        let caller = match self.authorize(&req, peer, &route).await {
            Ok(caller) => caller,
            Err(refusal) => return Err(Box::pin(auth::refuse_unread(req, refusal)).await),
        };
        if let Some(user) = caller.user() {
            exchange.user(user);
        }
        let method = req.method().clone();
        match (route, method) {
            (Route::Manifest(name, r), Method::GET | Method::HEAD) => {
                manifests::get(self, &req, name, r).await
            }
            (route, method) => {
                // What some handlers find in the request: the exchange
                // counts an upload's bytes, the connection watches a
                // download. A manifest GET needs neither, and spares the
                // three allocations they cost.
                let mut req = req;
                req.extensions_mut().insert(Arc::clone(exchange));
                req.extensions_mut().insert(Arc::clone(connection));
                Box::pin(self.dispatch_rest(route, method, req, caller)).await
            }
        }
    }

    /// Every route but a manifest GET (see [`Api::dispatch`]).
    async fn dispatch_rest(
        &self,
        route: Route,
        method: Method,
        req: Request<Incoming>,
        caller: crate::auth::Caller,
    ) -> Handled {
        match (route, method) {
            (Route::Metrics, Method::GET) => self.metrics().await,
            (Route::Health, Method::GET | Method::HEAD) => {
                Ok(text_response(StatusCode::OK, "ok\n"))
            }
            (Route::Ready, Method::GET | Method::HEAD) => self.readiness().await,
            (Route::Base, Method::GET | Method::HEAD) => {
                Ok(json_response(StatusCode::OK, b"{}".to_vec()))
            }
            (Route::Catalog, Method::GET) => catalog::list(self, &req, &caller).await,
            (Route::Tags(name), Method::GET) => tags::list(self, &req, name).await,
            (Route::Manifest(name, r), Method::PUT) => manifests::put(self, req, name, r).await,
            (Route::Manifest(name, r), Method::DELETE) => manifests::delete(self, name, r).await,
            (Route::BadManifestReference(_, bad, r), method) => Err(match (method, bad) {
                (Method::GET | Method::HEAD, BadReference::Tag) => {
                    store::Error::ManifestUnknown.into()
                }
                (_, BadReference::Tag) => ApiError::tag_invalid(&r),
                (_, BadReference::Digest) => {
                    ApiError::digest_invalid(format!("invalid digest {r:?}"))
                }
            }),
            (Route::Blob(name, d), Method::GET | Method::HEAD) => {
                blobs::get(self, &req, name, d).await
            }
            (Route::Blob(name, d), Method::DELETE) => blobs::delete(self, name, d).await,
            (Route::Uploads(name), Method::POST) => uploads::start(self, req, name, &caller).await,
            (Route::Upload(name, id), Method::GET) => uploads::status(self, name, id).await,
            (Route::Upload(name, id), Method::PATCH) => uploads::patch(self, req, name, id).await,
            (Route::Upload(name, id), Method::PUT) => uploads::finish(self, req, name, id).await,
            (Route::Upload(name, id), Method::DELETE) => uploads::cancel(self, name, id).await,
            (Route::Referrers(name, d), Method::GET) => referrers::list(self, &req, name, d).await,
            _ => Err(ApiError::unsupported()),
        }
    }

    /// Runs a store read that is a lookup by key: here, on the async
    /// thread, where the engine's indexes are local (see
    /// [`Store::local_lookups`]); elsewhere as [`Api::store`] does. Handing
    /// a lookup of microseconds to a blocking thread costs two thread
    /// switches: in a profile of manifest GETs by tag they were 60% of the
    /// server's time.
    async fn lookup<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Arc<Store>) -> store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.store.local_lookups() {
            self.recover(work(&self.store))
        } else {
            self.store(work).await
        }
    }

    /// Runs a store call on a blocking thread.
    async fn store<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Arc<Store>) -> store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        self.blocking(move || work(&store)).await
    }

    /// Runs blocking store work on a blocking thread.
    async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.recover(store::blocking(work).await)
    }

    /// Passes a store result on as the API's, reopening the database first
    /// if it failed with a storage error (see `Store::recover`).
    fn recover<T>(&self, result: store::Result<T>) -> Result<T, ApiError> {
        self.store.recover(result).map_err(ApiError::from)
    }

    /// The request's body, read against the minimum rate and counted.
    fn frames(&self, req: Request<Incoming>) -> body::Frames {
        let exchange = req.extensions().get::<Arc<Exchange>>().cloned();
        body::Frames::new(req.into_body(), self.limits.window, self.limits.min_bytes)
            .counted(exchange)
    }

    async fn metrics(&self) -> Handled {
        let metrics = Arc::clone(&self.ops.metrics);
        let page = tokio::task::spawn_blocking(move || metrics.render())
            .await
            .map_err(|e| ApiError::from(store::Error::Internal(e.to_string())))?;
        Ok(Response::builder()
            .header(header::CONTENT_TYPE, crate::ops::metrics::CONTENT_TYPE)
            .header(header::CONTENT_LENGTH, page.len())
            .body(body::full(page))
            .expect("valid response"))
    }

    /// The server takes no more connections: probes say so from now on.
    pub fn stop(&self) {
        self.ops.stopping.store(true, Ordering::Relaxed);
    }

    async fn readiness(&self) -> Handled {
        if self.ops.stopping.load(Ordering::Relaxed) {
            return Ok(text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: stopping\n",
            ));
        }
        use crate::ops::health;
        let min_free = self.ops.min_free_space;
        let check = self.store(|store| Ok(health::database_problem(store)));
        let database = self.ops.database_check.problem(check).await?;
        let space = self
            .store(move |store| Ok(health::space_problem(store, min_free)))
            .await?;
        let problems: Vec<String> = database.into_iter().chain(space).collect();
        Ok(if problems.is_empty() {
            text_response(StatusCode::OK, "ready\n")
        } else {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {}\n", problems.join("; ")),
            )
        })
    }
}

fn error_response(method: &Method, e: ApiError) -> Response<ResBody> {
    let body = e.body();
    let mut response = Response::builder()
        .status(e.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    for (name, value) in e.headers {
        response = response.header(name, value);
    }
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::full(body)
    };
    response.body(body).expect("valid response")
}

fn text_response(status: StatusCode, text: &str) -> Response<ResBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, text.len())
        .body(body::full(text.to_owned()))
        .expect("valid response")
}

/// The upload session a request worked on: named in its path, or in the
/// `Location` of the answer that started it.
fn upload_id<'a>(path: &'a str, headers: &'a http::HeaderMap) -> Option<&'a str> {
    let named = |p: &'a str| {
        p.split_once("/blobs/uploads/")
            .map(|(_, id)| id.split(['?', '/']).next().unwrap_or(""))
            .filter(|id| !id.is_empty())
    };
    named(path).or_else(|| {
        headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(named)
    })
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body::full(body))
        .expect("valid response")
}

/// The query string's parameters, percent-decoded.
fn query<B>(req: &Request<B>) -> Vec<(String, String)> {
    let query = req.uri().query().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn query_param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn header_str<B>(req: &Request<B>, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
