//! Failed logins, counted per source address: past a few in a window that
//! address is refused until the window ends, and no other client notices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; beyond it, expired entries are dropped.
const MAX_TRACKED: usize = 10_000;

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn blocked(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&ip).is_some_and(|(count, since)| {
            *count >= self.max_failures && since.elapsed() < self.window
        })
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_one_address_after_too_many_failures() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(!limiter.blocked(a));
            limiter.failed(a);
        }
        assert!(limiter.blocked(a));
        assert!(!limiter.blocked(b));
        let short = FailureLimiter::new(1, Duration::from_millis(1));
        short.failed(a);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.blocked(a), "the window ends");
    }
}
