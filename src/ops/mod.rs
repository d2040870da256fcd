//! Seeing inside a running berth: Prometheus metrics, health and
//! readiness probes, and the access log. The API hands each request's
//! [`Exchange`] here; nothing here speaks HTTP beyond reading its method.

pub mod access;
pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

pub use access::LogFormat;
pub use metrics::Metrics;

/// 1 GiB: below it, the registry is not ready (pushes would soon fail).
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;

/// What every request is counted and logged with.
pub struct Ops {
    pub metrics: Arc<Metrics>,
    /// Log one line per request on stderr, in this format.
    pub access_log: Option<LogFormat>,
    /// Free bytes the data directory needs to be ready.
    pub min_free_space: u64,
    /// Set once the server stops taking connections: not ready any more.
    pub stopping: std::sync::atomic::AtomicBool,
    pub database_check: health::DatabaseCheck,
}

/// One request, from its head to the end of its answer's body. It is
/// counted, and logged if asked, when the last holder lets go of it (the
/// answer's body, once sent or dropped).
pub struct Exchange {
    ops: Arc<Ops>,
    started: Instant,
    peer: SocketAddr,
    method: &'static str,
    path: String,
    route: &'static str,
    status: AtomicU16,
    user: OnceLock<String>,
    upload: OnceLock<String>,
    received: AtomicU64,
    sent: AtomicU64,
}

impl Exchange {
    pub fn start(
        ops: &Arc<Ops>,
        peer: SocketAddr,
        method: &http::Method,
        path: &str,
        route: &'static str,
    ) -> Arc<Exchange> {
        Arc::new(Exchange {
            ops: Arc::clone(ops),
            started: Instant::now(),
            peer,
            method: method_label(method),
            path: path.to_owned(),
            route,
            status: AtomicU16::new(0),
            user: OnceLock::new(),
            upload: OnceLock::new(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn user(&self, user: &str) {
        let _ = self.user.set(user.to_owned());
    }

    pub fn upload(&self, id: &str) {
        let _ = self.upload.set(id.to_owned());
    }

    pub fn status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let (status, received, sent) = (
            *self.status.get_mut(),
            *self.received.get_mut(),
            *self.sent.get_mut(),
        );
        self.ops
            .metrics
            .request(self.route, self.method, status, received, sent, took);
        if let Some(format) = self.ops.access_log {
            access::write(
                format,
                &access::Line {
                    // Read here, not at the start: only a logged
                    // exchange pays for the second clock.
                    at: SystemTime::now()
                        .checked_sub(took)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    peer: self.peer,
                    user: self.user.get().map(String::as_str),
                    method: self.method,
                    path: &self.path,
                    status,
                    received,
                    sent,
                    took,
                    upload: self.upload.get().map(String::as_str),
                },
            );
        }
    }
}

/// The method as a label: one of a fixed few.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
