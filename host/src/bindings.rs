//! Host bindings generated from the WIT package in `../wit`, the single
//! source of truth shared with the guests.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "module-imp",
});

pub use self::liveswap::module::types::Level;
