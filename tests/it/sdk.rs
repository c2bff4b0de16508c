//! Guests written on the Rust SDK (`liveswap-guest`): the scaffolded
//! counter and its version 2, with typed, versioned state.

use liveswap::Outcome;
use liveswap_ops::ToText as _;

use crate::support::*;
use crate::upgrade::{consecutive_on, version};

const COUNTER_V1: &str = liveswap_guests::COUNTER_V1;
const COUNTER_V2: &str = liveswap_guests::COUNTER_V2;

/// T ticks numbers into C, a counter, every 2 ms.
fn counting() -> Host {
    let mut h = Host::new();
    h.ok(&format!("Load C {COUNTER_V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send C\""));
    h.wait_line("C", "got 3 from T");
    h
}

#[test]
fn a_typed_state_moves_forward_through_its_migration_and_numbers_stay_in_order() {
    let mut h = counting();
    let r = h.txn(&format!("Replace C {COUNTER_V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(version(&h, "C"), "2");
    // Version 2 read version 1's record of T and counts on from it.
    let migrated = h.wait_log("C", |l| l.starts_with("migrated state version 1:"));
    let before: u64 = migrated
        .split_whitespace()
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{migrated}"));
    assert!(before >= 3, "{migrated}");
    let next = h.wait_log("C", |l| l.contains("(served "));
    let (n, _) = parse_got(&next).unwrap();
    assert!(
        next.ends_with(&format!("(served {n})")),
        "served counts every message since version 1: {next}"
    );
    consecutive_on(&mut h, "C", "T", 20);
}

#[test]
fn an_older_version_refuses_a_newer_state_and_the_newer_one_serves_on() {
    let mut h = counting();
    assert_eq!(
        h.txn(&format!("Replace C {COUNTER_V2}")).outcome,
        Outcome::Committed
    );
    let r = h.txn(&format!("Replace C {COUNTER_V1}"));
    assert_eq!(r.outcome, Outcome::Aborted, "{}", r.to_text());
    let why = r.reason.clone().unwrap_or_default();
    assert!(
        why.contains("1 reads state version 1 and older; this state is version 2"),
        "{why}"
    );
    assert_eq!(version(&h, "C"), "2");
    consecutive_on(&mut h, "C", "T", 20);
}

#[test]
fn a_body_the_counter_cannot_read_is_an_error_naming_the_message_and_it_serves_on() {
    let mut h = counting();
    h.ok("Send C text \"not a number\"");
    let line = h.wait_log("C", |l| {
        l.starts_with("service error on `text` from $admin")
    });
    assert!(
        line.contains("the body of `text` from $admin does not decode"),
        "{line}"
    );
    consecutive_on(&mut h, "C", "T", 10);
}
