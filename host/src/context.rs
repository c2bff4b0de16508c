//! The data each module's `Store` holds: its WASI context (nothing granted
//! by default), its limits, and a narrow handle on the host services its
//! imports delegate to.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::services::Services;

/// Store data of one implementation.
pub struct ModuleCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table limits for this store.
    pub(crate) limits: StoreLimits,
    /// The module name this implementation serves under.
    pub(crate) name: Arc<str>,
    /// `info().version`, once known; used to label log lines.
    pub(crate) version: Arc<str>,
    /// Protocol versions this implementation may send.
    pub(crate) speaks: Arc<[u32]>,
    /// The host services behind the imports.
    pub(crate) services: Arc<Services>,
}

impl ModuleCtx {
    /// A context with nothing granted: no files, no network, no
    /// environment, no inherited stdio.
    pub(crate) fn new(name: Arc<str>, services: Arc<Services>, memory_limit: usize) -> Self {
        let wasi = WasiCtx::builder().build();
        ModuleCtx {
            wasi,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(16)
                .build(),
            name,
            version: Arc::from("?"),
            speaks: Arc::from(Vec::new()),
            services,
        }
    }
}

impl WasiView for ModuleCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
