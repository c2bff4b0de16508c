//! The built-in web dashboard and `/metrics`, over plain HTTP (tiny_http,
//! on threads of its own; the page is one HTML file in the binary, no
//! build step).
//!
//! - `GET /`: the dashboard;
//! - `GET /api/snapshot`: host, modules, transactions and poison messages
//!   as JSON, what the page starts from;
//! - `GET /events`: server-sent events, live: `transaction`, `module`,
//!   `progress`, `log` (warnings and errors), `skipped`, and a `status` of
//!   every module each second;
//! - `GET /metrics`: Prometheus metrics ([`metrics`]);
//! - `POST /api/command`: one command line as the body, run as the admin
//!   endpoint runs it; the reply as the admin endpoint's JSON protocol
//!   gives it.
//!
//! Access. On a loopback address anyone on this machine may look; on any
//! other address every request needs the admin token (an
//! `Authorization: Bearer` header, or a `liveswap_token` cookie, which the
//! page sets when asked for the token). Running a command always needs the
//! token in the header (never a cookie, which another site's page could
//! make the browser send): the same access as the admin endpoint's TCP
//! socket. Without a token, the dashboard only shows.

pub mod metrics;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use liveswap::{Event, Level, PoisonList, Runtime};

use crate::admin::{MIN_TOKEN, token_matches};
use crate::{Reply, ToJson, ToText, execute_line_data};

/// The page.
const PAGE: &str = include_str!("dashboard.html");
/// Requests served at once (an open event stream is one); more get 503.
pub const MAX_HTTP_CLIENTS: usize = 32;
/// Largest command body accepted.
const MAX_BODY: u64 = 64 * 1024;
/// How often the event stream carries every module's status.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Where the dashboard listens and what it needs.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Address (loopback unless a token is given).
    pub addr: SocketAddr,
    /// The admin token: needed to run commands, and to look at all on a
    /// non-loopback address.
    pub token: Option<String>,
}

/// A running dashboard.
pub struct WebServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    rt: Arc<Runtime>,
    token: Option<String>,
    /// Whether looking needs the token (not on loopback).
    private: bool,
    clients: AtomicUsize,
    /// Event streams open now (pages watching).
    streams: AtomicUsize,
    stop: Arc<AtomicBool>,
    started: SystemTime,
}

impl WebServer {
    /// Listen on `opts.addr`. Refused: a non-loopback address without a
    /// token, a token shorter than [`MIN_TOKEN`], an address in use.
    pub fn start(rt: Arc<Runtime>, opts: WebOptions) -> io::Result<WebServer> {
        let private = !opts.addr.ip().is_loopback();
        if private && opts.token.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--http {}: not a loopback address, so the dashboard needs the admin token (--token-file)",
                    opts.addr
                ),
            ));
        }
        if opts.token.as_ref().is_some_and(|t| t.len() < MIN_TOKEN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the admin token must have at least {MIN_TOKEN} characters"),
            ));
        }
        let listener = bind(opts.addr)?;
        let addr = listener.local_addr()?;
        let server = Server::from_listener(listener, None).map_err(io::Error::other)?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            rt,
            token: opts.token,
            private,
            clients: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            stop: stop.clone(),
            started: SystemTime::now(),
        });
        let thread = {
            let (server, shared) = (server.clone(), shared.clone());
            std::thread::Builder::new()
                .name("liveswap-http".into())
                .spawn(move || accept_loop(&server, shared))?
        };
        tracing::info!("dashboard on http://{addr}/");
        Ok(WebServer {
            addr,
            shared,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Pages watching now (open event streams).
    pub fn streams(&self) -> usize {
        self.shared.streams.load(Ordering::SeqCst)
    }

    /// Stop listening; event streams end within a second.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listen on `addr`. An address in use is tried again for a moment: a
/// dashboard restarted on its port (a host handed back, say) may find the
/// old listener still closing.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("--http {addr}: cannot listen there: {e}"),
                ));
            }
        }
    }
}

