//! Fault containment with real guest components: every kind of guest
//! failure in every call, recovery from the recovery point with poison
//! messages set aside, probation with automatic group rollback, and the
//! per-module memory limit. Each test checks that the rest of the system
//! kept serving and that no accepted message was lost (I1).

use std::time::Duration;

use liveswap::{Cause, Event, ModuleState, Outcome, Phase, RuntimeBuilder};
use liveswap_ops::ToText as _;

use crate::support::*;
use crate::upgrade::{consecutive_on, version};

const V4: &str = liveswap_guests::PROBE_V4;

/// A host whose calls are interrupted after 300 ms, with T ticking
/// numbers into SINK every 2 ms, and SINK ticking numbers into OUT.
fn fed() -> Host {
    let mut h = Host::with(RuntimeBuilder::default().call_deadline(Duration::from_millis(300)));
    h.ok(&format!("Load OUT {V1}"));
    h.ok(&format!(
        "Load SINK {V1} config \"timer s 3; tick-send OUT\""
    ));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 5 from T");
    h.wait_line("OUT", "got 5 from SINK");
    h
}

/// Numbers keep flowing T → SINK → OUT, each stream consecutive from 1.
fn both_streams_whole(h: &mut Host) {
    consecutive_on(h, "SINK", "T", 20);
    consecutive_on(h, "OUT", "SINK", 10);
}

fn poison_listing(h: &Host, name: &str) -> String {
    match h.ok(&format!("Poison {name}")) {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("Poison: {other:?}"),
    }
}

fn transactions_with(h: &mut Host, outcome: Outcome) -> liveswap::TransactionReport {
    match h.wait_event(
        &format!("a {} transaction", outcome.as_str()),
        |e| matches!(e, Event::Transaction(r) if r.outcome == outcome),
    ) {
        Event::Transaction(r) => *r,
        _ => unreachable!(),
    }
}

#[test]
fn a_trapping_module_is_recovered_and_the_poison_message_set_aside() {
    let mut h = fed();
    h.ok("Send SINK do \"trap\"");
    let fault = h
        .wait_state("SINK", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(fault.starts_with("service trapped"), "{fault}");
    let detail = h
        .wait_state("SINK", ModuleState::Recovered)
        .unwrap_or_default();
    assert!(detail.contains("1 poison message(s) set aside"), "{detail}");
    // Its state is continuous (no GAP, no DUP in what it received), the
    // replay sent nothing twice (OUT saw no DUP), and nothing T sent while
    // it recovered was lost.
    both_streams_whole(&mut h);
    assert_eq!(h.rt.module("SINK").unwrap().state(), ModuleState::Serving);
    let listing = poison_listing(&h, "SINK");
    assert!(
        listing.starts_with("1 poison message(s) set aside by SINK")
            && listing.contains("`do` from $admin")
            && listing.contains("\"trap\""),
        "{listing}"
    );
    let poison = h.rt.module("SINK").unwrap().poison();
    assert_eq!(poison[0].message.body, b"trap");
    assert!(poison[0].reason.contains("service trapped"));
    let status = match h.ok("Status") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("{other:?}"),
    };
    assert!(
        status.contains("recovered 1 time(s); 1 poison message(s)"),
        "{status}"
    );
}

