//! When each (repository, thing) last happened: an upstream asked about a
//! tag or a subject's referrers, a cached manifest's pull written down.
//! Clients choose the things (any repository, any digest), so the record
//! is bounded: forgetting one costs an extra upstream check or pull
//! record, never memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Things remembered at most, per record.
const MAX: usize = 10_000;

#[derive(Default)]
pub(super) struct Recent {
    at: Mutex<HashMap<(String, String), Instant>>,
}

impl Recent {
    /// Whether `what` in `repo` happened less than `age` ago.
    pub(super) fn within(&self, repo: &str, what: &str, age: Duration) -> bool {
        self.lock()
            .get(&(repo.to_owned(), what.to_owned()))
            .is_some_and(|at| at.elapsed() < age)
    }

    /// Records that `what` in `repo` happens now, unless it did less than
    /// `age` ago; true if recorded.
    pub(super) fn mark_unless_within(&self, repo: &str, what: &str, age: Duration) -> bool {
        let key = (repo.to_owned(), what.to_owned());
        let mut at = self.lock();
        if at.get(&key).is_some_and(|then| then.elapsed() < age) {
            return false;
        }
        record(&mut at, key, Instant::now(), age);
        true
    }

    /// Records that `what` in `repo` happens now; what is older than `keep`
    /// is what may be forgotten first.
    pub(super) fn mark(&self, repo: &str, what: &str, keep: Duration) {
        self.mark_ago(repo, what, Duration::ZERO, keep);
    }

    /// Marks `what` as done `ago` already: within an age of `keep` for
    /// `keep - ago` more.
    pub(super) fn mark_ago(&self, repo: &str, what: &str, ago: Duration, keep: Duration) {
        let then = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        record(
            &mut self.lock(),
            (repo.to_owned(), what.to_owned()),
            then,
            keep,
        );
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Past [`MAX`] things, those older than `keep` are forgotten, and all of
/// them if none is.
fn record(
    at: &mut HashMap<(String, String), Instant>,
    key: (String, String),
    then: Instant,
    keep: Duration,
) {
    crate::bounded::insert(at, key, then, MAX, |then| then.elapsed() < keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_a_client_makes_up_stay_bounded() {
        let recent = Recent::default();
        let hour = Duration::from_secs(3600);
        for n in 0..3 * MAX {
            assert!(recent.mark_unless_within("r", &format!("sha256:{n}"), hour));
            recent.mark("r", &format!("tag {n}"), hour);
            assert!(recent.len() <= MAX, "{} things after {n}", recent.len());
        }
    }

    #[test]
    fn a_thing_is_within_its_age_and_not_marked_twice() {
        let recent = Recent::default();
        let hour = Duration::from_secs(3600);
        assert!(!recent.within("r", "tag 1", hour));
        assert!(recent.mark_unless_within("r", "tag 1", hour));
        assert!(recent.within("r", "tag 1", hour));
        assert!(!recent.within("r", "tag 1", Duration::ZERO));
        assert!(!recent.mark_unless_within("r", "tag 1", hour));
        assert!(recent.mark_unless_within("r", "tag 1", Duration::ZERO));
        recent.mark("r", "tag 2", hour);
        assert!(recent.within("r", "tag 2", hour));
    }
}
