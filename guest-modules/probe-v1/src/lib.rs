//! Probe module, version 1: writes and reads state shape 1 only, so a
//! downgrade from version 2 is refused by `get-state`.
probe_core::probe_module!("1.0", shape 1, speaks [1], accepts [1]);
