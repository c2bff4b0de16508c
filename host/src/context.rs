//! The data each module's `Store` holds: its WASI context (nothing granted
//! by default), its limits, and a narrow handle on the host services its
//! imports delegate to.

use std::sync::{Arc, OnceLock};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::Level;
use crate::command::Grant;
use crate::services::Services;
use crate::stdio::GuestOutput;

/// Store data of one implementation.
pub struct ModuleCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table limits for this store.
    pub(crate) limits: StoreLimits,
    /// The module name this implementation serves under.
    pub(crate) name: Arc<str>,
    /// `info().version`, set once known; shared with the stdout/stderr
    /// streams, which are made before it is.
    pub(crate) label: Arc<OnceLock<Arc<str>>>,
    /// Protocol versions this implementation may send.
    pub(crate) speaks: Arc<[u32]>,
    /// The host services behind the imports.
    pub(crate) services: Arc<Services>,
}

impl ModuleCtx {
    /// A context with nothing granted but `grants`: no files, no
    /// environment, no inherited stdio, and only the granted addresses
    /// (see [`crate::sandbox`]). Fails if a granted directory cannot be
    /// opened.
    pub(crate) fn new(
        name: Arc<str>,
        services: Arc<Services>,
        memory_limit: usize,
        grants: &Arc<[Grant]>,
    ) -> Result<Self, String> {
        let mut b = WasiCtx::builder();
        let label: Arc<OnceLock<Arc<str>>> = Arc::default();
        b.stdout(GuestOutput::new(
            name.clone(),
            label.clone(),
            Level::Info,
            services.clone(),
        ));
        b.stderr(GuestOutput::new(
            name.clone(),
            label.clone(),
            Level::Warn,
            services.clone(),
        ));
        crate::sandbox::apply(
            &mut b,
            grants,
            crate::sandbox::Reporter {
                name: name.clone(),
                label: label.clone(),
                services: services.clone(),
            },
        )?;
        let wasi = b.build();
        Ok(ModuleCtx {
            wasi,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(16)
                .build(),
            name,
            label,
            speaks: Arc::from(Vec::new()),
            services,
        })
    }
}

impl ModuleCtx {
    /// `info().version`, or `?` before it is known.
    pub(crate) fn version(&self) -> &str {
        self.label.get().map(|v| &**v).unwrap_or("?")
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
