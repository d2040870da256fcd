//! OCI image layouts and their tar archives, for carrying images across an
//! air gap: `berth export` writes them from a store.

pub mod export;
mod layout;

pub use export::{Selection, Summary, export};
