//! OCI image layouts and their tar archives, for carrying images across an
//! air gap: `berth export` writes them from a store, `berth import` reads
//! them into one.

mod archive;
mod checked;
pub mod export;
pub mod import;
mod layout;
mod progress;
pub mod registry;

pub use export::{Selection, Summary, export};
pub use import::import;
pub use progress::Progress;
pub use registry::Registry;
