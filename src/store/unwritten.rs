//! How much the kernel holds written but not yet on disk, machine-wide.
//!
//! A syncfs writes out everything unwritten on its file system, other
//! programs' data too. Small files synced by their batch's one syncfs
//! (commit.rs) share a device flush while little else is unwritten; beside
//! a busy writer (a build, a copy, a big push) that syncfs waits for all of
//! it: with 2.2 GB another program had left dirty, a 30 KB blob's PUT took
//! 0.99 s, against 3 ms a moment later. So small files are batched only
//! while little is unwritten, and otherwise sync themselves, as big ones do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most a batch's syncfs may find unwritten machine-wide: on this
/// project's disk (~2 GB/s) some 8 ms of writing, a few small files'
/// own syncs.
const UNWRITTEN_MAX: u64 = 16 << 20;

/// How long one reading stands: reading /proc/vmstat costs tens of
/// microseconds, a small blob's whole commit about a millisecond.
const FRESH_FOR: Duration = Duration::from_millis(10);

pub(super) struct Unwritten {
    since: Instant,
    /// When the last reading was taken, in microseconds after `since`
    /// (plus one, so that zero means never).
    read_at: AtomicU64,
    little: AtomicBool,
}

impl Unwritten {
    pub(super) fn new() -> Unwritten {
        Unwritten {
            since: Instant::now(),
            read_at: AtomicU64::new(0),
            little: AtomicBool::new(true),
        }
    }

    /// Whether a syncfs now would write out little besides the store's own
    /// small files. Where the kernel does not say, it is taken to.
    pub(super) fn is_little(&self) -> bool {
        let now = self.since.elapsed().as_micros() as u64 + 1;
        let at = self.read_at.load(Ordering::Relaxed);
        if at != 0 && now.saturating_sub(at) < FRESH_FOR.as_micros() as u64 {
            return self.little.load(Ordering::Relaxed);
        }
        // Threads that read at once both read: harmless, and rare.
        self.read_at.store(now, Ordering::Relaxed);
        let little = read().is_none_or(|bytes| bytes <= UNWRITTEN_MAX);
        self.little.store(little, Ordering::Relaxed);
        little
    }
}

/// Dirty and under-write-back bytes in the page cache, machine-wide.
fn read() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    Some(unwritten_pages(&vmstat)? * page_size())
}

fn unwritten_pages(vmstat: &str) -> Option<u64> {
    let mut found = (None, None);
    for line in vmstat.lines() {
        match line.split_once(' ') {
            Some(("nr_dirty", n)) => found.0 = n.trim().parse::<u64>().ok(),
            Some(("nr_writeback", n)) => found.1 = n.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    Some(found.0? + found.1?)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_and_writeback_pages_are_summed() {
        let vmstat = "nr_free_pages 100\nnr_dirty 7\nnr_writeback 5\nnr_writeback_temp 9\n";
        assert_eq!(unwritten_pages(vmstat), Some(12));
    }

    #[test]
    fn a_vmstat_without_both_counts_says_nothing() {
        assert_eq!(unwritten_pages("nr_dirty 7\n"), None);
        assert_eq!(unwritten_pages("nr_dirty x\nnr_writeback 5\n"), None);
    }

    #[test]
    fn this_kernel_says() {
        assert!(
            read().is_some(),
            "/proc/vmstat has nr_dirty and nr_writeback"
        );
    }
}
