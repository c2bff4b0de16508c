//! Poison messages: a message that trapped its module twice (once served,
//! once again after the rebuild) is set aside — kept, listed by `Poison
//! NAME`, never silently dropped — and the module goes on without it.

use std::time::SystemTime;

use super::worker::Worker;
use crate::bindings::{Level, Message};
use crate::repo::Version;

/// A message set aside because it trapped its module twice.
#[derive(Clone, Debug)]
pub struct Poisoned {
    /// When it was set aside.
    pub at: SystemTime,
    /// The version it trapped.
    pub version: String,
    /// The message as it was delivered.
    pub message: Message,
    /// The trap, in one line.
    pub reason: String,
}

impl std::fmt::Display for Poisoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = &self.message.body;
        let shown = match std::str::from_utf8(body) {
            Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n') => format!("{t:?}"),
            _ => format!(
                "0x{}",
                body.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        };
        write!(
            f,
            "[{secs:.3}] v{} `{}` from {} proto {} body {} ({} bytes): {}",
            self.version,
            self.message.kind,
            self.message.from,
            self.message.proto,
            shown,
            body.len(),
            self.reason
        )
    }
}

impl Worker {
    /// Keep `m` aside as a poison message.
    pub(super) fn set_aside(&self, m: Message, version: &Version, reason: String) {
        self.log(
            Level::Error,
            format!(
                "poison message set aside: `{}` from {} trapped v{} again ({reason}); see `Poison {}`",
                m.kind,
                m.from,
                version.label(),
                self.shared.seat.name
            ),
        );
        self.shared
            .poison
            .lock()
            .expect("proxy poisoned")
            .push(Poisoned {
                at: SystemTime::now(),
                version: version.label().to_string(),
                message: m,
                reason,
            });
    }
}
