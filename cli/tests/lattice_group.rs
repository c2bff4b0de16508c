//! Group upgrades spanning hosts, as an operator meets them: a real
//! `nats-server` with JetStream (where the decision is recorded) on a free
//! loopback port, and three real `liveswap run` processes, A on host a,
//! B on b and C on c. From host a, `Syn_Replace A … B … C …`:
//! - commits on all three hosts;
//! - is refused when A's new protocol would reach B on another host, which
//!   does not accept it, and commits with B in it;
//! - aborts on all three when C's `put-state` says NO;
//! - aborts when host c is SIGKILLed while it votes, and A and B serve
//!   on, their old versions, within the bound;
//! - commits on b and c when the coordinator is SIGKILLed just after it
//!   recorded commit (they read the decision from the store);
//! - aborts when the coordinator stalls past the bound before deciding:
//!   b and c record abort, and its late commit cannot overwrite that;
//! - aborts when the coordinator is SIGKILLed before deciding, and the
//!   coordinator, restarted, agrees.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use common::lattice::{
    ctl, output, start_host, start_host_env, start_host_with, start_nats, status_until, temp_dir,
};

/// The version host `id` shows for `module` in its `Status`.
fn version(dir: &Path, id: &str, module: &str) -> String {
    let s = ctl(dir, id, &["Status"]);
    s.lines()
        .find(|l| l.split_whitespace().next() == Some(module))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("host {id} shows no {module}:\n{s}"))
        .to_string()
}

