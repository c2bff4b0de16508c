//! Shadow runs: a new version beside the old one, on a copy of its
//! traffic, its effects compared and never delivered; promoted with no
//! state moved in the pause, or dropped at the first difference, trap,
//! loop or lag, the old version untouched throughout.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use liveswap::{Event, Outcome, RuntimeBuilder};
use liveswap_ops::Reply;

use crate::support::*;

const V4: &str = liveswap_guests::PROBE_V4;
const V5: &str = liveswap_guests::PROBE_V5;

/// Wait until `what` holds, checking every few milliseconds.
fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `name`'s `report` line, once it has seen `n` numbers from S.
fn report_after(h: &mut Host, name: &str, n: u64) -> String {
    let want = format!("S:{n}");
    let end = Instant::now() + PATIENCE;
    loop {
        let since = h.mark();
        h.ok(&format!("Send {name} do report"));
        let line = h.wait_event_since(since, "a report", |e| {
            matches!(e, Event::Log { module, line, .. } if module == name && line.starts_with("report "))
        });
        let Event::Log { line, .. } = line else {
            unreachable!()
        };
        if line.split_whitespace().any(|w| w == format!("seen={want}")) {
            return line;
        }
        assert!(Instant::now() < end, "{name} never saw {want}: {line}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// S's `sent=` counts, from its `report` line.
fn sent_by_s(h: &mut Host) -> String {
    let since = h.mark();
    h.ok("Send S do report");
    let Event::Log { line, .. } = h.wait_event_since(since, "S's report", |e| {
        matches!(e, Event::Log { module, line, .. } if module == "S" && line.starts_with("report "))
    }) else {
        unreachable!()
    };
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("sent="))
        .unwrap_or_default()
        .to_string()
}

/// Stop S's ticks (a tick already queued is still served); how many
/// numbers it sent to `to`, once that no longer changes.
fn stop_sender(h: &mut Host, to: &str) -> u64 {
    h.ok("Send S do \"cancel t\"");
    let mut last = sent_by_s(h);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = sent_by_s(h);
        if now == last {
            break;
        }
        last = now;
    }
    count_for(&last, to)
}

/// How many numbers S sent to `to`, once stopped.
fn sent_to(h: &mut Host, to: &str) -> u64 {
    count_for(&sent_by_s(h), to)
}

/// `to`'s count in a `sent=` list (`Q:12,R:12`).
fn count_for(sent: &str, to: &str) -> u64 {
    sent.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{to}:")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("S sent nothing to {to}: {sent}"))
}

/// The line a shadow's end was logged with by `module`, at or after
/// event `since`.
fn dropped(h: &mut Host, since: usize, module: &str, version: &str) -> String {
    let head = format!("shadow v{version} dropped: ");
    let e = h.wait_event_since(since, "a shadow dropped", |e| {
        matches!(e, Event::Log { module: m, line, .. } if m == module && line.starts_with(&head))
    });
    let Event::Log { line, .. } = e else {
        unreachable!()
    };
    line
}

#[test]
fn a_faithful_shadow_under_load_is_promoted_with_the_state_a_replace_gives() {
    let mut h = Host::new();
    for m in ["T", "U"] {
        h.ok(&format!("Load {m} {V1} config quiet"));
    }
    h.ok(&format!("Load R {V1} config \"quiet; pad 1000\""));
    h.ok(&format!("Load Q {V1} config \"quiet; pad 1000\""));
    h.ok(&format!(
        "Load S {V1} config \"quiet; timer t 1; tick-send R; tick-send Q; tick-count 5\""
    ));
    let r = h.rt.module("R").unwrap();
    until("R serves", || r.served() >= 200);

    // Q is the reference: replaced the usual way at about the same point.
    let q = h.txn(&format!("Replace Q {V2}"));
    assert_eq!(q.outcome, Outcome::Committed, "{q:?}");
    let Reply::Done(line) = h.ok(&format!("Shadow R {V2}")) else {
        panic!("Shadow replies with a line")
    };
    assert!(
        line.starts_with("shadow v2.0 of R started beside v1.0"),
        "{line}"
    );
    // Sends made while shadowed: R's reach T once, the shadow's nowhere.
    h.ok("Send R do \"send T 50\"");
    h.ok("Send Q do \"send U 50\"");
    until("the shadow has seen 1000 messages", || {
        r.status().shadow.is_some_and(|s| s.matched >= 1000)
    });
    let st = r.status().shadow.unwrap();
    assert_eq!(st.ended, None, "{st:?}");
    assert_eq!(st.version, "2.0");
    assert_eq!(r.version().label(), "1.0", "the old version still acts");

    let p = h.txn("Promote R");
    assert_eq!(p.outcome, Outcome::Committed, "{p:?}");
    let m = &p.modules[0];
    assert_eq!(
        (m.from.as_deref(), m.to.as_deref()),
        (Some("1.0"), Some("2.0"))
    );
    assert_eq!(m.state_bytes, None, "no state moves in a promote's pause");
    assert_eq!((m.put_state_us, m.get_state_us), (None, None), "{m:?}");
    assert!(m.pause_us.is_some(), "{m:?}");
    assert_eq!(r.version().label(), "2.0");
    let ended = r.status().shadow.unwrap();
    assert!(
        ended
            .ended
            .as_deref()
            .is_some_and(|e| e.starts_with("promoted in transaction")),
        "{ended:?}"
    );
    let at = r.served();
    until("R serves on", || r.served() >= at + 500);

    let n = stop_sender(&mut h, "R");
    assert_eq!(sent_to(&mut h, "Q"), n);
    let r_report = report_after(&mut h, "R", n);
    let q_report = report_after(&mut h, "Q", n);
    // The same state as the reference, but for who R sent to.
    assert!(r_report.contains("sent=T:50 pad=1000"), "{r_report}");
    assert!(q_report.contains("sent=U:50 pad=1000"), "{q_report}");
    // R's count of messages served is the shadow's: it went on from the
    // hand-over through every mirrored message.
    let served: u64 = r_report
        .split_whitespace()
        .find_map(|w| w.strip_prefix("served="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(served >= ended.mirrored, "{served} < {}", ended.mirrored);
    for name in ["R", "T"] {
        assert!(h.violations(name).is_empty(), "{:?}", h.violations(name));
    }
    h.ok("Send T do report");
    let t = h.wait_log("T", |l| l.starts_with("report ") && l.contains("seen=R:"));
    assert!(t.contains("seen=R:50 "), "T got R's 50 numbers once: {t}");

    // A timed shadow promotes itself when its time is up.
    let since = h.mark();
    h.ok(&format!("Shadow R {V2} for 300ms then promote"));
    let e = h.wait_event_since(
        since,
        "the timed promote",
        |e| matches!(e, Event::Transaction(r) if r.command == "Promote R"),
    );
    let Event::Transaction(r) = e else {
        unreachable!()
    };
    assert_eq!(r.outcome, Outcome::Committed, "{r:?}");
    assert_eq!(r.origin, "shadow timer");
}

#[test]
fn a_shadow_that_answers_differently_is_dropped_and_none_of_its_effects_get_out() {
    let mut h = Host::new();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    h.ok(&format!("Load auditor {V1} config quiet"));
    h.ok(&format!("Load R {V1} config quiet grant udp {addr}"));
    h.ok(&format!(
        "Load S {V1} config \"quiet; timer t 1; tick-send R; tick-count 5\""
    ));
    let r = h.rt.module("R").unwrap();
    until("R serves", || r.served() >= 200);

    // A socket: the old version's datagram goes out; the shadow's is
    // dropped and reported sent, so the shadow answers alike.
    h.ok(&format!("Shadow R {V2}"));
    let mirrored = r.status().shadow.unwrap().mirrored;
    h.ok(&format!("Send R do \"udp-send {addr}\""));
    let said = format!("udp-send {addr}: ok");
    h.wait_log("R", |l| l.starts_with(&said));
    until("the shadow served the udp-send", || {
        r.status().shadow.is_some_and(|s| s.matched > mirrored + 10)
    });
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_ok(), "the old version's datagram");
    assert!(socket.recv(&mut buf).is_err(), "a second datagram came");
    let Reply::Done(line) = h.ok("Unshadow R") else {
        panic!("Unshadow replies with a line")
    };
    assert_eq!(line, "shadow v2.0 of R dropped");
    let err = h.err("Unshadow R");
    assert!(err.contains("no shadow runs beside it"), "{err}");

    // A changed answer: dropped at the first such message, which the
    // report names with both versions' effects.
    let since = h.mark();
    h.ok(&format!("Shadow R {V5}"));
    until("the shadow serves", || {
        r.status().shadow.is_some_and(|s| s.matched >= 100)
    });
    h.ok("Send R audit \"x\"");
    let line = dropped(&mut h, since, "R", "5.0");
    assert!(
        line.contains("(`audit` from $admin) diverged at effect 1"),
        "{line}"
    );
    assert!(
        line.contains("v1.0: log warn \"unreadable audit from $admin\""),
        "{line}"
    );
    assert!(
        line.contains("shadow v5.0: send `audited` (proto 1) to auditor: \"x\""),
        "{line}"
    );
    assert!(line.ends_with("v1.0 serves on untouched"), "{line}");
    let st = r.status();
    let shadow = st.shadow.unwrap();
    assert!(shadow.matched >= 100, "{shadow:?}");
    assert!(shadow.ended.unwrap().contains("diverged"));
    assert_eq!(st.version.label(), "1.0");
    assert_eq!(st.faults, 0);
    assert_eq!(h.rt.module("auditor").unwrap().served(), 0, "auditor told");
    // Nothing left to promote; the refusal says what became of it.
    let e = h.txn("Promote R");
    assert_eq!(e.outcome, Outcome::Refused);
    let why = e.reason.unwrap();
    assert!(
        why.contains("the last one, v5.0, dropped: message"),
        "{why}"
    );

    let n = stop_sender(&mut h, "R");
    let report = report_after(&mut h, "R", n);
    assert!(report.contains(&format!("seen=S:{n}")), "{report}");
    assert!(h.violations("R").is_empty(), "{:?}", h.violations("R"));
}

#[test]
fn a_shadow_that_traps_loops_or_falls_behind_is_dropped_and_the_old_version_never_waits() {
    let mut h = Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_secs(1))
            .max_state_bytes(64 << 10),
    );
    h.ok(&format!("Load R {V1} config quiet"));
    h.ok(&format!(
        "Load S {V1} config \"quiet; timer t 1; tick-send R; tick-count 5\""
    ));
    let r = h.rt.module("R").unwrap();
    until("R serves", || r.served() >= 200);

    let since = h.mark();
    h.ok(&format!("Shadow R {V4}"));
    h.ok("Send R audit \"x\"");
    let line = dropped(&mut h, since, "R", "4.0");
    assert!(
        line.contains("(`audit` from $admin): the shadow trapped"),
        "{line}"
    );

    // A loop: cut at the call deadline, while the old version serves on.
    let since = h.mark();
    h.ok(&format!("Shadow R {V5} queue 100000"));
    r.reset_max_gap();
    h.ok("Send R stall \"x\"");
    let line = dropped(&mut h, since, "R", "5.0");
    assert!(
        line.contains("(`stall` from $admin): the shadow trapped"),
        "{line}"
    );
    let gap = r.max_gap_us();
    assert!(gap < 250_000, "R paused {gap} µs while its shadow looped");

    // Behind: a queue of 20 fills while the shadow loops.
    let since = h.mark();
    h.ok(&format!("Shadow R {V5} queue 20"));
    h.ok("Send R stall \"x\"");
    let line = dropped(&mut h, since, "R", "5.0");
    assert!(line.contains("it fell 20 messages behind v1.0"), "{line}");

    // A Replace drops a running shadow first, and says so.
    let since = h.mark();
    h.ok(&format!("Shadow R {V2}"));
    let t = h.txn(&format!("Replace R {V2}"));
    assert_eq!(t.outcome, Outcome::Committed, "{t:?}");
    let line = dropped(&mut h, since, "R", "2.0");
    assert!(
        line.contains(&format!("transaction {} replaces the module", t.id)),
        "{line}"
    );

    assert_eq!(r.status().faults, 0, "the old version never faulted");
    let n = stop_sender(&mut h, "R");
    report_after(&mut h, "R", n);
    assert!(h.violations("R").is_empty(), "{:?}", h.violations("R"));

    // A state over the limit is refused, as a Replace's would be, and
    // the module serves on alone.
    h.ok("Send R do \"pad 100000\"");
    let err = h.err(&format!("Shadow R {V2}"));
    assert!(
        err.contains("cannot start a shadow") && err.contains("over the state limit of 65536"),
        "{err}"
    );
    assert!(r.status().shadow.unwrap().ended.is_some(), "no shadow runs");
    h.ok("Send R do \"pad 10\"");

    // An Unload too drops the shadow first, and says so.
    let since = h.mark();
    h.ok(&format!("Shadow R {V2}"));
    h.ok("Unload R");
    let line = dropped(&mut h, since, "R", "2.0");
    assert!(line.contains("the module is unloaded"), "{line}");
}

