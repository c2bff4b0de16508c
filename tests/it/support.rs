//! A host under test and ways to wait on what its modules report.
//! Tests wait on events (the modules' own log lines), never on sleeps.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use liveswap::{CommandError, Event, ModuleState, Runtime, RuntimeBuilder, TransactionReport};
use liveswap_ops::{Reply, ToText as _, execute_line};

pub const V1: &str = liveswap_guests::PROBE_V1;
pub const V2: &str = liveswap_guests::PROBE_V2;

/// How long a test waits for something before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Host {
    pub rt: Runtime,
    events: Receiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
}

impl Host {
    pub fn new() -> Self {
        Self::with(RuntimeBuilder::default().call_deadline(Duration::from_secs(2)))
    }

    pub fn with(b: RuntimeBuilder) -> Self {
        let rt = b.build().expect("runtime starts");
        let events = rt.watch();
        Host {
            rt,
            events,
            seen: Vec::new(),
        }
    }

    /// Run a command that must succeed.
    pub fn ok(&self, line: &str) -> Reply {
        match execute_line(&self.rt, line, "test") {
            Ok(Some(r)) => r,
            Ok(None) => panic!("`{line}` is not a command"),
            Err(e) => panic!("`{line}` failed: {e}"),
        }
    }

    /// Run a command that must fail; its error text.
    pub fn err(&self, line: &str) -> String {
        match execute_line(&self.rt, line, "test") {
            Ok(r) => panic!("`{line}` should have failed, got {r:?}"),
            Err(e) => error_text(&e),
        }
    }

    /// Run an upgrade command; its report.
    pub fn txn(&self, line: &str) -> TransactionReport {
        match self.ok(line) {
            Reply::Transaction(r) => *r,
            other => panic!("`{line}` is not a transaction: {other:?}"),
        }
    }

    fn next(&mut self, until: Instant) -> Option<Event> {
        let e = self.events.recv_deadline(until).ok()?;
        self.seen.push(e.clone());
        Some(e)
    }

    /// Wait for an event matching `pred`: the first such event ever seen,
    /// or the next one to come.
    pub fn wait_event(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.wait_event_since(0, what, pred)
    }

    /// Index of the next event to come, for [`Host::wait_event_since`].
    pub fn mark(&mut self) -> usize {
        self.drain();
        self.seen.len()
    }

    /// Wait for an event matching `pred` at or after `seen[since]`.
    pub fn wait_event_since(
        &mut self,
        since: usize,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        if let Some(e) = self.seen.iter().skip(since).find(|e| pred(e)) {
            return e.clone();
        }
        let until = Instant::now() + PATIENCE;
        loop {
            match self.next(until) {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!(
                    "timed out waiting for {what}; last events:\n{}",
                    self.tail(30)
                ),
            }
        }
    }

    /// Wait for `module` to log a line for which `pred` holds.
    pub fn wait_log(&mut self, module: &str, pred: impl Fn(&str) -> bool) -> String {
        let what = format!("a log line of {module}");
        match self.wait_event(
            &what,
            |e| matches!(e, Event::Log { module: m, line, .. } if m == module && pred(line)),
        ) {
            Event::Log { line, .. } => line,
            _ => unreachable!(),
        }
    }

    /// Wait for `module` to log exactly `text`.
    pub fn wait_line(&mut self, module: &str, text: &str) -> String {
        self.wait_log(module, |l| l == text)
    }

    /// Wait for `module` to reach `state`.
    pub fn wait_state(&mut self, module: &str, state: ModuleState) -> Option<String> {
        match self.wait_event(&format!("{module} {state}"), |e| {
            matches!(e, Event::Module { module: m, state: s, .. } if m == module && *s == state)
        }) {
            Event::Module { detail, .. } => detail,
            _ => unreachable!(),
        }
    }

    /// Take in every event emitted so far.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Log lines of `module` seen so far.
    pub fn logs(&self, module: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Log {
                    module: m, line, ..
                } if m == module => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// The numbers `receiver` logged as got from `sender`, in order.
    pub fn got(&self, receiver: &str, sender: &str) -> Vec<u64> {
        self.logs(receiver)
            .iter()
            .filter_map(|l| parse_got(l))
            .filter(|(_, s)| s == sender)
            .map(|(n, _)| n)
            .collect()
    }

    /// Lines of `module` that report an order violation.
    pub fn violations(&self, module: &str) -> Vec<String> {
        self.logs(module)
            .into_iter()
            .filter(|l| l.starts_with("GAP") || l.starts_with("DUP"))
            .collect()
    }

    pub fn tail(&self, n: usize) -> String {
        let start = self.seen.len().saturating_sub(n);
        self.seen[start..]
            .iter()
            .map(|e| e.to_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `got 12 from IP (relay)` → (12, "IP").
pub fn parse_got(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("got ")?;
    let (n, rest) = rest.split_once(" from ")?;
    let sender = rest.split_whitespace().next()?;
    Some((n.parse().ok()?, sender.to_string()))
}

pub fn error_text(e: &CommandError) -> String {
    e.to_string()
}

/// Numbers 1..=n.
pub fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// A fresh directory under the temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "liveswap-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