/// Wait until `module` on host `id` runs version `v`.
fn runs(dir: &Path, id: &str, module: &str, v: &str, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let now = version(dir, id, module);
        if now == v {
            return;
        }
        assert!(
            Instant::now() < until,
            "{module} on host {id} runs {now}, not {v}, after {within:?}:\n{}",
            output(dir, id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How much host `id` has said so far (its output is appended to across
/// restarts).
fn mark(dir: &Path, id: &str) -> usize {
    output(dir, id).len()
}

/// Wait until host `id` has said `what` since `from` (a [`mark`]).
fn said_since(dir: &Path, id: &str, from: usize, what: &str, within: Duration) {
    let until = Instant::now() + within;
    while !output(dir, id).get(from..).unwrap_or("").contains(what) {
        assert!(
            Instant::now() < until,
            "host {id} never said `{what}`:\n{}",
            output(dir, id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until host `id` has said `what`.
fn said(dir: &Path, id: &str, what: &str, within: Duration) {
    let until = Instant::now() + within;
    while !output(dir, id).contains(what) {
        assert!(
            Instant::now() < until,
            "host {id} never said `{what}`:\n{}",
            output(dir, id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every host sees the three, each serving its module.
fn all_up(dir: &Path) {
    for id in ["a", "b", "c"] {
        status_until(dir, id, "A, B and C served", |s| {
            let table = s.split("HOST ").nth(1).unwrap_or("");
            ["A", "B", "C"].iter().all(|m| {
                table
                    .lines()
                    .any(|l| l.ends_with(&format!("  {m}")) && !l.contains(" down "))
            })
        });
    }
}

/// `Syn_Replace A <a> B <b> C <c>` asked of host a, on a thread (it may
/// never answer: its host is killed meanwhile).
fn group_on_thread(
    dir: &Path,
    [a, b, c]: [&'static str; 3],
) -> std::thread::JoinHandle<(String, Duration)> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = ctl(&dir, "a", &["Syn_Replace", "A", a, "B", b, "C", c]);
        (r, t0.elapsed())
    })
}

#[test]
fn a_group_spanning_three_hosts_commits_on_all_or_none_whoever_fails() {
    let dir = temp_dir("lattice-group");
    std::fs::write(dir.join("token"), "lattice-token-for-the-test\n").unwrap();
    let port = free_port();
    let js = dir.join("js");
    let _nats = start_nats(&dir, port, &["-js", "-sd", js.to_str().unwrap()]);
    let (v1, v2) = (liveswap_guests::PROBE_V1, liveswap_guests::PROBE_V2);
    let (v4, v5) = (liveswap_guests::PROBE_V4, liveswap_guests::PROBE_V5);
    let load = |m: &str, v: &str| format!("Load {m} {v} config \"quiet\"\n");
    let mut a = start_host(&dir, port, "a", &load("A", v1));
    let _b = start_host(&dir, port, "b", &load("B", v1));
    let mut c = start_host(&dir, port, "c", &load("C", v1));
    all_up(&dir);
    let s = ctl(&dir, "a", &["Status"]);
    let ready = "decisions recorded in the JetStream bucket liveswap-test-groups; 0 in progress";
    assert!(s.contains(ready), "{s}");

    // Commit: every host runs the new versions, and says where each is.
    let r = ctl(&dir, "a", &["Syn_Replace", "A", v2, "B", v2, "C", v2]);
    assert!(r.contains(" COMMITTED: Syn_Replace"), "{r}");
    for (m, h) in [("B", "b"), ("C", "c")] {
        let row = r.lines().find(|l| l.trim_start().starts_with(m)).unwrap();
        assert!(
            row.contains("v1.0 -> v2.0") && row.ends_with(&format!("on host {h}")),
            "{r}"
        );
    }
    for (m, h) in [("A", "a"), ("B", "b"), ("C", "c")] {
        assert_eq!(version(&dir, h, m), "v2.0");
    }
    let history = ctl(&dir, "b", &["History"]);
    assert!(
        history.contains("of host a `Syn_Replace") && history.contains("-> committed"),
        "{history}"
    );
    // Any host's History is the lattice's: its own, then each other
    // host's, each under its name.
    let history = ctl(&dir, "c", &["History"]);
    let at = |h: &str| {
        history
            .find(h)
            .unwrap_or_else(|| panic!("no {h}:\n{history}"))
    };
    assert!(at("── host c (this host)") < at("── host a") && at("── host a") < at("── host b"));
    assert_eq!(
        history.matches("group g.a.").count(),
        2,
        "the group on b and on c:\n{history}"
    );

    // The protocol scope check sees edges across hosts: A (on a) sends to
    // B (on b); A v3 speaks protocol 2, which B v2 does not accept, so A
    // v3 alone is refused naming B, and A and B together commit.
    let v3 = liveswap_guests::PROBE_V3;
    ctl(&dir, "a", &["Send", "A", "do", "send B 3"]);
    status_until(&dir, "b", "B's three numbers", |s| {
        s.lines()
            .find(|l| l.starts_with("B "))
            .and_then(|l| l.split_whitespace().nth(5))
            .is_some_and(|served| served == "3")
    });
    // b announces B's senders with its presence (four times per lease).
    std::thread::sleep(Duration::from_millis(1200));
    let r = ctl(&dir, "a", &["Replace", "A", v3]);
    assert!(r.contains(" REFUSED: "), "{r}");
    assert!(
        r.contains("B must be upgraded in the same transaction")
            && r.contains("A v3.0 would speak protocol [2] to B v2.0, which accepts [1]"),
        "{r}"
    );
    let r = ctl(&dir, "a", &["Syn_Replace", "A", v3, "B", v3]);
    assert!(r.contains(" COMMITTED: "), "{r}");
    let r = ctl(&dir, "a", &["Syn_Replace", "A", v2, "B", v2]);
    assert!(r.contains(" COMMITTED: "), "{r}");

    // One NO aborts the group on every host.
    ctl(&dir, "c", &["Send", "C", "do", "flag fail-put"]);
    let r = ctl(&dir, "a", &["Syn_Replace", "A", v4, "B", v4, "C", v4]);
    assert!(r.contains(" ABORTED: "), "{r}");
    assert!(
        r.contains("reason: host c: C v2.0: put-state returned an error"),
        "{r}"
    );
    for (m, h) in [("A", "a"), ("B", "b"), ("C", "c")] {
        assert_eq!(version(&dir, h, m), "v2.0", "{m} after the NO");
    }
    ctl(&dir, "c", &["Send", "C", "do", "unflag fail-put"]);

    // Host c SIGKILLed while it votes (C drains a slow queue): the group
    // aborts within the bound, and A and B serve on, unchanged.
    ctl(&dir, "a", &["SetTimer", "3s"]);
    ctl(&dir, "c", &["Send", "C", "do", "work 700000"]);
    for i in 0..8 {
        ctl(&dir, "c", &["Send", "C", "slow", &i.to_string()]);
    }
    let from = mark(&dir, "c");
    let asked = group_on_thread(&dir, [v4, v4, v4]);
    let voting = "voting: waiting for C";
    said_since(&dir, "c", from, voting, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    c.0.kill().unwrap();
    let _ = c.0.wait();
    let (r, took) = asked.join().unwrap();
    assert!(r.contains(" ABORTED: "), "{r}");
    assert!(
        r.contains("host c did not vote within the bound of 3s"),
        "{r}"
    );
    assert!(
        took < Duration::from_secs(9),
        "the group took {took:?}:\n{r}"
    );
    for (m, h) in [("A", "a"), ("B", "b")] {
        assert_eq!(version(&dir, h, m), "v2.0", "{m} after c died");
        let sent = ctl(&dir, h, &["Send", m, "ping", "1"]);
        assert!(sent.contains("sent `ping`"), "{m} does not serve: {sent}");
    }
    c = start_host(&dir, port, "c", &load("C", v2));
    all_up(&dir);

    // The coordinator SIGKILLed just after it recorded commit: b and c
    // read the decision and commit.
    drop(a);
    let stall = |at: &'static str| [("LIVESWAP_GROUP_STALL", at)];
    a = start_host_env(&dir, port, ("a", &load("A", v2)), &[], &stall("after"));
    all_up(&dir);
    let from = mark(&dir, "a");
    let _asked = group_on_thread(&dir, [v5, v5, v5]);
    let stalled = "stalling after the decision";
    said_since(&dir, "a", from, stalled, Duration::from_secs(30));
    a.0.kill().unwrap();
    let _ = a.0.wait();
    for (m, h) in [("B", "b"), ("C", "c")] {
        runs(&dir, h, m, "v5.0", Duration::from_secs(10));
    }
    let read = "commit read from the lattice's store (recorded by host a)";
    said(&dir, "b", read, Duration::from_secs(5));

    // The coordinator stalls before deciding, past the bound and a lease:
    // b and c record abort; its late commit cannot overwrite it.
    let script = format!("SetTimer 2s\n{}", load("A", v5));
    a = start_host_env(&dir, port, ("a", &script), &[], &stall("before:6"));
    all_up(&dir);
    let t0 = Instant::now();
    let (r, _) = group_on_thread(&dir, [v2, v2, v2]).join().unwrap();
    assert!(r.contains(" ABORTED: "), "{r}");
    assert!(
        r.contains("recorded abort first: host a decided nothing"),
        "{r}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(6), "{r}");
    for (m, h) in [("A", "a"), ("B", "b"), ("C", "c")] {
        assert_eq!(version(&dir, h, m), "v5.0", "{m} after the late commit");
    }

    // The coordinator SIGKILLed before deciding: b and c abort after the
    // bound and a lease; restarted, the coordinator agrees.
    drop(a);
    a = start_host_env(&dir, port, ("a", &script), &[], &stall("before"));
    all_up(&dir);
    let from = mark(&dir, "a");
    let _asked = group_on_thread(&dir, [v2, v2, v2]);
    let stalled = "stalling before the decision";
    said_since(&dir, "a", from, stalled, Duration::from_secs(30));
    let (b_from, c_from) = (mark(&dir, "b"), mark(&dir, "c"));
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let killed = Instant::now();
    for (h, from) in [("b", b_from), ("c", c_from)] {
        let aborted = "decided nothing within the bound";
        said_since(&dir, h, from, aborted, Duration::from_secs(15));
    }
    let resumed = killed.elapsed();
    for (m, h) in [("B", "b"), ("C", "c")] {
        assert_eq!(
            version(&dir, h, m),
            "v5.0",
            "{m} after the coordinator died"
        );
        let sent = ctl(&dir, h, &["Send", m, "ping", "2"]);
        assert!(sent.contains("sent `ping`"), "{m} does not serve: {sent}");
    }
    assert!(
        resumed < Duration::from_secs(10),
        "b and c resumed after {resumed:?}"
    );
    let from = mark(&dir, "a");
    let _a = start_host(&dir, port, "a", &load("A", v5));
    let agrees =
        "was down (host a decided nothing within the bound of 2s and a lease); this host agrees";
    said_since(&dir, "a", from, agrees, Duration::from_secs(30));
    // Said once: the earlier groups, decided by a or agreed to, are not.
    let restarted = output(&dir, "a")[from..].to_string();
    assert_eq!(
        restarted.matches("this host agrees").count(),
        1,
        "{restarted}"
    );
    assert!(!restarted.contains("never decided"), "{restarted}");
    drop(c);
}

/// A participant host with a state directory SIGKILLed after it voted yes
/// and before it heard the decision: the group commits on the others;
/// started again on its directory, the participant reads the recorded
/// commit and replaces its module as the group did.
#[test]
fn a_participant_killed_after_voting_yes_applies_the_recorded_commit_when_back() {
    let dir = temp_dir("lattice-voted");
    std::fs::write(dir.join("token"), "lattice-token-for-the-test\n").unwrap();
    let port = free_port();
    let js = dir.join("js");
    let _nats = start_nats(&dir, port, &["-js", "-sd", js.to_str().unwrap()]);
    let (v1, v2) = (liveswap_guests::PROBE_V1, liveswap_guests::PROBE_V2);
    let load = |m: &str, v: &str| format!("Load {m} {v} config \"quiet\"\n");
    let state = dir.join("b-state");
    let durable = ["--state-dir", state.to_str().unwrap()];
    let _a = start_host(&dir, port, "a", &load("A", v1));
    let stall = [("LIVESWAP_GROUP_STALL", "voted")];
    let mut b = start_host_env(&dir, port, ("b", &load("B", v1)), &durable, &stall);
    let _c = start_host(&dir, port, "c", &load("C", v1));
    all_up(&dir);
    // B takes some numbers first: its state is what the new version takes.
    ctl(&dir, "a", &["Send", "A", "do", "send B 5"]);

    let from = mark(&dir, "b");
    let asked = group_on_thread(&dir, [v2, v2, v2]);
    let voted = "stalling after voting yes";
    said_since(&dir, "b", from, voted, Duration::from_secs(30));
    b.0.kill().unwrap();
    let _ = b.0.wait();
    let (r, _) = asked.join().unwrap();
    assert!(r.contains(" COMMITTED: "), "{r}");
    for (m, h) in [("A", "a"), ("C", "c")] {
        assert_eq!(version(&dir, h, m), "v2.0", "{m} after the commit");
    }

    let from = mark(&dir, "b");
    let _b = start_host_with(&dir, port, "b", "", &durable);
    let applied = "committed while this host was down: its part is committed now";
    said_since(&dir, "b", from, applied, Duration::from_secs(30));
    assert_eq!(version(&dir, "b", "B"), "v2.0");
    let out = output(&dir, "b");
    assert!(
        out[from..].contains("B v2.0 | took over state shape 1, seen A:5"),
        "{out}"
    );
}
