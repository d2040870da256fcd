//! Maps whose keys clients choose (repositories, digests, token scopes):
//! bounded, so what a client makes up costs some work again later, never
//! memory.

use std::collections::HashMap;
use std::hash::Hash;

/// Inserts `key` -> `value`. A new key finding `max` others there first
/// drops those that `live` says are spent, and all of them if none is.
pub(crate) fn insert<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    max: usize,
    live: impl Fn(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, value| live(value));
        if map.len() >= max {
            map.clear();
        }
    }
    map.insert(key, value);
}
