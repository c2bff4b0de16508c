//! The version-control repository (thesis 3.3.4): `.wasm` files by content
//! digest, compiled and pre-linked once, and the ed25519 signatures it
//! checks over each digest when it is given trusted keys.

mod repository;
pub mod signing;
mod world;

pub use repository::{CheckedFile, Fetcher, Repository, Version, is_reference};
pub use signing::digest;
