//! Live upgrade transactions with real guest components: every commit and
//! abort path, state-shape changes, scope refusals and the queueing model.

use liveswap::{Event, ModuleState, Outcome};
use liveswap_ops::ToText as _;

use crate::support::*;

const V3: &str = liveswap_guests::PROBE_V3;

/// T ticks numbers into SINK every 2 ms.
pub(crate) fn feeding() -> Host {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 3 from T");
    h
}

/// SINK keeps getting T's numbers, consecutive, from before to after.
pub(crate) fn consecutive_on(h: &mut Host, receiver: &str, sender: &str, more: u64) {
    h.drain();
    let n = *h.got(receiver, sender).last().unwrap();
    h.wait_log(receiver, |l| {
        parse_got(l).is_some_and(|(m, s)| m == n + more && s == sender)
    });
    let got = h.got(receiver, sender);
    assert_eq!(got, one_to(got.len() as u64), "{receiver} from {sender}");
    assert!(
        h.violations(receiver).is_empty(),
        "{:?}",
        h.violations(receiver)
    );
}

pub(crate) fn version(h: &Host, name: &str) -> String {
    h.rt.module(name).unwrap().version().label().to_string()
}

#[test]
fn replace_one_module_keeps_state_and_every_message() {
    let mut h = feeding();
    let r = h.txn(&format!("Replace SINK {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    let m = &r.modules[0];
    assert_eq!(
        (m.from.as_deref(), m.to.as_deref()),
        (Some("1.0"), Some("2.0"))
    );
    assert!(m.pause_us.is_some() && m.quiesce_us.is_some());
    // Where the pause went: the two state calls inside it, and the rest
    // the host's; the report says so in words too.
    let (put, get) = (m.put_state_us.unwrap(), m.get_state_us.unwrap());
    assert!(put + get <= m.pause_us.unwrap(), "{m:?}");
    let text = r.to_text();
    assert!(
        text.contains(&format!("(put-state {put} µs, get-state {get} µs)")),
        "{text}"
    );
    assert_eq!(version(&h, "SINK"), "2.0");
    // v2 took over v1's record of T and carries on counting from it.
    h.wait_log("SINK", |l| {
        l.starts_with("took over state shape 1, seen T:")
    });
    consecutive_on(&mut h, "SINK", "T", 20);
    // The sender is replaced too: its own counter continues.
    let r = h.txn(&format!("Replace T {V2}"));
    assert_eq!(r.outcome, Outcome::Committed);
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_group_commits_together_even_when_it_messages_itself() {
    let mut h = Host::new();
    h.ok(&format!("Load A {V1} config \"timer t 1; tick-send B\""));
    h.ok(&format!("Load B {V1} config \"timer t 1; tick-send A\""));
    h.ok(&format!(
        "Load C {V1} config \"timer t 1; tick-send A; tick-send B\""
    ));
    h.wait_line("A", "got 5 from B");
    h.wait_line("B", "got 5 from C");
    let r = h.txn(&format!("Syn_Replace A {V2} B {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(
        (version(&h, "A"), version(&h, "B"), version(&h, "C")),
        ("2.0".into(), "2.0".into(), "1.0".into())
    );
    for m in &r.modules {
        assert!(m.pause_us.is_some(), "{}", r.to_text());
    }
    consecutive_on(&mut h, "A", "B", 20);
    consecutive_on(&mut h, "B", "A", 20);
    consecutive_on(&mut h, "A", "C", 20);
    consecutive_on(&mut h, "B", "C", 20);
}

#[test]
fn sequential_mode_commits_a_group_too() {
    let mut h = feeding();
    h.ok(&format!("Load X {V1} config \"timer t 2; tick-send SINK\""));
    h.ok("SetMode sequential");
    let r = h.txn(&format!("Syn_Replace SINK {V2} T {V2} X {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(r.mode, "sequential");
    consecutive_on(&mut h, "SINK", "T", 20);
    consecutive_on(&mut h, "SINK", "X", 20);
}

#[test]
fn early_votes_keep_a_group_serving_until_the_decision_all_or_nothing() {
    let mut h = Host::new();
    h.ok(&format!("Load A {V1} config \"timer t 1; tick-send B\""));
    h.ok(&format!("Load B {V1} config \"timer t 1; tick-send A\""));
    h.ok(&format!("Load T {V1}"));
    // SLOW has 12 messages of 25 ms each ahead of its TERM: A and B vote
    // long before it does, and serve on meanwhile.
    h.ok(&format!("Load SLOW {V1} config \"work 25000\""));
    h.ok(&format!("Load KEEP {V2}"));
    h.wait_line("A", "got 5 from B");
    h.ok("SetMode early");
    let slow_ahead = |h: &mut Host, n: u64| {
        h.ok(&format!("Send T do \"send SLOW {n}\""));
        h.wait_line("T", &format!("did send SLOW {n}"));
    };

    // Too short a bound: SLOW cannot vote, so nobody switches.
    slow_ahead(&mut h, 12);
    h.ok("SetTimer 150ms");
    let r = h.txn(&format!("Syn_Replace A {V2} B {V2} SLOW {V2}"));
    assert_eq!(r.outcome, Outcome::Aborted, "{}", r.to_text());
    assert_eq!(r.mode, "early");
    assert!(
        r.reason.as_deref().unwrap().contains("SLOW"),
        "{}",
        r.to_text()
    );
    assert_eq!(
        (version(&h, "A"), version(&h, "B"), version(&h, "SLOW")),
        ("1.0".into(), "1.0".into(), "1.0".into())
    );
    consecutive_on(&mut h, "A", "B", 20);
    consecutive_on(&mut h, "B", "A", 20);
    h.wait_line("SLOW", "got 12 from T");

    // A bound SLOW can meet: all three switch, and A and B, which voted
    // ~300 ms before SLOW, were never paused for long. Their new versions
    // took over what the old ones served after the vote: the numbers run
    // on without a gap or a repeat.
    slow_ahead(&mut h, 24);
    h.ok("SetTimer 10s");
    let r = h.txn(&format!("Syn_Replace A {V2} B {V2} SLOW {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(
        (version(&h, "A"), version(&h, "B"), version(&h, "SLOW")),
        ("2.0".into(), "2.0".into(), "2.0".into())
    );
    let row = |n: &str| r.modules.iter().find(|m| m.name == n).unwrap();
    // SLOW's work held the vote open for most of the transaction.
    assert!(r.total_us >= 200_000, "{}", r.to_text());
    for m in ["A", "B"] {
        let pause = row(m).pause_us.unwrap();
        assert!(pause * 4 < r.total_us, "{m}: {}", r.to_text());
        assert!(row(m).get_state_us.is_some(), "{}", r.to_text());
    }
    consecutive_on(&mut h, "A", "B", 50);
    consecutive_on(&mut h, "B", "A", 50);
    h.wait_line("SLOW", "got 36 from T");
    assert_eq!(h.got("SLOW", "T"), one_to(36));
}

#[test]
fn a_module_that_cannot_quiesce_in_time_aborts_the_group() {
    let mut h = feeding();
    // KEEP runs v2, so the repository keeps it compiled and the prepare
    // phase below is short, whatever the machine's load.
    h.ok(&format!("Load KEEP {V2}"));
    // SLOW has 60 messages of 25 ms each ahead of TERM: 1.5 s of work
    // against a bound of 200 ms.
    h.ok(&format!("Load SLOW {V1} config \"work 25000\""));
    h.ok("Send T do \"send SLOW 60\"");
    h.wait_line("T", "did send SLOW 60");
    h.ok("SetTimer 200ms");
    let r = h.txn(&format!("Syn_Replace SINK {V2} SLOW {V2}"));
    assert_eq!(r.outcome, Outcome::Aborted, "{}", r.to_text());
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("SLOW") && reason.contains("did not reach quiescence within"),
        "{reason}"
    );
    assert!(!reason.contains("SINK"), "SINK was ready: {reason}");
    assert_eq!(
        (version(&h, "SINK"), version(&h, "SLOW")),
        ("1.0".into(), "1.0".into())
    );
    // Nothing lost: SLOW serves all 40, SINK carries on.
    h.wait_line("SLOW", "got 60 from T");
    assert_eq!(h.got("SLOW", "T"), one_to(60));
    consecutive_on(&mut h, "SINK", "T", 20);
    // With a longer bound the same upgrade commits.
    h.ok("SetTimer 10s");
    let r = h.txn(&format!("Syn_Replace SINK {V2} SLOW {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
}

#[test]
fn a_newer_state_shape_is_refused_by_a_downgrade_and_nothing_changes() {
    let mut h = feeding();
    assert_eq!(
        h.txn(&format!("Replace SINK {V2}")).outcome,
        Outcome::Committed
    );
    let r = h.txn(&format!("Replace SINK {V1}"));
    assert_eq!(r.outcome, Outcome::Aborted);
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("state shape 2 is newer than version 1.0 reads"),
        "{reason}"
    );
    assert_eq!(version(&h, "SINK"), "2.0");
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn syn_upgrade_replaces_and_loads_and_starts_them_together() {
    let mut h = feeding();
    let r = h.txn(&format!("Syn_Upgrade SINK {V2} NEW {V1}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(version(&h, "SINK"), "2.0");
    assert_eq!(h.rt.module("NEW").unwrap().state(), ModuleState::Serving);
    // The new module is reachable and serves.
    h.ok("Send T do \"send NEW 3\"");
    h.wait_line("NEW", "got 3 from T");
    consecutive_on(&mut h, "SINK", "T", 10);
    // Syn_Load of two more, started together.
    let r = h.txn(&format!("Syn_Load N1 {V1} N2 {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    h.ok("Send N1 do \"send N2 2\"");
    h.wait_line("N2", "got 2 from N1");
}

#[test]
fn a_refused_command_changes_nothing() {
    let mut h = feeding();
    let before = h.mark();
    for (cmd, why) in [
        (
            format!("Syn_Replace SINK {V2} GHOST {V2}"),
            "no module named `GHOST` is loaded",
        ),
        (
            format!("Syn_Replace SINK {V2} T /missing.wasm"),
            "/missing.wasm: cannot read",
        ),
        (
            format!("Syn_Load SINK {V2}"),
            "a module named `SINK` is already loaded",
        ),
        (format!("Syn_Upgrade SINK {V2} NEW {V1}x"), "cannot read"),
    ] {
        let r = h.txn(&cmd);
        assert_eq!(r.outcome, Outcome::Refused, "{cmd}");
        assert!(
            r.reason.as_deref().unwrap_or("").contains(why),
            "{cmd}: {:?}",
            r.reason
        );
    }
    assert!(h.rt.module("NEW").is_none());
    assert_eq!(
        (version(&h, "SINK"), version(&h, "T")),
        ("1.0".into(), "1.0".into())
    );
    h.drain();
    let touched = h.seen[before..].iter().any(|e| {
        matches!(
            e,
            Event::Module {
                state: ModuleState::Quiescing,
                ..
            }
        )
    });
    assert!(!touched, "a refused transaction paused a module");
    // A disabled module is not upgraded behind the operator's back.
    h.ok("Disable SINK");
    let r = h.txn(&format!("Replace SINK {V2}"));
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(r.reason.unwrap().contains("Enable it before upgrading it"));
    h.ok("Enable SINK");
    consecutive_on(&mut h, "SINK", "T", 10);
}

#[test]
fn a_new_protocol_needs_its_receivers_in_the_same_transaction() {
    let mut h = feeding();
    let r = h.txn(&format!("Replace T {V3}"));
    assert_eq!(r.outcome, Outcome::Refused);
    let reason = r.reason.unwrap();
    assert!(
        reason.starts_with("SINK must be upgraded in the same transaction"),
        "{reason}"
    );
    assert_eq!(version(&h, "T"), "1.0");
    // Upgrading the receiver first to a version that accepts both keeps the
    // scope minimal; then the sender can move alone.
    assert_eq!(
        h.txn(&format!("Replace SINK {V3}")).outcome,
        Outcome::Committed
    );
    assert_eq!(
        h.txn(&format!("Replace T {V3}")).outcome,
        Outcome::Committed
    );
    consecutive_on(&mut h, "SINK", "T", 10);
}

#[test]
fn versions_are_shared_by_digest_and_released_when_unused() {
    let mut h = feeding();
    let listing = |h: &Host| match h.ok("Versions") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("{other:?}"),
    };
    let v = listing(&h);
    assert_eq!(v.lines().last(), Some("signatures: not checked"), "{v}");
    assert_eq!(
        v.lines().count(),
        3,
        "a header, one version run by two modules, the signature note:\n{v}"
    );
    assert!(v.contains("SINK, T"), "{v}");
    h.txn(&format!("Syn_Replace SINK {V2} T {V2}"));
    let v = listing(&h);
    assert!(
        !v.contains("v1.0"),
        "v1 is no longer run, so it is released:\n{v}"
    );
    assert!(v.contains("v2.0") && v.contains("SINK, T"), "{v}");
    h.wait_log("SINK", |l| {
        l.starts_with("took over state shape 1, seen T:")
    });
}

#[test]
fn a_full_mailbox_refuses_sends_and_status_shows_the_queueing_model() {
    let mut h = Host::new();
    h.ok(&format!("Load SMALL {V1} capacity 5"));
    h.ok(&format!("Load A {V1}"));
    h.ok("Disable SMALL");
    h.ok("Send A do \"send SMALL 8\"");
    h.wait_line("A", "did send SMALL 8");
    let fails: Vec<String> = h
        .logs("A")
        .into_iter()
        .filter(|l| l.starts_with("send to SMALL failed"))
        .collect();
    assert_eq!(fails.len(), 3, "{fails:?}");
    assert!(fails[0].contains("mailbox of `SMALL` is full (5 messages)"));
    let status = match h.ok("Status") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("{other:?}"),
    };
    let row = status
        .lines()
        .find(|l| l.starts_with("SMALL"))
        .unwrap()
        .to_string();
    assert!(
        row.contains("disabled") && row.contains(" A 1.0"),
        "{status}"
    );
    assert!(
        status.contains(
            "mailbox holds 5 message(s); at 1.0/s a quiescence of T=10s queues 10: OVER CAPACITY"
        ),
        "{status}"
    );
    h.ok("Enable SMALL");
    h.wait_line("SMALL", "got 5 from A");
    // Refused messages were not counted: the next one is number 6.
    h.ok("Send A do \"send SMALL 1\"");
    h.wait_line("SMALL", "got 6 from A");
    assert!(h.violations("SMALL").is_empty());
}

#[test]
fn a_pinned_digest_must_match_and_a_mismatch_changes_nothing() {
    let mut h = feeding();
    let digest = h.rt.module("SINK").unwrap().version().digest.clone();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = h.err(&format!("Load X {V1} pin {wrong}"));
    assert!(
        err.contains(&format!(
            "digest {digest} does not match the pinned {wrong}"
        )),
        "{err}"
    );
    assert!(err.contains(V1), "names the file: {err}");
    assert!(h.rt.module("X").is_none());
    h.ok(&format!("Load X {V1} pin {digest}"));
    let r = h.txn(&format!("Replace SINK {V2} pin {wrong}"));
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(r.reason.unwrap().contains("does not match the pinned"));
    assert_eq!(version(&h, "SINK"), "1.0");
    consecutive_on(&mut h, "SINK", "T", 10);
}

#[test]
fn a_state_over_the_limit_aborts_and_the_old_version_serves_on() {
    let mut h = Host::with(
        liveswap::RuntimeBuilder::default()
            .call_deadline(std::time::Duration::from_secs(2))
            .max_state_bytes(4096),
    );
    h.ok(&format!("Load SINK {V1} config \"pad 8000\""));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 3 from T");
    let r = h.txn(&format!("Replace SINK {V2}"));
    assert_eq!(r.outcome, Outcome::Aborted);
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("SINK v1.0: put-state returned")
            && reason.contains("over the limit of 4096"),
        "{reason}"
    );
    assert_eq!(version(&h, "SINK"), "1.0");
    consecutive_on(&mut h, "SINK", "T", 10);
    // A smaller state goes through.
    h.ok("Send SINK do \"pad 100\"");
    h.wait_line("SINK", "did pad 100");
    assert_eq!(
        h.txn(&format!("Replace SINK {V2}")).outcome,
        Outcome::Committed
    );
    consecutive_on(&mut h, "SINK", "T", 10);
}

#[test]
fn the_running_file_says_nothing_else_changed_and_an_unknown_name_reads_no_file() {
    let mut h = feeding();
    let r = h.txn(&format!("Replace SINK {V1}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert!(r.modules[0].same_version);
    assert!(
        r.to_text().contains(
            "(the file it ran already: a fresh instance took its state over; nothing else changed)"
        ),
        "{}",
        r.to_text()
    );
    let r = h.txn(&format!("Replace SINK {V2}"));
    assert!(!r.modules[0].same_version && !r.to_text().contains("nothing else changed"));
    consecutive_on(&mut h, "SINK", "T", 10);
    // A name that is not loaded is refused before its file is read, let
    // alone compiled: no `preparing` progress, and the missing file is
    // not what the refusal is about.
    let mark = h.mark();
    let r = h.txn("Replace NOPE /nonexistent/nope.wasm");
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.to_text());
    let reason = r.reason.clone().unwrap_or_default();
    assert!(reason.contains("no module named `NOPE`"), "{reason}");
    h.drain();
    let preparing = h.seen[mark..]
        .iter()
        .any(|e| matches!(e, Event::Progress { text, .. } if text.starts_with("preparing")));
    assert!(!preparing, "it prepared before refusing");
}
