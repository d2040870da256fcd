//! Failed logins, counted per source address: past a few in a window that
//! address is refused until the window ends, and no other client notices.
//! An IPv6 client is counted by its /64, the least a host is given: one
//! host holds millions of addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; beyond it, expired entries are dropped.
/// Live ones stay however many there are: refusing new addresses instead
/// would let anyone with a /48 lock every new client out. The checks they
/// cost are capped by the bcrypt slots.
const MAX_TRACKED: usize = 10_000;

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The key an address is counted under: itself, or its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
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
        let ip = source(ip);
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&ip).is_some_and(|(count, since)| {
            *count >= self.max_failures && since.elapsed() < self.window
        })
    }

    /// Counts an attempt before it is checked, so guesses sent all at once
    /// meet the limit as they arrive instead of after their slow checks.
    /// False, counting nothing, when the address has no attempts left.
    pub fn reserve(&self, ip: IpAddr) -> bool {
        let ip = source(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
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
        let ip = source(ip);
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
    fn an_ipv6_host_is_counted_by_its_slash_64() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.reserve(one));
        assert!(limiter.reserve(same_host));
        assert!(limiter.blocked(one) && limiter.blocked(same_host));
        assert!(!limiter.blocked(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.reserve(mapped) && limiter.reserve(v4));
        assert!(limiter.blocked(v4), "a mapped address is its IPv4 one");
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
