//! Hashing beside writing. One core hashes sha256 at about the speed a disk
//! takes writes, so a big request's bytes are hashed on a thread of its own
//! that lives as long as the request, while the request's thread writes
//! them: neither waits for the other batch by batch, and no thread is
//! started per batch. A thread left with nothing to hash ends soon, so an
//! upload whose client stalls holds none.

use std::sync::mpsc::{self, Receiver, SyncSender};
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
}

enum State {
    Here(Hasher),
    Away {
        batches: SyncSender<Vec<Bytes>>,
        thread: JoinHandle<Hasher>,
    },
    /// Only while moving between the two.
    Moving,
}

impl Hashing {
    pub fn new(hasher: Hasher) -> Hashing {
        Hashing {
            state: State::Here(hasher),
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
            self.state = away(hasher);
        }
        if let State::Away { batches, .. } = &self.state
            && batches.send(batch.to_vec()).is_ok()
        {
            return;
        }
        // Here, or the thread sat idle and ended: its hash comes back.
        let hasher = self.hasher();
        batch.iter().for_each(|b| hasher.update(b));
    }

    /// The hash of every batch so far, once the hashing thread (if any)
    /// has caught up.
    pub fn hasher(&mut self) -> &mut Hasher {
        if let State::Away { .. } = self.state {
            let State::Away { batches, thread } = std::mem::replace(&mut self.state, State::Moving)
            else {
                unreachable!("matched above");
            };
            drop(batches);
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
        self.state = State::Here(hasher);
    }
}

fn away(hasher: Hasher) -> State {
    let (batches, received): (_, Receiver<Vec<Bytes>>) = mpsc::sync_channel(QUEUED);
    let mut moved = hasher.clone();
    let thread = std::thread::Builder::new()
        .name("berth-hash".into())
        .spawn(move || {
            crate::bulk::this_thread();
            while let Ok(batch) = received.recv_timeout(IDLE) {
                batch.iter().for_each(|b| moved.update(b));
            }
            moved
        });
    match thread {
        Ok(thread) => State::Away { batches, thread },
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
