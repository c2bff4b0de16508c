//! The name service: module name → proxy. A sender resolves a name, never
//! an implementation, so a swap behind the name is invisible to it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::proxy::ModuleProxy;

/// Name → proxy.
#[derive(Default)]
pub struct NameService {
    // A RwLock: every `send` resolves a name (read), while only Load,
    // Unload and commits of Syn_Load write.
    map: RwLock<BTreeMap<String, ModuleProxy>>,
}

/// Whether `name` may name a module: a letter, then letters, digits, `_`,
/// `-` or `.`, at most 64 in all. `$` is kept for the host's own senders.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl NameService {
    /// The proxy registered as `name`.
    pub fn resolve(&self, name: &str) -> Option<ModuleProxy> {
        self.map.read().expect("names poisoned").get(name).cloned()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.read().expect("names poisoned").contains_key(name)
    }

    /// Register `proxy` under its name; false if the name is taken.
    pub fn register(&self, proxy: ModuleProxy) -> bool {
        let mut map = self.map.write().expect("names poisoned");
        if map.contains_key(proxy.name()) {
            return false;
        }
        map.insert(proxy.name().to_string(), proxy);
        true
    }

    /// Remove `name`; later sends to it fail.
    pub fn unregister(&self, name: &str) -> Option<ModuleProxy> {
        self.map.write().expect("names poisoned").remove(name)
    }

    /// Every registered proxy, by name.
    pub fn all(&self) -> Vec<ModuleProxy> {
        self.map
            .read()
            .expect("names poisoned")
            .values()
            .cloned()
            .collect()
    }
}
