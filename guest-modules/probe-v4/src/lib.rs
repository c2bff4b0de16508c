//! Probe module, version 4: version 2 with a defect. It takes over from
//! version 1 like version 2 does and serves numbers alike, but every
//! message of kind `audit` traps it — the bad release a probation exists
//! to catch.
probe_core::probe_module!("4.0", shape 2, speaks [1], accepts [1], traps on "audit");
