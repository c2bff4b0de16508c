//! The module table: name → proxy, for the runtime and the coordinator.
//! It registers each module's mailbox with the bus's name service at the
//! same time, so that a name is either sendable and controllable, or
//! neither.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::ModuleProxy;
use crate::bus::NameService;

/// Every loaded module.
pub(crate) struct Modules {
    // A RwLock: read by inspections and by every transaction's
    // preparation, written only by Load, Unload and commits that load.
    map: RwLock<BTreeMap<String, ModuleProxy>>,
    names: Arc<NameService>,
}

impl Modules {
    pub(crate) fn new(names: Arc<NameService>) -> Self {
        Modules {
            map: RwLock::new(BTreeMap::new()),
            names,
        }
    }

    /// The proxy of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<ModuleProxy> {
        self.map
            .read()
            .expect("modules poisoned")
            .get(name)
            .cloned()
    }

    /// Whether `name` is loaded.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.map
            .read()
            .expect("modules poisoned")
            .contains_key(name)
    }

    /// Register `proxy` (and its mailbox) under its name; false if taken.
    pub(crate) fn register(&self, proxy: ModuleProxy) -> bool {
        let mut map = self.map.write().expect("modules poisoned");
        if map.contains_key(proxy.name()) || !self.names.register(proxy.mailbox().clone()) {
            return false;
        }
        map.insert(proxy.name().to_string(), proxy);
        true
    }

    /// Remove `name`; later sends to it fail.
    pub(crate) fn unregister(&self, name: &str) -> Option<ModuleProxy> {
        let mut map = self.map.write().expect("modules poisoned");
        self.names.unregister(name);
        map.remove(name)
    }

    /// Every proxy, by name.
    pub(crate) fn all(&self) -> Vec<ModuleProxy> {
        self.map
            .read()
            .expect("modules poisoned")
            .values()
            .cloned()
            .collect()
    }
}
