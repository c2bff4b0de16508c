//! Hostile guests: a module with no grants pushes on every limit the host
//! has — message and mailbox bytes, subscriptions, timers, log lines,
//! sockets, its own declaration, the vote's bound — while a checked pair
//! (T ticking numbers into SINK) runs beside it. Each test checks that the
//! hostile module was refused with an error naming the limit, and that
//! SINK's numbers from T stayed consecutive (I1, I4).

use std::time::{Duration, Instant};

use liveswap::{Cause, Limits, ModuleState, Outcome, Phase, RuntimeBuilder};
use liveswap_ops::ToText as _;

use crate::support::*;
use crate::upgrade::consecutive_on;

/// A host with `limits`, and T ticking numbers into SINK every 2 ms.
fn paired(limits: Limits) -> Host {
    let mut h = Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_millis(500))
            .limits(limits),
    );
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 5 from T");
    h
}

/// Wait (within the patience) until `done` holds, for figures that are
/// read rather than announced as events; the caller asserts on them after.
fn poll_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_text(h: &Host) -> String {
    match h.ok("Status") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

/// The first line module `m` logged that starts with `prefix`.
fn line_of(h: &mut Host, m: &str, prefix: &str) -> String {
    next_line(h, 0, m, prefix)
}

/// The first line module `m` logged at or after `since` that starts with
/// `prefix`.
fn next_line(h: &mut Host, since: usize, m: &str, prefix: &str) -> String {
    let what = format!("a line of {m} starting with {prefix}");
    match h.wait_event_since(since, &what, |e| {
        matches!(e, liveswap::Event::Log { module, line, .. } if module == m && line.starts_with(prefix))
    }) {
        liveswap::Event::Log { line, .. } => line,
        _ => unreachable!(),
    }
}

#[test]
fn bodies_kinds_and_names_over_their_limits_are_refused_and_nothing_is_echoed_whole() {
    let mut h = paired(Limits {
        max_body: 64 << 10,
        ..Limits::default()
    });
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"blob SINK 65537 1\"");
    let blob = line_of(&mut h, "EVIL", "blob:");
    assert_eq!(
        blob,
        "blob: 0 ok, then refused: message body of 65537 bytes is over the limit of 65536 (--max-message)"
    );
    h.ok("Send EVIL do \"long-kind SINK 300\"");
    let kind = line_of(&mut h, "EVIL", "long-kind:");
    assert!(
        kind.contains("message kind of 300 bytes is over the limit of 256"),
        "{kind}"
    );
    // A 1 MiB receiver name is not echoed back whole.
    h.ok("Send EVIL do \"long-to 1048576\"");
    let to = line_of(&mut h, "EVIL", "long-to:");
    assert!(to.contains("no module named `XXXX"), "{}", &to[..100]);
    let len: usize = to
        .rsplit_once("error of ")
        .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
        .expect("the length is logged");
    assert!(len < 200, "an error of {len} bytes");
    // The admin's Send is held to the same limit.
    let big = "x".repeat(70 << 10);
    let err = h.err(&format!("Send SINK note {big}"));
    assert!(err.contains("over the limit of 65536"), "{}", &err[..120]);
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_mailbox_full_of_bytes_refuses_more_and_the_host_budget_holds() {
    let mut h = paired(Limits {
        mailbox_bytes: 1 << 20,
        queued_bytes: 5 << 19,
        ..Limits::default()
    });
    // SLOW serves nothing (disabled), so what EVIL sends it stays queued.
    h.ok(&format!("Load SLOW {V1}"));
    h.ok("Disable SLOW");
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"blob SLOW 65536 100\"");
    let blob = line_of(&mut h, "EVIL", "blob:");
    // 1 MiB holds 15 messages of 64 KiB and their bookkeeping.
    assert_eq!(
        blob,
        "blob: 15 ok, then refused: mailbox of `SLOW` is full (1048576 bytes queued; --mailbox-bytes)"
    );
    let slow = h.rt.module("SLOW").unwrap();
    assert_eq!(slow.depth(), 15);
    assert!(slow.mailbox().bytes() <= 1 << 20);
    // Two more such mailboxes reach the host-wide budget of 2.5 MiB
    // before the third is full.
    for name in ["SLOW2", "SLOW3"] {
        h.ok(&format!("Load {name} {V1}"));
        h.ok(&format!("Disable {name}"));
        h.ok(&format!("Send EVIL do \"blob {name} 65536 15\""));
    }
    let refused = h.wait_log("EVIL", |l| l.contains("at their budget"));
    assert!(
        refused.ends_with("then refused: the host's queued messages are at their budget (2621440 bytes; --queued-bytes)"),
        "{refused}"
    );
    let queued: usize = ["SLOW", "SLOW2", "SLOW3"]
        .iter()
        .map(|n| h.rt.module(n).unwrap().mailbox().bytes())
        .sum();
    assert!(queued <= 5 << 19, "{queued} bytes queued");
    // T's small messages still fit: the pair is unaffected while the
    // budget has room for them, and Status counts what was refused.
    consecutive_on(&mut h, "SINK", "T", 20);
    let status = status_text(&h);
    assert!(
        status.contains("message(s) refused for a limit"),
        "{status}"
    );
    // Serving the queue gives the bytes back.
    h.ok("Enable SLOW");
    h.ok("Enable SLOW2");
    h.ok("Enable SLOW3");
    poll_until(|| h.rt.module("SLOW").unwrap().mailbox().bytes() == 0);
    h.ok("Send EVIL do \"blob SLOW 65536 2\"");
    let again = h.wait_log("EVIL", |l| l == "blob: 2 ok");
    assert_eq!(again, "blob: 2 ok");
}

