//! Probe module, version 3: state shape 2, and a new message protocol: it
//! sends protocol 2 and understands 1 and 2. Replacing a sender with it is
//! refused unless its receivers accept protocol 2 too.
probe_core::probe_module!("3.0", shape 2, speaks [2], accepts [1, 2]);
