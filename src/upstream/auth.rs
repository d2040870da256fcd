//! Logging in to an upstream as a docker client does: credentials from a
//! `config.json`, a `WWW-Authenticate` challenge read, and a Bearer token
//! fetched from the realm it names (or Basic, where that is the scheme).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// A user and password for each registry host, as `docker login` keeps them.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    by_host: HashMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Reads a docker `config.json`: `{"auths": {"HOST": {"auth":
    /// base64("user:password")}}}` (or `username` and `password`).
    pub fn load(path: &Path) -> io::Result<Credentials> {
        let text = std::fs::read(path)?;
        let invalid = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        let file: ConfigFile = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("not a docker config.json: {e}")))?;
        let mut by_host = HashMap::new();
        for (key, entry) in file.auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| invalid(format!("the auth of {key:?} is not base64")))?;
                    let (user, password) = decoded.split_once(':').ok_or_else(|| {
                        invalid(format!("the auth of {key:?} is not user:password"))
                    })?;
                    (user.to_owned(), password.to_owned())
                }
                (None, Some(user), Some(password)) => (user, password),
                _ => continue,
            };
            by_host.insert(host_of(&key), pair);
        }
        Ok(Credentials { by_host })
    }

    /// Logs in to `host` (`host[:port]`) as `user`, over any login a
    /// config file gave.
    pub fn insert(&mut self, host: &str, user: String, password: String) {
        self.by_host.insert(host.to_owned(), (user, password));
    }

    /// The user and password for `host` (`host[:port]`). Docker Hub's are
    /// kept under its old index URL, which names `index.docker.io`.
    pub fn for_host(&self, host: &str) -> Option<&(String, String)> {
        self.by_host.get(host).or_else(|| {
            matches!(host, "registry-1.docker.io" | "docker.io")
                .then(|| self.by_host.get("index.docker.io"))
                .flatten()
        })
    }
}

/// `https://host:port/v1/` -> `host:port`: config.json keys are hosts or URLs.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// A `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, PartialEq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Reads `Bearer realm="...",service="...",scope="..."` (quoted or
    /// bare values; commas inside quotes belong to the value).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = chars.by_ref().take_while(|c| *c != ',').collect();
            }
            params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        (!scheme.is_empty()).then(|| Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

/// What a token endpoint answers.
#[derive(Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = Challenge::parse(r#"Basic realm="berth""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "berth");
        let c = Challenge::parse("Bearer realm=https://a/token, service=x").unwrap();
        assert_eq!(c.params["realm"], "https://a/token");
        assert_eq!(c.params["service"], "x");
    }

    #[test]
    fn credentials_come_from_a_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = STANDARD.encode("alice:s3cret:with:colons");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"127.0.0.1:5001": {{"auth": "{auth}"}},
                   "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                   "ghcr.io": {{}}}}}}"#
            ),
        )
        .unwrap();
        let creds = Credentials::load(&path).unwrap();
        assert_eq!(
            creds.for_host("127.0.0.1:5001"),
            Some(&("alice".into(), "s3cret:with:colons".into()))
        );
        assert_eq!(
            creds.for_host("registry-1.docker.io"),
            Some(&("bob".into(), "pw".into()))
        );
        assert_eq!(creds.for_host("ghcr.io"), None);
        std::fs::write(&path, "not json").unwrap();
        let e = Credentials::load(&path).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A challenge as an upstream writes it: each value quoted, with `"`
    /// and `\` escaped.
    fn written(scheme: &str, params: &BTreeMap<String, String>) -> String {
        let params: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{k}=\"{escaped}\"")
            })
            .collect();
        format!("{scheme} {}", params.join(", "))
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_header_is_read_without_a_panic(header in any::<String>()) {
            if let Some(c) = Challenge::parse(&header) {
                prop_assert!(!c.scheme.is_empty());
                prop_assert!(c.params.keys().all(|k| *k == k.trim().to_ascii_lowercase()));
            }
        }

        #[test]
        fn a_written_challenge_reads_back(
            scheme in "[A-Za-z]{1,8}",
            params in prop::collection::btree_map(
                "[a-z_]{1,10}",
                // Commas, quotes, backslashes, spaces and `=` inside a
                // value belong to it; only its ends are trimmed.
                "[!-~]([ -~]{0,30}[!-~])?",
                0..5,
            ),
        ) {
            let c = Challenge::parse(&written(&scheme, &params)).unwrap();
            prop_assert_eq!(c.scheme, scheme.to_ascii_lowercase());
            let read: BTreeMap<String, String> = c.params.into_iter().collect();
            prop_assert_eq!(read, params);
        }
    }
}
