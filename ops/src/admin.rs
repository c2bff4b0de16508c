//! The admin endpoint: the command language over a Unix socket (mode 0600)
//! and, when asked, over TCP with a token. One command per line, so `nc`
//! and `socat` work.
//!
//! Protocol. Each command gets zero or more output lines starting with
//! `| `, then exactly one final line: `OK <outcome>` (`done`, `committed`,
//! `aborted`, `refused`) or `ERR <message>`. After `Json on`, each reply is
//! instead one JSON object per line (`{"progress":..}` lines, then one with
//! `"ok"`). Special commands: `Auth <token>` (TCP: must come first),
//! `Json on|off`, `Watch` (stream every event until the client sends a
//! line), `Quit` (end this session; the host serves on).
//!
//! Commands from all clients run one at a time (the runtime serializes
//! them); a client that has to wait is told for what.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use liveswap::{Event, Runtime};

use crate::{Reply, ToJson, ToText, execute_line_data};

/// Longest command line accepted; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;
/// Unix-socket clients served at once; more are turned away.
pub const MAX_CLIENTS: usize = 32;
/// TCP clients served at once, authenticated or not: a pool of their own,
/// so that connections from the network never lock out a local operator.
pub const MAX_TCP_CLIENTS: usize = 8;
/// Time a TCP client has to authenticate.
const AUTH_WINDOW: Duration = Duration::from_secs(10);
/// A session that sends nothing for this long is closed (unless it is
/// watching events).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);
/// Shortest admin token accepted.
pub const MIN_TOKEN: usize = 16;
/// A reply that cannot be written within this long ends the session (a
/// client that does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loops look at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Where and how to listen.
#[derive(Clone, Debug, Default)]
pub struct AdminOptions {
    /// Unix socket path (see [`default_socket_path`]).
    pub unix: Option<PathBuf>,
    /// TCP address (loopback), which needs `token`.
    pub tcp: Option<SocketAddr>,
    /// The token TCP clients must give (at least [`MIN_TOKEN`] characters).
    pub token: Option<String>,
    /// Close a session idle this long (default [`DEFAULT_IDLE`]).
    pub idle: Option<Duration>,
    /// Listeners already bound, handed over by the host this one takes
    /// over from (`unix` and `tcp` then only name them).
    pub inherited: Listeners,
}

/// The admin endpoint's listening sockets, as handed from one host to the
/// next: clients that connect meanwhile wait in their backlog.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The Unix socket.
    pub unix: Option<UnixListener>,
    /// The TCP socket.
    pub tcp: Option<TcpListener>,
}

impl Clone for Listeners {
    fn clone(&self) -> Self {
        Listeners {
            unix: self.unix.as_ref().and_then(|l| l.try_clone().ok()),
            tcp: self.tcp.as_ref().and_then(|l| l.try_clone().ok()),
        }
    }
}

/// `$XDG_RUNTIME_DIR/liveswap/admin.sock`, or `/tmp/liveswap-<uid>/admin.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("liveswap").join("admin.sock"),
        _ => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self")
                .map(|m| m.uid())
                .unwrap_or(0);
            PathBuf::from(format!("/tmp/liveswap-{uid}")).join("admin.sock")
        }
    }
}

/// Compare two tokens in time independent of where they differ (both are
/// hashed first, so of their lengths too).
pub fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A running admin endpoint.
pub struct AdminServer {
    unix: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Copies of the listeners, for a handover.
    kept: Listeners,
}

struct Shared {
    rt: Arc<Runtime>,
    token: Option<String>,
    /// Sessions under way, per pool: Unix socket, TCP.
    clients: AtomicUsize,
    tcp_clients: AtomicUsize,
    next_client: AtomicU64,
    stop: Arc<AtomicBool>,
    idle: Duration,
    /// Wrong tokens in a row, host-wide: each makes the next refusal wait
    /// longer (up to 2 s), so guessing is slow however many connections
    /// an attacker opens.
    auth_failures: AtomicU64,
}

