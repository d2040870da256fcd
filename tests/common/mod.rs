//! Shared by the integration test crates; each uses only part of it.
#![allow(dead_code)]

pub mod clients;
pub mod cluster;
pub mod cut_relay;
pub mod distribution;
pub mod dockerd;
pub mod http;
pub mod layout;
pub mod podman;
pub mod process;
pub mod skopeo;
pub mod transfer;
pub mod webdriver;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the embedded store keeps blob `digest` (`ALGORITHM:HEX`) in the
/// data directory `data`: `blobs/ALGORITHM/<first two of HEX>/HEX`.
pub fn blob_file(data: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest");
    data.join("blobs").join(algorithm).join(&hex[..2]).join(hex)
}

/// Which engine the registries a test starts run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    /// PostgreSQL and Swift's S3 API (see `cluster`).
    Cluster,
}

thread_local! {
    static ENGINE: Cell<Engine> = const { Cell::new(Engine::Embedded) };
}

/// The engine this test's registries run on.
pub fn engine() -> Engine {
    ENGINE.with(Cell::get)
}

/// Runs a test body with its registries on `engine`.
pub fn on_engine(engine: Engine, test: impl FnOnce()) {
    ENGINE.with(|e| e.set(engine));
    test();
}

/// Defines each test twice: in `embedded`, on the embedded store, and in
/// `cluster`, on the clustered one. The API and its guarantees are the
/// same on both, so are their tests.
#[allow(unused_macros)]
macro_rules! both_engines {
    ($( $(#[$attr:meta])* fn $name:ident() $body:block )*) => {
        mod embedded {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$attr])*
                fn $name() {
                    common::on_engine(common::Engine::Embedded, || $body)
                }
            )*
        }
        mod cluster {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$attr])*
                fn $name() {
                    common::on_engine(common::Engine::Cluster, || $body)
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_engines;

/// A berth server on a random loopback port with its data in a temp dir,
/// stopped and thrown away on drop.
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    registry: Option<berth::Registry>,
    runtime: tokio::runtime::Runtime,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_in(tempfile::tempdir().expect("temp dir"))
    }

    /// Starts a registry over an existing data directory (to test restarts).
    pub fn start_in(data: tempfile::TempDir) -> TestRegistry {
        Self::start_with(data, |_| {})
    }

    /// Starts a registry with some knobs changed (short timeouts, small limits).
    pub fn start_with(
        data: tempfile::TempDir,
        tune: impl FnOnce(&mut berth::Config),
    ) -> TestRegistry {
        // Captured with the test's output: a failing test shows what the
        // registry warned of (RUST_LOG says more).
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .is_test(true)
            .try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = berth::Config::new(data.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        if engine() == Engine::Cluster {
            config.cluster = Some(cluster::settings_for(data.path()));
        }
        tune(&mut config);
        let registry = runtime
            .block_on(berth::Registry::start(config))
            .expect("registry starts");
        TestRegistry {
            addr: registry.local_addr(),
            data,
            registry: Some(registry),
            runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where `/metrics` and the probes are, when on an address of their own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.registry.as_ref().and_then(|r| r.metrics_addr())
    }

    /// Host and port, as skopeo and docker write them in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server cleanly and hands back its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(registry) = self.registry.take() {
            self.runtime.block_on(registry.shutdown());
        }
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.take() {
            self.runtime.block_on(registry.shutdown());
        }
    }
}
