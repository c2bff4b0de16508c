//! The operator surface of liveswap: the command language (text ↔
//! [`Command`]), scripts, the admin endpoint and its protocol, and every
//! report, event and inspection as text ([`ToText`]) and as JSON
//! ([`ToJson`]). The core (`liveswap`) runs commands; this crate reads and
//! writes them.
//!
//! - [`command`]: the parser, the keywords and `Help`;
//! - [`script`]: batch files, with `$VAR` expansion;
//! - [`admin`]: the Unix-socket/TCP admin endpoint and its client;
//! - [`text`], [`json`]: rendering;
//! - [`web`]: the web dashboard and Prometheus `/metrics`;
//! - [`execute_line`]: parse, run, render — what the shell, scripts and the
//!   admin endpoint all do with one line.

pub mod admin;
pub mod command;
pub mod handoff;
pub mod json;
pub mod oci;
pub mod script;
pub mod text;
pub mod web;

use liveswap::{Command, CommandError, GroupKind, Runtime, TransactionReport};

pub use json::ToJson;
pub use text::ToText;

/// What a command produced, ready for people.
#[derive(Debug)]
pub enum Reply {
    /// Done; a line saying what happened.
    Done(String),
    /// Inspection output (`Status`, `Versions`, `History`, `Poison`,
    /// `Help`) as text.
    Text(String),
    /// An upgrade ended (committed, aborted, refused or rolled back).
    Transaction(Box<TransactionReport>),
    /// `Quit` was asked for.
    Quit,
}

/// A core reply, and the JSON form of an inspection's data, if any.
pub fn render(reply: liveswap::Reply) -> (Reply, Option<serde_json::Value>) {
    use liveswap::Reply as R;
    match reply {
        R::Done(m) => (Reply::Done(m), None),
        R::Status(s) => (Reply::Text(s.to_text()), Some(s.to_json())),
        R::Versions(v) => (Reply::Text(v.to_text()), Some(v.to_json())),
        R::History(h) => (Reply::Text(h.to_text()), Some(h.to_json())),
        R::Poison(p) => (Reply::Text(p.to_text()), Some(p.to_json())),
        R::Help => (Reply::Text(command::help()), None),
        R::Transaction(r) => (Reply::Transaction(r), None),
        R::Quit => (Reply::Quit, None),
    }
}

/// Parse and run one line, for `origin` (for `History`). `Ok(None)` for a
/// blank line or a comment.
pub fn execute_line(rt: &Runtime, line: &str, origin: &str) -> Result<Option<Reply>, CommandError> {
    execute_line_data(rt, line, origin).map(|r| r.map(|(reply, _)| reply))
}

/// [`execute_line`], with the JSON form of an inspection's data.
pub fn execute_line_data(
    rt: &Runtime,
    line: &str,
    origin: &str,
) -> Result<Option<(Reply, Option<serde_json::Value>)>, CommandError> {
    run_line(rt, line, origin, true)
}

/// Parse and run one line; a command naming a module another host serves
/// is sent there if `may_forward` (a forwarded one is never sent on).
fn run_line(
    rt: &Runtime,
    line: &str,
    origin: &str,
    may_forward: bool,
) -> Result<Option<(Reply, Option<serde_json::Value>)>, CommandError> {
    let parsed: Option<Command> = command::parse(line).map_err(CommandError::Parse)?;
    if let (Some(Command::Help), Ok(words)) = (&parsed, command::tokenize(line))
        && let [_, word] = words.as_slice()
    {
        let entry = command::help_for(word).map_err(CommandError::Parse)?;
        return Ok(Some((Reply::Text(entry), None)));
    }
    match parsed {
        None => Ok(None),
        Some(c) => match target(&c)
            .filter(|_| may_forward)
            .and_then(|n| rt.served_elsewhere(n))
        {
            // A module another host serves: that host runs the command.
            Some(host) => rt
                .forward(&host, line.trim(), origin)
                .map(|text| Some((Reply::Done(format!("(on host {host}) {text}")), None)))
                .map_err(|e| CommandError::Parse(format!("on host {host}: {e}"))),
            None => {
                let lattice_wide = may_forward && matches!(c, Command::History);
                let r = rt.execute(c, line.trim(), origin).map(render)?;
                Ok(Some(match lattice_wide {
                    true => with_other_hosts(rt, r, origin),
                    false => r,
                }))
            }
        },
    }
}

/// `History` on a lattice: this host's, then every other host's (asked of
/// it), each under its host's name. The JSON form stays this host's.
fn with_other_hosts(
    rt: &Runtime,
    (reply, json): (Reply, Option<serde_json::Value>),
    origin: &str,
) -> (Reply, Option<serde_json::Value>) {
    let (Some(view), Reply::Text(mine)) = (rt.lattice_view(), &reply) else {
        return (reply, json);
    };
    let others: Vec<_> = view.hosts.iter().filter(|h| h.id != view.host).collect();
    if others.is_empty() {
        return (reply, json);
    }
    let mut text = format!("── host {} (this host)\n{mine}", view.host);
    for h in others {
        let theirs = match h.alive {
            false => format!("(host {} is down: its history cannot be read now)", h.id),
            true => rt
                .forward(&h.id, "History", origin)
                .unwrap_or_else(|e| format!("(not read: {e})")),
        };
        text.push_str(&format!("\n── host {}\n{theirs}", h.id));
    }
    (Reply::Text(text), json)
}

/// The one module a command acts on, if it names exactly one.
fn target(c: &Command) -> Option<&str> {
    match c {
        Command::Upgrade { targets, kind } if targets.len() == 1 && *kind == GroupKind::Replace => {
            Some(&targets[0].name)
        }
        Command::Unload(n)
        | Command::Enable(n)
        | Command::Disable(n)
        | Command::Unshadow(n)
        | Command::Poison(n) => Some(n),
        Command::Move { name, .. } => Some(name),
        Command::Shadow(s) => Some(&s.name),
        Command::Promote(names) if names.len() == 1 => Some(&names[0]),
        _ => None,
    }
}

/// What a host answers a command forwarded to it: its text, or why it
/// failed (a transaction that did not commit, too).
pub fn forwarded(rt: &Runtime, line: &str, origin: &str) -> Result<String, String> {
    match run_line(rt, line, origin, false).map(|r| r.map(|(reply, _)| reply)) {
        Ok(Some(Reply::Done(m) | Reply::Text(m))) => Ok(m),
        Ok(Some(Reply::Transaction(r))) if r.outcome == liveswap::Outcome::Committed => {
            Ok(r.to_text())
        }
        Ok(Some(Reply::Transaction(r))) => Err(r.to_text()),
        Ok(Some(Reply::Quit)) => Err("Quit is not taken from another host".into()),
        Ok(None) => Ok(String::new()),
        Err(e) => Err(e.to_string()),
    }
}
