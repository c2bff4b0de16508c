//! Property tests of everything that takes input from outside: command
//! lines, admin connections and state bytes. Case counts keep this file to
//! a few seconds in a debug build.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use liveswap::{Command, Event};
use liveswap_ops::admin::{Client, Final, MAX_LINE};
use liveswap_ops::command::{KEYWORDS, parse};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---- the command parser ----

/// Words besides the command keywords (`KEYWORDS`): other spellings of
/// them, option words and values good and bad.
const WORDS: &[&str] = &[
    "unload",
    "ENABLE",
    "syn_load",
    "setcheckpoint",
    "exit",
    "config",
    "capacity",
    "grant",
    "pin",
    "memory",
    "errors",
    "20%",
    "101%",
    "16MiB",
    "1kib",
    "udp",
    "tcp",
    "dir",
    "env",
    "ro",
    "RW",
    "fs",
    "concurrent",
    "sequential",
    "A",
    "B",
    "ip-2.x",
    "9lives",
    "a.wasm",
    "/tmp/a b.wasm",
    "127.0.0.1:9",
    "[::1]:80",
    "localhost:80",
    "300.1.1.1:1",
    "0",
    "1",
    "-1",
    "1.5",
    "250ms",
    "2s",
    "1m",
    "3us",
    "7µs",
    "2h",
    "NaN",
    "inf",
    "1e3",
    "99999999999999999999",
    "MODE=fast",
    "=x",
    "X=",
    "A=b=c",
    "#",
    "#x",
    "\"",
    "\"a b\"",
    "\"a\\nb\"",
    "\"\\q\"",
    "\"#\"",
    "\\",
    "\"\"",
    "\u{2028}",
    "\r",
    "\t",
    "\u{0}",
    "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    "sha256:12",
];

/// A line built from words the parser knows and words it must refuse.
fn token_line() -> impl Strategy<Value = String> {
    let sep = select(vec![" ", "  ", "\t", " \r "]);
    let words: Vec<&str> = KEYWORDS.iter().chain(WORDS).copied().collect();
    vec((select(words), sep), 0..12)
        .prop_map(|ws| ws.into_iter().flat_map(|(w, s)| [w, s]).collect::<String>())
}

/// Two parses of the same command: equal, durations to the microsecond
/// (they travel as decimal text).
fn same(a: &Command, b: &Command) -> bool {
    let close = |x: &Duration, y: &Duration| x.abs_diff(*y) <= Duration::from_micros(1);
    match (a, b) {
        (Command::SetTimer(x), Command::SetTimer(y)) | (Command::Wait(x), Command::Wait(y)) => {
            close(x, y)
        }
        _ => a == b,
    }
}

/// What every parse must satisfy, whatever the line.
fn check_parse(line: &str) -> Result<(), TestCaseError> {
    match parse(line) {
        Ok(None) => {}
        Ok(Some(c)) => {
            let text = c.to_string();
            prop_assert!(!text.contains('\n'), "{line:?} renders as {text:?}");
            let keyword = text.split(' ').next().unwrap_or("");
            prop_assert!(KEYWORDS.contains(&keyword), "{line:?} renders as {text:?}");
            match parse(&text) {
                Ok(Some(again)) => prop_assert!(
                    same(&c, &again),
                    "{line:?} -> {c:?} renders as {text:?} -> {again:?}"
                ),
                other => {
                    return Err(TestCaseError::fail(format!(
                        "{line:?} renders as {text:?}, which gives {other:?}"
                    )));
                }
            }
        }
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "{line:?}: an empty error");
            prop_assert!(
                !e.contains(['\n', '\r', '\u{2028}', '\u{2029}']),
                "{line:?}: {e:?} is not one line"
            );
        }
    }
    Ok(())
}

#[test]
fn the_parser_never_panics_and_what_it_accepts_renders_back() {
    runner(3000)
        .run(&any::<String>(), |line| check_parse(&line))
        .unwrap();
    runner(3000)
        .run(&token_line(), |line| check_parse(&line))
        .unwrap();
}

// ---- the admin protocol ----

use crate::admin::{Served, served};

