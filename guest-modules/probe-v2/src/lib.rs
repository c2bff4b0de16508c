//! Probe module, version 2: writes state shape 2 and reads shapes 1 and 2,
//! so it takes over from version 1 with its state intact.

use probe_core::{Guest, Message, ModuleInfo, Probe};

struct ProbeV2;

const PROBE: Probe = Probe {
    version: "2.0",
    shape: 2,
    speaks: &[1],
    accepts: &[1],
};

impl Guest for ProbeV2 {
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

probe_core::bindings::export!(ProbeV2);
