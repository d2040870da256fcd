//! Repository names and tags, as the OCI distribution grammar allows them.
//! Validation here is what keeps request paths from ever naming a file.

use super::Digest;

/// Longest repository name accepted; Docker and Distribution use the same bound.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    pub fn parse(s: &str) -> Option<RepoName> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return None;
        }
        s.split('/')
            .all(valid_component)
            .then(|| RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    loop {
        // One run of alphanumerics.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: '.', '_', '__' or any number of '-'.
        let sep_start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
    pub fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let ok = !b.is_empty()
            && b.len() <= 128
            && word(b[0])
            && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-');
        ok.then(|| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

/// Why a reference was refused, so the API can pick TAG_INVALID or DIGEST_INVALID.
#[derive(Debug, PartialEq, Eq)]
pub enum BadReference {
    Tag,
    Digest,
}

impl Reference {
    pub fn tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(tag) => Some(tag.as_str()),
            Reference::Digest(_) => None,
        }
    }

    pub fn parse(s: &str) -> Result<Reference, BadReference> {
        if s.contains(':') {
            Digest::parse(s)
                .map(Reference::Digest)
                .ok_or(BadReference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag).ok_or(BadReference::Tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "library/ubuntu", "a-b--c/d_e__f/g.h", "0/1/2", "x9"] {
            assert!(RepoName::parse(good).is_some(), "{good}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a___b", "a.-b", "-a", "a-", "a b",
            "a%2fb", "a:b",
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_some());
        assert!(RepoName::parse(&"a".repeat(256)).is_none());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for good in ["latest", "v1.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(good).is_some(), "{good}");
        }
        for bad in ["", "-x", ".x", "a:b", "a/b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn references_tell_tags_from_digests() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        assert_eq!(Reference::parse("sha256:zz"), Err(BadReference::Digest));
        assert_eq!(Reference::parse("-v"), Err(BadReference::Tag));
    }
}
