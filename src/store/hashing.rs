//! Hashing beside writing. One core hashes sha256 at about the speed a disk
//! takes writes, so a big request's bytes are hashed on a thread of its own
//! that lives as long as the request, while the request's thread writes
//! them: neither waits for the other batch by batch, and no thread is
//! started per batch. A thread left with nothing to hash ends soon, so an
//! upload whose client stalls holds none.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use crate::oci::Hasher;

/// From this many bytes in one batch, hashing moves to its own thread:
/// small requests should not pay for one.
const AWAY_FROM: usize = 256 << 10;
/// Batches queued for the hashing thread. With none (a rendezvous) the
/// writer waited for the thread to finish the batch before handing over
/// the next one and writing it, and a 1 GiB push left the two cores idle
/// 10% of the time (`perf record -a`); with one it writes while the
/// thread hashes, and they sat idle 5%. At most two batches more are held
/// than with hashing done inline: api/body.rs sizes its batches for that.
const QUEUED: usize = 1;
/// A hashing thread given nothing for this long ends, and the hash comes
/// back to the request's thread with the next batch.
const IDLE: Duration = Duration::from_secs(1);

/// A running hash, computed here or on its own thread.
pub struct Hashing {
    state: State,
    idle: Duration,
}

enum State {
    Here(Hasher),
    Away {
        handoff: Arc<Handoff>,
        thread: JoinHandle<Hasher>,
    },
    /// Only while moving between the two.
    Moving,
}

/// Batches on their way to the hashing thread. One lock covers the queue
/// and the thread's decision to end, so a batch is either queued before
/// that decision (and hashed by the thread) or finds it made (and is
/// hashed here): never queued for a thread that has stopped looking.
struct Handoff {
    queue: Mutex<Queue>,
    /// The queue has a batch, or the request is done with the thread.
    work: Condvar,
    /// The queue has room.
    room: Condvar,
}

