//! The outbound effects of one call, written down as they are made: what
//! a shadow run compares between the version that acts and the one that
//! runs beside it. Recorded whether or not the effect is delivered (a
//! shadow's never are).

use std::fmt;

use crate::bindings::Level;

/// One outbound effect through the `host` interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `send(to, msg)` (or one message of a `send-batch`).
    Send {
        /// Receiver.
        to: String,
        /// Message kind.
        kind: String,
        /// Protocol version it was sent under.
        proto: u32,
        /// Body.
        body: Vec<u8>,
    },
    /// `publish(event, body)`.
    Publish {
        /// Event name.
        event: String,
        /// Body.
        body: Vec<u8>,
    },
    /// `subscribe(publisher, event)`.
    Subscribe {
        /// Publisher.
        publisher: String,
        /// Event.
        event: String,
    },
    /// `unsubscribe(publisher, event)`.
    Unsubscribe {
        /// Publisher.
        publisher: String,
        /// Event.
        event: String,
    },
    /// `set-timer(name, interval-ms)`.
    SetTimer {
        /// Timer name.
        name: String,
        /// Interval.
        interval_ms: u32,
    },
    /// `cancel-timer(name)`.
    CancelTimer {
        /// Timer name.
        name: String,
    },
    /// `log(level, line)`.
    Log {
        /// Level.
        level: Level,
        /// The line.
        line: String,
    },
}

impl Effect {
    /// The protocol version of a send; none for other effects.
    pub fn proto(&self) -> Option<u32> {
        match self {
            Effect::Send { proto, .. } => Some(*proto),
            _ => None,
        }
    }
}

/// A body as a reader can compare it: text in quotes if it is short
/// printable UTF-8, else its length and first bytes in hex.
fn body(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => {
            format!("\"{}\"", crate::limits::clip(s, 80))
        }
        _ => {
            let hex: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
            let more = if b.len() > 16 { "…" } else { "" };
            format!("{} bytes 0x{hex}{more}", b.len())
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Send {
                to,
                kind,
                proto,
                body: b,
            } => write!(f, "send `{kind}` (proto {proto}) to {to}: {}", body(b)),
            Effect::Publish { event, body: b } => write!(f, "publish `{event}`: {}", body(b)),
            Effect::Subscribe { publisher, event } => {
                write!(f, "subscribe to `{event}` of {publisher}")
            }
            Effect::Unsubscribe { publisher, event } => {
                write!(f, "unsubscribe from `{event}` of {publisher}")
            }
            Effect::SetTimer { name, interval_ms } => {
                write!(f, "set timer `{name}` every {interval_ms} ms")
            }
            Effect::CancelTimer { name } => write!(f, "cancel timer `{name}`"),
            Effect::Log { level, line } => {
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                write!(f, "log {level} \"{}\"", crate::limits::clip(line, 120))
            }
        }
    }
}

/// The effects in `list`, or `(none)`.
pub fn describe(list: &[Effect]) -> String {
    if list.is_empty() {
        return "(none)".into();
    }
    let all: Vec<String> = list.iter().map(Effect::to_string).collect();
    all.join("; ")
}
