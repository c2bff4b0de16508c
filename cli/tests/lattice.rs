//! A lattice as an operator meets it: a real `nats-server` on a free
//! loopback port (token auth) and three real `liveswap run` processes
//! joined to it. T on host a sends SINK on host b a number every
//! millisecond, and PUB on b publishes an event every 5 ms to SUB on a;
//! through ten Moves of SINK between the three hosts (and two Replaces
//! after each, one asked of host a wherever SINK runs, one of SINK's own
//! host), Moves of SUB and PUB away and back, a restart of the NATS server
//! and a SIGKILL of host c, SINK sees every number T counted as sent and
//! SUB every event PUB published, once and in order, and every host's
//! `Status` says where each module runs and which host is down.

mod common;

use std::time::{Duration, Instant};

use common::lattice::{
    TOKEN, count, ctl, host_row, output, start_host, start_host_with, start_nats, status_until,
    temp_dir,
};
use common::{free_port, liveswap_in};

#[test]
fn a_relay_across_hosts_loses_and_repeats_nothing_through_replaces_a_nats_restart_and_a_dead_host()
{
    let dir = temp_dir("lattice");
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let mut nats = start_nats(&dir, port, &[]);
    let v2 = liveswap_guests::PROBE_V2;
    let _b = start_host(
        &dir,
        port,
        "b",
        &format!("Load SINK {v2} config \"quiet\"\nLoad PUB {v2} config \"quiet\"\n"),
    );
    // A small outbox on a: the NATS server's absence fills it.
    let _a = start_host_with(&dir, port, "a", "", &["--lattice-outbox", "1000"]);
    let c = start_host(&dir, port, "c", "");
    // Every host sees every other, and where SINK runs.
    for id in ["a", "b", "c"] {
        status_until(&dir, id, "three hosts up", |s| {
            ["a", "b", "c"]
                .iter()
                .all(|h| host_row(s, h).is_some_and(|r| r.contains(" up ") || r.contains(" this ")))
                && host_row(s, "b").is_some_and(|r| r.ends_with("SINK"))
        });
    }
    // Without JetStream, a group spanning hosts could not record its
    // decision: Status says so.
    let s = ctl(&dir, "a", &["Status"]);
    assert!(
        s.contains("group upgrades spanning hosts: refused (the NATS server keeps no key-value store: start it with -js)"),
        "{s}"
    );
    // SUB on a subscribes to PUB on b: b learns of it, and PUB publishes
    // an event every 5 ms to a subscriber on another host.
    let r = ctl(
        &dir,
        "a",
        &["Load", "SUB", v2, "config", "sub PUB ev; quiet"],
    );
    assert!(r.contains("loaded SUB"), "{r}");
    status_until(&dir, "b", "a's subscription", |s| {
        host_row(s, "a").is_some_and(|r| r.contains(" 1  SUB"))
    });
    ctl(
        &dir,
        "b",
        &["Send", "PUB", "do", "timer p 5; tick-publish ev"],
    );
    let load = [
        "Load",
        "T",
        v2,
        "config",
        "timer t 1; tick-send SINK; quiet",
    ];
    let r = ctl(&dir, "a", &load);
    assert!(r.contains("loaded T"), "{r}");
    let taken = |s: &str| -> u64 {
        s.split(" taken from them")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    status_until(&dir, "b", "messages from a", |s| taken(s) > 300);

    // Ten Moves of the receiver between the three hosts, each followed
    // by a Replace wherever it landed, while numbers arrive; SUB (with its
    // subscription) and PUB (with its timer) move away and back.
    let route = ["b", "c", "a", "b", "a", "c", "b", "c", "a", "c", "b"];
    let mut pauses = Vec::new();
    for hop in route.windows(2) {
        let (from, to) = (hop[0], hop[1]);
        let r = ctl(&dir, from, &["Move", "SINK", to]);
        assert!(
            r.contains(&format!("moved SINK to host {to}: paused ")),
            "{r}"
        );
        let us: u64 = r
            .split("paused ")
            .nth(1)
            .and_then(|p| p.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        pauses.push(us);
        // Asked of host a wherever SINK runs: a forwards it to SINK's
        // host.
        let r = ctl(&dir, "a", &["Replace", "SINK", v2]);
        assert!(r.contains("COMMITTED"), "{r}");
        if to != "a" {
            assert!(r.contains(&format!("(on host {to})")), "{r}");
        }
        std::thread::sleep(Duration::from_millis(50));
        // And of its own host: twenty Replaces in all.
        let r = ctl(&dir, to, &["Replace", "SINK", v2]);
        assert!(r.contains("COMMITTED") && !r.contains("(on host"), "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    pauses.sort_unstable();
    eprintln!(
        "10 Moves of SINK: pause p50 {} µs, max {} µs",
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    let history = ctl(&dir, "b", &["History"]);
    assert!(history.contains("via host a"), "{history}");
    // A Move asked of a host that does not serve the module.
    let r = ctl(&dir, "a", &["Move", "SINK", "c"]);
    assert!(r.contains("(on host b) moved SINK to host c"), "{r}");
    let r = ctl(&dir, "a", &["Move", "SINK", "b"]);
    assert!(r.contains("(on host c) moved SINK to host b"), "{r}");
    for (m, away, home) in [("SUB", "c", "a"), ("PUB", "c", "b")] {
        let r = ctl(&dir, home, &["Move", m, away]);
        assert!(r.contains(&format!("moved {m} to host {away}")), "{r}");
        std::thread::sleep(Duration::from_millis(200));
        let r = ctl(&dir, away, &["Move", m, home]);
        assert!(r.contains(&format!("moved {m} to host {home}")), "{r}");
    }
    let r = ctl(&dir, "b", &["Move", "PUB", "a"]);
    assert!(r.contains("1 timer(s)"), "PUB's timer moves with it: {r}");
    let r = ctl(&dir, "a", &["Move", "PUB", "b"]);
    assert!(r.contains("moved PUB to host b"), "{r}");
    // A module that cannot hand its state over does not move, and serves
    // on where it was.
    ctl(&dir, "b", &["Send", "SINK", "do", "flag fail-put"]);
    let r = ctl(&dir, "b", &["Move", "SINK", "c"]);
    assert!(
        r.contains("it cannot move now: its put-state failed") && r.contains("nothing changed"),
        "{r}"
    );
    ctl(&dir, "b", &["Send", "SINK", "do", "unflag fail-put"]);
    let s = ctl(&dir, "a", &["Status"]);
    assert!(host_row(&s, "b").is_some_and(|r| r.contains("SINK")), "{s}");

    // The NATS server goes away for longer than a lease: each host serves
    // on, says the server is gone and shows the other hosts DOWN; T's
    // numbers wait in a's outbox.
    drop(nats);
    status_until(&dir, "a", "b down", |s| {
        s.contains("NOT connected") && host_row(s, "b").is_some_and(|r| r.contains("DOWN"))
    });
    let waiting = ctl(&dir, "a", &["Status"]);
    assert!(
        !waiting.contains(" 0 waiting for acknowledgement"),
        "{waiting}"
    );
    // Past its bound the outbox refuses, with the error T logs; T's next
    // number stays consecutive (a refused send is not counted).
    let until = Instant::now() + Duration::from_secs(30);
    let full = "send to SINK failed: outbox for `SINK` on host `b` is full (1000 messages unacknowledged; --lattice-outbox)";
    while !output(&dir, "a").contains(full) {
        assert!(Instant::now() < until, "{}", output(&dir, "a"));
        std::thread::sleep(Duration::from_millis(50));
    }
    nats = start_nats(&dir, port, &[]);
    status_until(&dir, "a", "b and c back", |s| {
        ["b", "c"]
            .iter()
            .all(|h| host_row(s, h).is_some_and(|r| r.contains(" up ")))
    });

    // A host killed outright is shown DOWN within its lease (2 s), plus
    // at most one announcement period and the poll.
    let mut c = c;
    c.0.kill().unwrap();
    let _ = c.0.wait();
    let noticed = status_until(&dir, "a", "c down", |s| {
        host_row(s, "c").is_some_and(|r| r.contains("DOWN"))
    });
    eprintln!(
        "a SIGKILLed host was shown DOWN after {} ms",
        noticed.as_millis()
    );
    assert!(noticed < Duration::from_secs(6), "{noticed:?}");
    status_until(&dir, "b", "c down", |s| {
        host_row(s, "c").is_some_and(|r| r.contains("DOWN"))
    });
    let r = ctl(&dir, "b", &["Move", "SINK", "c"]);
    assert!(r.contains("host c is down; nothing changed"), "{r}");

    // Stop the sender, let every number be acknowledged, and count.
    ctl(&dir, "a", &["Send", "T", "do", "cancel t"]);
    ctl(&dir, "b", &["Send", "PUB", "do", "cancel p"]);
    for id in ["a", "b"] {
        status_until(&dir, id, "an empty outbox", |s| {
            s.contains(" 0 waiting for acknowledgement")
        });
    }
    for (id, m) in [("a", "T"), ("a", "SUB"), ("b", "SINK"), ("b", "PUB")] {
        ctl(&dir, id, &["Send", m, "do", "report"]);
    }
    let until = Instant::now() + Duration::from_secs(30);
    let reported = |id: &str| output(&dir, id).matches(" | report ").count() >= 2;
    while !(reported("a") && reported("b")) {
        assert!(Instant::now() < until, "no reports");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a, b) = (output(&dir, "a"), output(&dir, "b"));
    for out in [&a, &b] {
        assert!(
            !out.contains("GAP") && !out.contains("DUP"),
            "numbers lost or repeated:\n{out}"
        );
    }
    let sent = count(&a, "T", "sent=", "SINK");
    let seen = count(&b, "SINK", "seen=", "T");
    assert!(sent > 1000, "T sent {sent}");
    assert_eq!(seen, sent, "SINK saw every number T counted as sent");
    let published = count(&b, "PUB", "sent=", "event:ev");
    let heard = count(&a, "SUB", "seen=", "PUB");
    assert!(published > 100, "PUB published {published}");
    assert_eq!(heard, published, "SUB heard every event PUB published");
    eprintln!(
        "PUB published {published} events to a subscriber on another host; SUB heard each once"
    );
    eprintln!("T sent {sent} numbers across hosts; SINK saw each once, in order");
    // What the hosts said of it, in words.
    assert!(a.contains("host a lost the NATS server"), "{a}");
    assert!(a.contains("host c is down"), "{a}");
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_lattice_options_are_refused_before_anything_starts() {
    let dir = temp_dir("lattice-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("s.ls");
    std::fs::write(&script, "").unwrap();
    let script = script.to_str().unwrap();
    let missing = dir.join("no-such-token");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--once",
            "--no-admin",
            "--lattice",
            "nats://127.0.0.1:1",
        ];
        args.extend_from_slice(extra);
        args.push(script);
        liveswap_in(None, &args)
    };
    let o = run(&["--lattice-token-file", missing.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("no-such-token") && o.stderr.contains("cannot read the lattice token"),
        "{}",
        o.stderr
    );
    let o = run(&["--host-id", "a.b"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("host id `a.b`"), "{}", o.stderr);
    // A wrong token: the host serves alone and says why, once.
    std::fs::write(dir.join("token"), "not-the-token\n").unwrap();
    let port = free_port();
    let _nats = start_nats(&dir, port, &[]);
    let _x = start_host(&dir, port, "x", "");
    let until = Instant::now() + Duration::from_secs(30);
    while !output(&dir, "x").contains("refused host x (authorization violation)") {
        assert!(Instant::now() < until, "{}", output(&dir, "x"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        output(&dir, "x").matches("authorization").count(),
        1,
        "said once"
    );
    // A token only from a file: there is no flag that takes one.
    let o = liveswap_in(None, &["run", "--help"]);
    assert!(
        o.stdout.contains("--lattice-token-file") && !o.stdout.contains("--lattice-token "),
        "{}",
        o.stdout
    );
}

/// A sender's host with a state directory, SIGKILLed while it sends and
/// started again on the directory: T on a sends SINK on b a number every
/// millisecond; a is killed outright twice and comes back with T's state
/// and the messages its outbox held, under the same stream identity, and
/// SINK sees every number T counts as sent once and in order.
#[test]
fn a_durable_sender_killed_and_restarted_loses_and_repeats_nothing() {
    killed_twice("a");
}

/// The same with the receiver's host durable and killed: SINK comes back
/// with its queue and its receiving marks (journaled with each message
/// taken; a taken message is acknowledged only once durable), so what a
/// sends again is dropped as held, and nothing is taken twice or lost.
#[test]
fn a_durable_receiver_killed_and_restarted_takes_nothing_twice() {
    killed_twice("b");
}

/// T on a sends SINK on b a number every millisecond; host `durable`
/// (with a state directory) is SIGKILLed twice and started again on it;
/// then T stops and SINK has seen every number T counts as sent, once and
/// in order.
fn killed_twice(durable: &str) {
    let dir = temp_dir(&format!("lattice-durable-{durable}"));
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let _nats = start_nats(&dir, port, &[]);
    let v2 = liveswap_guests::PROBE_V2;
    let state = dir.join("state");
    let with_state = ["--state-dir", state.to_str().unwrap()];
    let flags = |id: &str| -> &[&str] { if id == durable { &with_state } else { &[] } };
    let scripts = [
        ("b", format!("Load SINK {v2} config \"quiet\"\n")),
        (
            "a",
            format!("Load T {v2} config \"timer t 1; tick-send SINK; quiet\"\n"),
        ),
    ];
    let mut hosts = Vec::new();
    for (id, script) in &scripts {
        hosts.push(start_host_with(&dir, port, id, script, flags(id)));
    }
    let served = |s: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with("SINK "))
            .and_then(|l| l.split_whitespace().nth(5))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut past = 300;
    status_until(&dir, "b", "numbers from a", |s| served(s) > past);
    let k = if durable == "b" { 0 } else { 1 };
    for round in 0..2 {
        hosts[k].0.kill().unwrap();
        let _ = hosts[k].0.wait();
        if durable == "a" {
            past = served(&ctl(&dir, "b", &["Status"]));
        }
        hosts[k] = start_host_with(&dir, port, durable, "", flags(durable));
        if durable == "b" {
            status_until(&dir, "b", "SINK back", |s| served(s) > 0);
            past = served(&ctl(&dir, "b", &["Status"]));
        }
        status_until(&dir, "b", "numbers after the restart", |s| {
            served(s) > past + 500
        });
        eprintln!(
            "restart {} of host {durable}: SINK had served {past}",
            round + 1
        );
    }

    ctl(&dir, "a", &["Send", "T", "do", "cancel t"]);
    status_until(&dir, "a", "an empty outbox", |s| {
        s.contains(" 0 waiting for acknowledgement")
    });
    let before = (output(&dir, "a").len(), output(&dir, "b").len());
    ctl(&dir, "a", &["Send", "T", "do", "report"]);
    ctl(&dir, "b", &["Send", "SINK", "do", "report"]);
    let until = Instant::now() + Duration::from_secs(30);
    let reported = |id: &str, from: usize| output(&dir, id)[from..].contains(" | report ");
    while !(reported("a", before.0) && reported("b", before.1)) {
        assert!(Instant::now() < until, "no reports");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = output(&dir, "b");
    assert!(
        !b.contains("GAP") && !b.contains("DUP"),
        "numbers lost or repeated:\n{b}"
    );
    let sent = count(&output(&dir, "a"), "T", "sent=", "SINK");
    let seen = count(&b, "SINK", "seen=", "T");
    assert!(sent > past, "T sent {sent}");
    assert_eq!(sent, seen, "every number T sent, SINK saw once");
}
