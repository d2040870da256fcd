//! What one connection is doing, so it can be cut when it only holds
//! resources: a connection with no request in flight for the idle timeout
//! (a silent TLS session, an HTTP/2 preface and nothing more, an idle
//! keep-alive), or one whose download has moved less than the minimum over
//! a whole body timeout while the server waited on the client (a reader
//! that stopped reading, an HTTP/2 stream with a zero window). Uploads
//! enforce their own minimum rate where they read the body.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The limits a connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No request in flight for this long: the connection goes.
    pub idle: Duration,
    /// The window over which a transfer must move `min_bytes`.
    pub window: Duration,
    pub min_bytes: u64,
}

/// One connection's activity, shared by its requests and its watchdog.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection began).
    idle_since: Mutex<Instant>,
    /// Told when the last request in flight ends, if the watchdog asked
    /// (it sleeps with no idle deadline): the idle clock restarts.
    went_idle: Notify,
    /// Set by the watchdog while it sleeps with no idle deadline. Every
    /// other time it wakes at a deadline no later than a new one, so a
    /// request's end need not wake it (callgrind: waking it after each
    /// request was about 2,000 instructions of a 30,800-instruction GET).
    wants_idle: AtomicBool,
    transfers: Mutex<Vec<Weak<Transfer>>>,
}

/// A download's progress: bytes the client has taken, and whether the
/// server, not the client, is the one being waited on.
#[derive(Default)]
pub struct Transfer {
    moved: AtomicU64,
    server_busy: AtomicBool,
}

impl Transfer {
    pub fn moved(&self, bytes: u64) {
        self.moved.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn server_busy(&self, busy: bool) {
        self.server_busy.store(busy, Ordering::Relaxed);
    }
}

/// Held while a request is in flight: from its head to the end of its
/// response body.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            if self.0.wants_idle.swap(false, Ordering::SeqCst) {
                self.0.went_idle.notify_one();
            }
        }
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            went_idle: Notify::new(),
            wants_idle: AtomicBool::new(false),
            transfers: Mutex::new(Vec::new()),
        })
    }

    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    pub fn transfer(&self) -> Arc<Transfer> {
        let transfer = Arc::new(Transfer::default());
        let mut transfers = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
        transfers.retain(|t| t.strong_count() > 0);
        transfers.push(Arc::downgrade(&transfer));
        transfer
    }

    /// Since when no request has been in flight; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Resolves when the connection should be cut, saying why: it sleeps until
/// the idle limit or the end of the rate window, whichever comes first, and
/// wakes early when the last request ends, so a cut comes on time.
pub async fn watch(activity: Arc<Activity>, limits: Limits) -> &'static str {
    let mut window_start = Instant::now();
    let mut moved_at_start: Vec<(Weak<Transfer>, u64)> = Vec::new();
    loop {
        let window_end = window_start + limits.window;
        // Asked before in_flight is read (both SeqCst): a request that ends
        // after the read sees the question and answers it.
        activity.wants_idle.store(true, Ordering::SeqCst);
        let idle_end = activity.idle_since().map(|since| since + limits.idle);
        if idle_end.is_some() {
            activity.wants_idle.store(false, Ordering::SeqCst);
        }
        let wake = idle_end.map_or(window_end, |idle_end| idle_end.min(window_end));
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = activity.went_idle.notified() => continue,
        }
        let now = Instant::now();
        if activity
            .idle_since()
            .is_some_and(|since| now >= since + limits.idle)
        {
            return "idle";
        }
        if now < window_end {
            continue;
        }
        // A whole window has passed: every transfer that was there at its
        // start must have moved enough, unless the server held it up.
        let stalled = moved_at_start.iter().any(|(transfer, before)| {
            transfer.upgrade().is_some_and(|t| {
                let moved = t.moved.load(Ordering::Relaxed) - before;
                moved < limits.min_bytes && !t.server_busy.load(Ordering::Relaxed)
            })
        });
        if stalled {
            return "a download moved less than the minimum rate";
        }
        window_start = Instant::now();
        let transfers = activity.transfers.lock().unwrap_or_else(|p| p.into_inner());
        moved_at_start = transfers
            .iter()
            .filter_map(|t| {
                let moved = t.upgrade()?.moved.load(Ordering::Relaxed);
                Some((Weak::clone(t), moved))
            })
            .collect();
    }
}
