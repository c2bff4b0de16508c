//! No socket without a grant. A socket reaches nobody until an address is
//! checked, but each one holds a host file descriptor: a guest with no
//! grant of a kind may not create a socket of that kind at all
//! (`sandbox::apply` turns the kind off), and this module makes the host
//! say so under the module's name, as it does for a refused address. It
//! shadows the two socket constructors with the same implementation plus
//! that report.

use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::bindings::sync::sockets::udp_create_socket;
use wasmtime_wasi::p2::bindings::sync::sockets::udp_create_socket::IpAddressFamily;
use wasmtime_wasi::p2::{SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};

use super::{LogGate, ModuleCtx};
use crate::bindings::Level;

/// Replace the socket constructors in `linker` (which already has the
/// WASI interfaces) by their reporting form.
pub(crate) fn add_to_linker(linker: &mut Linker<ModuleCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    udp_create_socket::add_to_linker::<ModuleCtx, Reported>(linker, reported)?;
    tcp_create_socket::add_to_linker::<ModuleCtx, Reported>(linker, reported)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Which kinds of socket a module was granted, and where a refusal is
/// reported.
#[derive(Clone)]
pub(crate) struct SocketGrants {
    /// A `grant udp` was given.
    pub udp: bool,
    /// A `grant tcp` was given.
    pub tcp: bool,
    /// The module's log gate.
    pub gate: Arc<LogGate>,
    /// Its version label, once known.
    pub label: Arc<OnceLock<Arc<str>>>,
}

impl SocketGrants {
    fn refused(&self, kind: &str) {
        let version = self.label.get().map_or("?", |v| &**v);
        self.gate.log(
            version,
            Level::Warn,
            format!("sandbox: refused a {kind} socket (no {kind} grant)"),
        );
    }
}

struct Reported;

impl HasData for Reported {
    type Data<'a> = ReportedSockets<'a>;
}

/// The sockets view of one module, with its grants.
pub(crate) struct ReportedSockets<'a> {
    grants: SocketGrants,
    view: WasiSocketsCtxView<'a>,
}

fn reported(ctx: &mut ModuleCtx) -> ReportedSockets<'_> {
    ReportedSockets {
        grants: ctx.sockets_granted.clone(),
        view: ctx.sockets(),
    }
}

impl udp_create_socket::Host for ReportedSockets<'_> {
    fn create_udp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        if !self.grants.udp {
            self.grants.refused("udp");
        }
        udp_create_socket::Host::create_udp_socket(&mut self.view, family)
    }
}

impl tcp_create_socket::Host for ReportedSockets<'_> {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        if !self.grants.tcp {
            self.grants.refused("tcp");
        }
        tcp_create_socket::Host::create_tcp_socket(&mut self.view, family)
    }
}

// The constructors' interfaces name the network's error type: delegated.
impl network::Host for ReportedSockets<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.view, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi::p2::bindings::io::error::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.view, err)
    }
}

impl network::HostNetwork for ReportedSockets<'_> {
    fn drop(&mut self, this: Resource<network::Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.view, this)
    }
}