#[test]
fn a_message_that_loops_or_exhausts_memory_is_set_aside_the_same_way() {
    let mut h = fed();
    h.ok(&format!("Load SMALL {V1} memory 2MiB"));
    h.ok("Send SINK do \"spin\"");
    let fault = h
        .wait_state("SINK", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(fault.contains("deadline"), "{fault}");
    h.wait_state("SINK", ModuleState::Recovered);
    both_streams_whole(&mut h);

    h.ok("Send SMALL do \"grow\"");
    let fault = h
        .wait_state("SMALL", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(fault.starts_with("service trapped"), "{fault}");
    h.wait_state("SMALL", ModuleState::Recovered);
    assert_eq!(h.rt.module("SMALL").unwrap().poison().len(), 1);
    let status = h.rt.status();
    let small = status.iter().find(|s| s.name == "SMALL").unwrap();
    assert_eq!(small.memory_limit, 2 << 20);
    // SMALL still serves.
    h.ok("Send SMALL do report");
    h.wait_log("SMALL", |l| l.starts_with("report served="));
    both_streams_whole(&mut h);
}

#[test]
fn an_old_version_failing_in_put_state_aborts_and_serves_on() {
    let mut h = fed();
    for (flag, why) in [
        ("trap-put", "SINK v1.0: put-state trapped"),
        (
            "loop-put",
            "SINK v1.0: put-state trapped: call overran its deadline",
        ),
        ("grow-put", "SINK v1.0: put-state trapped"),
        ("fail-put", "SINK v1.0: put-state returned an error"),
    ] {
        h.ok(&format!("Send SINK do \"flag {flag}\""));
        h.wait_line("SINK", &format!("did flag {flag}"));
        let r = h.txn(&format!("Replace SINK {V2}"));
        assert_eq!(r.outcome, Outcome::Aborted, "{flag}: {}", r.to_text());
        let reason = r.reason.unwrap();
        assert!(reason.starts_with(why), "{flag}: {reason}");
        assert_eq!(version(&h, "SINK"), "1.0");
        h.ok(&format!("Send SINK do \"unflag {flag}\""));
        h.wait_line("SINK", &format!("did unflag {flag}"));
        assert_eq!(h.rt.module("SINK").unwrap().state(), ModuleState::Serving);
        both_streams_whole(&mut h);
    }
    assert_eq!(
        h.txn(&format!("Replace SINK {V2}")).outcome,
        Outcome::Committed
    );
    both_streams_whole(&mut h);
}

#[test]
fn a_new_version_failing_in_get_state_aborts_and_the_old_serves_on() {
    let mut h = Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_millis(300))
            .memory_limit(8 << 20)
            .max_state_bytes(64 << 10),
    );
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 5 from T");
    for (set, unset, why) in [
        (
            "flag trap-get",
            "unflag trap-get",
            "SINK v2.0: get-state trapped",
        ),
        (
            "flag loop-get",
            "unflag loop-get",
            "SINK v2.0: get-state trapped: call overran its deadline",
        ),
        (
            "flag grow-get",
            "unflag grow-get",
            "SINK v2.0: get-state trapped",
        ),
        (
            "flag fail-get",
            "unflag fail-get",
            "SINK v2.0: get-state returned an error",
        ),
        ("pad 100000", "pad 0", "SINK v1.0: put-state returned 100"),
    ] {
        h.ok(&format!("Send SINK do \"{set}\""));
        h.wait_line("SINK", &format!("did {set}"));
        let r = h.txn(&format!("Replace SINK {V2}"));
        assert_eq!(r.outcome, Outcome::Aborted, "{set}: {}", r.to_text());
        let reason = r.reason.unwrap();
        assert!(reason.starts_with(why), "{set}: {reason}");
        assert_eq!(version(&h, "SINK"), "1.0");
        h.ok(&format!("Send SINK do \"{unset}\""));
        h.wait_line("SINK", &format!("did {unset}"));
        consecutive_on(&mut h, "SINK", "T", 20);
    }
    assert_eq!(h.rt.module("SINK").unwrap().status().faults, 0);
}

#[test]
fn a_new_module_whose_init_loops_errs_or_exhausts_memory_is_not_loaded() {
    let mut h = fed();
    for (config, why) in [
        ("loop-init", "init trapped: call overran its deadline"),
        ("grow-init", "init trapped"),
        ("trap-init", "init trapped"),
        ("fail-init", "init failed: returned an error"),
    ] {
        let err = h.err(&format!(
            "Load NEW {V2} memory 4MiB config \"sub T x; {config}\""
        ));
        assert!(err.contains(why), "{config}: {err}");
        assert!(h.rt.module("NEW").is_none());
        let r = h.txn(&format!("Syn_Load NEW {V2} config \"{config}\" OTHER {V2}"));
        assert_eq!(r.outcome, Outcome::Refused, "{config}");
        assert!(h.rt.module("NEW").is_none() && h.rt.module("OTHER").is_none());
    }
    both_streams_whole(&mut h);
}

