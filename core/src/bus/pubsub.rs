//! The event manager: (publisher, event) → subscriber names. Subscriptions
//! belong to names, so they survive swaps and may name a publisher that is
//! not loaded yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

/// Subscriptions.
pub struct PubSub {
    // Read on every publish, written on (un)subscribe and Unload.
    map: RwLock<Table>,
    /// Subscriptions one module may hold.
    max_per_module: usize,
}

#[derive(Default)]
struct Table {
    /// (publisher, event) → subscribers.
    subs: BTreeMap<(String, String), BTreeSet<String>>,
    /// Subscriptions per subscriber, for the quota.
    held: HashMap<String, usize>,
}

impl PubSub {
    /// No subscriptions; each module may hold up to `max_per_module`.
    pub fn new(max_per_module: usize) -> Self {
        PubSub {
            map: RwLock::default(),
            max_per_module,
        }
    }

    /// `subscriber` gets `event` from `publisher` from now on, unless it
    /// already holds as many subscriptions as it may.
    pub fn subscribe(&self, subscriber: &str, publisher: &str, event: &str) -> Result<(), String> {
        let mut t = self.map.write().expect("pubsub poisoned");
        let held = t.held.get(subscriber).copied().unwrap_or(0);
        let key = (publisher.to_string(), event.to_string());
        if t.subs.get(&key).is_some_and(|s| s.contains(subscriber)) {
            return Ok(());
        }
        if held >= self.max_per_module {
            return Err(format!(
                "{subscriber} already holds {held} subscriptions, the most it may (--max-subscriptions)"
            ));
        }
        t.subs
            .entry(key)
            .or_default()
            .insert(subscriber.to_string());
        t.held.insert(subscriber.to_string(), held + 1);
        Ok(())
    }

    /// `subscriber` stops getting `event` from `publisher`.
    pub fn unsubscribe(&self, subscriber: &str, publisher: &str, event: &str) {
        let mut t = self.map.write().expect("pubsub poisoned");
        let key = (publisher.to_string(), event.to_string());
        let Table { subs, held } = &mut *t;
        if let Some(set) = subs.get_mut(&key)
            && set.remove(subscriber)
        {
            if set.is_empty() {
                subs.remove(&key);
            }
            if let Some(n) = held.get_mut(subscriber) {
                *n -= 1;
                if *n == 0 {
                    held.remove(subscriber);
                }
            }
        }
    }

    /// Drop every subscription held by `subscriber` (on Unload).
    pub fn forget(&self, subscriber: &str) {
        let mut t = self.map.write().expect("pubsub poisoned");
        if t.held.remove(subscriber).is_none() {
            return;
        }
        t.subs.retain(|_, set| {
            set.remove(subscriber);
            !set.is_empty()
        });
    }

    /// Subscriptions `subscriber` holds.
    pub fn held(&self, subscriber: &str) -> usize {
        let t = self.map.read().expect("pubsub poisoned");
        t.held.get(subscriber).copied().unwrap_or(0)
    }

    /// The subscribers of (`publisher`, `event`) at this moment.
    pub fn subscribers(&self, publisher: &str, event: &str) -> Vec<String> {
        self.map
            .read()
            .expect("pubsub poisoned")
            .subs
            .get(&(publisher.to_string(), event.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The (publisher, event) pairs `subscriber` holds.
    pub fn of(&self, subscriber: &str) -> Vec<(String, String)> {
        let t = self.map.read().expect("pubsub poisoned");
        t.subs
            .iter()
            .filter(|(_, s)| s.contains(subscriber))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every subscription: (publisher, event, subscriber).
    pub fn all(&self) -> Vec<(String, String, String)> {
        let t = self.map.read().expect("pubsub poisoned");
        let mut out = Vec::new();
        for ((publisher, event), subs) in t.subs.iter() {
            for s in subs {
                out.push((publisher.clone(), event.clone(), s.clone()));
            }
        }
        out
    }

    /// Every (publisher, subscriber) pair with at least one subscription:
    /// edges that will carry messages, whether or not any has yet.
    pub fn edges(&self) -> Vec<(String, String)> {
        let t = self.map.read().expect("pubsub poisoned");
        let mut out = BTreeSet::new();
        for ((publisher, _), subs) in t.subs.iter() {
            for s in subs {
                out.insert((publisher.clone(), s.clone()));
            }
        }
        out.into_iter().collect()
    }
}
