//! Every knob the server has, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::conn::Limits;
use crate::store::prune::Policy;

/// Every setting of a registry, as `berth serve`'s flags set them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Database and blob files; created if missing. With `cluster`, what
    /// stays on the node (the token key).
    pub data_dir: PathBuf,
    /// Serve from PostgreSQL and an object store shared with other nodes,
    /// not from `data_dir`.
    pub cluster: Option<crate::store::cluster::Settings>,
    /// Manifests larger than this are refused with 413.
    pub max_manifest_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A client that has not sent a request's headers within this is dropped.
    pub header_timeout: Duration,
    /// The window over which a transfer must move `min_transfer_rate`
    /// bytes a second (counted over the whole window, so a trickle of
    /// bytes does not keep it alive), or it is cut.
    pub body_idle_timeout: Duration,
    /// Upload sessions open at once, in all and in one repository; more
    /// are refused with 429 until some finish, are cancelled or expire.
    pub max_uploads: usize,
    /// Upload sessions open at once in one repository.
    pub max_uploads_per_repo: usize,
    /// Bytes a second a transfer must average over `body_idle_timeout`.
    /// Downloads are counted in 384 KiB chunks as the client takes them.
    pub min_transfer_rate: u64,
    /// Run a prune this often in the background; `None`: never.
    pub prune_interval: Option<Duration>,
    /// What a prune removes, in the background or from `berth prune`.
    pub prune: Policy,
    /// Users and rules; `None`: everyone may read and write.
    pub auth: Option<AuthConfig>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2) with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Namespaces that cache an upstream registry: (namespace, URL), e.g.
    /// `("docker.io", "https://registry-1.docker.io")`.
    pub upstreams: Vec<(String, String)>,
    /// How long an upstream's answer about a tag is trusted.
    pub upstream_ttl: Duration,
    /// How long an upstream may take to connect, to answer, and between
    /// any two pieces of an answer: past it, the cache serves what it has
    /// or says the upstream failed.
    pub upstream_timeout: Duration,
    /// A docker `config.json` with the upstreams' credentials.
    pub upstream_auth: Option<PathBuf>,
    /// PEM certificates trusted for upstreams beside the system's roots.
    pub upstream_ca: Option<PathBuf>,
    /// How clients reach the registry (`https://host[:port][/path]`, as
    /// [`parse_public_url`] gives it) when a proxy stands in front: the token
    /// realm is `<public_url>/token`. `None`: built from each request's Host.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` names the client (for the failed-login
    /// limit and the access log); from any other address it is not believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here instead of beside
    /// the registry API (plain HTTP, no login).
    pub metrics_listen: Option<SocketAddr>,
    /// Log one line per request on stderr, in this format.
    pub access_log: Option<crate::ops::LogFormat>,
    /// Below this many free bytes in the data directory, `/readyz` says
    /// not ready.
    pub min_free_space: u64,
    /// OCI layouts (directories or tar archives) imported before the first
    /// request is served; a damaged one fails the start.
    pub preload: Vec<PathBuf>,
}

/// A certificate and key to serve HTTPS with.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where `berth serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Where `berth serve` keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "berth-data";
/// Connections served at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// A docker push keeps a session per layer it is sending; CI fleets push
/// many repositories at once. Each session costs a row and maybe a file.
pub const DEFAULT_MAX_UPLOADS: usize = 10_000;
/// Upload sessions open at once in one repository, by default.
pub const DEFAULT_MAX_UPLOADS_PER_REPO: usize = 1_000;
/// 1 KiB/s: far below any real client, far above a trickle meant to hold
/// a connection.
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 1024;

