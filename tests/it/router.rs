//! The non-stop router end to end: the shipped scenario, shortened, with a
//! real UDP monitor on loopback.

use std::time::Duration;

use liveswap::Outcome;
use liveswap_demo::monitor::Monitor;
use liveswap_demo::{self as demo, DemoOptions, Narration};
use liveswap_ops::script::Vars;

use crate::support::*;

fn guests() -> String {
    std::path::Path::new(V1)
        .parent()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_router_survives_every_transaction_and_a_bad_release_without_losing_a_relay() {
    let mut vars = Vars::default();
    vars.set("GUESTS", guests())
        .set("BEAT", "50")
        .set("SETTLE", "1s")
        .set("FLAP", "40")
        .set("ABORT_BOUND", "1");
    let quiet = std::sync::Arc::new(|_: Narration| {});
    let r = demo::run(
        DemoOptions {
            vars,
            gap: Duration::from_secs(1),
            script: demo::ROUTER_SCRIPT.to_string(),
            monitor: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            http: None,
            trusted_keys: Vec::new(),
            state_dir: None,
            host_binary: None,
            handoff_stay: Duration::ZERO,
            lattice: None,
        },
        quiet,
    )
    .unwrap();
    let summary = r.summary();
    let outcomes: Vec<Outcome> = r.steps.iter().map(|s| s.report.outcome).collect();
    use Outcome::*;
    assert_eq!(
        outcomes,
        [
            Committed, Committed, Committed, Committed, Aborted, Refused, Committed, Committed,
            RolledBack
        ],
        "{summary}"
    );
    // Between transactions 3 and 4 a fresh host took the router over from
    // its state directory: TIMER, OSPF and IP, and the relay numbers went
    // on (checked below).
    assert_eq!(r.handoffs.len(), 1, "{summary}");
    assert_eq!(r.handoffs[0].restored.0, 3, "{summary}");
    let abort = r.steps[4].report.reason.clone().unwrap();
    assert!(
        abort.starts_with("IP (") && abort.contains("did not reach quiescence"),
        "{abort}"
    );
    let refusal = r.steps[5].report.reason.clone().unwrap();
    assert!(
        refusal.starts_with("OSPF must be upgraded in the same transaction"),
        "{refusal}"
    );
    for sender in ["IP", "VRRP"] {
        let c = &r.relays[sender];
        assert!(
            c.count > 10 && c.consecutive && c.violations.is_empty(),
            "{sender}: {c:?}\n{summary}"
        );
    }
    assert!(
        r.ospf_v3.0 > 0 && r.ospf_v3.1 > 0,
        "OSPF v3 served both protocols: {:?}",
        r.ospf_v3
    );
    for m in ["IP", "OSPF", "VRRP"] {
        assert!(
            r.heard.iter().any(|h| h.module == m),
            "the monitor heard {m}\n{summary}"
        );
    }
    // Transaction 7: the bad OSPF release trapped and the group (OSPF
    // alone) went back to v3 by itself; the relay checks above cover it.
    let back = &r.steps[8].report;
    assert_eq!(back.origin, "probation", "{summary}");
    assert!(
        back.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("OSPF v4: service trapped"),
        "{summary}"
    );
    assert_eq!(back.modules[0].to.as_deref(), Some("3"), "{summary}");
    let ip = r.heard.iter().find(|h| h.module == "IP").unwrap();
    let versions: Vec<&str> = ip.versions.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(versions, ["1", "2", "1", "3"]);
    assert!(
        r.outages.iter().all(|(_, within)| within.is_some()),
        "{summary}"
    );
    assert!(r.passed(), "{summary}");
}

#[test]
fn a_module_without_a_grant_cannot_send_packets() {
    let mut mon =
        Monitor::start("127.0.0.1:0".parse().unwrap(), Duration::from_secs(1), None).unwrap();
    let addr = mon.addr();
    let mut h = Host::new();
    let g = guests();
    h.ok(&format!(
        "Load TIMER {g}/timer_v1.wasm config \"interval 5\""
    ));
    h.ok(&format!(
        "Load OSPF {g}/ospf_v1.wasm config \"monitor {addr}\" grant udp {addr}"
    ));
    h.ok(&format!("Load IP {g}/ip_v1.wasm config \"monitor {addr}\""));
    // No UDP grant at all: the sandbox refuses it a UDP socket, and the
    // host reports the refusal under the module's name.
    let line = h.wait_log("IP", |l| l.starts_with("ICMP packet not sent"));
    assert!(line.contains("cannot open a UDP socket"), "{line}");
    h.wait_line("IP", "sandbox: refused a udp socket (no udp grant)");
    // The granted neighbour's packets do arrive.
    h.wait_line("OSPF", "got msg : 20 from IP v1");
    h.rt.shutdown();
    mon.stop();
    let heard = mon.snapshot();
    assert!(heard.iter().any(|m| m.module == "OSPF"), "{heard:?}");
    assert!(!heard.iter().any(|m| m.module == "IP"), "{heard:?}");
    // A grant of another address does not help either.
    let mut h = Host::new();
    h.ok(&format!(
        "Load TIMER {g}/timer_v1.wasm config \"interval 5\""
    ));
    h.ok(&format!(
        "Load IP {g}/ip_v1.wasm config \"monitor {addr}\" grant udp 127.0.0.1:9"
    ));
    let line = h.wait_log("IP", |l| l.starts_with("ICMP packet not sent"));
    assert!(line.contains(&format!("cannot send to {addr}")), "{line}");
}
