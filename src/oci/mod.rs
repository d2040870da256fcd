//! Pure OCI data: names, digests, manifests. No I/O here.

pub mod digest;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use manifest::{MediaType, ParsedManifest};
pub use name::{Reference, RepoName, Tag};
