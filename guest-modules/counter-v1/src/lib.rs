//! A liveswap module: checks that each sender's numbers arrive in order.
use std::collections::BTreeMap;

use liveswap_guest::{Message, Module, decode, info, warn};
use serde::{Deserialize, Serialize};

/// The module, and its state: the host carries it to the next version.
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    /// The last number from each sender.
    last: BTreeMap<String, u64>,
}

impl Module for Counter {
    const VERSION: &'static str = "1";

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
        info!("got {n} from {}", msg.from);
        Ok(())
    }
}

liveswap_guest::export!(Counter);
