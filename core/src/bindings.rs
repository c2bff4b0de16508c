//! The WIT contract: host bindings generated from the package in `../wit`,
//! the single
//! source of truth shared with the guests. The lowest layer: it imports
//! nothing of this crate.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "module-imp",
});

pub use self::liveswap::module::types::Level;
