//! Repository names and tags, as the OCI distribution grammar allows them.
//! Validation here is what keeps request paths from ever naming a file.

use super::Digest;

/// Longest repository name accepted; Docker and Distribution use the same bound.
pub const MAX_NAME_LEN: usize = 255;

/// A repository's full name. Its first component may name a registry
/// host (`docker.io/library/alpine`, `127.0.0.1:5001/team/app`): that is
/// its namespace, by docker's rule (a first component with a `.` or a `:`,
/// or `localhost`, followed by more). Each namespace is a registry of its
/// own; a name without one is in the default namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// Docker Hub's registry host, and the other names clients give it.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

impl RepoName {
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
    /// whose first component may also be a `host:port` namespace. Docker
    /// Hub's names are made canonical: `docker.io/alpine` is
    /// `docker.io/library/alpine`.
    pub fn parse(s: &str) -> Option<RepoName> {
        let (first, rest) = match s.split_once(slash) {
            Some((first, rest)) => (first, Some(rest)),
            None => (s, None),
        };
        let first_ok = valid_component(first) || (rest.is_some() && valid_host(first));
        if !first_ok || !rest.is_none_or(|rest| rest.split(slash).all(valid_component)) {
            return None;
        }
        let name = match rest {
            Some(rest) if DOCKER_HUB_ALIASES.contains(&first) || first == DOCKER_HUB => {
                if rest.contains('/') {
                    format!("{DOCKER_HUB}/{rest}")
                } else {
                    format!("{DOCKER_HUB}/library/{rest}")
                }
            }
            _ => s.to_owned(),
        };
        (!name.is_empty() && name.len() <= MAX_NAME_LEN).then_some(RepoName(name))
    }

    /// The name `path` has in the namespace of registry host `namespace`,
    /// as containerd's `?ns=` names it; `None` if `namespace` is no host.
    pub fn in_namespace(namespace: &str, path: &RepoName) -> Option<RepoName> {
        if !valid_host(namespace) {
            return None;
        }
        RepoName::parse(&format!("{namespace}/{}", path.as_str()))
    }

    /// The registry host this name is in; `None`: the default namespace.
    pub fn namespace(&self) -> Option<&str> {
        let (first, _) = self.0.split_once(slash)?;
        (first.contains(['.', ':']) || first == "localhost").then_some(first)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` names a namespace: a registry host, by docker's rule (a `.`
/// or a `:` in it, or `localhost`).
/// A namespace as repository names carry it: Docker Hub's other names
/// (`registry-1.docker.io`, `index.docker.io`) are `docker.io`.
pub fn canonical_namespace(s: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&s) {
        DOCKER_HUB
    } else {
        s
    }
}

pub fn is_namespace(s: &str) -> bool {
    valid_host(s) && (s.contains(['.', ':']) || s == "localhost")
}

/// A registry host as a namespace: DNS labels or an IPv4 address, lower
/// case, with an optional port.
/// A name's separator, as a function: a `char` pattern searches with
/// memchr, whose setup costs more than the search on names this short
/// (callgrind, on every request that names a repository).
fn slash(c: char) -> bool {
    c == '/'
}

fn valid_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && !host.is_empty() && host.len() <= 253 && host.split('.').all(label)
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
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(tag) => tag.as_str(),
            Reference::Digest(digest) => digest.as_str(),
        }
    }

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
    fn a_first_component_may_name_a_registry_host() {
        let name = |s: &str| RepoName::parse(s).map(|n| n.as_str().to_owned());
        let ns = |s: &str| RepoName::parse(s).unwrap().namespace().map(str::to_owned);
        assert_eq!(
            name("127.0.0.1:5001/team/app").as_deref(),
            Some("127.0.0.1:5001/team/app")
        );
        assert_eq!(
            ns("127.0.0.1:5001/team/app").as_deref(),
            Some("127.0.0.1:5001")
        );
        assert_eq!(ns("quay.io/a/b").as_deref(), Some("quay.io"));
        assert_eq!(ns("localhost/app").as_deref(), Some("localhost"));
        assert_eq!(ns("library/alpine"), None);
        assert_eq!(ns("alpine"), None);
        for bad in [
            "host:5001",
            "h:0/a",
            "h:65536/a",
            "h:/a",
            "H.io/a",
            "-h.io/a",
            "a/h:1/b",
        ] {
            assert_eq!(name(bad), None, "{bad}");
        }
    }

    #[test]
    fn docker_hub_names_are_canonical() {
        for (given, canonical) in [
            ("docker.io/alpine", "docker.io/library/alpine"),
            ("docker.io/library/alpine", "docker.io/library/alpine"),
            ("index.docker.io/alpine", "docker.io/library/alpine"),
            ("registry-1.docker.io/team/app", "docker.io/team/app"),
            // A single component is a repository, not a namespace.
            ("docker.io", "docker.io"),
        ] {
            assert_eq!(RepoName::parse(given).unwrap().as_str(), canonical);
        }
        let path = RepoName::parse("alpine").unwrap();
        let full = RepoName::in_namespace("docker.io", &path).unwrap();
        assert_eq!(full.as_str(), "docker.io/library/alpine");
        let full = RepoName::in_namespace("127.0.0.1:5001", &path).unwrap();
        assert_eq!(full.as_str(), "127.0.0.1:5001/alpine");
        assert!(RepoName::in_namespace("Bad_Host", &path).is_none());
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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    use crate::props::name_component as component;

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_text_is_judged_without_a_panic(s in any::<String>()) {
            let _ = RepoName::parse(&s);
            let _ = Tag::parse(&s);
            let _ = Reference::parse(&s);
            let _ = is_namespace(&s);
        }

        #[test]
        fn a_name_parses_to_itself(s in "[a-zA-Z0-9./:_-]{0,40}") {
            if let Some(name) = RepoName::parse(&s) {
                prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
                prop_assert_eq!(RepoName::parse(name.as_str()), Some(name.clone()));
            }
        }

        #[test]
        fn names_of_valid_components_are_taken(parts in prop::collection::vec(component(), 1..6)) {
            let s = parts.join("/");
            prop_assume!(s.len() <= MAX_NAME_LEN);
            prop_assert!(RepoName::parse(&s).is_some(), "{:?} refused", s);
        }

        #[test]
        fn names_with_an_uppercase_letter_are_refused(
            parts in prop::collection::vec(component(), 1..4),
            at in any::<prop::sample::Index>(),
        ) {
            let mut s = parts.join("/");
            let letters: Vec<usize> = s
                .char_indices()
                .filter(|(_, c)| c.is_ascii_lowercase())
                .map(|(i, _)| i)
                .collect();
            prop_assume!(!letters.is_empty());
            let i = letters[at.index(letters.len())];
            s.replace_range(i..=i, &s[i..=i].to_ascii_uppercase());
            prop_assert!(RepoName::parse(&s).is_none(), "{:?} taken", s);
        }

        #[test]
        fn tags_by_the_grammar_are_taken_as_they_are(s in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}") {
            prop_assert_eq!(Tag::parse(&s).map(|t| t.as_str().to_owned()), Some(s));
        }

        #[test]
        fn tags_past_128_characters_are_refused(s in "[a-z]{129,400}") {
            prop_assert!(Tag::parse(&s).is_none());
        }
    }
}
