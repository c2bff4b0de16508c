//! Arrival rates per sender over a sliding window, for the queueing model
//! of `Status` (thesis 4.5): the buffer a swap needs is Σλ·T.

use std::time::Instant;

/// Seconds in the window.
pub const WINDOW_SECS: u64 = 5;

/// Counts of arrivals in one-second buckets over the last `WINDOW_SECS`.
#[derive(Clone, Debug, Default)]
pub struct RateWindow {
    buckets: [(u64, u64); WINDOW_SECS as usize],
    /// Arrivals since the module was loaded.
    pub total: u64,
}

impl RateWindow {
    /// Count `n` arrivals at `now`.
    pub fn record_n(&mut self, origin: Instant, now: Instant, n: u64) {
        let sec = now.duration_since(origin).as_secs();
        let slot = &mut self.buckets[(sec % WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
        self.total += n;
    }

    /// Arrivals per second over the last full window.
    pub fn rate(&self, origin: Instant, now: Instant) -> f64 {
        let sec = now.duration_since(origin).as_secs();
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s + WINDOW_SECS > sec && *s <= sec)
            .map(|(_, c)| c)
            .sum();
        n as f64 / WINDOW_SECS as f64
    }
}
