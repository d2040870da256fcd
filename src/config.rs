//! Every knob the server has, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Database and blob files; created if missing.
    pub data_dir: PathBuf,
    /// Manifests larger than this are refused with 413.
    pub max_manifest_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A client that has not sent a request's headers within this is dropped.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long fails.
    pub body_idle_timeout: Duration,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_DATA_DIR: &str = "berth-data";
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Config {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            max_manifest_bytes: crate::api::DEFAULT_MAX_MANIFEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new(DEFAULT_DATA_DIR)
    }
}
