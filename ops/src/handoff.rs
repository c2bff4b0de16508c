//! Handing a running host over to a new process (a new `liveswap` binary)
//! on the same state directory, as nginx and Envoy hand over their
//! listening sockets.
//!
//! The old host listens on `<state dir>/handoff.sock`. A new host started
//! with `--take-over` connects and asks (`TAKE-OVER <pid>`). The old host
//! stops every module between two messages, makes everything durable,
//! lets the directory go, and answers `READY` with its admin endpoint's
//! listening sockets attached (SCM_RIGHTS): admin clients that connect
//! meanwhile wait in the socket's backlog. The new host opens the
//! directory, restores every module, serves the sockets, and answers
//! `SERVING`; the old one exits. If the new host answers `FAILED`, or
//! goes away, or says nothing within the bound, the old host opens the
//! directory again and serves on: a handoff is all or nothing.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::admin::Listeners;

/// The socket a host with a state directory takes handoff requests on.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("handoff.sock")
}

/// A host's handoff socket: requests arrive on [`HandoffPoint::requests`].
pub struct HandoffPoint {
    path: PathBuf,
    /// The socket file's inode: removed at the end only if still ours
    /// (the next host binds its own in the same place).
    inode: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Receiver<(UnixStream, String)>,
}

impl HandoffPoint {
    /// Listen in `state_dir` (a stale socket file is replaced: the
    /// directory's lock says this host owns it).
    pub fn start(state_dir: &Path) -> io::Result<HandoffPoint> {
        let path = socket_path(state_dir);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(&path)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, requests) = bounded(1);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("handoff".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((s, _)) => {
                                if let Some(r) = read_request(s) {
                                    let _ = tx.send(r);
                                }
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })?
        };
        Ok(HandoffPoint {
            path,
            inode,
            stop,
            thread: Some(thread),
            requests,
        })
    }

    /// Handoff requests: the connection and who asks.
    pub fn requests(&self) -> &Receiver<(UnixStream, String)> {
        &self.requests
    }
}

impl Drop for HandoffPoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_request(s: UnixStream) -> Option<(UnixStream, String)> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    let who = line.trim().strip_prefix("TAKE-OVER ")?.to_string();
    Some((s, who))
}

/// Old host: say READY with the admin sockets attached.
pub fn send_ready(s: &UnixStream, listeners: &Listeners) -> io::Result<()> {
    let mut fds: Vec<RawFd> = Vec::new();
    let mut what = Vec::new();
    if let Some(l) = &listeners.unix {
        fds.push(l.as_raw_fd());
        what.push("unix");
    }
    if let Some(l) = &listeners.tcp {
        fds.push(l.as_raw_fd());
        what.push("tcp");
    }
    let line = format!("READY {}\n", what.join(","));
    let iov = [IoSlice::new(line.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).map_err(io::Error::from)?;
    Ok(())
}

/// Old host: wait for the new host's word. `Ok` with its line if it
/// serves; `Err` with why not.
pub fn await_serving(s: &UnixStream, bound: Duration) -> Result<String, String> {
    s.set_read_timeout(Some(bound)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(0) => Err("the new host went away before it served".into()),
        Ok(_) => match line.trim().split_once(' ') {
            Some(("SERVING", rest)) => Ok(rest.to_string()),
            Some(("FAILED", why)) => Err(why.to_string()),
            _ => Err(format!("the new host said `{}`", line.trim())),
        },
        Err(e) => Err(format!("no word from the new host within {bound:?}: {e}")),
    }
}

/// New host: ask the host serving `state_dir` to hand over, and receive
/// its admin sockets once it has let the directory go.
pub fn take_over(state_dir: &Path, bound: Duration) -> io::Result<(UnixStream, Listeners)> {
    let path = socket_path(state_dir);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no host takes handoffs at {}: {e}", path.display()),
        )
    })?;
    writeln!(s, "TAKE-OVER {}", std::process::id())?;
    s.set_read_timeout(Some(bound))?;
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        (msg.bytes, fds)
    };
    let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    let Some(what) = line.strip_prefix("READY") else {
        return Err(io::Error::other(format!(
            "the old host did not hand over: `{line}`"
        )));
    };
    // SAFETY: each descriptor was just received with SCM_RIGHTS and is
    // owned by nothing else in this process.
    let mut owned = fds
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let mut listeners = Listeners::default();
    for kind in what.trim().split(',').filter(|k| !k.is_empty()) {
        let Some(fd) = owned.next() else { break };
        match kind {
            "unix" => listeners.unix = Some(UnixListener::from(fd)),
            "tcp" => listeners.tcp = Some(TcpListener::from(fd)),
            _ => {}
        }
    }
    Ok((s, listeners))
}

/// New host: tell the old one how the takeover went.
pub fn answer(mut s: &UnixStream, outcome: Result<String, String>) {
    let line = match outcome {
        Ok(detail) => format!("SERVING {detail}\n"),
        Err(why) => format!("FAILED {}\n", why.replace('\n', " ")),
    };
    let _ = s.write_all(line.as_bytes());
}
