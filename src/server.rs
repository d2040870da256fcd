//! The listening server: accepts connections, serves each with hyper, and
//! stops cleanly.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::api::Api;
use crate::api::{Keep, Kept};
use crate::auth::Authority;
use crate::config::Config;
use crate::conn::{self, Activity, InFlight, Limits};
use crate::mirror::Mirrors;
use crate::store::Store;
use crate::store::prune::Report;

const HTTP1_BUFFER: usize = 32 << 10;
/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 100;

/// How long in-flight requests get to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry. Dropping it without [`Registry::shutdown`] leaves the
/// server running until the runtime stops.
pub struct Registry {
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    metrics_addr: Option<SocketAddr>,
    tls: bool,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What every connection needs, shared.
struct Shared {
    api: Arc<Api>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
}

impl Registry {
    /// Checks the TLS and auth files, opens the data directory, binds, and
    /// starts serving.
    pub async fn start(config: Config) -> io::Result<Registry> {
        Registry::start_owning(config, None).await
    }

    /// Starts over `ephemeral`'s data directory, which goes with the server.
    pub(crate) async fn start_owning(
        config: Config,
        ephemeral: Option<crate::fixture::EphemeralDir>,
    ) -> io::Result<Registry> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let dir = config.data_dir.clone();
        let cluster = config.cluster.clone();
        // Ephemeral data goes with the process: syncing it only costs time.
        // Its directory goes with the store, once the last user lets go.
        let store = tokio::task::spawn_blocking(move || match (cluster, ephemeral) {
            (Some(cluster), _) => Store::open_cluster(&cluster),
            (None, Some(owner)) => Store::open_volatile(&dir, Box::new(owner)),
            (None, None) => Store::open(&dir),
        })
        .await
        .map_err(io::Error::other)?
        .map_err(|e| match &config.cluster {
            Some(cluster) => io::Error::other(format!(
                "cannot open the clustered store ({cluster:?}): {e}"
            )),
            None => io::Error::other(format!("cannot open {}: {e}", config.data_dir.display())),
        })?;
        // A cluster's nodes sign tokens and the page's forms with keys kept
        // in the store, so any node honours what another issued.
        let shared = match &store {
            Store::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                let keys = tokio::task::spawn_blocking(move || {
                    Ok::<_, crate::store::Error>((
                        cluster.shared_secret("token-key", crate::auth::TOKEN_KEY_LEN)?,
                        cluster.shared_secret("page-form-key", crate::ui::KEY_LEN)?,
                    ))
                })
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
                Some(keys)
            }
            Store::Embedded(_) => None,
        };
        let (shared_key, page_key) = match shared {
            Some((token, page)) => (Some(token), Some(page)),
            None => (None, None),
        };
        let authority = config
            .auth
            .as_ref()
            .map(|auth| Authority::open(auth, &config.data_dir, shared_key.as_deref()))
            .transpose()?;
        store.limit_uploads(config.max_uploads, config.max_uploads_per_repo);
        let store = Arc::new(store);
        for layout in &config.preload {
            preload(&store, layout).await?;
        }
        let mirrors = Arc::new(mirrors(&store, &config)?);
        let authority = authority.map(Arc::new);
        let metrics =
            crate::ops::Metrics::new(Arc::clone(&store), authority.clone(), Arc::clone(&mirrors));
        let ops = Arc::new(crate::ops::Ops {
            metrics: Arc::clone(&metrics),
            access_log: config.access_log,
            min_free_space: config.min_free_space,
            stopping: Default::default(),
            database_check: Default::default(),
        });
        // Start-up must stay fast whatever the store's size: orphans left by
        // a crash are swept beside the server instead of before it.
        if let Store::Embedded(_) = &*store {
            let sweeper = Arc::clone(&store);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = sweeper.remove_orphan_blobs() {
                    log::error!("sweeping orphaned blob files failed: {e}");
                }
            });
        }
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // max_buf_size bounds both of hyper's buffers on a connection. Its
        // read buffer grows to it under a body and keeps that size while
        // the connection idles between requests: 32 connections pushing
        // small blobs held ~90 KiB each at 128 KiB (massif), and larger
        // reads bought no push speed. hyper queues response chunks until
        // its write buffer passes it: a stalled download holds one chunk
        // in hyper and less than this beside it. A request head must fit
        // (431 past it); bearer tokens take a few KiB.
        builder
            .http1()
            // No timer of hyper's on every head: the connection's
            // watchdog (conn.rs) already cuts one that has had no request
            // in flight for header_timeout, which takes in a head that
            // never ends. hyper's own (30 s unless told) cost a boxed
            // sleep and a timer-wheel entry per request: ~1,400 of a
            // manifest GET's 18,500 instructions (callgrind).
            .header_read_timeout(None)
            .max_buf_size(HTTP1_BUFFER)
            // A client that shuts its side once the request is sent still
            // waits for the answer: without this hyper took the end of its
            // input for the client going away and closed with no answer.
            .half_close(true);
        // Each stream may hold a chunk or two of a download: bound them.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS);
        let serving_tls = tls.is_some();
        let api = Arc::new(Api::new(
            Arc::clone(&store),
            authority,
            mirrors,
            ops,
            &config,
            page_key.as_deref(),
        ));
        let ops_server = match config.metrics_listen {
            Some(addr) => Some(ops_listener(addr, Arc::clone(&api)).await?),
            None => None,
        };
        let metrics_addr = ops_server.as_ref().map(|(_, addr)| *addr);
        let shared = Arc::new(Shared {
            api,
            builder,
            tls,
            limits: config.conn_limits(),
        });
        let max_connections = config.max_connections;
        let (stop, stopped) = oneshot::channel();
        let pruner = config.prune_interval.map(|period| {
            let (policy, metrics) = (config.prune.clone(), Arc::clone(&metrics));
            tokio::spawn(every(
                Arc::clone(&store),
                period,
                "prune",
                move |store| store.prune(&policy, false),
                move |report| {
                    metrics.pruned(report);
                    log::info!("{}", report.summary());
                },
            ))
        });
        // Stale upload sessions expire on every server, prune or not: each
        // holds a place under the session caps and maybe a file.
        let expiration = config.prune.upload_expiration;
        let expirer = tokio::spawn(every(
            Arc::clone(&store),
            (expiration / 4).clamp(Duration::from_millis(250), Duration::from_secs(300)),
            "expiring uploads",
            move |store| store.expire_stale_uploads(expiration),
            move |report| {
                metrics.pruned(report);
                if report.uploads > 0 {
                    log::info!("expired {} stale upload sessions", report.uploads);
                }
            },
        ));
        let task = tokio::spawn(async move {
            serve(listener, shared, max_connections, stopped).await;
            if let Some((task, _)) = ops_server {
                task.abort();
                let _ = task.await;
            }
            if let Some(pruner) = pruner {
                pruner.abort();
            }
            expirer.abort();
            close(store).await;
        });
        let registry = Registry {
            addr,
            data_dir: config.data_dir.clone(),
            metrics_addr,
            tls: serving_tls,
            stop,
            task,
        };
        log::info!(
            "serving {} on {}",
            config.data_dir.display(),
            registry.url()
        );
        Ok(registry)
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the data is.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.clone()
    }

    /// Where `/metrics` and the probes are served, if not beside the API.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://ADDR`, or `https://ADDR` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (for a while), and
    /// closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // At the limit, stop accepting: new clients wait in the listen
        // backlog instead of taking file descriptors from the ones served.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            _ = &mut stopped => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            // A client that never sends a request is cut by the
            // connection's watchdog (see conn), which also covers the time
            // before hyper's own header timeout starts at the first byte.
            let result = match &shared.tls {
                None => serve_connection(&shared, stream, peer, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(shared.limits.idle, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(&shared, tls, peer, watcher).await,
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    shared.api.stop();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("some requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn serve_connection<I>(
    shared: &Shared,
    io: I,
    peer: SocketAddr,
    watcher: Watcher,
) -> ConnResult
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let api = Arc::clone(&shared.api);
    let activity = Activity::new();
    let watched = Arc::clone(&activity);
    let service = service_fn(move |req: Request<Incoming>| {
        let api = Arc::clone(&api);
        // In flight until the response body is gone.
        let in_flight = activity.request();
        let activity = Arc::clone(&activity);
        async move {
            let response = api
                .serve(req, peer, &activity)
                .await
                .map(|body| Kept::new(body, in_flight));
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = shared
        .builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    tokio::select! {
        served = watcher.watch(conn) => served,
        why = conn::watch(watched, shared.limits) => Err(format!("cut: {why}").into()),
    }
}

/// A request is in flight until its answer's body is done.
impl Keep for InFlight {}

/// Imports one OCI layout before anything is served: every image whole, or
/// the start fails naming what is damaged.
async fn preload(store: &Arc<Store>, layout: &std::path::Path) -> io::Result<()> {
    let (store, path) = (Arc::clone(store), layout.to_owned());
    let summary = tokio::task::spawn_blocking(move || {
        crate::transfer::import(&store, &path, None, &crate::transfer::Progress::silent())
    })
    .await
    .map_err(io::Error::other)?
    .map_err(|e| io::Error::other(format!("preloading {}: {e}", layout.display())))?;
    if !summary.damage.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "preloading {}: {}",
                layout.display(),
                summary.damage.join("; ")
            ),
        ));
    }
    log::info!(
        "preloaded {}: {} images, {} blobs read, {} already held",
        layout.display(),
        summary.imported.len(),
        summary.blobs_read,
        summary.blobs_held
    );
    Ok(())
}

/// Serves `/metrics` and the probes on an address of their own (plain
/// HTTP/1.1, no login: for inside a site). Gives back the task and the
/// address bound.
async fn ops_listener(addr: SocketAddr, api: Arc<Api>) -> io::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    log::info!("serving metrics and probes on http://{bound}");
    let task = tokio::spawn(async move {
        // Dropped with this task: its connections end with it.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let api = Arc::clone(&api);
            connections.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, std::convert::Infallible>(api.serve_ops(req).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    log::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok((task, bound))
}

/// Waits (a while) for every other holder of the store to let go, so the
/// database is closed when shutdown returns and can be opened again.
async fn close(store: Arc<Store>) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if Arc::strong_count(&store) > 1 {
        log::warn!("store still in use at shutdown; the database closes when that work ends");
    }
    drop(store);
}

/// Runs `job` on a blocking thread every `period` and hands what it did to
/// `done` (or logs its failure as "`what` failed").
async fn every<J>(
    store: Arc<Store>,
    period: Duration,
    what: &'static str,
    job: J,
    done: impl Fn(&Report) + Send + 'static,
) where
    J: Fn(&Store) -> crate::store::Result<Report> + Clone + Send + 'static,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (store, job) = (Arc::clone(&store), job.clone());
        match tokio::task::spawn_blocking(move || store.recover(job(&store))).await {
            Ok(Ok(report)) => done(&report),
            Ok(Err(e)) => log::error!("{what} failed: {e}"),
            Err(e) => log::error!("{what} failed: {e}"),
        }
    }
}

