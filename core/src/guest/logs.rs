//! A module's log lines, bounded: each line cut to the longest allowed,
//! and at most so many lines a second (a token bucket with a burst of one
//! second's worth). Lines over the rate are dropped and counted; the next
//! line that passes is preceded by one saying how many were dropped. One
//! gate per module name, so a swap or a recovery does not refill it.
//!
//! Everything a module can make the host print goes through it: the
//! guest's `log`, its stdout and stderr, the sandbox's refusals and the
//! host's own lines about the module.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::bindings::Level;
use crate::events::{Event, EventSink};
use crate::limits::{Limits, clip};

/// The log gate of one module.
pub struct LogGate {
    module: std::sync::Arc<str>,
    events: EventSink,
    max_line: usize,
    rate: u32,
    // Taken by whichever thread logs for the module: its worker, a
    // candidate being prepared, the sandbox. Held for a few arithmetic
    // operations, never across the emit.
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Dropped since the last line that passed.
    unreported: u64,
}

impl LogGate {
    /// The gate of `module`, emitting on `events`.
    pub fn new(module: std::sync::Arc<str>, events: EventSink, limits: &Limits) -> Self {
        LogGate {
            module,
            events,
            max_line: limits.log_line,
            rate: limits.log_rate.max(1),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.log_rate.max(1)),
                last: Instant::now(),
                unreported: 0,
            }),
            dropped: AtomicU64::new(0),
        }
    }

    /// Lines dropped so far for going over the rate.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The events sink behind the gate (lifecycle events are not gated).
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// Log `line` for version `version` at `level`, cut and rate-limited.
    /// Takes the line by value: one that fits is moved into the event as
    /// it is, with no copy.
    pub fn log(&self, version: &str, level: Level, line: String) {
        let unreported = {
            let mut b = self.bucket.lock().expect("log gate poisoned");
            let now = Instant::now();
            let rate = f64::from(self.rate);
            let refill = now.duration_since(b.last).as_secs_f64() * rate;
            b.tokens = (b.tokens + refill).min(rate);
            b.last = now;
            if b.tokens < 1.0 {
                b.unreported += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            b.tokens -= 1.0;
            std::mem::take(&mut b.unreported)
        };
        if unreported > 0 {
            self.emit(
                version,
                Level::Warn,
                format!(
                    "{unreported} log line(s) dropped: over {} lines/s (--log-rate)",
                    self.rate
                ),
            );
        }
        let line = if line.len() > self.max_line {
            clip(&line, self.max_line).into_owned()
        } else {
            line
        };
        self.emit(version, level, line);
    }

    fn emit(&self, version: &str, level: Level, line: String) {
        self.events.emit(Event::Log {
            module: self.module.to_string(),
            version: version.to_string(),
            level,
            line,
        });
    }
}
