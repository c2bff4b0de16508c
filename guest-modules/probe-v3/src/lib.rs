//! Probe module, version 3: state shape 2, and a new message protocol: it
//! sends protocol 2 and understands 1 and 2. Replacing a sender with it is
//! refused unless its receivers accept protocol 2 too.

use probe_core::{Guest, Message, ModuleInfo, Probe};

struct ProbeV3;

const PROBE: Probe = Probe {
    version: "3.0",
    shape: 2,
    speaks: &[2],
    accepts: &[1, 2],
};

impl Guest for ProbeV3 {
    fn info() -> ModuleInfo {
        PROBE.info()
    }
    fn init(config: Vec<u8>) -> Result<(), String> {
        PROBE.init(config)
    }
    fn service(msg: Message) -> Result<(), String> {
        PROBE.service(msg)
    }
    fn enable() {
        PROBE.enable()
    }
    fn disable() {
        PROBE.disable()
    }
    fn put_state() -> Result<Vec<u8>, String> {
        PROBE.put_state()
    }
    fn get_state(state: Vec<u8>) -> Result<(), String> {
        PROBE.get_state(state)
    }
}

probe_core::bindings::export!(ProbeV3);