fn accept_loop(server: &Server, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => return,
        };
        if shared.clients.fetch_add(1, Ordering::SeqCst) >= MAX_HTTP_CLIENTS {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(req, text(503, "too many clients; try again later"));
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("liveswap-http-client".into())
            .spawn(move || {
                handle(&s, req);
                s.clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answer `req` and close the connection: a browser never reuses a
/// socket to this server, so a server that stops (or starts again on its
/// port) leaves no connection behind that a request could be sent down and
/// never be read from.
fn respond<R: Read>(req: Request, r: Response<R>) -> io::Result<()> {
    req.respond(r.with_header(header("Connection", "close")))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(code: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(format!("{body}\n"))
        .with_status_code(StatusCode(code))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn json_reply(code: u16, v: &Value) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(v.to_string())
        .with_status_code(StatusCode(code))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

/// The token a request carries: `Authorization: Bearer`, or (when
/// `cookie_ok`) the `liveswap_token` cookie.
fn given_token(req: &Request, cookie_ok: bool) -> Option<String> {
    for h in req.headers() {
        let value = h.value.as_str();
        if h.field.equiv("Authorization") {
            if let Some(t) = value.strip_prefix("Bearer ") {
                return Some(t.trim().to_string());
            }
        } else if cookie_ok && h.field.equiv("Cookie") {
            let found = value
                .split(';')
                .filter_map(|c| c.trim().strip_prefix("liveswap_token="))
                .next();
            if let Some(t) = found {
                return Some(t.to_string());
            }
        }
    }
    None
}

fn authorized(shared: &Shared, req: &Request, cookie_ok: bool) -> bool {
    match (&shared.token, given_token(req, cookie_ok)) {
        (Some(expected), Some(given)) => {
            let ok = token_matches(&given, expected);
            if !ok {
                // Guessing is slow.
                std::thread::sleep(Duration::from_millis(250));
            }
            ok
        }
        _ => false,
    }
}

fn handle(shared: &Shared, req: Request) {
    let path = req.url().split('?').next().unwrap_or("/").to_string();
    let method = req.method().clone();
    if shared.private && path != "/" && !authorized(shared, &req, true) {
        let _ = respond(req, text(401, "the admin token is needed"));
        return;
    }
    let r = match (method, path.as_str()) {
        (Method::Get, "/") => respond(
            req,
            Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-store")),
        ),
        (Method::Get, "/api/snapshot") => respond(req, json_reply(200, &snapshot(shared))),
        (Method::Get, "/metrics") => respond(
            req,
            Response::from_string(metrics::render(&shared.rt))
                .with_header(header("Content-Type", metrics::CONTENT_TYPE)),
        ),
        (Method::Get, "/events") => stream(shared, req),
        (Method::Post, "/api/command") => command(shared, req),
        (_, "/" | "/api/snapshot" | "/metrics" | "/events" | "/api/command") => {
            respond(req, text(405, "method not allowed"))
        }
        _ => respond(req, text(404, "not found")),
    };
    if let Err(e) = r {
        tracing::debug!("dashboard client: {e}");
    }
}

/// Everything the page starts from.
fn snapshot(shared: &Shared) -> Value {
    let rt = &shared.rt;
    let modules = rt.status();
    let poison: Vec<Value> = modules
        .iter()
        .filter(|m| m.poisoned > 0)
        .filter_map(|m| rt.module(&m.name))
        .map(|p| {
            PoisonList {
                module: p.name().to_string(),
                messages: p.poison(),
            }
            .to_json()
        })
        .collect();
    let started = shared
        .started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({
        "host": {
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "started_ms": started,
            "state_dir": rt.state_dir().map(|d| d.display().to_string()),
            "can_command": shared.token.is_some(),
        },
        "modules": modules.iter().map(ToJson::to_json).collect::<Vec<_>>(),
        "transactions": rt.history().iter().map(ToJson::to_json).collect::<Vec<_>>(),
        "poison": poison,
    })
}

/// Run the body's command line, as the admin endpoint would.
fn command(shared: &Shared, mut req: Request) -> io::Result<()> {
    if shared.token.is_none() {
        return respond(
            req,
            text(
                403,
                "this host was started without an admin token (--token-file): the dashboard only shows",
            ),
        );
    }
    if !authorized(shared, &req, false) {
        return respond(
            req,
            text(401, "the admin token is needed (Authorization: Bearer)"),
        );
    }
    let mut body = String::new();
    if req
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_string(&mut body)
        .is_err()
        || body.len() as u64 > MAX_BODY
    {
        return respond(req, text(400, "the body must be one command line in UTF-8"));
    }
    let origin = match req.remote_addr() {
        Some(a) => format!("http:{a}"),
        None => "http".to_string(),
    };
    let line = body.lines().next().unwrap_or("").to_string();
    let v = match execute_line_data(&shared.rt, &line, &origin) {
        Ok(None) => json!({"ok": true, "outcome": "done", "output": ""}),
        Ok(Some((Reply::Done(m) | Reply::Text(m), data))) => {
            json!({"ok": true, "outcome": "done", "output": m, "data": data})
        }
        Ok(Some((Reply::Quit, _))) => json!({"ok": true, "outcome": "done",
            "output": "Quit ends the session of a local host only"}),
        Ok(Some((Reply::Transaction(r), _))) => json!({"ok": true,
            "outcome": r.outcome.as_str(), "output": r.to_text(), "transaction": r.to_json()}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    respond(req, json_reply(200, &v))
}

/// Whether an event goes to the page.
fn shown(e: &Event) -> bool {
    match e {
        Event::Log { level, .. } => matches!(level, Level::Warn | Level::Error),
        _ => true,
    }
}

fn sse(out: &mut dyn Write, kind: &str, data: &Value) -> io::Result<()> {
    write!(out, "event: {kind}\ndata: {data}\n\n")
}

/// The event stream: written straight to the socket (no chunked
/// buffering), until the client goes or the server stops. A stop ends it
/// with a `bye` event, on which the page closes the stream and connects
/// again: the connection is the browser's to close (the HTTP server would
/// keep it open for a next request).
fn stream(shared: &Shared, req: Request) -> io::Result<()> {
    shared.streams.fetch_add(1, Ordering::SeqCst);
    let r = pump(shared, req);
    shared.streams.fetch_sub(1, Ordering::SeqCst);
    r
}

fn pump(shared: &Shared, req: Request) -> io::Result<()> {
    let events = shared.rt.watch();
    let mut out = req.into_writer();
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
    )?;
    out.write_all(b"retry: 1000\n\n")?;
    let mut next_status = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_status {
            let modules: Vec<Value> = shared.rt.status().iter().map(ToJson::to_json).collect();
            sse(&mut out, "status", &json!({ "modules": modules }))?;
            out.flush()?;
            next_status = Instant::now() + STATUS_EVERY;
        }
        match events.recv_deadline(next_status) {
            Ok(e) if shown(&e) => {
                let v = e.to_json();
                let kind = v["event"].as_str().unwrap_or("event").to_string();
                sse(&mut out, &kind, &v)?;
                out.flush()?;
            }
            Ok(_) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    sse(&mut out, "bye", &json!({}))?;
    out.flush()
}