#[test]
fn subscriptions_and_timers_have_quotas_and_a_flood_of_timers_starves_no_one() {
    let mut h = paired(Limits {
        subscriptions: 100,
        timers: 50,
        ..Limits::default()
    });
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"subs 1000000\"");
    let subs = line_of(&mut h, "EVIL", "subs:");
    assert_eq!(
        subs,
        "subs: 100 ok, then refused: EVIL already holds 100 subscriptions, the most it may (--max-subscriptions)"
    );
    h.ok("Send EVIL do \"quiet; timers 1000 1\"");
    h.wait_log("EVIL", |l| l == "timers: asked for 1000");
    let refused = h.wait_log("EVIL", |l| l.starts_with("timer `t50` not set"));
    assert!(refused.contains("already holds 50 timers"), "{refused}");
    let report = status_text(&h);
    assert!(
        report.contains("50 timer(s) of 50, 100 subscription(s) of 100"),
        "{report}"
    );
    // T's 2 ms timer keeps its pace beside 50 timers of 1 ms: 200 more
    // numbers arrive (400 ms at full pace) well within the patience.
    let started = Instant::now();
    consecutive_on(&mut h, "SINK", "T", 200);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "200 ticks took {took:?}");
    // Unload gives the quota back.
    h.ok("Unload EVIL");
    h.ok(&format!("Load EVIL {V1}"));
    let since = h.mark();
    h.ok("Send EVIL do \"subs 10\"");
    assert_eq!(next_line(&mut h, since, "EVIL", "subs:"), "subs: 10 ok");
}

#[test]
fn long_log_lines_are_cut_and_a_log_flood_is_dropped_and_counted() {
    let mut h = paired(Limits {
        log_line: 1000,
        log_rate: 200,
        ..Limits::default()
    });
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"log-long 10485760\"");
    let long = h.wait_log("EVIL", |l| l.starts_with("LLLL"));
    assert!(long.len() < 1100, "a line of {} bytes", long.len());
    assert!(
        long.ends_with("(10485760 bytes in all)"),
        "{}",
        &long[990..]
    );
    h.ok("Send EVIL do \"log-flood 20000\"");
    let note = h.wait_log("EVIL", |l| l.contains("log line(s) dropped"));
    assert!(note.contains("over 200 lines/s (--log-rate)"), "{note}");
    // Both messages served: the flood is over.
    let evil = h.rt.module("EVIL").unwrap();
    poll_until(|| evil.status().served >= 2);
    let dropped = evil.status().log_dropped;
    assert!(dropped > 15_000, "{dropped} dropped");
    // SINK logs a line per number, under its own rate: nothing of it is
    // dropped.
    consecutive_on(&mut h, "SINK", "T", 20);
    assert_eq!(h.rt.module("SINK").unwrap().status().log_dropped, 0);
}

