//! Probe module, version 1: writes and reads state shape 1 only, so a
//! downgrade from version 2 is refused by `get-state`.

use probe_core::{Guest, Message, ModuleInfo, Probe};

struct ProbeV1;

const PROBE: Probe = Probe {
    version: "1.0",
    shape: 1,
    speaks: &[1],
    accepts: &[1],
};

impl Guest for ProbeV1 {
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

probe_core::bindings::export!(ProbeV1);