impl AdminServer {
    /// Start listening. Fails if the socket path is served by a live host.
    pub fn start(rt: Arc<Runtime>, mut opts: AdminOptions) -> io::Result<AdminServer> {
        if let Some(t) = &opts.token
            && t.chars().count() < MIN_TOKEN
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the admin token is {} characters; it must have at least {MIN_TOKEN}",
                    t.chars().count()
                ),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            rt,
            token: opts.token.clone(),
            clients: AtomicUsize::new(0),
            tcp_clients: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            stop: stop.clone(),
            idle: opts.idle.unwrap_or(DEFAULT_IDLE),
            auth_failures: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let mut unix = None;
        let mut kept = Listeners::default();
        if let Some(path) = &opts.unix {
            let listener = match opts.inherited.unix.take() {
                Some(l) => {
                    l.set_nonblocking(true)?;
                    l
                }
                None => bind_unix(path)?,
            };
            kept.unix = Some(listener.try_clone()?);
            unix = Some(path.clone());
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("admin-unix".into())
                    .spawn(move || {
                        while let Some(conn) = accept(&shared.stop, || listener.accept()) {
                            let n = shared.next_client.fetch_add(1, Ordering::Relaxed);
                            serve(shared.clone(), conn.0, format!("unix:{n}"), false);
                        }
                    })?,
            );
        }
        let mut tcp = None;
        if let Some(addr) = opts.tcp {
            if opts.token.as_deref().unwrap_or("").is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the TCP admin endpoint needs a token (--token-file)",
                ));
            }
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the TCP admin endpoint listens on loopback only, not {addr}"),
                ));
            }
            let listener = match opts.inherited.tcp.take() {
                Some(l) => l,
                None => TcpListener::bind(addr)?,
            };
            listener.set_nonblocking(true)?;
            kept.tcp = Some(listener.try_clone()?);
            tcp = Some(listener.local_addr()?);
            let shared = shared.clone();
            threads.push(std::thread::Builder::new().name("admin-tcp".into()).spawn(
                move || {
                    while let Some((conn, peer)) = accept(&shared.stop, || listener.accept()) {
                        serve(shared.clone(), conn, format!("tcp:{peer}"), true);
                    }
                },
            )?);
        }
        Ok(AdminServer {
            unix,
            tcp,
            stop,
            threads,
            kept,
        })
    }

    /// Stop accepting clients but keep the sockets open (and the socket
    /// file in place), and give them up for the next host.
    pub fn hand_over(&mut self) -> Listeners {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.unix = None;
        std::mem::take(&mut self.kept)
    }

    /// The Unix socket path, if serving one.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_deref()
    }

    /// The TCP address, if serving one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Stop accepting clients and remove the socket file.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        // The accept loops poll the flag: nothing needs the socket path
        // (which may have been removed) to wake them.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accept the next connection, non-blocking, looking at `stop` every
