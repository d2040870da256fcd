//! Where berth's bulk work gives way to requests. An upload's disk
//! writes and hashing, store calls, links and prunes run on threads other
//! than the ones that answer requests; when every core is busy they took
//! the CPU in equal shares with those threads, and with the clients on
//! the same machine waiting for answers. In bench (l), a 1 GiB push, 32
//! small-blob pushers and a prune beside 32 manifest readers on two
//! cores, a perf sched trace put the readers' p99 wait for a core at 2-8
//! ms and their GETs' p99 at 11-15 ms. Nice is per thread, and some 30
//! bulk threads may want a core at once: at nice 10 the GET p99 was
//! 5.6-7.4 ms, at nice 19 3.3-4.8 ms with GETs per second doubled, and
//! benches a, b and d stayed within the disk's noise. A longer EEVDF
//! slice for them, or SCHED_BATCH, changed nothing. The commit thread
//! keeps its priority: every push waits for it. Bulk work still has every
//! core nothing else wants; what it gives up is a share against other
//! busy programs on the host, which `berth serve --bulk-nice` sets.
//!
//! Only the `berth` binary turns this on: a program that embeds the
//! registry on its own runtime keeps its threads' priorities as it set
//! them.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

/// The lowest priority a nice value gives: a weight of 15 against a
/// request thread's 1024.
pub const MAX_NICE: i32 = 19;

/// The nice value `berth serve` gives bulk threads unless told otherwise.
pub const DEFAULT_NICE: i32 = MAX_NICE;

/// The nice value bulk threads take; 0 leaves them as they are.
static NICE: AtomicI32 = AtomicI32::new(0);

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Makes each thread of this process that marks itself as bulk from now
/// on take `nice` (clamped to 0..=MAX_NICE; 0 leaves them as they are).
pub fn give_way_in_this_process(nice: i32) {
    NICE.store(nice.clamp(0, MAX_NICE), Ordering::Relaxed);
}

/// Marks the calling thread as one that does bulk work: once per thread,
/// for as long as it lives. A thread cannot take its priority back
/// without privilege, so only threads that do nothing but bulk work call
/// this: the hashing and settle threads, and tokio's blocking pool, where
/// store work runs. What else later runs on such a thread (a password
/// check, a read that missed the page cache) runs at its priority too.
pub fn this_thread() {
    let nice = NICE.load(Ordering::Relaxed);
    if nice == 0 || LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a nice value per thread, and PRIO_PROCESS with a
        // thread's id sets that thread's alone.
        // SAFETY: gettid and setpriority only read their arguments.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0
        };
        if failed {
            log::debug!(
                "bulk thread keeps its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
