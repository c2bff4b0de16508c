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
    /// The message as it was delivered; its body is emptied if keeping it
    /// would go over the poison-body limit (`body_bytes` says how long
    /// it was).
    pub message: Message,
    /// The body's length as delivered.
    pub body_bytes: usize,
    /// The trap, in one line.
    pub reason: String,
}

/// The most of a poison message's body its line shows.
const SHOWN: usize = 256;

impl std::fmt::Display for Poisoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = &self.message.body[..self.message.body.len().min(SHOWN)];
        let shown = match std::str::from_utf8(body) {
            Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n') => format!("{t:?}"),
            _ => format!(
                "0x{}",
                body.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        };
        let shown = if self.message.body.len() < self.body_bytes {
            "(not kept: over the poison-body limit)".to_string()
        } else if self.body_bytes > SHOWN {
            format!("{shown}…")
        } else {
            shown
        };
        write!(
            f,
            "[{secs:.3}] v{} `{}` from {} proto {} body {} ({} bytes): {}",
            self.version,
            crate::limits::clip(&self.message.kind, SHOWN),
            self.message.from,
            self.message.proto,
            shown,
            self.body_bytes,
            self.reason
        )
    }
}

impl Worker {
    /// Keep `m` aside as a poison message: at most the poison limit of
    /// them (the oldest forgotten first), with their bodies while those
    /// fit the poison-body limit.
    pub(super) fn set_aside(&self, mut m: Message, version: &Version, reason: String) {
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
        let limits = &self.env.bus.limits;
        let mut list = self.shared.poison.lock().expect("proxy poisoned");
        if list.len() >= limits.poison_kept.max(1) {
            let forgotten = list.remove(0);
            self.env.reaper.bury(forgotten);
        }
        let kept: usize = list.iter().map(|p| p.message.body.len()).sum();
        let body_bytes = m.body.len();
        if kept + body_bytes > limits.poison_body_bytes {
            self.env.reaper.bury(std::mem::take(&mut m.body));
        }
        list.push(Poisoned {
            at: SystemTime::now(),
            version: version.label().to_string(),
            message: m,
            body_bytes,
            reason,
        });
    }
}