/// Bytes a client might send: noise, bytes that trouble line readers,
/// harmless commands, and lines past the limit.
fn admin_input() -> impl Strategy<Value = Vec<u8>> {
    let special: &[&[u8]] = &[
        b"\0",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\r",
        b"\xff\xfe",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\"",
        b"#",
        b" ",
        b"\t",
        b"Status",
        b"Help",
        b"Versions",
        b"History",
        b"Json on",
        b"Json off",
        b"Load",
        b"Replace A",
        b"Send A",
        b"Auth x",
        b"grant dir",
    ];
    let chunk = prop_oneof![
        6 => vec(any::<u8>(), 0..48),
        6 => select(special.to_vec()).prop_map(<[u8]>::to_vec),
        1 => (MAX_LINE - 8..MAX_LINE + 8).prop_map(|n| vec![b'x'; n]),
    ];
    vec(chunk, 0..24).prop_map(|c| c.concat())
}

/// Send `input` on a new connection and read everything until the host
/// closes it (the client has shut its writing half). The writing runs on
/// its own thread: a client that does not read while it writes could fill
/// both socket buffers.
fn converse(s: &Served, input: Vec<u8>) -> Vec<u8> {
    let conn = UnixStream::connect(s.server.unix_path().unwrap()).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut w = conn.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The host may close first (a line too long): not an error here.
        let _ = w.write_all(&input);
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    let mut out = Vec::new();
    let mut r = &conn;
    let started = Instant::now();
    if let Err(e) = r.read_to_end(&mut out) {
        // A reset after the host closed a too-long line is a clean close.
        assert!(
            started.elapsed() < PATIENCE,
            "the host neither answered nor closed: {e}"
        );
    }
    writer.join().unwrap();
    out
}

#[test]
fn admin_connections_with_any_bytes_get_errors_and_the_host_serves_on() {
    let s = served(false);
    let events = s.rt.watch();
    let mut c = Client::unix(s.server.unix_path().unwrap()).unwrap();
    for line in [
        format!("Load A {V1} config \"timer t 5; tick-send B\""),
        format!("Load B {V1}"),
    ] {
        let f = c.command(&line, |_| {}).unwrap();
        assert_eq!(f, Final::Ok("done".into()), "{line}");
    }
    runner(128)
        .run(&admin_input(), |input| {
            let too_long = input.split(|b| *b == b'\n').any(|l| l.len() > MAX_LINE);
            let reply = converse(&s, input);
            let text = String::from_utf8(reply)
                .map_err(|e| TestCaseError::fail(format!("the reply is not UTF-8: {e}")))?;
            for l in text.lines() {
                prop_assert!(
                    l.starts_with("OK")
                        || l.starts_with("ERR")
                        || l.starts_with("| ")
                        || l.starts_with('{'),
                    "a stray reply line {l:?}"
                );
            }
            if too_long {
                prop_assert!(text.contains("ERR line longer than"), "{text}");
            }
            // A new connection still gets a real answer.
            let mut c = Client::unix(s.server.unix_path().unwrap()).unwrap();
            let mut out = Vec::new();
            let f = c.command("Status", |l| out.push(l.to_string())).unwrap();
            prop_assert_eq!(f, Final::Ok("done".into()));
            prop_assert!(out.iter().any(|l| l.starts_with("B ")), "{:?}", out);
            Ok(())
        })
        .unwrap();
    // Both modules still serve: B receives A's next numbers.
    for m in ["A", "B"] {
        let st = s.rt.module(m).unwrap().status();
        assert_eq!(st.state, liveswap::ModuleState::Serving, "{m}");
        assert_eq!(st.faults, 0, "{m}");
    }
    while events.try_recv().is_ok() {}
    let until = Instant::now() + PATIENCE;
    loop {
        match events.recv_deadline(until) {
            Ok(Event::Log { module, line, .. })
                if module == "B" && parse_got(&line).is_some_and(|(_, from)| from == "A") =>
            {
                break;
            }
            Ok(_) => {}
            Err(_) => panic!("B heard nothing more from A"),
        }
    }
}

// ---- state hand-over bytes ----

