//! Manifests as lookups last read them, served again while nothing has
//! committed since. A manifest GET by tag otherwise opens a read
//! transaction and two tables: in a callgrind profile that was 12,000 of
//! the 41,000 instructions a GET cost, most of it redb checking the
//! tables' names and types. An entry is good only while the database's
//! generation (moved on before and after every commit, see commit.rs) is
//! the one read before the lookup that filled it; while a commit is under
//! way (an odd generation) nothing is kept or served from here. So a GET
//! never answers from before a commit that another GET has already seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use super::manifests::StoredManifest;

/// Manifests larger than this are read from the database every time.
const MAX_BODY: usize = 64 << 10;
/// What the entries hold together, at most; past it they all go.
const MAX_BYTES: usize = 1 << 20;

pub(super) struct Served {
    entries: Mutex<Entries>,
    hasher: RandomState,
}

#[derive(Default)]
struct Entries {
    /// By a hash of (repository, reference); the entry says which.
    by_key: HashMap<u64, Entry>,
    bytes: usize,
}

struct Entry {
    repo: Box<str>,
    reference: Box<str>,
    generation: u64,
    manifest: StoredManifest,
}

impl Served {
    pub(super) fn new() -> Served {
        Served {
            entries: Mutex::new(Entries::default()),
            hasher: RandomState::new(),
        }
    }

    fn key(&self, repo: &str, reference: &str) -> u64 {
        self.hasher.hash_one((repo, reference))
    }

    /// The manifest a lookup at `generation` read, if that is still the
    /// database's generation.
    pub(super) fn get(
        &self,
        repo: &str,
        reference: &str,
        generation: u64,
    ) -> Option<StoredManifest> {
        if committing(generation) {
            return None;
        }
        let key = self.key(repo, reference);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .by_key
            .get(&key)
            .filter(|e| {
                e.generation == generation && &*e.repo == repo && &*e.reference == reference
            })
            .map(|e| e.manifest.clone())
    }

    /// Keeps what a lookup read; `generation` must have been read before
    /// the lookup's transaction began.
    pub(super) fn put(
        &self,
        repo: &str,
        reference: &str,
        generation: u64,
        manifest: &StoredManifest,
    ) {
        let size = manifest.body.len() + repo.len() + reference.len();
        if manifest.body.len() > MAX_BODY || committing(generation) {
            return;
        }
        let key = self.key(repo, reference);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.bytes + size > MAX_BYTES {
            entries.by_key.clear();
            entries.bytes = 0;
        }
        let entry = Entry {
            repo: repo.into(),
            reference: reference.into(),
            generation,
            manifest: manifest.clone(),
        };
        if let Some(old) = entries.by_key.insert(key, entry) {
            entries.bytes -= old.manifest.body.len() + old.repo.len() + old.reference.len();
        }
        entries.bytes += size;
    }
}

fn committing(generation: u64) -> bool {
    generation % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn manifest(body: &[u8]) -> StoredManifest {
        StoredManifest {
            digest: Digest::of(body),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn an_entry_serves_only_its_own_key_at_its_own_generation() {
        let served = Served::new();
        served.put("a/b", "v1", 6, &manifest(b"one"));
        assert_eq!(served.get("a/b", "v1", 6).unwrap().body, &b"one"[..]);
        assert!(served.get("a/b", "v1", 8).is_none(), "a commit since");
        assert!(served.get("a/b", "v2", 6).is_none());
        assert!(served.get("a/bv", "1", 6).is_none());
        served.put("a/b", "v3", 9, &manifest(b"during a commit"));
        assert!(served.get("a/b", "v3", 9).is_none());
    }

    #[test]
    fn big_manifests_are_not_kept_and_the_total_is_bounded() {
        let served = Served::new();
        served.put("r", "big", 2, &manifest(&vec![0; MAX_BODY + 1]));
        assert!(served.get("r", "big", 2).is_none());
        let body = vec![1; MAX_BODY];
        for i in 0..(2 * MAX_BYTES / MAX_BODY) {
            served.put("r", &format!("t{i}"), 2, &manifest(&body));
            let bytes = served.entries.lock().unwrap().bytes;
            assert!(bytes <= MAX_BYTES, "{bytes} bytes held");
        }
    }
}