#[test]
fn a_new_version_that_traps_in_probation_rolls_its_group_back() {
    let mut h = fed();
    h.ok("SetProbation 30s");
    let r = h.txn(&format!("Syn_Replace SINK {V4} T {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    h.wait_log("SINK", |l| l.starts_with("took over state shape 1"));
    consecutive_on(&mut h, "SINK", "T", 20);
    // v4's defect: an `audit` message traps it.
    h.ok("Send SINK audit \"check\"");
    let back = transactions_with(&mut h, Outcome::RolledBack);
    assert_eq!(back.origin, "probation");
    assert!(
        back.reason
            .as_deref()
            .unwrap_or("")
            .contains("SINK v4.0: service trapped"),
        "{}",
        back.to_text()
    );
    assert_eq!(back.modules.len(), 2);
    for m in &back.modules {
        let (from, to) = if m.name == "SINK" {
            ("4.0", "1.0")
        } else {
            ("2.0", "1.0")
        };
        assert_eq!(m.from.as_deref(), Some(from), "{}", back.to_text());
        assert_eq!(m.to.as_deref(), Some(to), "{}", back.to_text());
    }
    assert_eq!(version(&h, "SINK"), "1.0");
    assert_eq!(version(&h, "T"), "1.0");
    // The message that trapped v4 was served by v1 (which refuses its body
    // as a number), not lost and not set aside.
    h.wait_log("SINK", |l| {
        l.starts_with("service error on `audit` from $admin")
    });
    assert!(h.rt.module("SINK").unwrap().poison().is_empty());
    // The relay numbers never broke: T's sequence (kept by T v2, handed
    // back to T v1) and SINK's own.
    both_streams_whole(&mut h);
    let history = h.rt.history();
    assert!(
        history
            .iter()
            .any(|r| r.origin == "probation" && r.outcome == Outcome::RolledBack)
    );
    assert!(
        h.rt.commands()
            .iter()
            .any(|c| c.origin == "probation" && c.outcome == "rolled-back")
    );
}

/// A rollback that becomes due while an operator's upgrade of the same
/// group runs waits for it: the two never interleave (one transaction at a
/// time), both end and are reported, and the group ends on one set of
/// versions with every relay number delivered once, in order.
#[test]
fn a_rollback_due_during_an_operators_replace_of_the_group_waits_for_it() {
    let mut h = fed();
    h.ok("SetProbation 30s");
    let r = h.txn(&format!("Syn_Replace SINK {V4} T {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    consecutive_on(&mut h, "SINK", "T", 20);
    // SINK v4 spins on this message until its 300 ms call deadline traps
    // it: the probation breaks while the operator's Syn_Replace below is
    // preparing or voting.
    h.ok("Send SINK do \"spin\"");
    let op_line = format!("Syn_Replace SINK {V2} T {V2}");
    let op = std::thread::scope(|s| s.spawn(|| h.txn(&op_line)).join().unwrap());
    // SINK could not vote YES: it trapped before quiescence (or was
    // already faulted when asked).
    assert_eq!(op.outcome, Outcome::Aborted, "{}", op.to_text());
    let no = op.refusal.clone().expect("an abort names its NO vote");
    assert_eq!(no.module, "SINK", "{}", op.to_text());
    assert!(
        matches!(no.phase, Phase::Quiescence | Phase::Join),
        "{}",
        op.to_text()
    );
    assert!(
        matches!(no.cause, Cause::Trap { .. } | Cause::Faulted),
        "{}",
        op.to_text()
    );
    let back = transactions_with(&mut h, Outcome::RolledBack);
    assert_eq!(back.origin, "probation");
    assert!(back.id > op.id, "{}\n{}", op.to_text(), back.to_text());
    let waited = back.waited_for.clone().unwrap_or_default();
    assert!(waited.contains("Syn_Replace SINK"), "{}", back.to_text());
    // One transaction at a time: the operator's ended before the
    // rollback's began, and History says so in that order.
    let ids: Vec<u64> = h.rt.history().iter().map(|t| t.id).collect();
    let (i_op, i_back) = (
        ids.iter().position(|i| *i == op.id).unwrap(),
        ids.iter().position(|i| *i == back.id).unwrap(),
    );
    assert!(i_op < i_back, "{ids:?}");
    // I3: the group is all-old again, both members.
    assert_eq!(version(&h, "SINK"), "1.0");
    assert_eq!(version(&h, "T"), "1.0");
    // I1: no relay number lost or repeated, across both transactions.
    both_streams_whole(&mut h);
}

#[test]
fn an_error_rate_over_the_threshold_in_probation_rolls_back() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load A {V1}"));
    h.ok("SetProbation 30s errors 20%");
    assert_eq!(
        h.txn(&format!("Replace SINK {V2}")).outcome,
        Outcome::Committed
    );
    h.ok("Send A do \"send SINK 8\"");
    h.wait_line("SINK", "got 8 from A");
    for _ in 0..4 {
        h.ok("Send SINK bogus \"not a number\"");
    }
    let back = transactions_with(&mut h, Outcome::RolledBack);
    assert!(
        back.reason
            .as_deref()
            .unwrap_or("")
            .contains("over the probation threshold of 20%"),
        "{}",
        back.to_text()
    );
    assert_eq!(version(&h, "SINK"), "1.0");
    // v1 took over the numbers v2 had seen: the next one is consecutive.
    h.ok("Send A do \"send SINK 2\"");
    h.wait_line("SINK", "got 10 from A");
    assert!(
        h.violations("SINK").is_empty(),
        "{:?}",
        h.violations("SINK")
    );
}

#[test]
fn after_probation_a_trap_is_recovered_in_the_new_version() {
    let mut h = fed();
    h.ok("SetProbation 200ms");
    let r = h.txn(&format!("Replace SINK {V4}"));
    assert_eq!(r.outcome, Outcome::Committed);
    h.wait_log("SINK", |l| {
        l.starts_with("probation after transaction") && l.contains("ended")
    });
    h.ok("Send SINK audit \"check\"");
    let detail = h
        .wait_state("SINK", ModuleState::Recovered)
        .unwrap_or_default();
    assert!(detail.contains("rebuilt v4.0"), "{detail}");
    assert_eq!(version(&h, "SINK"), "4.0");
    let poison = h.rt.module("SINK").unwrap().poison();
    assert_eq!(poison.len(), 1);
    assert_eq!(poison[0].message.kind, "audit");
    assert_eq!(poison[0].version, "4.0");
    both_streams_whole(&mut h);
    assert!(
        h.rt.history()
            .iter()
            .all(|r| r.outcome != Outcome::RolledBack)
    );
}

#[test]
fn a_replay_gives_the_guest_the_results_its_effects_had_the_first_time() {
    let mut h = Host::new();
    // No checkpoint before the trap: the recovery replays everything.
    h.ok("SetCheckpoint 0");
    // SRC ticks numbers to DST before DST exists: those sends fail, and
    // SRC does not count a number that was not accepted.
    h.ok(&format!(
        "Load SRC {V1} config \"timer t 2; tick-send DST\""
    ));
    h.wait_log("SRC", |l| l.starts_with("send to DST failed"));
    h.ok(&format!("Load DST {V1}"));
    h.wait_line("DST", "got 5 from SRC");
    h.ok("Send SRC do trap");
    let detail = h
        .wait_state("SRC", ModuleState::Recovered)
        .unwrap_or_default();
    assert!(detail.contains("from its config"), "{detail}");
    // Replayed, the failed sends failed again for the guest: its count
    // of numbers sent is what DST really got, so nothing gaps.
    consecutive_on(&mut h, "DST", "SRC", 20);
}

#[test]
fn a_failing_checkpoint_is_tried_again_and_recovery_uses_the_last_good_one() {
    let mut h = fed();
    h.ok("SetCheckpoint 50ms");
    h.ok("Send SINK do \"flag fail-put\"");
    let warned = h.wait_log("SINK", |l| l.starts_with("checkpoint failed"));
    assert!(warned.contains("put-state returned an error"), "{warned}");
    h.ok("Send SINK do \"unflag fail-put\"");
    h.wait_line("SINK", "checkpoints work again");
    h.ok("Send SINK do trap");
    let detail = h
        .wait_state("SINK", ModuleState::Recovered)
        .unwrap_or_default();
    assert!(detail.contains("from a snapshot of"), "{detail}");
    both_streams_whole(&mut h);
}

#[test]
fn an_idle_module_leaves_probation_when_the_window_ends() {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    h.ok("SetProbation 300ms");
    assert_eq!(
        h.txn(&format!("Replace SINK {V2}")).outcome,
        Outcome::Committed
    );
    let point = h.rt.module("SINK").unwrap().status().recovery_point;
    assert!(point.contains("on probation after transaction"), "{point}");
    // No message comes; the window ends all the same, and the recovery
    // point moves to the new version.
    h.wait_log("SINK", |l| {
        l.starts_with("probation after transaction") && l.contains("ended")
    });
    let point = h.rt.module("SINK").unwrap().status().recovery_point;
    assert!(point.starts_with("a snapshot of"), "{point}");
    assert!(!point.contains("probation"), "{point}");
}
