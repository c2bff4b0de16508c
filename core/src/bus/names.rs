//! The name service: module name → mailbox. A sender resolves a name, never
//! an implementation, so a swap behind the name is invisible to it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::mailbox::Mailbox;
use super::timers::TickSink;

/// Name → mailbox.
#[derive(Default)]
pub struct NameService {
    // A RwLock: every `send` resolves a name (read), while only Load,
    // Unload and commits of Syn_Load write.
    map: RwLock<BTreeMap<String, Mailbox>>,
}

impl NameService {
    /// The mailbox registered as `name`.
    pub fn resolve(&self, name: &str) -> Option<Mailbox> {
        self.map.read().expect("names poisoned").get(name).cloned()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.read().expect("names poisoned").contains_key(name)
    }

    /// Register `mailbox` under its name; false if the name is taken.
    pub fn register(&self, mailbox: Mailbox) -> bool {
        let mut map = self.map.write().expect("names poisoned");
        if map.contains_key(mailbox.name()) {
            return false;
        }
        map.insert(mailbox.name().to_string(), mailbox);
        true
    }

    /// Remove `name`; later sends to it fail.
    pub fn unregister(&self, name: &str) -> Option<Mailbox> {
        self.map.write().expect("names poisoned").remove(name)
    }

    /// Every registered mailbox, by name.
    pub fn all(&self) -> Vec<Mailbox> {
        self.map
            .read()
            .expect("names poisoned")
            .values()
            .cloned()
            .collect()
    }
}

impl TickSink for NameService {
    fn tick(&self, module: &str, timer: &str) {
        if let Some(mailbox) = self.resolve(module) {
            mailbox.tick(timer);
        }
    }
}
