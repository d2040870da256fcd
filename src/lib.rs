//! berth: a container image registry in one binary, as a library for
//! programs and tests that want one of their own.
//!
//! A test gets a private registry, on a free loopback port, with its data
//! in a temporary directory that goes away with it:
//!
//! ```
//! let registry = berth::Registry::builder().start().unwrap();
//! println!("push to {}", registry.host());
//! // Dropped: the server stops and its data is removed.
//! ```
//!
//! [`Builder`] adds images to load first ([`Builder::preload`]), users
//! ([`Builder::auth`]) and TLS ([`Builder::tls`]); [`Builder::serve`] runs
//! the registry on the caller's tokio runtime instead of a thread of its
//! own. [`Registry::start`] serves a [`Config`] as `berth serve` does.
//!
//! The modules not shown here serve the `berth` binary and berth's own
//! tests; they are not an API and change without notice.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod auth;
mod bounded;
#[doc(hidden)]
pub mod bulk;
pub mod config;
mod conn;
mod fixture;
#[doc(hidden)]
pub mod mirror;
#[doc(hidden)]
pub mod oci;
#[doc(hidden)]
pub mod ops;
mod pace;
#[cfg(test)]
mod props;
mod server;
#[doc(hidden)]
pub mod store;
mod tls;
#[doc(hidden)]
pub mod transfer;
#[doc(hidden)]
pub mod ui;
#[doc(hidden)]
pub mod upstream;
#[doc(hidden)]
pub mod whole_file;

pub use auth::AuthConfig;
pub use config::{Config, TlsConfig};
pub use fixture::{Builder, Running};
pub use ops::LogFormat;
pub use server::Registry;
pub use store::prune::Policy as PrunePolicy;
