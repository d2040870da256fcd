//! Many clients at once: one blob pulled by a crowd (k), and manifest
//! reads under a mixed load of pushes (l).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::cases::{Load, digest_of, manifest_load, monolithic_push, push_blob, random_bytes};
use crate::client::{Body, Conn, Keep, Target};

/// (k) `clients` GETs of the same blob at once, each read to the end and
/// counted: the aggregate MB/s over the wall time, and the bad answers.
pub fn many_pulls(t: &Target, digest: &str, size: u64, clients: usize) -> io::Result<(f64, usize)> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (target, barrier, digest) = (t.node(c), Arc::clone(&barrier), digest.to_owned());
            std::thread::spawn(move || {
                let mut conn = Conn::new(&target);
                barrier.wait();
                let got = conn.request(
                    "GET",
                    &format!("/v2/bench/a/blobs/{digest}"),
                    &[],
                    Body::Empty,
                    Keep::CountOnly,
                );
                matches!(got, Ok((resp, n)) if resp.status == 200 && n == size)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let bad = workers
        .into_iter()
        .map(|w| w.join().unwrap_or(false))
        .filter(|ok| !ok)
        .count();
    let secs = start.elapsed().as_secs_f64();
    Ok(((clients - bad) as f64 * size as f64 / secs / 1e6, bad))
}

/// What (l) saw.
pub struct Mixed {
    pub gets: Load,
    /// Big pushes finished, and their MB/s over the whole time.
    pub pushes: usize,
    pub push_mbps: f64,
    /// Small blobs pushed, and failed.
    pub small: usize,
    pub small_failed: usize,
}

/// (l) manifest GETs by tag on `connections` connections for `duration`,
/// while one client pushes `big` again and again and `pushers` clients
/// push small distinct blobs, all until the GETs end.
pub fn mixed_load(
    t: &Target,
    big: &[u8],
    pushers: usize,
    connections: usize,
    duration: Duration,
) -> Mixed {
    let stop = AtomicBool::new(false);
    let small = AtomicUsize::new(0);
    let small_failed = AtomicUsize::new(0);
    let big_digest = digest_of(big);
    std::thread::scope(|scope| {
        let pusher = scope.spawn(|| {
            let start = Instant::now();
            let mut pushes = 0;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < duration * 2 {
                if monolithic_push(t, big, &big_digest).is_ok() {
                    pushes += 1;
                }
            }
            (pushes, start.elapsed().as_secs_f64())
        });
        for c in 0..pushers {
            let (stop, small, small_failed) = (&stop, &small, &small_failed);
            scope.spawn(move || {
                let mut conn = Conn::new(&t.node(c));
                let start = Instant::now();
                // Fresh blobs on every run: a blob already stored costs less.
                let run = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < duration * 2 {
                    let data = random_bytes(
                        4096 + (i as usize % 16) * 1024,
                        run ^ ((c as u64) << 32 | i),
                    );
                    i += 1;
                    match push_blob(&mut conn, "bench/l", &data, &digest_of(&data)) {
                        Ok(_) => small.fetch_add(1, Ordering::Relaxed),
                        Err(_) => small_failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        // Let the pushes get going before the reads are timed.
        std::thread::sleep(Duration::from_millis(500));
        let gets = manifest_load(t, "GET", "/v2/bench/e/manifests/v1", connections, duration);
        stop.store(true, Ordering::Relaxed);
        let (pushes, secs) = pusher.join().unwrap_or((0, 1.0));
        Mixed {
            gets,
            pushes,
            push_mbps: (pushes * big.len()) as f64 / secs / 1e6,
            small: small.load(Ordering::Relaxed),
            small_failed: small_failed.load(Ordering::Relaxed),
        }
    })
}
