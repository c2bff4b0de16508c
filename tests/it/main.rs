//! Integration tests: one binary, real guest components.

mod admin;
mod bad_input;
mod basics;
mod batch;
mod bench;
mod durable;
mod faults;
mod fuzz;
mod hostile;
mod invariants;
mod layers;
mod router;
mod sandbox;
mod sdk;
mod shadow;
mod support;
mod upgrade;
mod verify;