/// [`ACCEPT_POLL`]; `None` once it is set.
fn accept<C, A>(stop: &AtomicBool, mut f: impl FnMut() -> io::Result<(C, A)>) -> Option<(C, A)> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match f() {
            Ok(c) => return Some(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: wait a little rather than spin.
                tracing::warn!("admin: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// This process's user id.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Refuse a socket directory another user could have planted or can
/// write in: it must be a real directory (not a symlink), owned by this
/// user, and writable by no one else.
fn check_socket_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: {why}; refusing to serve the admin socket there (choose another with --admin)",
                dir.display()
            ),
        )
    };
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refuse("a symbolic link, not a directory".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    let me = my_uid();
    if meta.uid() != me {
        return Err(refuse(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {:o}: others may write in it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        if std::fs::symlink_metadata(dir).is_err() {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Created 0700 in one step: never open to others.
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        // Whether made now or found: someone may have been first.
        check_socket_dir(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another liveswap host is serving {} (give this one another path with --admin, or --no-admin)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?; // stale, from a host that died
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A stream the session can read from and write to from two threads.
trait Conn: Read + Write + Send + 'static {
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>>;
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()>;
    /// Blocking, with a write timeout (accepted sockets inherit the
    /// listener's non-blocking mode on some systems).
    fn prepare(&self) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn prepare(&self) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_write_timeout(Some(WRITE_TIMEOUT))
    }
}

impl Conn for TcpStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn prepare(&self) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_write_timeout(Some(WRITE_TIMEOUT))
    }
}

impl Shared {
    /// The pool a session counts in, and its size: TCP clients (which must
    /// authenticate) apart from the Unix socket's.
    fn pool(&self, needs_auth: bool) -> (&AtomicUsize, usize) {
        if needs_auth {
            (&self.tcp_clients, MAX_TCP_CLIENTS)
        } else {
            (&self.clients, MAX_CLIENTS)
        }
    }
}

fn serve<C: Conn>(shared: Arc<Shared>, conn: C, origin: String, needs_auth: bool) {
    let (pool, max) = shared.pool(needs_auth);
    if conn.prepare().is_err() {
        return;
    }
    if pool.fetch_add(1, Ordering::AcqRel) >= max {
        pool.fetch_sub(1, Ordering::AcqRel);
        let mut conn = conn;
        let _ = conn.write_all(b"ERR too many admin clients; try again later\n");
        tracing::warn!(%origin, "admin: turned away, {max} clients already");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name(format!("admin-{origin}"))
        .spawn({
            let shared = shared.clone();
            move || {
                if let Err(e) = session(&shared, conn, &origin, needs_auth) {
                    tracing::debug!(%origin, "admin session ended: {e}");
                }
                shared.pool(needs_auth).0.fetch_sub(1, Ordering::AcqRel);
            }
        });
    if spawned.is_err() {
        shared.pool(needs_auth).0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Line {
    Text(String),
    NotUtf8,
    TooLong,
    Eof,
}

fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        // Either longer than allowed, or a half line and then end of input.
        return Ok(if buf.len() > MAX_LINE {
            Line::TooLong
        } else {
            Line::Eof
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(match String::from_utf8(std::mem::take(buf)) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::NotUtf8,
    })
}

/// The writing half, shared with the progress forwarder.
type Out = Arc<Mutex<Box<dyn Conn>>>;

fn send_line(out: &Out, line: &str) -> io::Result<()> {
    let mut w = out.lock().expect("admin writer poisoned");
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")?;
    w.flush()
}

fn session<C: Conn>(shared: &Shared, conn: C, origin: &str, needs_auth: bool) -> io::Result<()> {
    let out: Out = Arc::new(Mutex::new(conn.try_clone_conn()?));
    let mut reader = BufReader::new(conn);
    let mut buf = Vec::new();
    let mut json = false;

    if needs_auth {
        reader.get_ref().set_timeout(Some(AUTH_WINDOW))?;
        let expected = shared.token.clone().unwrap_or_default();
        let ok = match read_line(&mut reader, &mut buf) {
            Ok(Line::Text(l)) => match l.split_once(' ') {
                Some((word, token)) if word.eq_ignore_ascii_case("auth") => {
                    token_matches(token.trim(), &expected)
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            tracing::warn!(%origin, "admin: refused a client with no or a wrong token");
            // Each wrong token in a row makes the next refusal slower.
            let n = shared.auth_failures.fetch_add(1, Ordering::AcqRel) + 1;
            std::thread::sleep(Duration::from_millis((50 * n).min(2000)));
            let _ = send_line(
                &out,
                "ERR unauthorized: the first line must be `Auth <token>`",
            );
            return Ok(());
        }
        shared.auth_failures.store(0, Ordering::Release);
        send_line(&out, "OK authenticated")?;
    }
    reader.get_ref().set_timeout(Some(shared.idle))?;

    loop {
        let line = match read_line(&mut reader, &mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let _ = reply_err(&out, json, &format!("idle for {:?}; closing", shared.idle));
                return Ok(());
            }
            r => r?,
        };
        let line = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                send_line(
                    &out,
                    &format!("ERR line longer than {MAX_LINE} bytes; closing"),
                )?;
                return Ok(());
            }
            Line::NotUtf8 => {
                reply_err(&out, json, "the line is not UTF-8")?;
                continue;
            }
            Line::Text(l) => l,
        };
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        let head = words.next().unwrap_or("").to_ascii_lowercase();
        match head.as_str() {
            "" => continue,
            "auth" => {
                reply_err(&out, json, "already authenticated")?;
            }
            "json" => {
                json = !matches!(
                    words.next().map(str::to_ascii_lowercase).as_deref(),
                    Some("off")
                );
                reply_ok(&out, json, "done", "", None)?;
            }
            "quit" | "exit" => {
                reply_ok(&out, json, "done", "bye", None)?;
                return Ok(());
            }
            "watch" => watch(shared, &out, &mut reader, json)?,
            _ => {
                if shared.stop.load(Ordering::Relaxed) {
                    reply_err(&out, json, "the host is shutting down")?;
                    return Ok(());
                }
                run_command(shared, &out, trimmed, origin, json)?;
            }
        }
    }
}

fn run_command(shared: &Shared, out: &Out, line: &str, origin: &str, json: bool) -> io::Result<()> {
    if let Some((busy, by)) = shared.rt.current_command() {
        progress(
            out,
            json,
            &format!("waiting: the host is running `{busy}` for {by}"),
        )?;
    }
    // Forward this command's progress while it runs; dropping `done_tx`
    // ends the forwarder at once.
    let events = shared.rt.watch();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let forwarder = {
        let out = out.clone();
        let origin = origin.to_string();
        std::thread::spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(events) -> e => match e {
                        Ok(Event::Progress { origin: o, text }) if o == origin => {
                            let _ = progress(&out, json, &text);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    recv(done_rx) -> _ => {
                        // Progress emitted before the command ended is
                        // already queued: forward it before the reply.
                        while let Ok(e) = events.try_recv() {
                            if let Event::Progress { origin: o, text } = e
                                && o == origin
                            {
                                let _ = progress(&out, json, &text);
                            }
                        }
                        return;
                    }
                }
            }
        })
    };
    let result = execute_line_data(&shared.rt, line, origin);
    drop(done_tx);
    let _ = forwarder.join();
    match result {
        Ok(None) => reply_ok(out, json, "done", "", None),
        Ok(Some((Reply::Done(m), data))) | Ok(Some((Reply::Text(m), data))) => {
            reply_ok(out, json, "done", &m, data.map(|d| ("data", d)))
        }
        Ok(Some((Reply::Quit, _))) => reply_ok(
            out,
            json,
            "done",
            "Quit ends the session of a local host only",
            None,
        ),
        Ok(Some((Reply::Transaction(r), _))) => {
            let text = r.to_text();
            let t = r.to_json();
            reply_ok(
                out,
                json,
                r.outcome.as_str(),
                &text,
                Some(("transaction", t)),
            )
        }
        Err(e) => reply_err(out, json, &e.to_string()),
    }
}

fn progress(out: &Out, json: bool, text: &str) -> io::Result<()> {
    if json {
        send_line(out, &json!({ "progress": text }).to_string())
    } else {
        send_line(out, &format!("| .. {text}"))
    }
}

fn reply_ok(
    out: &Out,
    json: bool,
    outcome: &str,
    text: &str,
    extra: Option<(&str, serde_json::Value)>,
) -> io::Result<()> {
    if json {
        let mut v = json!({ "ok": true, "outcome": outcome, "output": text });
        if let Some((key, value)) = extra {
            v[key] = value;
        }
        return send_line(out, &v.to_string());
    }
    for l in text.lines() {
        send_line(out, &format!("| {l}"))?;
    }
    send_line(out, &format!("OK {outcome}"))
}

fn reply_err(out: &Out, json: bool, message: &str) -> io::Result<()> {
    if json {
        return send_line(out, &json!({ "ok": false, "error": message }).to_string());
    }
    // One line: the final line is what clients read for the outcome.
    send_line(out, &format!("ERR {}", message.replace('\n', " ")))
}

/// Stream every event until the client sends a line or goes away.
fn watch(
    shared: &Shared,
    out: &Out,
    reader: &mut BufReader<impl Conn>,
    json: bool,
) -> io::Result<()> {
    let events = shared.rt.watch();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let pump = {
        let out = out.clone();
        std::thread::spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(events) -> e => {
                        let Ok(e) = e else { return };
                        let line = if json {
                            e.to_json().to_string()
                        } else {
                            format!("| {}", e.to_text().replace('\n', "\n| "))
                        };
                        if send_line(&out, &line).is_err() {
                            return;
                        }
                    }
                    recv(stop_rx) -> _ => return,
                }
            }
        })
    };
    send_line(
        out,
        if json {
            r#"{"watching":true}"#
        } else {
            "| watching: send any line to stop"
        },
    )?;
    let mut buf = Vec::new();
    // A watcher may read for hours without a word: an idle read only ends
    // the watch if the events could not be written either (the client
    // stopped reading: the write timeout ended the pump).
    let ended = loop {
        match read_line(reader, &mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && !pump.is_finished() => {}
            other => break other,
        }
    };
    drop(stop_tx);
    let _ = pump.join();
    match ended? {
        Line::Eof => Ok(()),
        _ => reply_ok(out, json, "done", "", None),
    }
}

