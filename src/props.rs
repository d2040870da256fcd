//! How the property tests run: every parser a client reaches (paths,
//! names, digests, ranges, manifests, tokens, the auth files, the web
//! page's routes and form origins; and an upstream's auth challenges) is fed
//! generated input by `proptest` in its own module's tests. In `cargo test`
//! they draw a bounded number of cases from a fixed seed, so a run is
//! repeatable and quick; a longer fuzzing run sets BERTH_FUZZ_CASES (cases
//! per property) and BERTH_FUZZ_SEED (a number, or `random`):
//!
//! ```sh
//! BERTH_FUZZ_CASES=200000 BERTH_FUZZ_SEED=random cargo test --lib props
//! ```

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed};

const CASES: u32 = 256;
const SEED: u64 = 0xbe27_f022;

pub(crate) fn config() -> Config {
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let rng_seed = match std::env::var("BERTH_FUZZ_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(seed) => RngSeed::Fixed(
            seed.parse()
                .unwrap_or_else(|_| panic!("BERTH_FUZZ_SEED={seed:?}: a number, or random")),
        ),
        None => RngSeed::Fixed(SEED),
    };
    Config {
        cases,
        rng_seed,
        // A failure prints its minimal case; nothing is written to disk.
        failure_persistence: None,
        ..Config::default()
    }
}

/// A repository path component by the distribution spec's grammar.
pub(crate) fn name_component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}((\\.|_|__|-+)[a-z0-9]{1,6}){0,2}"
}

/// A repository name of one to three such components.
pub(crate) fn repo_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(name_component(), 1..4).prop_map(|parts| parts.join("/"))
}
