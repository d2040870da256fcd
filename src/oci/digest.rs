//! Content digests: the two algorithms OCI registers, sha256 (canonical)
//! and sha512. Anything else is rejected at the door rather than
//! half-supported.

use std::fmt;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The name digests carry before the colon, and the blob directory's.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated `<algorithm>:<lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        let (name, hex) = s.split_once(':')?;
        let algorithm = Algorithm::parse(name)?;
        if hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Some(Digest(s.to_owned()))
        } else {
            None
        }
    }

    /// The canonical (sha256) digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::with(Algorithm::Sha256, bytes)
    }

    pub fn with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(bytes);
        hasher.digest()
    }

    fn from_hash(algorithm: Algorithm, hash: &[u8]) -> Digest {
        let mut s = String::with_capacity(algorithm.name().len() + 1 + 2 * hash.len());
        s.push_str(algorithm.name());
        s.push(':');
        for b in hash {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        Digest(s)
    }

    pub fn algorithm(&self) -> Algorithm {
        let name = self.0.split_once(':').map_or("", |(name, _)| name);
        Algorithm::parse(name).expect("a parsed digest names a known algorithm")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex characters after the colon, safe to use as a file name.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, hex)| hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running hash whose state can be saved and restored, so an upload
/// resumes after a restart without rereading what it already received.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything so far; the hasher can go on.
    pub fn digest(&self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.clone().finalize()),
            Hasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.clone().finalize()),
        }
    }

    /// The state as bytes. The two algorithms' states differ in length,
    /// which is how [`Hasher::restore`] tells them apart: rows saved before
    /// sha512 existed restore unchanged.
    pub fn state(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher from [`Hasher::state`]'s bytes; `None` if they are no
    /// state of either algorithm.
    pub fn restore(state: &[u8]) -> Option<Hasher> {
        if let Ok(s) = SerializedState::<Sha256>::try_from(state) {
            return Sha256::deserialize(&s).ok().map(Hasher::Sha256);
        }
        let s = SerializedState::<Sha512>::try_from(state).ok()?;
        Sha512::deserialize(&s).ok().map(Hasher::Sha512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_lowercase_sha256_and_sha512() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert!(Digest::parse(&good).is_some());
        assert!(Digest::parse(&good.to_uppercase()).is_none());
        assert!(Digest::parse("sha256:abc").is_none());
        let long = format!("sha512:{}", "a1".repeat(64));
        assert_eq!(Digest::parse(&long).unwrap().algorithm(), Algorithm::Sha512);
        assert!(Digest::parse(&format!("sha512:{}", "a1".repeat(32))).is_none());
        assert!(Digest::parse(&format!("sha384:{}", "a1".repeat(48))).is_none());
        assert!(Digest::parse(&format!("sha256:{}", "g1".repeat(32))).is_none());
        assert!(Digest::parse(&format!("sha256:{}/..", "a1".repeat(31))).is_none());
    }

    #[test]
    fn hashes_the_empty_blob() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::with(Algorithm::Sha512, b"").as_str(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    #[test]
    fn a_saved_state_resumes_as_the_same_algorithm() {
        for algorithm in Algorithm::ALL {
            let mut hasher = Hasher::new(algorithm);
            hasher.update(b"first half, ");
            let mut resumed = Hasher::restore(&hasher.state()).expect("state restores");
            assert_eq!(resumed.algorithm(), algorithm);
            resumed.update(b"second half");
            assert_eq!(
                resumed.digest(),
                Digest::with(algorithm, b"first half, second half")
            );
        }
        assert!(Hasher::restore(b"not a hash state").is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_text_is_judged_without_a_panic(s in any::<String>()) {
            let _ = Digest::parse(&s);
        }

        #[test]
        fn lowercase_hex_of_the_algorithms_length_is_taken(
            hex256 in "[0-9a-f]{64}",
            hex512 in "[0-9a-f]{128}",
        ) {
            for s in [format!("sha256:{hex256}"), format!("sha512:{hex512}")] {
                prop_assert_eq!(Digest::parse(&s).map(|d| d.as_str().to_owned()), Some(s));
            }
        }

        #[test]
        fn any_other_length_is_refused(hex in "[0-9a-f]{0,200}") {
            prop_assume!(hex.len() != 64);
            let s = format!("sha256:{hex}");
            prop_assert!(Digest::parse(&s).is_none());
        }

        #[test]
        fn uppercase_hex_is_refused(hex in "[0-9a-fA-F]{64}") {
            prop_assume!(hex.bytes().any(|b| b.is_ascii_uppercase()));
            let s = format!("sha256:{hex}");
            prop_assert!(Digest::parse(&s).is_none());
        }
    }
}