/// How a command ended, as a client reads it from the final line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Final {
    /// `OK <outcome>`.
    Ok(String),
    /// `ERR <message>`.
    Err(String),
}

impl Final {
    /// The exit status `liveswap ctl` gives it: 0 done or committed,
    /// 1 error, 2 refused, 3 aborted.
    pub fn exit_code(&self) -> u8 {
        match self {
            Final::Ok(o) if o == "refused" => 2,
            Final::Ok(o) if o == "aborted" => 3,
            Final::Ok(_) => 0,
            Final::Err(_) => 1,
        }
    }
}

/// Exit status of `liveswap ctl` when no host answers.
pub const EXIT_UNREACHABLE: u8 = 4;

/// Ends a `Watch` under way on the [`Client`] it came from.
pub struct Interrupt(Box<dyn Conn>);

impl Interrupt {
    /// Stop the watch: the host answers its final line, and the client's
    /// `command` returns.
    pub fn stop(&mut self) -> io::Result<()> {
        self.0.write_all(b"\n")?;
        self.0.flush()
    }
}

/// A client of the admin endpoint (what `liveswap ctl` and `shell` use).
pub struct Client {
    reader: BufReader<Box<dyn Conn>>,
    writer: Box<dyn Conn>,
}

impl Client {
    /// Connect to a Unix socket.
    pub fn unix(path: &Path) -> io::Result<Client> {
        let s = UnixStream::connect(path)?;
        Ok(Client {
            writer: Box::new(s.try_clone()?),
            reader: BufReader::new(Box::new(s)),
        })
    }

