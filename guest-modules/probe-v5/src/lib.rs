//! Probe module, version 5: version 2 with a changed answer. It takes
//! over from version 1 like version 2 does and serves numbers alike, but
//! for every number of kind `audit` it also sends an `audited` message to
//! the module named `auditor`, and it loops forever on a message of kind
//! `stall`: releases a shadow run exists to catch before they serve.
probe_core::probe_module!("5.0", shape 2, speaks [1], accepts [1], traps on "", tells auditor on "audit", spins on "stall");