impl Config {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            cluster: None,
            max_manifest_bytes: crate::api::DEFAULT_MAX_MANIFEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            max_uploads: DEFAULT_MAX_UPLOADS,
            max_uploads_per_repo: DEFAULT_MAX_UPLOADS_PER_REPO,
            prune_interval: None,
            prune: Policy::default(),
            auth: None,
            tls: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            upstreams: Vec::new(),
            upstream_ttl: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(30),
            upstream_auth: None,
            upstream_ca: None,
            metrics_listen: None,
            access_log: None,
            min_free_space: crate::ops::DEFAULT_MIN_FREE_SPACE,
            preload: Vec::new(),
        }
    }

    /// Refuses settings under which the server would serve nobody: a
    /// zero limit or timeout is a mistake, never a way to say "unlimited".
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("max_connections", self.max_connections),
            ("max_uploads", self.max_uploads),
            ("max_uploads_per_repo", self.max_uploads_per_repo),
            ("max_manifest_bytes", self.max_manifest_bytes),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        let times = [
            ("header_timeout", self.header_timeout),
            ("body_idle_timeout", self.body_idle_timeout),
            ("upstream_timeout", self.upstream_timeout),
        ];
        if let Some((name, _)) = times.iter().find(|(_, t)| t.is_zero()) {
            return Err(format!("{name} must be longer than zero"));
        }
        if let Some(auth) = &self.auth
            && auth.token_ttl > crate::auth::MAX_TOKEN_TTL
        {
            return Err(format!(
                "token_ttl (--token-ttl) is {}: a day at most, as a token cannot be taken back before it expires",
                humantime::format_duration(auth.token_ttl)
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (namespace, url) in &self.upstreams {
            // Never repeated: the message goes to logs.
            let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            if authority
                .split(['/', '?', '#'])
                .next()
                .is_some_and(|a| a.contains('@'))
            {
                return Err(format!(
                    "upstream {namespace:?}: its URL carries credentials, which berth would neither \
                     send nor keep out of logs; give them in --upstream-auth's config.json"
                ));
            }
            if !crate::oci::name::is_namespace(namespace) {
                return Err(format!(
                    "upstream namespace {namespace:?} is not a registry host like docker.io or 127.0.0.1:5001"
                ));
            }
            let canonical = crate::oci::name::canonical_namespace(namespace);
            if !seen.insert(canonical) {
                let hub = if canonical == "docker.io" {
                    " (Docker Hub's names are one)"
                } else {
                    ""
                };
                return Err(format!(
                    "upstream namespace {namespace:?} is given twice{hub}"
                ));
            }
        }
        Ok(())
    }

    /// What every connection is held to.
    pub(crate) fn conn_limits(&self) -> Limits {
        let window_secs = self.body_idle_timeout.as_secs_f64();
        Limits {
            idle: self.header_timeout,
            window: self.body_idle_timeout,
            min_bytes: (self.min_transfer_rate as f64 * window_secs) as u64,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new(DEFAULT_DATA_DIR)
    }
}

/// Parses a public URL: http or https, a host, maybe a port and a path, no
/// query and nothing that would need escaping in a header. Given back
/// without a trailing slash.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not an http(s) URL like https://registry.example.com");
    let uri: http::Uri = s.parse().map_err(|_| bad())?;
    let usable = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && uri.query().is_none()
        && !s.contains(['"', '\\', '#', '@']);
    usable
        .then(|| uri.to_string().trim_end_matches('/').to_owned())
        .ok_or_else(bad)
}

/// Parses a duration as humantime writes them: `90s`, `15m`, `1h`, `7d`,
/// `1h 30m`. A bare number is refused: its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        for (given, url) in [
            ("https://r.example", "https://r.example"),
            ("http://10.0.0.1:5000/", "http://10.0.0.1:5000"),
            ("https://r.example/berth/", "https://r.example/berth"),
        ] {
            assert_eq!(parse_public_url(given).as_deref(), Ok(url));
        }
        for bad in [
            "r.example",
            "ftp://r.example",
            "https://",
            "https://r.example/?a=b",
            "https://r.example/\"x",
            "https://r.example/\\x",
            "https://u@r.example",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "1", "h", "1x", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
