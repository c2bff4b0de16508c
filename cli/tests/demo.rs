//! `liveswap demo` as a user runs it, shortened: the router goes through
//! every transaction and, between the third and the fourth, is handed to
//! a fresh `liveswap run --take-over` process and taken back; the demo
//! exits 0 only if every relay number arrived once and in order and no
//! module went silent outside a transaction or a handoff.

use std::process::Command;

#[test]
fn the_demo_hands_the_router_to_a_fresh_process_and_every_invariant_holds() {
    let out = Command::new(env!("CARGO_BIN_EXE_liveswap"))
        .args(["demo", "--no-admin", "--settle", "1500ms"])
        .output()
        .expect("liveswap runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let handed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("handoff at"))
        .collect();
    assert_eq!(handed.len(), 2, "{text}");
    assert!(
        handed[0].contains("a fresh `liveswap run --take-over`")
            && handed[0].contains("restored 3 modules"),
        "{}",
        handed[0]
    );
    assert!(handed[1].contains("restored 3 modules"), "{}", handed[1]);
    every_invariant_held(&text);
}

/// `liveswap demo --lattice`: the router spread over this process and two
/// `liveswap run` processes on a local nats-server with JetStream; IP and
/// OSPF move between the hosts and are upgraded in groups spanning hosts,
/// and every relay number still arrives once, with no module silent
/// outside a transaction.
#[test]
fn the_lattice_demo_moves_ospf_between_three_hosts_and_every_invariant_holds() {
    let out = Command::new(env!("CARGO_BIN_EXE_liveswap"))
        .args(["demo", "--lattice", "--no-admin", "--settle", "1500ms"])
        .output()
        .expect("liveswap runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for to in [
        "IP to host b",
        "OSPF to host c",
        "OSPF to host b",
        "OSPF to host a",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("moved {to}: paused "))),
            "no move of {to}:\n{text}"
        );
    }
    assert!(
        text.contains("on host b") && text.contains("on host c"),
        "no group spanning hosts:\n{text}"
    );
    every_invariant_held(&text);
}

/// The summary says every relay number arrived once and in order, and
/// that every invariant held.
fn every_invariant_held(text: &str) {
    for sender in ["IP   ", "VRRP "] {
        assert!(
            text.lines().any(
                |l| l.starts_with(&format!("relay numbers OSPF got from {sender}"))
                    && l.ends_with("consecutive, none lost or repeated")
            ),
            "{text}"
        );
    }
    assert!(text.contains("every invariant held"), "{text}");
}
