//! berth: a container image registry in one binary.
//!
//! [`Registry::start`] serves the OCI Distribution API over a data directory;
//! that is all an embedding program or a test needs:
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let mut config = berth::Config::new("/tmp/registry-data");
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let registry = berth::Registry::start(config).await?;
//! println!("pushing to {}", registry.url());
//! registry.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod config;
mod conn;
pub mod mirror;
pub mod oci;
pub mod ops;
mod server;
pub mod store;
mod tls;
pub mod transfer;
pub mod ui;
pub mod upstream;

pub use config::Config;
pub use server::Registry;
