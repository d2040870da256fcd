//! Manifests as lookups last read them, served again while nothing has
//! committed since. A manifest GET by tag otherwise opens a read
//! transaction and two tables: in a callgrind profile that was 12,000 of
//! the 41,000 instructions a GET cost, most of it redb checking the
//! tables' names and types. An entry is good only while the database's
//! generation (moved on before and after every commit, see commit.rs) is
//! the one read before the lookup that filled it; while a commit is under
//! way (an odd generation) nothing is kept or served from here. So a GET
//! never answers from before a commit that another GET has already seen.

use std::hash::BuildHasher;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::manifests::StoredManifest;

/// Manifests larger than this are read from the database every time.
const MAX_BODY: usize = 64 << 10;
/// What the entries hold together, at most; past it they all go.
const MAX_BYTES: usize = 1 << 20;

pub(super) struct Served {
    /// A read lock for a GET: GETs never wait for each other.
    entries: RwLock<Entries>,
    /// foldhash, seeded per process: callgrind put std's SipHash at ~180
    /// instructions of every GET. Flooding one bucket takes inserts, and
    /// only stored manifests are inserted, at most MAX_BYTES of them.
    hasher: DefaultHashBuilder,
}

#[derive(Default)]
struct Entries {
    /// By (repository, reference), hashed once per lookup: a map keyed
    /// by that hash hashed it a second time.
    by_key: HashTable<Entry>,
    bytes: usize,
}

struct Entry {
    hash: u64,
    repo: Box<str>,
    reference: Box<str>,
    generation: u64,
    manifest: StoredManifest,
}

impl Served {
    pub(super) fn new() -> Served {
        Served {
            entries: RwLock::new(Entries::default()),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn key(&self, repo: &str, reference: &str) -> u64 {
        self.hasher.hash_one((repo, reference))
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
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
        let hash = self.key(repo, reference);
        self.read()
            .by_key
            .find(hash, |e| &*e.repo == repo && &*e.reference == reference)
            .filter(|e| e.generation == generation)
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
        let hash = self.key(repo, reference);
        let mut entries = self.write();
        if entries.bytes + size > MAX_BYTES {
            entries.by_key.clear();
            entries.bytes = 0;
        }
        let entry = Entry {
            hash,
            repo: repo.into(),
            reference: reference.into(),
            generation,
            manifest: manifest.clone(),
        };
        let same = |e: &Entry| &*e.repo == repo && &*e.reference == reference;
        match entries.by_key.entry(hash, same, |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(mut old) => {
                let old = std::mem::replace(old.get_mut(), entry);
                entries.bytes -= old.manifest.body.len() + old.repo.len() + old.reference.len();
            }
            hashbrown::hash_table::Entry::Vacant(place) => {
                place.insert(entry);
            }
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
            let bytes = served.read().bytes;
            assert!(bytes <= MAX_BYTES, "{bytes} bytes held");
        }
    }
}
