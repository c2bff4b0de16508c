//! What a guest or a client can make the host hold, bounded: one table of
//! limits per runtime, each with a default here and a flag on `liveswap
//! run` (the README's "Limits" table lists them). Plain data: the bus, the
//! guest glue and the proxy read it; the runtime builder sets it.

/// The limits of one runtime. Every field is the most of something the
/// host keeps on a guest's or a client's behalf; going over it is refused
/// with an error to whoever asked, and counted in `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message body a `send`, `publish` or admin `Send` may carry.
    pub max_body: usize,
    /// Longest message kind (and event or timer name), in bytes.
    pub max_kind: usize,
    /// Bytes one mailbox may hold queued (its message capacity is a
    /// second bound, per `Load`).
    pub mailbox_bytes: usize,
    /// Bytes all mailboxes of the host may hold queued together.
    pub queued_bytes: usize,
    /// Bytes of messages a recovery log may hold before a checkpoint is
    /// forced (and, with checkpoints failing, before the recovery point
    /// is dropped at twice this).
    pub log_bytes: usize,
    /// Poison messages kept per module; older ones are forgotten.
    pub poison_kept: usize,
    /// Bytes of poison-message bodies kept per module; past it, a body is
    /// dropped and only its size and metadata are kept.
    pub poison_body_bytes: usize,
    /// Timers per module.
    pub timers: usize,
    /// Shortest timer interval, in milliseconds.
    pub timer_min_ms: u32,
    /// Subscriptions per module.
    pub subscriptions: usize,
    /// Longest `info().version` label, in bytes.
    pub label_bytes: usize,
    /// Most entries in `info().speaks` and in `info().accepts`.
    pub protocols: usize,
    /// Longest log line a guest may write; longer ones are cut.
    pub log_line: usize,
    /// Log lines per second per module (bursts of as many); past it,
    /// lines are dropped and counted.
    pub log_rate: u32,
    /// Events queued for one watcher (a printer, a `Watch` client) that
    /// has not read them; past it, events are skipped and counted.
    pub watch_queue: usize,
    /// WASI resources (streams, pollables, files, sockets) one instance
    /// may hold at once: its share of the host's file descriptors.
    pub resources: usize,
    /// Largest `.wasm` file `Load` or `Replace` reads.
    pub wasm_bytes: u64,
    /// Recoveries a module may have within `restart_window_ms` before it
    /// is left faulted (its mailbox kept) for a fixed version or `Unload`.
    pub restarts: u32,
    /// The window of `restarts`, in milliseconds.
    pub restart_window_ms: u64,
    /// Most messages handed to a module in one `service-batch` call (a
    /// module that exports it); 1 serves every message with its own
    /// `service` call.
    pub batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_kind: 256,
            mailbox_bytes: 64 << 20,
            queued_bytes: 1 << 30,
            log_bytes: 64 << 20,
            poison_kept: 100,
            poison_body_bytes: 1 << 20,
            timers: 64,
            timer_min_ms: 1,
            subscriptions: 1024,
            label_bytes: 128,
            protocols: 64,
            log_line: 4096,
            log_rate: 10_000,
            watch_queue: 65_536,
            resources: 256,
            wasm_bytes: 256 << 20,
            restarts: 10,
            restart_window_ms: 10_000,
            batch: 128,
        }
    }
}

/// Bytes a queued message is counted as: what it carries plus the host's
/// bookkeeping of it.
pub fn message_cost(kind: &str, from: &str, body: &[u8]) -> usize {
    const OVERHEAD: usize = 96;
    OVERHEAD + kind.len() + from.len() + body.len()
}

/// At most `max` bytes of `s`, cut at a character boundary, with a note of
/// how much was cut: for echoing what a client or a guest sent.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &s[..end], s.len()))
}
