//! Probe commands that act as a hostile guest would: each pushes on one of
//! the host's limits and logs one line saying how far it got, so a test
//! can check the host refused it and went on serving the others.
//!
//! ```text
//! blob TO BYTES N      send N messages of kind `blob` with BYTES-byte bodies
//! long-kind TO LEN     send one message whose kind is LEN bytes long
//! long-to LEN          send one message to a name LEN bytes long
//! subs N               subscribe to N distinct events of publisher `P`
//! timers N MS          set N timers of MS milliseconds
//! log-long BYTES       log one line BYTES long
//! log-flood N          log N lines as fast as possible
//! udp-sockets N        open (and keep) N UDP sockets
//! sleep MS             block in a WASI sleep for MS milliseconds
//! ```
//!
//! A version's `info` reads three environment variables (a `grant env`):
//! `PROBE_SPEAKS` (comma-separated protocols, or `none`) replaces what it
//! speaks, `PROBE_LABEL_BYTES` makes its label that long, and
//! `PROBE_INFO_SEND` names a module `info` tries to send to (and
//! subscribe to, and set a timer for); `init` then logs what that got.

use std::cell::RefCell;

use crate::{Level, Message, log};
use liveswap_guest::host;

thread_local! {
    /// What the host calls made inside `info` returned, for `init` to log.
    static FROM_INFO: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether `cmd` is one of these commands.
pub(crate) fn handles(cmd: &str) -> bool {
    matches!(
        cmd,
        "blob"
            | "long-kind"
            | "long-to"
            | "subs"
            | "timers"
            | "log-long"
            | "log-flood"
            | "udp-sockets"
            | "sleep"
    )
}

/// Run `words`, whose first [`handles`] accepted.
pub(crate) fn run(words: &[&str]) -> Result<(), String> {
    let num = |i: usize| -> Result<u64, String> {
        words
            .get(i)
            .ok_or_else(|| format!("`{}`: missing number", words.join(" ")))?
            .parse::<u64>()
            .map_err(|_| format!("`{}`: not a number", words.join(" ")))
    };
    let word = |i: usize| -> Result<&str, String> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| format!("`{}`: missing argument", words.join(" ")))
    };
    match words[0] {
        "blob" => {
            let (to, bytes, n) = (word(1)?, num(2)? as usize, num(3)?);
            let body = vec![0x5a; bytes];
            let outcome = attempts(n, |_| {
                host::send(
                    to,
                    &Message {
                        from: String::new(),
                        kind: "blob".into(),
                        proto: 1,
                        body: body.clone(),
                    },
                )
            });
            log(Level::Info, &format!("blob: {outcome}"));
        }
        "long-kind" => {
            let kind = "k".repeat(num(2)? as usize);
            let r = host::send(
                word(1)?,
                &Message {
                    from: String::new(),
                    kind,
                    proto: 1,
                    body: Vec::new(),
                },
            );
            log(Level::Info, &format!("long-kind: {}", result(&r)));
        }
        "long-to" => {
            let to = "X".repeat(num(1)? as usize);
            let r = host::send(
                &to,
                &Message {
                    from: String::new(),
                    kind: "num".into(),
                    proto: 1,
                    body: vec![1],
                },
            );
            let len = r.as_ref().err().map_or(0, String::len);
            log(
                Level::Info,
                &format!("long-to: {} (error of {len} bytes)", result(&r)),
            );
        }
        "subs" => {
            let outcome = attempts(num(1)?, |i| host::subscribe("P", &format!("e{i}")));
            log(Level::Info, &format!("subs: {outcome}"));
        }
        "timers" => {
            let (n, ms) = (num(1)?, num(2)? as u32);
            for i in 0..n {
                host::set_timer(&format!("t{i}"), ms);
            }
            log(Level::Info, &format!("timers: asked for {n}"));
        }
        "log-long" => {
            let line = "L".repeat(num(1)? as usize);
            log(Level::Info, &line);
        }
        "log-flood" => {
            for i in 0..num(1)? {
                log(Level::Info, &format!("flood {i}"));
            }
        }
        "udp-sockets" => {
            let mut kept = Vec::new();
            let outcome = attempts(num(1)?, |_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
                kept.push(s);
                Ok(())
            });
            // Kept open on purpose: a leak is what is being tried.
            std::mem::forget(kept);
            log(Level::Info, &format!("udp-sockets: {outcome}"));
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(num(1)?));
            log(Level::Info, "slept");
        }
        _ => unreachable!("handles() said yes"),
    }
    Ok(())
}

/// Try `f` `n` times, stopping at the first error: `N ok` or `K ok, then
/// refused: <error>`.
fn attempts(n: u64, mut f: impl FnMut(u64) -> Result<(), String>) -> String {
    for i in 0..n {
        if let Err(e) = f(i) {
            return format!("{i} ok, then refused: {e}");
        }
    }
    format!("{n} ok")
}

fn result(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("refused: {e}"),
    }
}

/// `info`'s answer, changed by the environment as the module doc says.
pub(crate) fn declared(mut info: crate::ModuleInfo) -> crate::ModuleInfo {
    if let Ok(speaks) = std::env::var("PROBE_SPEAKS") {
        info.speaks = speaks.split(',').filter_map(|p| p.parse().ok()).collect();
    }
    if let Some(n) = std::env::var("PROBE_LABEL_BYTES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        info.version = "v".repeat(n);
    }
    if let Ok(to) = std::env::var("PROBE_INFO_SEND") {
        let sent = host::send(
            &to,
            &Message {
                from: String::new(),
                kind: "from-info".into(),
                proto: info.speaks.first().copied().unwrap_or(1),
                body: vec![1],
            },
        );
        let subscribed = host::subscribe(&to, "x");
        host::set_timer("from-info", 1);
        let line = format!(
            "info-send: send {}; subscribe {}",
            result(&sent),
            result(&subscribed)
        );
        FROM_INFO.with(|f| *f.borrow_mut() = Some(line));
    }
    info
}

/// Log what the host calls inside `info` got, once.
pub(crate) fn report_info() {
    if let Some(line) = FROM_INFO.with(|f| f.borrow_mut().take()) {
        log(Level::Info, &line);
    }
}