    /// Connect over TCP and authenticate with `token`.
    pub fn tcp(addr: SocketAddr, token: &str) -> io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        let mut c = Client {
            writer: Box::new(s.try_clone()?),
            reader: BufReader::new(Box::new(s)),
        };
        match c.command(&format!("Auth {token}"), |_| {})? {
            Final::Ok(_) => Ok(c),
            Final::Err(e) => Err(io::Error::new(io::ErrorKind::PermissionDenied, e)),
        }
    }

    /// A handle that ends a `Watch` this client runs, from another thread
    /// (it sends the line that stops it).
    pub fn interrupt(&self) -> io::Result<Interrupt> {
        Ok(Interrupt(self.writer.try_clone_conn()?))
    }

    /// Send one line; `line_out` gets each output line (without `| `).
    pub fn command(&mut self, line: &str, mut line_out: impl FnMut(&str)) -> io::Result<Final> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.writer.flush()?;
        let mut buf = String::new();
        loop {
            buf.clear();
            if self.reader.read_line(&mut buf)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the host closed the connection",
                ));
            }
            let l = buf.trim_end_matches(['\n', '\r']);
            if l.starts_with('{') {
                // JSON mode: the object with "ok" is the final one.
                line_out(l);
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                    && let Some(ok) = v.get("ok").and_then(|o| o.as_bool())
                {
                    return Ok(if ok {
                        Final::Ok(v["outcome"].as_str().unwrap_or("done").to_string())
                    } else {
                        Final::Err(v["error"].as_str().unwrap_or("").to_string())
                    });
                }
            } else if let Some(rest) = l.strip_prefix("| ") {
                line_out(rest);
            } else if l == "|" {
                line_out("");
            } else if let Some(rest) = l.strip_prefix("OK") {
                return Ok(Final::Ok(rest.trim().to_string()));
            } else if let Some(rest) = l.strip_prefix("ERR") {
                return Ok(Final::Err(rest.trim().to_string()));
            } else {
                line_out(l);
            }
        }
    }
}
