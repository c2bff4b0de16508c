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
use wasmtime_wasi::p2::bindings::sync::sockets::udp::{self, IpSocketAddress};
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
    udp::add_to_linker::<ModuleCtx, Reported>(linker, reported)?;
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
    /// Being replayed: datagrams are dropped, reported sent.
    replaying: bool,
    view: WasiSocketsCtxView<'a>,
}

fn reported(ctx: &mut ModuleCtx) -> ReportedSockets<'_> {
    ReportedSockets {
        grants: ctx.sockets_granted.clone(),
        replaying: ctx.replaying.load(std::sync::atomic::Ordering::Relaxed),
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

// The UDP interface, delegated but for `send`: while a module is replayed
// (a recovery, or a shadow run) a datagram already went out, or must not:
// it is reported sent and dropped, so that the guest takes the path it
// took the first time (a refusal would send it down another).
impl udp::Host for ReportedSockets<'_> {}

impl udp::HostUdpSocket for ReportedSockets<'_> {
    fn start_bind(
        &mut self,
        this: Resource<UdpSocket>,
        network: Resource<network::Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        udp::HostUdpSocket::start_bind(&mut self.view, this, network, local_address)
    }

    fn finish_bind(&mut self, this: Resource<UdpSocket>) -> SocketResult<()> {
        udp::HostUdpSocket::finish_bind(&mut self.view, this)
    }

    fn stream(
        &mut self,
        this: Resource<UdpSocket>,
        remote_address: Option<IpSocketAddress>,
    ) -> SocketResult<(
        Resource<udp::IncomingDatagramStream>,
        Resource<udp::OutgoingDatagramStream>,
    )> {
        udp::HostUdpSocket::stream(&mut self.view, this, remote_address)
    }

    fn local_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        udp::HostUdpSocket::local_address(&mut self.view, this)
    }

    fn remote_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        udp::HostUdpSocket::remote_address(&mut self.view, this)
    }

    fn address_family(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        udp::HostUdpSocket::address_family(&mut self.view, this)
    }

    fn unicast_hop_limit(&mut self, this: Resource<UdpSocket>) -> SocketResult<u8> {
        udp::HostUdpSocket::unicast_hop_limit(&mut self.view, this)
    }

    fn set_unicast_hop_limit(&mut self, this: Resource<UdpSocket>, value: u8) -> SocketResult<()> {
        udp::HostUdpSocket::set_unicast_hop_limit(&mut self.view, this, value)
    }

    fn receive_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        udp::HostUdpSocket::receive_buffer_size(&mut self.view, this)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<UdpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        udp::HostUdpSocket::set_receive_buffer_size(&mut self.view, this, value)
    }

    fn send_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        udp::HostUdpSocket::send_buffer_size(&mut self.view, this)
    }

    fn set_send_buffer_size(&mut self, this: Resource<UdpSocket>, value: u64) -> SocketResult<()> {
        udp::HostUdpSocket::set_send_buffer_size(&mut self.view, this, value)
    }

    fn subscribe(
        &mut self,
        this: Resource<UdpSocket>,
    ) -> wasmtime::Result<Resource<udp::Pollable>> {
        udp::HostUdpSocket::subscribe(&mut self.view, this)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        udp::HostUdpSocket::drop(&mut self.view, this)
    }
}

impl udp::HostIncomingDatagramStream for ReportedSockets<'_> {
    fn receive(
        &mut self,
        this: Resource<udp::IncomingDatagramStream>,
        max_results: u64,
    ) -> SocketResult<Vec<udp::IncomingDatagram>> {
        udp::HostIncomingDatagramStream::receive(&mut self.view, this, max_results)
    }

    fn subscribe(
        &mut self,
        this: Resource<udp::IncomingDatagramStream>,
    ) -> wasmtime::Result<Resource<udp::Pollable>> {
        udp::HostIncomingDatagramStream::subscribe(&mut self.view, this)
    }

    fn drop(&mut self, this: Resource<udp::IncomingDatagramStream>) -> wasmtime::Result<()> {
        udp::HostIncomingDatagramStream::drop(&mut self.view, this)
    }
}

impl udp::HostOutgoingDatagramStream for ReportedSockets<'_> {
    fn check_send(&mut self, this: Resource<udp::OutgoingDatagramStream>) -> SocketResult<u64> {
        udp::HostOutgoingDatagramStream::check_send(&mut self.view, this)
    }

    fn send(
        &mut self,
        this: Resource<udp::OutgoingDatagramStream>,
        datagrams: Vec<udp::OutgoingDatagram>,
    ) -> SocketResult<u64> {
        if self.replaying {
            return Ok(datagrams.len() as u64);
        }
        udp::HostOutgoingDatagramStream::send(&mut self.view, this, datagrams)
    }

    fn subscribe(
        &mut self,
        this: Resource<udp::OutgoingDatagramStream>,
    ) -> wasmtime::Result<Resource<udp::Pollable>> {
        udp::HostOutgoingDatagramStream::subscribe(&mut self.view, this)
    }

    fn drop(&mut self, this: Resource<udp::OutgoingDatagramStream>) -> wasmtime::Result<()> {
        udp::HostOutgoingDatagramStream::drop(&mut self.view, this)
    }
}
