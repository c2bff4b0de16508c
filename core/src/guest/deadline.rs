//! Call deadlines that reach into blocking WASI calls. The epoch deadline
//! interrupts a guest running WebAssembly, but not one waiting in the host:
//! a `std::thread::sleep`, or any wait on a pollable, blocks in
//! `wasi:io/poll`. This module shadows that interface with the same
//! implementation bounded by the current call's deadline: a wait still
//! pending then ends the call as an epoch interrupt would (a trap the
//! instance is not entered after), so every guest call ends at its
//! deadline, blocked or not.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::runtime::in_tokio;

use super::ModuleCtx;

/// Replace `wasi:io/poll` in `linker` (which already has the WASI
/// interfaces) by its deadline-bounded form.
pub(crate) fn add_to_linker(linker: &mut Linker<ModuleCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    sync_poll::add_to_linker::<ModuleCtx, Bounded>(linker, |ctx| BoundedTable {
        by: ctx.call_ends,
        table: &mut ctx.table,
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The `HasData` of the shadowing interface.
struct Bounded;

impl HasData for Bounded {
    type Data<'a> = BoundedTable<'a>;
}

/// A module's resource table, with the instant its current call must end.
pub(crate) struct BoundedTable<'a> {
    table: &'a mut ResourceTable,
    by: Instant,
}

/// Wait for `f`, but not past `by`: then the call is interrupted.
fn until<T>(by: Instant, f: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    in_tokio(async move {
        match tokio::time::timeout_at(tokio::time::Instant::from_std(by), f).await {
            Ok(r) => r,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        }
    })
}

impl sync_poll::Host for BoundedTable<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        until(self.by, async_poll::Host::poll(self.table, pollables))
    }
}

impl sync_poll::HostPollable for BoundedTable<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        until(
            self.by,
            async_poll::HostPollable::ready(self.table, pollable),
        )
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        until(
            self.by,
            async_poll::HostPollable::block(self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}
