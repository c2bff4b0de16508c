//! Probe module, version 2: writes state shape 2 and reads shapes 1 and 2,
//! so it takes over from version 1 with its state intact.
probe_core::probe_module!("2.0", shape 2, speaks [1], accepts [1]);