struct Queue {
    batches: VecDeque<Vec<Bytes>>,
    /// The thread has ended for want of work.
    ended: bool,
    /// The request wants the hash back.
    done: bool,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hashing {
    pub fn new(hasher: Hasher) -> Hashing {
        Hashing {
            state: State::Here(hasher),
            idle: IDLE,
        }
    }

    /// Adds a batch; a big one is handed to the hashing thread (started on
    /// the first) and this returns before it is hashed.
    pub fn update(&mut self, batch: &[Bytes]) {
        let size: usize = batch.iter().map(Bytes::len).sum();
        if size >= AWAY_FROM
            && let State::Here(_) = self.state
        {
            let State::Here(hasher) = std::mem::replace(&mut self.state, State::Moving) else {
                unreachable!("matched above");
            };
            self.state = away(hasher, self.idle);
        }
        if let State::Away { handoff, .. } = &self.state {
            let mut queue = handoff.lock();
            // The thread ends only with the queue empty: while it is full
            // the thread is there to empty it.
            while !queue.ended && queue.batches.len() >= QUEUED {
                queue = handoff
                    .room
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if !queue.ended {
                queue.batches.push_back(batch.to_vec());
                handoff.work.notify_one();
                return;
            }
        }
        // Here, or the thread sat idle and ended: its hash comes back.
        let hasher = self.hasher();
        batch.iter().for_each(|b| hasher.update(b));
    }

    /// The hash of every batch so far, once the hashing thread (if any)
    /// has caught up.
    pub fn hasher(&mut self) -> &mut Hasher {
        if let State::Away { .. } = self.state {
            self.let_go();
            let State::Away { thread, .. } = std::mem::replace(&mut self.state, State::Moving)
            else {
                unreachable!("matched above");
            };
            let hasher = thread.join().expect("hashing does not panic");
            self.state = State::Here(hasher);
        }
        match &mut self.state {
            State::Here(hasher) => hasher,
            _ => unreachable!("brought back above"),
        }
    }

    /// Starts over with `hasher`; whatever was being hashed is dropped.
    pub fn replace(&mut self, hasher: Hasher) {
        self.let_go();
        self.state = State::Here(hasher);
    }

    /// Tells a hashing thread it will be given nothing more, so that it
    /// ends once its queue is empty rather than after sitting idle.
    fn let_go(&self) {
        if let State::Away { handoff, .. } = &self.state {
            handoff.lock().done = true;
            handoff.work.notify_one();
        }
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        self.let_go();
    }
}

fn away(hasher: Hasher, idle: Duration) -> State {
    let handoff = Arc::new(Handoff {
        queue: Mutex::new(Queue {
            batches: VecDeque::with_capacity(QUEUED),
            ended: false,
            done: false,
        }),
        work: Condvar::new(),
        room: Condvar::new(),
    });
    let mut moved = hasher.clone();
    let theirs = Arc::clone(&handoff);
    let thread = std::thread::Builder::new()
        .name("berth-hash".into())
        .spawn(move || {
            crate::bulk::this_thread();
            let mut queue = theirs.lock();
            loop {
                if let Some(batch) = queue.batches.pop_front() {
                    theirs.room.notify_one();
                    drop(queue);
                    batch.iter().for_each(|b| moved.update(b));
                    queue = theirs.lock();
                    continue;
                }
                if queue.done {
                    return moved;
                }
                let waited;
                (queue, waited) = theirs
                    .work
                    .wait_timeout(queue, idle)
                    .unwrap_or_else(PoisonError::into_inner);
                if waited.timed_out() && queue.batches.is_empty() && !queue.done {
                    queue.ended = true;
                    theirs.room.notify_one();
                    return moved;
                }
            }
        });
    match thread {
        Ok(thread) => State::Away { handoff, thread },
        // No thread to be had: hashing here is slower, never wrong.
        Err(e) => {
            log::warn!("hashing on the request's thread: {e}");
            State::Here(hasher)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn the_same_digest_whether_hashed_here_or_away() {
        let small = vec![Bytes::from_static(b"small batch, ")];
        let big = vec![
            Bytes::from(vec![7u8; AWAY_FROM]),
            Bytes::from_static(b"and a tail"),
        ];
        let mut expected = Hasher::new(Algorithm::Sha256);
        for b in small.iter().chain(&big).chain(&small).chain(&big) {
            expected.update(b);
        }
        let mut hashing = Hashing::new(Hasher::new(Algorithm::Sha256));
        hashing.update(&small);
        hashing.update(&big);
        // Away now; small batches follow the big ones there, in order.
        hashing.update(&small);
        hashing.update(&big);
        assert_eq!(hashing.hasher().digest(), expected.digest());
        // And it goes on after being brought back.
        hashing.update(&big);
        expected.update(&big[0]);
        expected.update(&big[1]);
        assert_eq!(hashing.hasher().digest(), expected.digest());
    }

    #[test]
    fn batches_sent_as_an_idle_thread_ends_are_all_hashed() {
        let big = vec![Bytes::from(vec![5u8; AWAY_FROM])];
        let small = vec![Bytes::from_static(b"a few bytes")];
        let mut expected = Hasher::new(Algorithm::Sha256);
        // Threads that go idle at once, ending while batches keep coming.
        let mut hashing = Hashing::new(Hasher::new(Algorithm::Sha256));
        for round in 0..2000 {
            hashing.idle = Duration::from_micros(round % 30);
            hashing.update(&big);
            expected.update(&big[0]);
            for _ in 0..round % 40 {
                hashing.update(&small);
                expected.update(&small[0]);
            }
        }
        assert_eq!(hashing.hasher().digest(), expected.digest());
    }

    #[test]
    fn a_thread_left_idle_ends_and_the_hash_goes_on_here() {
        let big = vec![Bytes::from(vec![3u8; AWAY_FROM])];
        let mut expected = Hasher::new(Algorithm::Sha256);
        let mut hashing = Hashing::new(Hasher::new(Algorithm::Sha256));
        hashing.update(&big);
        expected.update(&big[0]);
        std::thread::sleep(IDLE + Duration::from_millis(500));
        let State::Away { thread, .. } = &hashing.state else {
            panic!("a big batch is hashed away");
        };
        assert!(thread.is_finished(), "the idle thread ended");
        hashing.update(&big);
        expected.update(&big[0]);
        assert_eq!(hashing.hasher().digest(), expected.digest());
    }
}
