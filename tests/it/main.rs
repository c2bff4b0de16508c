//! Integration tests: one binary, real guest components.

mod admin;
mod bad_input;
mod basics;
mod bench;
mod faults;
mod invariants;
mod router;
mod support;
mod upgrade;
mod verify;