#[test]
fn a_group_is_promoted_all_or_nothing_and_an_aborted_promote_leaves_the_shadows_running() {
    let mut h = Host::new();
    h.ok(&format!("Load A {V1} config quiet"));
    h.ok(&format!("Load B {V1} config quiet"));
    h.ok(&format!(
        "Load S {V1} config \"quiet; timer t 1; tick-send A; tick-send B; tick-count 2\""
    ));
    let (a, b) = (h.rt.module("A").unwrap(), h.rt.module("B").unwrap());
    until("A and B serve", || a.served() >= 100 && b.served() >= 100);
    h.ok(&format!("Shadow A {V2}"));
    h.ok(&format!("Shadow B {V2}"));

    // A is held in a long call and cannot reach TERM within the bound: B
    // takes its shadow back and votes, the group aborts, and both shadows
    // go on where they were, the old versions serving.
    h.ok("SetTimer 200ms");
    h.ok("Send A do \"sleep 600\"");
    let t = h.txn("Promote A B");
    assert_eq!(t.outcome, Outcome::Aborted, "{t:?}");
    assert!(t.reason.as_deref().unwrap_or("").contains('A'), "{t:?}");
    for (name, m) in [("A", &a), ("B", &b)] {
        assert_eq!(m.version().label(), "1.0", "{name}");
        let seen = m.status().shadow.unwrap().matched;
        until("the shadow serves on after the abort", || {
            m.status()
                .shadow
                .is_some_and(|s| s.ended.is_none() && s.matched > seen + 100)
        });
    }

    // Refused, touching nothing, while one of them has no shadow.
    h.ok("Unshadow B");
    let t = h.txn("Promote A B");
    assert_eq!(t.outcome, Outcome::Refused);
    assert!(
        t.reason.unwrap().contains("B: cannot be promoted"),
        "the refusal names B"
    );
    assert!(
        a.status().shadow.unwrap().ended.is_none(),
        "A's shadow runs"
    );

    h.ok(&format!("Shadow B {V2}"));
    h.ok("SetTimer 10s");
    let t = h.txn("Promote A B");
    assert_eq!(t.outcome, Outcome::Committed, "{t:?}");
    assert_eq!(a.version().label(), "2.0");
    assert_eq!(b.version().label(), "2.0");
    assert!(t.modules.iter().all(|m| m.state_bytes.is_none()));

    let n = stop_sender(&mut h, "A");
    assert_eq!(sent_to(&mut h, "B"), n);
    report_after(&mut h, "A", n);
    report_after(&mut h, "B", n);
    for name in ["A", "B"] {
        assert!(h.violations(name).is_empty(), "{:?}", h.violations(name));
    }
}
