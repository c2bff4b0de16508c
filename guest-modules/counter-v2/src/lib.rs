//! The counter, version 2: it also counts the messages it served. Its
//! state is version 2; it migrates version 1's, and version 1 refuses its.
use std::collections::BTreeMap;

use liveswap_guest::{Message, Module, Value, decode, info, warn};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    /// The last number from each sender.
    last: BTreeMap<String, u64>,
    /// Messages served, by every version since version 1.
    served: u64,
}

/// Version 1's state.
#[derive(Deserialize)]
struct CounterV1 {
    last: BTreeMap<String, u64>,
}

impl Module for Counter {
    const VERSION: &'static str = "2";
    const STATE_VERSION: u32 = 2;

    fn init(_config: &[u8]) -> Result<Self, String> {
        Ok(Counter::default())
    }

    fn service(&mut self, msg: Message) -> Result<(), String> {
        let n: u64 = decode(&msg)?;
        let last = self.last.entry(msg.from.clone()).or_default();
        if n != *last + 1 {
            warn!("GAP from {}: {n} after {last}", msg.from);
        }
        *last = n;
        self.served += 1;
        info!("got {n} from {} (served {})", msg.from, self.served);
        Ok(())
    }

    fn migrate(from: u32, old: Value) -> Result<Self, String> {
        let v1: CounterV1 = old
            .deserialized()
            .map_err(|e| format!("state version {from}: {e}"))?;
        // Version 1 did not count; its numbers say how many it served.
        let served = v1.last.values().sum();
        info!("migrated state version {from}: {served} served before");
        Ok(Counter {
            last: v1.last,
            served,
        })
    }
}

liveswap_guest::export!(Counter);
