//! The event manager: (publisher, event) → subscriber names. Subscriptions
//! belong to names, so they survive swaps and may name a publisher that is
//! not loaded yet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

/// Subscriptions.
#[derive(Default)]
pub struct PubSub {
    // Read on every publish, written on (un)subscribe and Unload.
    map: RwLock<BTreeMap<(String, String), BTreeSet<String>>>,
}

impl PubSub {
    /// `subscriber` gets `event` from `publisher` from now on.
    pub fn subscribe(&self, subscriber: &str, publisher: &str, event: &str) {
        self.map
            .write()
            .expect("pubsub poisoned")
            .entry((publisher.to_string(), event.to_string()))
            .or_default()
            .insert(subscriber.to_string());
    }

    /// `subscriber` stops getting `event` from `publisher`.
    pub fn unsubscribe(&self, subscriber: &str, publisher: &str, event: &str) {
        let mut map = self.map.write().expect("pubsub poisoned");
        let key = (publisher.to_string(), event.to_string());
        if let Some(set) = map.get_mut(&key) {
            set.remove(subscriber);
            if set.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// Drop every subscription held by `subscriber` (on Unload).
    pub fn forget(&self, subscriber: &str) {
        let mut map = self.map.write().expect("pubsub poisoned");
        map.retain(|_, set| {
            set.remove(subscriber);
            !set.is_empty()
        });
    }

    /// The subscribers of (`publisher`, `event`) at this moment.
    pub fn subscribers(&self, publisher: &str, event: &str) -> Vec<String> {
        self.map
            .read()
            .expect("pubsub poisoned")
            .get(&(publisher.to_string(), event.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (publisher, subscriber) pair with at least one subscription:
    /// edges that will carry messages, whether or not any has yet.
    pub fn edges(&self) -> Vec<(String, String)> {
        let map = self.map.read().expect("pubsub poisoned");
        let mut out = BTreeSet::new();
        for ((publisher, _), subs) in map.iter() {
            for s in subs {
                out.insert((publisher.clone(), s.clone()));
            }
        }
        out.into_iter().collect()
    }
}