/// The namespaces that cache an upstream, with one HTTP client for all.
fn mirrors(store: &Arc<Store>, config: &Config) -> io::Result<Mirrors> {
    let policy = crate::mirror::Policy {
        ttl: config.upstream_ttl,
        max_manifest_bytes: config.max_manifest_bytes,
        // Often enough that the expiration is off by a tenth at most.
        note_pulls_every: config
            .prune
            .cache_expiration
            .map(|e| (e / 10).min(Duration::from_secs(3600))),
    };
    if config.upstreams.is_empty() {
        return Mirrors::new(store, &[], None, policy);
    }
    let mut settings = crate::upstream::Settings::new();
    if let Some(path) = &config.upstream_auth {
        settings.credentials = crate::upstream::Credentials::load(path)?;
    }
    settings.extra_ca = config.upstream_ca.clone();
    settings.read_timeout = config.upstream_timeout;
    // An upstream is held to the pace a client is.
    let window = config.body_idle_timeout;
    let min = (config.min_transfer_rate as f64 * window.as_secs_f64()) as u64;
    settings.min_pace = (min, window);
    settings.connect_timeout = config.upstream_timeout.min(Duration::from_secs(10));
    let connector = crate::upstream::Connector::new(settings)?;
    for (namespace, url) in &config.upstreams {
        log::info!("namespace {namespace} caches {url}");
    }
    Mirrors::new(store, &config.upstreams, Some(connector), policy)
}
