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

    /// Counts an attempt before it is checked, so guesses sent all at once
    /// meet the limit as they arrive instead of after their slow checks.
    /// False, counting nothing, when the address has no attempts left.
    pub fn reserve(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        if entry.0 >= self.max_failures {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// Takes back the attempt a correct login reserved. Only that one: the
    /// failures before it still count.
    pub fn forgive(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(&ip) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                failures.remove(&ip);
            }
        }
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
            assert!(limiter.reserve(a));
        }
        assert!(limiter.blocked(a));
        assert!(!limiter.reserve(a), "no attempt is left");
        assert!(!limiter.blocked(b));
        let short = FailureLimiter::new(1, Duration::from_millis(1));
        assert!(short.reserve(a));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.blocked(a), "the window ends");
    }

    #[test]
    fn a_correct_login_gives_back_only_its_own_attempt() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limiter.reserve(a));
        assert!(limiter.reserve(a));
        limiter.forgive(a);
        assert!(limiter.reserve(a));
        assert!(limiter.reserve(a));
        assert!(limiter.blocked(a), "the earlier failure still counts");
    }
}
