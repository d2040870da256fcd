//! Where berth's bulk work gives way to requests. An upload's disk
//! writes and hashing, store calls, links and prunes run on threads other
//! than the ones that answer requests; when every core is busy they took
//! the CPU in equal shares with those threads, and with the clients on
//! the same machine waiting for answers. In bench (l), a 1 GiB push, 32
//! small-blob pushers and a prune beside 32 manifest readers on two
//! cores, a perf sched trace put the readers' p99 wait for a core at 2-8
//! ms and their GETs' p99 at 11-15 ms. With the bulk threads at nice 10
//! the GET p99 was 5.6-6.9 ms and GETs per second rose by half, at the
//! same push rates; a longer EEVDF slice for them, or SCHED_BATCH,
//! changed nothing, and nice 15 or 19 starved bench (d) to a third. The
//! commit thread keeps its priority: every push waits for it. Bulk work
//! still has every core nothing else wants.
//!
//! Only the `berth` binary turns this on: a program that embeds the
//! registry on its own runtime keeps its threads' priorities as it set
//! them.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The nice value of bulk threads: their weight is a tenth of a request
/// thread's when both want a core.
const BULK_NICE: i32 = 10;

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Makes bulk threads of this process give way from now on.
pub fn give_way_in_this_process() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Marks the calling thread as one that does bulk work: once per thread,
/// for as long as it lives. A thread cannot take its priority back
/// without privilege, so only threads that do nothing but bulk work call
/// this: the hashing and settle threads, and tokio's blocking pool, where
/// store work runs. What else later runs on such a thread (a password
/// check, a read that missed the page cache) runs at its priority too.
pub fn this_thread() {
    if !ENABLED.load(Ordering::Relaxed) || LOWERED.get() {
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
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BULK_NICE) != 0
        };
        if failed {
            log::debug!(
                "bulk thread keeps its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
