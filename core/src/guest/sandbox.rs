//! The sandbox of one module: what its WASI context may reach, built from
//! the grants of its `Load` and nothing else (no inherited environment,
//! arguments, stdio or directories), and the host's own report of every
//! socket address the sandbox refuses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use std::path::PathBuf;

use crate::bindings::Level;
use crate::error::LoadError;

/// A capability the administrator grants a module at `Load`. A module has
/// nothing else: no files, no network, no environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Send UDP datagrams to this address (`grant udp 127.0.0.1:9301`).
    Udp(SocketAddr),
    /// Open TCP connections to this address (`grant tcp 127.0.0.1:8080`).
    Tcp(SocketAddr),
    /// A host directory the guest sees at `guest`
    /// (`grant dir /srv/data /data ro`).
    Dir {
        /// The directory on the host; it must exist when the module loads.
        host: PathBuf,
        /// Where the guest finds it.
        guest: String,
        /// `rw`: the guest may create, write and remove files; `ro`: read only.
        writable: bool,
    },
    /// One environment variable (`grant env MODE=fast`).
    Env {
        /// Its name: not empty, no `=`.
        name: String,
        /// Its value.
        value: String,
    },
}

impl Grant {
    /// The grant for people (`Status`): `dir /srv/data -> /data (ro)`.
    pub fn describe(&self) -> String {
        match self {
            Grant::Dir {
                host,
                guest,
                writable,
            } => format!(
                "dir {} -> {guest} ({})",
                host.display(),
                if *writable { "rw" } else { "ro" }
            ),
            Grant::Env { name, value } => format!("env {name}={value}"),
            other => other.to_string(),
        }
    }
}

/// The grant as the command language writes it, after `grant`: it parses
/// back to the same grant.
impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Udp(a) => write!(f, "udp {a}"),
            Grant::Tcp(a) => write!(f, "tcp {a}"),
            Grant::Dir {
                host,
                guest,
                writable,
            } => write!(
                f,
                "dir {} {} {}",
                crate::words::quote(&host.to_string_lossy()),
                crate::words::quote(guest),
                if *writable { "rw" } else { "ro" }
            ),
            Grant::Env { name, value } => {
                write!(f, "env {}", crate::words::quote(&format!("{name}={value}")))
            }
        }
    }
}

/// Check, before anything is instantiated, that every grant can be given:
/// each granted directory exists on the host and is a directory.
pub(crate) fn check(grants: &[Grant]) -> Result<(), LoadError> {
    for g in grants {
        if let Grant::Dir { host, .. } = g {
            let refuse = |reason: String| LoadError::Grant {
                grant: g.to_string(),
                reason,
            };
            let meta =
                std::fs::metadata(host).map_err(|e| refuse(format!("{}: {e}", host.display())))?;
            if !meta.is_dir() {
                return Err(refuse(format!("{} is not a directory", host.display())));
            }
        }
    }
    Ok(())
}

/// Who a refusal report names: the module (through its log gate), and
/// its version once known.
pub(crate) struct Reporter {
    /// `info().version`, set after instantiation.
    pub label: Arc<OnceLock<Arc<str>>>,
    /// Where the report goes, rate-limited like the module's own lines.
    pub gate: Arc<super::LogGate>,
}

/// Give the context exactly `grants`: preopened directories, environment
/// variables and socket addresses. Fails if a granted directory cannot be
/// opened.
pub(crate) fn apply(
    b: &mut WasiCtxBuilder,
    grants: &Arc<[Grant]>,
    reporter: Reporter,
    replaying: Arc<AtomicBool>,
) -> Result<(), String> {
    for g in grants.iter() {
        match g {
            Grant::Dir {
                host,
                guest,
                writable,
            } => {
                let perms = if *writable {
                    FsPerms::ReadWrite
                } else {
                    FsPerms::ReadOnly
                };
                b.preopened_dir(host, guest, perms)
                    .map_err(|e| format!("cannot grant `{g}`: {e:#}"))?;
            }
            Grant::Env { name, value } => {
                b.env(name, value);
            }
            Grant::Udp(_) | Grant::Tcp(_) => {}
        }
    }
    // No socket at all without a grant of its kind: each one holds a host
    // file descriptor (`super::sockets` reports the refusal). With a
    // grant, every use of a socket (bind, connect, send, listen, accept,
    // receive) goes through the address check below.
    let udp = grants.iter().any(|g| matches!(g, Grant::Udp(_)));
    let tcp = grants.iter().any(|g| matches!(g, Grant::Tcp(_)));
    b.allow_udp(udp).allow_tcp(tcp).allow_ip_name_lookup(false);
    let allowed = grants.clone();
    b.socket_addr_check(move |addr, use_| {
        // What a replayed message sends or connects to happened the first
        // time: dropped, and not a refusal to report.
        let replay = replaying.load(Ordering::Relaxed)
            && matches!(use_, SocketAddrUse::UdpSend | SocketAddrUse::TcpConnect);
        let ok = !replay && permitted(&allowed, addr, use_);
        if !ok && !replay {
            reporter.refused(addr, use_);
        }
        Box::pin(async move { ok })
    });
    Ok(())
}

/// Whether `grants` allow `use_` of `addr`.
fn permitted(grants: &[Grant], addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        // A socket must be bound before it sends or connects; binding to a
        // local ephemeral port reaches nobody (and listening is refused).
        SocketAddrUse::UdpBind | SocketAddrUse::TcpBind => {
            addr.port() == 0 && (addr.ip().is_unspecified() || addr.ip().is_loopback())
        }
        SocketAddrUse::UdpSend => grants.contains(&Grant::Udp(addr)),
        SocketAddrUse::TcpConnect => grants.contains(&Grant::Tcp(addr)),
        _ => false,
    }
}

impl Reporter {
    /// Report a refusal the guest asked for. Incoming datagrams and
    /// connections that are dropped are not the guest's doing, and a flood
    /// of them must not flood the log: those go unreported.
    fn refused(&self, addr: SocketAddr, use_: SocketAddrUse) {
        let what = match use_ {
            SocketAddrUse::UdpBind => format!("udp bind to {addr}"),
            SocketAddrUse::UdpSend => format!("udp send to {addr}"),
            SocketAddrUse::TcpBind => format!("tcp bind to {addr}"),
            SocketAddrUse::TcpConnect => format!("tcp connect to {addr}"),
            SocketAddrUse::TcpListen => format!("tcp listen on {addr}"),
            SocketAddrUse::UdpReceive | SocketAddrUse::TcpAccept => return,
        };
        let version = self.label.get().map_or("?", |v| &**v);
        self.gate.log(
            version,
            Level::Warn,
            format!("sandbox: refused {what} (not granted)"),
        );
    }
}
