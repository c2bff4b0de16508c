//! Paths of the guest modules, compiled to WebAssembly components by this
//! crate's build script. Each constant is the absolute path of a `.wasm`
//! file, named after its crate in upper snake case (`probe-v1` → `PROBE_V1`).
//! `ALL` lists every (crate name, path) pair.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