#[test]
fn a_watcher_that_does_not_read_holds_no_more_than_its_queue() {
    let h = paired(Limits {
        watch_queue: 100,
        ..Limits::default()
    });
    let lazy = h.rt.watch();
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"log-flood 5000\"");
    // Wait for the flood to be over by asking EVIL something after it.
    h.ok("Send EVIL do report");
    poll_until(|| lazy.len() >= 100);
    assert_eq!(lazy.len(), 100, "the queue is full at its bound");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(lazy.len(), 100, "and stays there");
    // The hundred it holds (events go on being emitted meanwhile: what
    // comes after them is another test).
    let first: Vec<_> = lazy.try_iter().take(100).collect();
    assert_eq!(first.len(), 100);
    // The next event it gets says how many it missed.
    h.ok("Send EVIL do \"log-flood 1\"");
    let next = lazy.recv_timeout(PATIENCE).expect("an event");
    match next {
        liveswap::Event::Skipped { count } => assert!(count > 100, "{count}"),
        other => panic!("expected a skip count, got {}", other.to_text()),
    }
}

#[test]
fn a_guest_without_a_grant_opens_no_socket_and_one_with_a_grant_holds_a_bounded_number() {
    let mut h = paired(Limits {
        resources: 64,
        ..Limits::default()
    });
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"udp-sockets 20000\"");
    let line = line_of(&mut h, "EVIL", "udp-sockets:");
    assert!(
        line.starts_with("udp-sockets: 0 ok, then refused:"),
        "{line}"
    );
    h.wait_line("EVIL", "sandbox: refused a udp socket (no udp grant)");
    // With a grant, sockets count against the instance's resources: the
    // 65th traps the call, the module is rebuilt (its sockets closed with
    // the dead instance) and the message set aside.
    h.ok(&format!("Load GRANTED {V1} grant udp 127.0.0.1:9"));
    let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let before = fds();
    h.ok("Send GRANTED do \"udp-sockets 20000\"");
    let fault = h
        .wait_state("GRANTED", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(fault.contains("service trapped"), "{fault}");
    h.wait_state("GRANTED", ModuleState::Recovered);
    let poison = h.rt.module("GRANTED").unwrap().poison();
    assert_eq!(poison.len(), 1, "the flood is set aside");
    assert!(
        fds() < before + 2 * 64,
        "the host holds {} more descriptors",
        fds().saturating_sub(before)
    );
    h.ok("Send GRANTED do \"udp-sockets 3\"");
    assert_eq!(
        line_of(&mut h, "GRANTED", "udp-sockets:"),
        "udp-sockets: 3 ok"
    );
    // The host still opens files: a Load reads its .wasm.
    h.ok(&format!("Load OTHER {V1}"));
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_version_that_speaks_nothing_sends_nothing_and_info_cannot_act() {
    let mut h = paired(Limits::default());
    h.ok(&format!("Load MUTE {V1} grant env PROBE_SPEAKS=none"));
    h.ok("Send MUTE do \"send SINK 1\"");
    let refused = h.wait_log("MUTE", |l| l.starts_with("send to SINK failed"));
    assert!(
        refused.contains("a version that speaks none may send nothing"),
        "{refused}"
    );
    h.ok("Send MUTE do \"publish ev\"");
    let refused = h.wait_log("MUTE", |l| l.starts_with("publish ev failed"));
    assert!(refused.contains("speaks none"), "{refused}");
    // Host calls inside info() are refused, on Load and on a Replace.
    h.ok(&format!("Load CHATTY {V1} grant env PROBE_INFO_SEND=SINK"));
    let line = line_of(&mut h, "CHATTY", "info-send:");
    assert_eq!(
        line,
        "info-send: send refused: host calls are not allowed inside `info`; subscribe refused: host calls are not allowed inside `info`"
    );
    let r = h.txn(&format!("Replace CHATTY {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    h.drain();
    assert!(
        !h.logs("SINK").iter().any(|l| l.contains("from-info")),
        "a message sent inside info() arrived"
    );
    assert!(h.rt.module("CHATTY").map(|p| p.status().timers) == Some(0));
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_declaration_over_the_limits_is_refused_at_load() {
    let h = paired(Limits::default());
    let err = h.err(&format!(
        "Load BIG {V1} grant env PROBE_LABEL_BYTES=1000000"
    ));
    assert!(
        err.contains("info() declares a version label of 1000000 bytes; the most is 128"),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(h.rt.module("BIG").is_none());
    let many: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
    let err = h.err(&format!(
        "Load MANY {V1} grant env PROBE_SPEAKS={}",
        many.join(",")
    ));
    assert!(
        err.contains("info() declares 65 protocol versions in `speaks`; the most is 64"),
        "{err}"
    );
    assert!(h.rt.module("MANY").is_none());
}

/// With calls allowed `call_deadline` and a vote bound of 1 s, SINK's
/// old version, given probe flag `flag`, never returns from put-state:
/// the vote ends at its bound, NO in put-state, naming the call; the old
/// version serves on, rebuilt, and nothing was lost.
fn a_stuck_put_state_ends_the_vote_at_its_bound(flag: &str, call_deadline: Duration) {
    let mut h = Host::with(RuntimeBuilder::default().call_deadline(call_deadline));
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 5 from T");
    // No checkpoint (a put-state) may run into the flag before the vote.
    h.ok("SetCheckpoint 0s");
    h.ok(&format!("Send SINK do \"flag {flag}\""));
    h.ok("SetTimer 1s");
    let r = h.txn(&format!("Replace SINK {V2}"));
    assert_eq!(r.outcome, Outcome::Aborted, "{}", r.to_text());
    // From CanCommit to the decision and every Done: the vote, without the
    // compiling that came before it.
    let vote = Duration::from_micros(r.total_us - r.prepare_us);
    assert!(vote < Duration::from_millis(1500), "the vote took {vote:?}");
    let no = r.refusal.clone().expect("a NO vote");
    assert_eq!(no.phase, Phase::PutState);
    assert!(
        matches!(no.cause, Cause::OutOfTime { bound, .. } if bound == Duration::from_secs(1)),
        "{no:?}"
    );
    assert!(
        no.to_string()
            .contains("put-state did not return within the vote's bound of 1s"),
        "{no}"
    );
    h.wait_state("SINK", ModuleState::Recovered);
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_put_state_that_never_returns_ends_the_vote_at_its_bound() {
    // Calls may run 5 s; the vote's bound is 1 s, and it wins.
    a_stuck_put_state_ends_the_vote_at_its_bound("loop-put", Duration::from_secs(5));
}

#[test]
fn a_put_state_asleep_in_a_wasi_call_ends_the_vote_at_its_bound() {
    // Blocked in the host, not running wasm: the bound still ends it.
    a_stuck_put_state_ends_the_vote_at_its_bound("sleep-put", Duration::from_secs(30));
}

#[test]
fn a_wasm_path_that_is_not_a_regular_file_is_refused_without_reading_it() {
    let h = paired(Limits {
        wasm_bytes: 1 << 20,
        ..Limits::default()
    });
    let err = h.err("Load Z /dev/zero");
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("liveswap-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("guest.wasm");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let err = h.err(&format!("Load F {}", fifo.display()));
        assert!(err.contains("not a regular file"), "{err}");
    }
    let big = dir.join("big.wasm");
    std::fs::write(&big, vec![0u8; (1 << 20) + 1]).unwrap();
    let err = h.err(&format!("Load B {}", big.display()));
    assert!(
        err.contains("over the limit of 1048576 (--max-wasm)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_crash_loop_ends_held_and_a_fixed_version_takes_the_kept_mailbox() {
    const V4: &str = liveswap_guests::PROBE_V4;
    let mut h = paired(Limits {
        restarts: 3,
        restart_window_ms: 60_000,
        ..Limits::default()
    });
    h.ok("SetCheckpoint 0s");
    h.ok(&format!("Load BAD {V4}"));
    h.ok("Disable BAD");
    // v4 traps on every `audit`: each one is a recovery, and the fourth
    // within the window is a crash loop.
    for i in 0..10 {
        h.ok(&format!("Send BAD audit \"{i}\""));
    }
    h.ok("Enable BAD");
    let held = h.wait_event("BAD held", |e| {
        matches!(e, liveswap::Event::Module { module, state: ModuleState::Held, detail: Some(d), .. }
            if module == "BAD" && d.starts_with("crash loop"))
    });
    let liveswap::Event::Module { detail, .. } = held else {
        unreachable!()
    };
    assert!(
        detail
            .unwrap()
            .contains("more than 3 recoveries within 60s"),
        "the reason names the intensity"
    );
    let bad = h.rt.module("BAD").unwrap();
    assert_eq!(bad.status().recoveries, 3);
    assert_eq!(bad.state(), ModuleState::Held);
    // Held, its mailbox is kept and it still takes messages.
    assert_eq!(bad.depth(), 6, "audits 4..9 wait");
    h.ok("Send BAD note \"last\"");
    let err = h.err("Enable BAD");
    assert!(err.contains("held after a crash loop"), "{err}");
    // A fixed version takes the state and every kept message over: the
    // one the old version trapped on first, then the queue, in order.
    let since = h.mark();
    let r = h.txn(&format!("Replace BAD {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    h.wait_event_since(since, "v2 serving the note", |e| {
        matches!(e, liveswap::Event::Log { module, line, .. }
            if module == "BAD" && line.starts_with("service error on `note`"))
    });
    let served_by_v2: Vec<String> = h.seen[since..]
        .iter()
        .filter_map(|e| match e {
            liveswap::Event::Log {
                module,
                version,
                line,
                ..
            } if module == "BAD" && version == "2.0" && line.starts_with("service error on") => {
                Some(line.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        served_by_v2.len(),
        8,
        "audits 3..9 and the note: {served_by_v2:?}"
    );
    assert_eq!(h.rt.module("BAD").unwrap().state(), ModuleState::Serving);
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn unloading_a_module_held_in_a_crash_loop_drops_its_queue_and_says_so() {
    const V4: &str = liveswap_guests::PROBE_V4;
    let mut h = paired(Limits {
        restarts: 1,
        ..Limits::default()
    });
    h.ok(&format!("Load BAD {V4}"));
    h.ok("Disable BAD");
    for i in 0..20 {
        h.ok(&format!("Send BAD audit \"{i}\""));
    }
    h.ok("Enable BAD");
    h.wait_event("BAD held", |e| {
        matches!(e, liveswap::Event::Module { module, state: ModuleState::Held, detail: Some(d), .. }
            if module == "BAD" && d.starts_with("crash loop"))
    });
    let started = Instant::now();
    h.ok("Unload BAD");
    assert!(started.elapsed() < Duration::from_secs(2));
    let said = h.wait_log("BAD", |l| l.starts_with("unloaded while held"));
    assert!(
        said.ends_with("19 queued message(s) were dropped, not served"),
        "{said}"
    );
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_module_busy_past_the_drain_deadline_does_not_hold_unload_or_quit() {
    // Calls may run 30 s, longer than Unload waits.
    let mut h = Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_secs(30))
            .drain_deadline(Duration::from_secs(1)),
    );
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 5 from T");
    for name in ["NAP", "NAP2"] {
        h.ok(&format!("Load {name} {V1}"));
        h.ok(&format!("Send {name} do \"sleep 600000\""));
        h.ok(&format!("Send {name} do report"));
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let said = match h.ok("Unload NAP") {
        liveswap_ops::Reply::Done(t) => t,
        other => panic!("{other:?}"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        said.contains("did not stop within the drain deadline of 1s")
            && said.contains("1 queued message(s) were not served"),
        "{said}"
    );
    assert!(h.rt.module("NAP").is_none());
    // The others serve on, and another command runs at once.
    consecutive_on(&mut h, "SINK", "T", 20);
    h.ok(&format!("Load NAP {V1}"));
    // Quit ends within the drain deadline for the one still asleep.
    let started = Instant::now();
    h.rt.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_guest_asleep_in_a_wasi_call_is_interrupted_at_its_call_deadline() {
    let mut h = paired(Limits::default());
    h.ok(&format!("Load NAP {V1}"));
    let started = Instant::now();
    h.ok("Send NAP do \"sleep 600000\"");
    let fault = h
        .wait_state("NAP", ModuleState::Faulted)
        .unwrap_or_default();
    assert!(fault.contains("overran its deadline"), "{fault}");
    // Retried once after the rebuild, interrupted again, set aside.
    h.wait_state("NAP", ModuleState::Recovered);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.rt.module("NAP").unwrap().poison().len(), 1);
    h.ok("Send NAP do \"sleep 10\"");
    h.wait_line("NAP", "slept");
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_trap_in_enable_or_disable_is_recovered_like_any_other() {
    let mut h = paired(Limits::default());
    // A version whose enable always traps cannot be loaded: refused, and
    // the name is free again.
    let err = h.err(&format!("Load BAD {V1} config \"flag trap-enable\""));
    assert!(err.contains("enable trapped"), "{err}");
    assert!(h.rt.module("BAD").is_none());
    // A disable that traps: the module is rebuilt and held by the host;
    // nothing queued is lost, and it can be enabled and unloaded.
    h.ok(&format!("Load D {V1}"));
    h.ok("Send D do \"flag trap-disable\"");
    h.ok("Disable D");
    let detail = h.wait_state("D", ModuleState::Disabled).unwrap_or_default();
    assert!(detail.contains("its disable trapped"), "{detail}");
    h.ok("Send T do \"send D 3\"");
    h.ok("Enable D");
    h.wait_line("D", "got 3 from T");
    assert_eq!(h.got("D", "T"), one_to(3));
    // Held again (its disable traps again), two more wait, and Unload
    // serves them.
    h.ok("Disable D");
    h.ok("Send T do \"send D 2\"");
    h.wait_line("T", "did send D 2");
    h.ok("Unload D");
    h.drain();
    assert_eq!(h.got("D", "T"), one_to(5), "the queue drained at Unload");
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_module_that_cannot_be_rebuilt_refuses_new_messages() {
    let mut h = paired(Limits::default());
    h.ok("SetCheckpoint 10ms");
    h.ok(&format!("Load X {V1}"));
    // Its recovery point comes to hold a state whose enable traps: every
    // rebuild fails.
    h.ok("Send X do \"flag trap-enable\"");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(15));
        h.ok("Send X do report");
    }
    h.wait_event("a checkpoint with the flag", |e| {
        matches!(e, liveswap::Event::Log { module, line, .. }
            if module == "X" && line.starts_with("report served=6"))
    });
    h.ok("Send X do trap");
    h.wait_log("X", |l| l.starts_with("recovery failed"));
    let err = h.err("Send X note x");
    assert!(
        err.contains("`X` is faulted and could not be rebuilt"),
        "{err}"
    );
    // A guest's send is refused the same way, and counted as not sent.
    h.ok("Send T do \"send X 1\"");
    let refused = h.wait_log("T", |l| l.starts_with("send to X failed"));
    assert!(refused.contains("could not be rebuilt"), "{refused}");
    h.ok("Unload X");
    consecutive_on(&mut h, "SINK", "T", 20);
}

#[test]
fn a_recovery_log_past_its_byte_limit_forces_a_checkpoint() {
    let mut h = paired(Limits {
        log_bytes: 256 << 10,
        ..Limits::default()
    });
    // Checkpoints only at commits and every 10 000 messages, or bytes.
    h.ok("SetCheckpoint 0s");
    h.ok(&format!("Load BIG {V1}"));
    h.ok(&format!("Load EVIL {V1}"));
    h.ok("Send EVIL do \"blob BIG 65536 100\"");
    assert_eq!(line_of(&mut h, "EVIL", "blob:"), "blob: 100 ok");
    let big = h.rt.module("BIG").unwrap();
    poll_until(|| big.status().served >= 100);
    // 6.4 MiB went through; the log since the last checkpoint holds less
    // than the limit and one message more.
    let s = big.status();
    assert_eq!(s.served, 100);
    assert!(
        s.logged_bytes < (256 << 10) + (65 << 10),
        "{} bytes logged ({} messages)",
        s.logged_bytes,
        s.logged
    );
    assert!(
        s.recovery_point.starts_with("a snapshot"),
        "{}",
        s.recovery_point
    );
    consecutive_on(&mut h, "SINK", "T", 20);
}
