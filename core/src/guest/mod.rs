//! What a guest sees of the host: its store data ([`ModuleCtx`]), the glue
//! of the WIT `host` interface over it, its sandbox ([`Grant`]s and the
//! WASI context built from them) and its stdout/stderr.
//!
//! A guest reaches the rest of the host only through [`HostView`] (send,
//! publish, subscriptions, timers) and an event sink (log lines): never
//! through the runtime. The message bus implements the view.

pub(crate) mod batch;
pub(crate) mod deadline;
mod host_api;
mod logs;
pub mod sandbox;
pub(crate) mod sockets;
mod stdio;
mod store;
pub mod tap;

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Message;

pub use logs::LogGate;
pub use sandbox::Grant;
pub(crate) use store::Failures;
pub use store::ModuleCtx;

/// The host as one module's imports see it. Errors are the text the guest
/// receives.
pub trait HostView: Send + Sync {
    /// Queue `msg` for `to`, stamped as coming from `from`, which speaks
    /// the protocols `speaks` (empty: any).
    fn send(&self, from: &Arc<str>, speaks: &[u32], to: &str, msg: Message) -> Result<(), String>;
    /// Queue `msgs` for `to` in order, stopping at the first refused: how
    /// many were accepted, and why the next was not.
    fn send_all(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        msgs: &mut dyn Iterator<Item = Message>,
    ) -> Result<usize, (usize, String)>;
    /// Fan `body` out as event `event` of `publisher` to its subscribers.
    fn publish(
        &self,
        publisher: &Arc<str>,
        speaks: &[u32],
        event: &str,
        body: &[u8],
    ) -> Result<(), String>;
    /// `who` receives event `event` of `publisher` from now on, unless it
    /// holds as many subscriptions as it may.
    fn subscribe(&self, who: &str, publisher: &str, event: &str) -> Result<(), String>;
    /// `who` no longer receives event `event` of `publisher`.
    fn unsubscribe(&self, who: &str, publisher: &str, event: &str);
    /// Tick timer `timer` of `who` every `every`, unless it holds as many
    /// timers as it may.
    fn set_timer(&self, who: &str, timer: &str, every: Duration) -> Result<(), String>;
    /// Stop timer `timer` of `who`.
    fn cancel_timer(&self, who: &str, timer: &str);
}

/// Whether `name` may name a module: a letter, then letters, digits, `_`,
/// `-` or `.`, at most 64 in all. `$` is kept for the host's own senders.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
