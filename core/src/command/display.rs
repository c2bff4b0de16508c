//! Commands back to text: the one line of the command language that parses
//! to the same [`Command`] (the parser is `liveswap-ops`; `Display` must
//! live beside the type). Keywords in their documented case, options in a
//! fixed order, words quoted only where the tokenizer needs it.

use std::fmt;

use super::{Command, LoadOptions, ShadowEnd, ShadowSpec, Target};
use crate::words::quote;

/// A duration as `parse_duration` reads it back: whole milliseconds where
/// exact, else microseconds with a fraction.
fn duration(d: std::time::Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_nanos() as f64 / 1e3)
    }
}

fn options(f: &mut fmt::Formatter<'_>, o: &LoadOptions) -> fmt::Result {
    if !o.config.is_empty() {
        write!(f, " config {}", quote(&String::from_utf8_lossy(&o.config)))?;
    }
    if let Some(n) = o.capacity {
        write!(f, " capacity {n}")?;
    }
    for g in &o.grants {
        write!(f, " grant {g}")?;
    }
    if let Some(p) = &o.pin {
        write!(f, " pin {p}")?;
    }
    if let Some(m) = o.memory {
        write!(f, " memory {m}")?;
    }
    Ok(())
}

fn target(f: &mut fmt::Formatter<'_>, t: &Target) -> fmt::Result {
    write!(f, " {} {}", t.name, quote(&t.path.to_string_lossy()))?;
    options(f, &t.options)
}

fn shadow(f: &mut fmt::Formatter<'_>, s: &ShadowSpec) -> fmt::Result {
    write!(f, "Shadow {} {}", s.name, quote(&s.path.to_string_lossy()))?;
    if let Some(d) = s.run_for {
        let then = match s.then {
            ShadowEnd::Promote => "promote",
            ShadowEnd::Drop => "drop",
        };
        write!(f, " for {} then {then}", duration(d))?;
    }
    if let Some(n) = s.queue {
        write!(f, " queue {n}")?;
    }
    if !s.except.is_empty() {
        write!(f, " except {}", quote(&s.except.join(",")))?;
    }
    if let Some(p) = &s.pin {
        write!(f, " pin {p}")?;
    }
    Ok(())
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Load {
                name,
                path,
                options: o,
            } => {
                write!(f, "Load {name} {}", quote(&path.to_string_lossy()))?;
                options(f, o)
            }
            Command::Unload(n) => write!(f, "Unload {n}"),
            Command::Move { name, host } => write!(f, "Move {name} {host}"),
            Command::Enable(n) => write!(f, "Enable {n}"),
            Command::Disable(n) => write!(f, "Disable {n}"),
            Command::Upgrade { kind, targets } => {
                f.write_str(kind.keyword(targets.len()))?;
                targets.iter().try_for_each(|t| target(f, t))
            }
            Command::SetTimer(d) => write!(f, "SetTimer {}", duration(*d)),
            Command::SetMode(m) => write!(f, "SetMode {}", m.as_str()),
            Command::SetProbation {
                window,
                max_error_pct,
            } => write!(
                f,
                "SetProbation {} errors {max_error_pct}%",
                duration(*window)
            ),
            Command::SetCheckpoint(d) => write!(f, "SetCheckpoint {}", duration(*d)),
            Command::Poison(n) => write!(f, "Poison {n}"),
            Command::Shadow(s) => shadow(f, s),
            Command::Promote(names) => write!(f, "Promote {}", names.join(" ")),
            Command::Unshadow(n) => write!(f, "Unshadow {n}"),
            Command::Send { to, kind, body } => {
                write!(f, "Send {to} {}", quote(kind))?;
                if !body.is_empty() {
                    write!(f, " {}", quote(body))?;
                }
                Ok(())
            }
            Command::Wait(d) => write!(f, "Wait {}", duration(*d)),
            Command::Status => f.write_str("Status"),
            Command::Versions => f.write_str("Versions"),
            Command::History => f.write_str("History"),
            Command::Help => f.write_str("Help"),
            Command::Quit => f.write_str("Quit"),
        }
    }
}