/// Map keys the guests' state shapes use, so that random states get past
/// the first field.
const STATE_KEYS: &[&str] = &[
    "shape",
    "seq",
    "seen",
    "on_tick_send",
    "on_tick_publish",
    "flags",
    "pad",
    "work_us",
    "quiet",
    "outgoing",
    "incoming",
    "tick",
    "send",
    "publish",
    "ballast",
    "served",
    "routes",
    "neighbours",
    "version",
    "count",
    "state",
];

fn cbor_value() -> impl Strategy<Value = ciborium::Value> {
    use ciborium::Value;
    let leaf = prop_oneof![
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        (0u64..4).prop_map(|n| Value::Integer(n.into())),
        any::<i64>().prop_map(|n| Value::Integer(n.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        any::<f64>().prop_map(Value::Float),
        vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        select(vec!["trap-get", "fail-get", "x", "", "IP"]).prop_map(|s| Value::Text(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((select(STATE_KEYS.to_vec()), inner), 0..8).prop_map(|kv| {
                Value::Map(
                    kv.into_iter()
                        .map(|(k, v)| (Value::Text(k.into()), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Random bytes, or CBOR shaped like a state, perhaps cut short.
fn state_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        cbor_value().prop_map(|v| {
            let mut out = Vec::new();
            ciborium::into_writer(&v, &mut out).unwrap();
            out
        }),
        (cbor_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let mut out = Vec::new();
            ciborium::into_writer(&v, &mut out).unwrap();
            let n = cut.index(out.len() + 1);
            out.truncate(n);
            out
        }),
    ]
}

/// A probe state of shape 1 that makes `get-state` trap.
fn trapping_state() -> Vec<u8> {
    use ciborium::Value;
    let text = |s: &str| Value::Text(s.into());
    let state = Value::Map(vec![
        (text("seq"), Value::Map(vec![])),
        (text("seen"), Value::Map(vec![])),
        (text("on_tick_send"), Value::Array(vec![])),
        (text("on_tick_publish"), Value::Array(vec![])),
        (text("flags"), Value::Array(vec![text("trap-get")])),
        (text("pad"), Value::Bytes(vec![])),
        (text("work_us"), Value::Integer(0.into())),
        (text("quiet"), Value::Bool(false)),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&state, &mut out).unwrap();
    out
}

#[test]
fn any_state_bytes_are_taken_refused_or_trapped_and_the_host_serves_on() {
    let mut h = Host::new();
    h.ok(&format!("Load A {V1} config \"timer t 5; tick-send B\""));
    h.ok(&format!("Load B {V1}"));
    for (name, path) in liveswap_guests::ALL {
        let path = std::path::Path::new(path);
        let outcomes: [std::cell::Cell<usize>; 3] = Default::default();
        let count = |i: usize| outcomes[i].set(outcomes[i].get() + 1);
        runner(64)
            .run(&state_bytes(), |state| {
                match h.rt.try_get_state(path, &state) {
                    Ok(()) => count(0),
                    Err(e) if e.contains("trapped") => count(2),
                    Err(e) => {
                        prop_assert!(!e.is_empty(), "{name}: an empty error");
                        count(1);
                    }
                }
                Ok(())
            })
            .unwrap();
        // A whole shape-1 state whose flags say trap: the trap is contained.
        if name.starts_with("probe") {
            let e = h.rt.try_get_state(path, &trapping_state());
            assert!(
                e.as_ref().is_err_and(|e| e.contains("get-state trapped")),
                "{name}: {e:?}"
            );
        }
        let [taken, refused, trapped] = outcomes.map(|c| c.get());
        eprintln!("{name}: taken {taken}, refused {refused}, trapped {trapped}");
    }
    // A missing file or too large a state is an error, not a trial.
    assert!(
        h.rt.try_get_state(std::path::Path::new("/nonexistent.wasm"), b"")
            .is_err()
    );
    // The loaded modules never noticed.
    let since = h.mark();
    h.wait_event_since(since, "B hears from A", |e| {
        matches!(e, Event::Log { module, line, .. }
            if module == "B" && parse_got(line).is_some_and(|(_, from)| from == "A"))
    });
    for m in ["A", "B"] {
        let st = h.rt.module(m).unwrap().status();
        assert_eq!(st.state, liveswap::ModuleState::Serving, "{m}");
        assert_eq!(st.faults, 0, "{m}");
    }
}
