//! Host timers. A timer belongs to a module *name* (not an implementation),
//! so it survives a swap; each tick is a message from `$timer` whose kind is
//! the timer's name. One thread serves every timer of a runtime.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where ticks go: one tick of `timer` for module `module`.
pub(crate) trait TickSink: Send + Sync {
    /// Deliver a tick (dropped if `module` is not there).
    fn tick(&self, module: &str, timer: &str);
}

#[derive(Default)]
struct State {
    /// Timers per module, for the quota.
    per_module: HashMap<String, usize>,
    /// (module, timer) → (interval, generation). A new `set` bumps the
    /// generation so stale heap entries are recognised and skipped.
    timers: HashMap<(String, String), (Duration, u64)>,
    heap: BinaryHeap<Reverse<(Instant, String, String, u64)>>,
    next_gen: u64,
    stop: bool,
}

/// Every timer of one runtime.
pub struct TimerService {
    // The timer thread sleeps on the Condvar until the earliest deadline or
    // a change; set/cancel notify it so a shorter new timer is honoured.
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Timers one module may hold.
    max_per_module: usize,
    /// Shortest interval.
    min_interval: Duration,
}

impl TimerService {
    /// Start the timer thread; ticks are delivered through `sink`, held
    /// weakly so that the thread ends when its owner goes.
    pub(crate) fn start(sink: Weak<dyn TickSink>, limits: &crate::limits::Limits) -> Self {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("liveswap-timers".into())
            .spawn(move || run(st, sink))
            .expect("spawning the timer thread");
        TimerService {
            state,
            thread: Mutex::new(Some(thread)),
            max_per_module: limits.timers,
            min_interval: Duration::from_millis(u64::from(limits.timer_min_ms.max(1))),
        }
    }

    /// Start or restart timer `timer` of `module`, unless that would give
    /// the module more timers than it may hold. An interval shorter than
    /// the shortest allowed is raised to it.
    pub fn set(&self, module: &str, timer: &str, interval: Duration) -> Result<(), String> {
        let interval = interval.max(self.min_interval);
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().expect("timers poisoned");
        let key = (module.to_string(), timer.to_string());
        let held = st.per_module.get(module).copied().unwrap_or(0);
        if !st.timers.contains_key(&key) {
            if held >= self.max_per_module {
                return Err(format!(
                    "timer `{}` not set: {module} already holds {held} timers, the most it may (--max-timers)",
                    crate::limits::clip(timer, 64)
                ));
            }
            st.per_module.insert(module.to_string(), held + 1);
        }
        st.next_gen += 1;
        let generation = st.next_gen;
        st.timers.insert(key, (interval, generation));
        st.heap.push(Reverse((
            Instant::now() + interval,
            module.to_string(),
            timer.to_string(),
            generation,
        )));
        cv.notify_one();
        Ok(())
    }

    /// Stop timer `timer` of `module`.
    pub fn cancel(&self, module: &str, timer: &str) {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().expect("timers poisoned");
        if st
            .timers
            .remove(&(module.to_string(), timer.to_string()))
            .is_some()
            && let Some(n) = st.per_module.get_mut(module)
        {
            *n -= 1;
            if *n == 0 {
                st.per_module.remove(module);
            }
        }
    }

    /// Stop every timer of `module` (on Unload). Their heap entries are
    /// dropped as they come due (and at once if there are many stale ones).
    pub fn cancel_all(&self, module: &str) {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().expect("timers poisoned");
        st.timers.retain(|(m, _), _| m != module);
        st.per_module.remove(module);
        if st.heap.len() > 2 * st.timers.len() + 64 {
            let State { heap, timers, .. } = &mut *st;
            heap.retain(|Reverse((_, m, t, g))| {
                timers
                    .get(&(m.clone(), t.clone()))
                    .is_some_and(|(_, current)| current == g)
            });
        }
    }

    /// Names of `module`'s timers with their intervals.
    pub fn of(&self, module: &str) -> Vec<(String, Duration)> {
        let (lock, _) = &*self.state;
        let st = lock.lock().expect("timers poisoned");
        let mut v: Vec<_> = st
            .timers
            .iter()
            .filter(|((m, _), _)| m == module)
            .map(|((_, t), (i, _))| (t.clone(), *i))
            .collect();
        v.sort();
        v
    }

    /// Stop the thread.
    pub(crate) fn shutdown(&self) {
        {
            let (lock, cv) = &*self.state;
            lock.lock().expect("timers poisoned").stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.lock().expect("timers poisoned").take() {
            let _ = t.join();
        }
    }
}

fn run(state: Arc<(Mutex<State>, Condvar)>, sink: Weak<dyn TickSink>) {
    let (lock, cv) = &*state;
    let mut st = lock.lock().expect("timers poisoned");
    loop {
        if st.stop {
            return;
        }
        let Some(Reverse((due, _, _, _))) = st.heap.peek() else {
            st = cv.wait(st).expect("timers poisoned");
            continue;
        };
        let now = Instant::now();
        if *due > now {
            let wait = *due - now;
            st = cv.wait_timeout(st, wait).expect("timers poisoned").0;
            continue;
        }
        let Reverse((due, module, timer, generation)) = st.heap.pop().expect("peeked");
        let key = (module, timer);
        let Some(&(interval, current)) = st.timers.get(&key) else {
            continue; // cancelled
        };
        if current != generation {
            continue; // replaced by a newer `set`
        }
        // Keep the cadence, but after a stall do not fire a burst of
        // catch-up ticks: resume one interval from now.
        let mut next = due + interval;
        if next <= now {
            next = now + interval;
        }
        st.heap
            .push(Reverse((next, key.0.clone(), key.1.clone(), generation)));
        // Deliver without the lock: a mailbox push can contend with senders.
        drop(st);
        let Some(sink) = sink.upgrade() else {
            return;
        };
        sink.tick(&key.0, &key.1);
        drop(sink);
        st = lock.lock().expect("timers poisoned");
    }
}
