//! Probe commands that try the sandbox from inside: each tries one thing
//! with the standard library and logs one line saying what happened,
//! `<command> <arg>: ok ...` or `<command> <arg>: refused: <error>`.

use std::io::Write as _;

use crate::{Level, log};

/// The most of a file's text a `read-file` line shows.
const SHOWN: usize = 80;

/// Whether `cmd` is one of these commands.
pub(crate) fn handles(cmd: &str) -> bool {
    matches!(
        cmd,
        "read-file" | "write-file" | "env" | "udp-send" | "tcp-connect"
    )
}

/// Run `line`, whose first word [`handles`] accepted. Only a missing
/// argument is an error; what the sandbox refuses is a log line.
pub(crate) fn run(line: &str) -> Result<(), String> {
    let mut parts = line.splitn(3, char::is_whitespace);
    let cmd = parts.next().unwrap_or("");
    let arg = parts
        .next()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("`{line}`: missing argument"))?;
    let rest = parts.next().unwrap_or("").trim();
    let outcome = match cmd {
        "read-file" => read_file(arg),
        "write-file" => write_file(arg, rest),
        "env" => {
            env(arg);
            return Ok(());
        }
        "udp-send" => udp_send(arg),
        _ => tcp_connect(arg),
    };
    match outcome {
        Ok(what) => log(Level::Info, &format!("{cmd} {arg}: ok{what}")),
        Err(e) => log(Level::Warn, &format!("{cmd} {arg}: refused: {e}")),
    }
    Ok(())
}

fn read_file(path: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let shown: String = text.chars().take(SHOWN).collect();
    Ok(format!(" {} bytes {shown:?}", bytes.len()))
}

fn write_file(path: &str, text: &str) -> Result<String, String> {
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!(" {} bytes", text.len()))
}

fn env(name: &str) {
    match std::env::var_os(name) {
        Some(v) => log(
            Level::Info,
            &format!("env {name}: ok {:?}", v.to_string_lossy()),
        ),
        None => log(Level::Warn, &format!("env {name}: absent")),
    }
}

fn udp_send(addr: &str) -> Result<String, String> {
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = std::net::UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    let n = socket
        .send_to(b"probe", to)
        .map_err(|e| format!("send: {e}"))?;
    Ok(format!(" {n} bytes"))
}

fn tcp_connect(addr: &str) -> Result<String, String> {
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let mut stream = std::net::TcpStream::connect(to).map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"probe\n")
        .map_err(|e| format!("write: {e}"))?;
    Ok(" connected, 6 bytes written".to_string())
}
