//! The host runtime with real guest components: pub/sub, FIFO, stamped
//! senders, Disable/Enable, Unload, and a guest that never returns.

use std::time::Duration;

use liveswap::{ModuleState, RuntimeBuilder};

use crate::support::*;

#[test]
fn publish_fans_out_and_subscriptions_change_at_run_time() {
    let mut h = Host::new();
    // Subscribers first (P need not be loaded yet), so all see event 1.
    for s in ["S1", "S2", "S3"] {
        h.ok(&format!("Load {s} {V1} config \"sub P beat\""));
    }
    h.ok(&format!(
        "Load P {V1} config \"timer beat 2; tick-publish beat; quiet\""
    ));
    for s in ["S1", "S2", "S3"] {
        h.wait_log(s, |l| l.starts_with("got ") && l.contains("from P"));
    }
    // S2 leaves; S1 and S3 keep getting every event.
    h.ok("Send S2 do \"unsub P beat\"");
    h.wait_line("S2", "did unsub P beat");
    // Events queued for S2 before it unsubscribed still reach it; after
    // ten more beats, nothing more does.
    let s1_now = *h.got("S1", "P").last().unwrap();
    h.wait_line("S1", &format!("got {} from P (beat)", s1_now + 10));
    let s2_last = *h.got("S2", "P").last().unwrap();
    h.wait_line("S1", &format!("got {} from P (beat)", s1_now + 30));
    h.drain();
    assert_eq!(
        *h.got("S2", "P").last().unwrap(),
        s2_last,
        "S2 got events after unsubscribing"
    );
    // S4 joins at run time, S2 comes back.
    h.ok(&format!("Load S4 {V1} config \"sub P beat\""));
    h.ok("Send S2 do \"sub P beat\"");
    h.wait_log("S4", |l| l.starts_with("got ") || l.starts_with("GAP"));
    h.wait_log("S2", |l| l.starts_with("GAP from P"));
    for s in ["S1", "S3"] {
        let got = h.got(s, "P");
        assert_eq!(
            got,
            one_to(got.len() as u64),
            "{s} missed or repeated an event"
        );
        assert!(h.violations(s).is_empty(), "{s}: {:?}", h.violations(s));
    }
}

#[test]
fn messages_arrive_in_order_per_sender() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    for s in ["A", "B", "C"] {
        h.ok(&format!("Load {s} {V1}"));
    }
    for s in ["A", "B", "C"] {
        h.ok(&format!("Send {s} do \"send SINK 1000\""));
    }
    for s in ["A", "B", "C"] {
        h.wait_line("SINK", &format!("got 1000 from {s}"));
    }
    h.drain();
    for s in ["A", "B", "C"] {
        assert_eq!(h.got("SINK", s), one_to(1000), "numbers from {s}");
    }
    assert!(h.violations("SINK").is_empty());
}

#[test]
fn the_host_stamps_the_sender_and_a_guest_cannot_forge_it() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load EVE {V1}"));
    h.ok("Send EVE do \"forge SINK\"");
    let line = h.wait_log("SINK", |l| l.starts_with("got "));
    assert_eq!(line, "got 1 from EVE");
    assert!(!h.logs("SINK").iter().any(|l| l.contains("MALLORY")));
}

#[test]
fn send_to_an_unknown_name_is_an_error_the_guest_sees() {
    let mut h = Host::new();
    h.ok(&format!("Load A {V1}"));
    h.ok("Send A do \"send NOBODY 1\"");
    let line = h.wait_log("A", |l| l.starts_with("send to NOBODY failed"));
    assert_eq!(line, "send to NOBODY failed: no module named `NOBODY`");
}

#[test]
fn disable_holds_ticks_and_mail_and_enable_delivers_everything() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1} config \"timer own 2\""));
    h.ok(&format!("Load A {V1}"));
    h.ok(&format!(
        "Load CLOCK {V1} config \"timer t 2; tick-send WATCH; quiet\""
    ));
    h.ok(&format!("Load WATCH {V1}"));
    h.ok("Disable SINK");
    h.wait_state("SINK", ModuleState::Disabled);
    h.ok("Send A do \"send SINK 10\"");
    h.wait_line("A", "did send SINK 10");
    h.drain();
    let before = h.seen.len();
    // Let time pass, measured by another module's ticks.
    let clock = *h.got("WATCH", "CLOCK").last().unwrap_or(&0);
    h.wait_line("WATCH", &format!("got {} from CLOCK", clock + 25));
    h.drain();
    let during: Vec<_> = h.seen[before..]
        .iter()
        .filter(|e| matches!(e, liveswap::Event::Log { module, .. } if module == "SINK"))
        .collect();
    assert!(during.is_empty(), "a disabled module ran: {during:?}");
    let sink = h.rt.module("SINK").unwrap().status();
    assert_eq!(sink.state, ModuleState::Disabled);
    // The ten messages wait in the mailbox, with at most one tick of SINK's
    // own timer that was queued before the Disable took effect.
    assert!((10..=11).contains(&sink.depth), "depth {}", sink.depth);

    h.ok("Enable SINK");
    h.wait_line("SINK", "got 10 from A");
    h.wait_line("SINK", "tick own");
    assert_eq!(h.got("SINK", "A"), one_to(10));
}

#[test]
fn unload_drains_the_mailbox_first_then_the_name_is_gone() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1} config \"work 200\""));
    h.ok(&format!("Load A {V1}"));
    h.ok("Send A do \"send SINK 300\"");
    h.wait_line("A", "did send SINK 300");
    h.ok("Unload SINK");
    h.wait_state("SINK", ModuleState::Stopped);
    assert_eq!(
        h.got("SINK", "A"),
        one_to(300),
        "every accepted message was served before the stop"
    );
    h.ok("Send A do \"send SINK 1\"");
    h.wait_line("A", "send to SINK failed: no module named `SINK`");
    let err = h.err("Send SINK do report");
    assert!(err.contains("SINK"), "{err}");
}

#[test]
fn a_module_that_never_returns_does_not_stop_the_others() {
    let mut h = Host::with(RuntimeBuilder::default().call_deadline(Duration::from_millis(300)));
    h.ok(&format!("Load LOOP {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.ok(&format!("Load SINK {V1}"));
    h.ok("Send LOOP do spin");
    // While LOOP spins, SINK keeps being served.
    h.wait_line("SINK", "got 20 from T");
    let detail = h
        .wait_state("LOOP", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(detail.contains("deadline"), "{detail}");
    // And after LOOP was stopped, SINK carries on.
    h.drain();
    let n = *h.got("SINK", "T").last().unwrap();
    h.wait_line("SINK", &format!("got {} from T", n + 50));
    assert!(h.violations("SINK").is_empty());
}

#[test]
fn a_trap_is_contained_and_the_guest_panic_message_is_logged() {
    let mut h = Host::new();
    h.ok(&format!("Load BAD {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.ok(&format!("Load SINK {V1}"));
    h.ok("Send BAD do trap");
    let detail = h
        .wait_state("BAD", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(detail.starts_with("service trapped"), "{detail}");
    // The guest's own stderr (its panic message) is in BAD's log.
    h.wait_log("BAD", |l| l.contains("panicked at"));
    h.wait_line("BAD", "trap requested");
    h.wait_line("SINK", "got 30 from T");
    // Rebuilt from its recovery point, the message that trapped set aside.
    h.wait_state("BAD", ModuleState::Recovered);
    assert_eq!(h.rt.module("BAD").unwrap().state(), ModuleState::Serving);
    assert_eq!(h.rt.module("BAD").unwrap().poison().len(), 1);
}
