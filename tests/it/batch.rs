//! Property test of batches: a receiver whose mailbox fills while it is
//! held in a long call gets what queued in batches of a random bound, with
//! messages that trap at random places inside them, messages that send
//! before and after them, and an upgrade's TERM arriving among them.
//! Every number is served once and in order, every send is made once (a
//! trap charged to the wrong message would suppress or repeat sends), and
//! exactly the messages that trap are set aside as poison.

use std::time::Duration;

use liveswap::{Limits, RuntimeBuilder};
use liveswap_ops::execute_line;
use proptest::prelude::*;

use crate::support::*;

#[derive(Clone, Debug)]
enum Step {
    /// The sender S sends n numbers to R.
    Nums(u16),
    /// R is told to send n numbers to T.
    Forward(u8),
    /// A message R traps on (a trap after sends would keep the sends and
    /// lose the count of them, batch or not: not what is tested here).
    Trap,
    /// A message on which R logs a line, then traps: the line is written
    /// once (its retry suppresses it), whatever the batch around it.
    LogThenTrap,
    /// Replace R (by its own version or the other one) while this queues.
    Upgrade,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u16..120).prop_map(Step::Nums),
        2 => (1u8..20).prop_map(Step::Forward),
        1 => Just(Step::Trap),
        1 => Just(Step::LogThenTrap),
        1 => Just(Step::Upgrade),
    ]
}

fn run(bound: usize, steps: Vec<Step>) {
    let limits = Limits {
        batch: bound,
        restarts: 10_000,
        ..Limits::default()
    };
    let mut h = Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_secs(10))
            .limits(limits),
    );
    h.ok(&format!("Load T {V1} config quiet"));
    h.ok(&format!("Load S {V1} config quiet"));
    h.ok(&format!("Load R {V1} config quiet"));
    let (mut nums, mut forwarded, mut traps) = (0u64, 0u64, 0usize);
    let mut version = V1;
    std::thread::scope(|scope| {
        // R is held in one call while everything below queues behind it.
        h.ok("Send R do \"sleep 300\"");
        let mut upgrades = Vec::new();
        for s in &steps {
            match s {
                Step::Nums(n) => {
                    h.ok(&format!("Send S do \"send R {n}\""));
                    nums += u64::from(*n);
                }
                Step::Forward(n) => {
                    h.ok(&format!("Send R do \"send T {n}\""));
                    forwarded += u64::from(*n);
                }
                Step::Trap => {
                    h.ok("Send R do trap");
                    traps += 1;
                }
                Step::LogThenTrap => {
                    h.ok(&format!("Send R do \"flag t{traps}; trap\""));
                    traps += 1;
                }
                Step::Upgrade => {
                    // Its TERM goes in behind what queued so far; the
                    // command returns when the vote is over.
                    version = if version == V1 { V2 } else { V1 };
                    let rt = &h.rt;
                    let line = format!("Replace R {version}");
                    upgrades.push(scope.spawn(move || execute_line(rt, &line, "test")));
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        for u in upgrades {
            u.join().expect("upgrade thread").expect("Replace runs");
        }
    });
    // Everything sent is in R's mailbox (S's last burst included) once S
    // has served its messages; then R reports what it saw.
    let sends = steps.iter().filter(|s| matches!(s, Step::Nums(_))).count() as u64;
    served_at_least(&h, "S", sends);
    h.ok("Send R do report");
    let report = h.wait_log("R", |l| l.starts_with("report "));
    let seen_s = format!("S:{nums}");
    assert!(
        (nums == 0 && !report.contains("S:")) || report.contains(&seen_s),
        "R saw {report}, S sent {nums}"
    );
    assert!(h.violations("R").is_empty(), "{:?}", h.violations("R"));
    // T got R's numbers once each, in order.
    h.ok("Send T do report");
    let report = h.wait_log("T", |l| l.starts_with("report "));
    let seen_r = format!("R:{forwarded}");
    assert!(
        (forwarded == 0 && !report.contains("R:")) || report.contains(&seen_r),
        "T saw {report}, R sent {forwarded}"
    );
    assert!(h.violations("T").is_empty(), "{:?}", h.violations("T"));
    for t in 0..traps {
        let said = format!("did flag t{t}");
        let times = h.logs("R").iter().filter(|l| **l == said).count();
        assert!(times <= 1, "`{said}` written {times} times");
    }
    // Exactly the messages that trapped were set aside.
    let poison = h.rt.module("R").unwrap().poison();
    assert_eq!(poison.len(), traps, "{poison:?}");
    for p in &poison {
        let body = String::from_utf8_lossy(&p.message.body);
        assert!(
            p.message.kind == "do" && body.ends_with("trap"),
            "set aside: {} {body}",
            p.message.kind
        );
    }
    // R took what queued in batches.
    let st = h.rt.module("R").unwrap().status();
    if bound > 1 && nums > 2 * bound as u64 {
        assert!(st.calls < st.served, "{} calls for {}", st.calls, st.served);
    }
}

/// Wait until `name` has served `n` messages (its sends are then queued
/// at their receivers).
fn served_at_least(h: &Host, name: &str, n: u64) {
    let m = h.rt.module(name).unwrap();
    let end = std::time::Instant::now() + PATIENCE;
    while m.served() < n {
        assert!(
            std::time::Instant::now() < end,
            "{name} served fewer than {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 16, ..ProptestConfig::default() })]
    #[test]
    fn batches_serve_every_message_once_in_order_and_charge_traps_to_their_message(
        bound in 2usize..64,
        steps in proptest::collection::vec(step(), 1..24),
    ) {
        run(bound, steps);
    }
}

#[test]
fn a_message_that_runs_forever_inside_a_batch_is_cut_at_its_deadline_and_set_aside() {
    let mut h = Host::with(RuntimeBuilder::default().call_deadline(Duration::from_millis(500)));
    h.ok(&format!("Load R {V1} config quiet"));
    h.ok(&format!("Load S {V1} config quiet"));
    // Numbers, a message that spins, numbers: queued while R sleeps, so
    // that they reach it in one batch.
    h.ok("Send R do \"sleep 300\"");
    h.ok("Send S do \"send R 20\"");
    served_at_least(&h, "S", 1);
    h.ok("Send R do spin");
    h.ok("Send S do \"send R 20\"");
    served_at_least(&h, "S", 2);
    h.ok("Send R do report");
    let report = h.wait_log("R", |l| l.starts_with("report "));
    assert!(report.contains("S:40"), "{report}");
    assert!(h.violations("R").is_empty(), "{:?}", h.violations("R"));
    let poison = h.rt.module("R").unwrap().poison();
    assert_eq!(poison.len(), 1, "{poison:?}");
    assert_eq!(poison[0].message.body, b"spin");
    assert!(
        poison[0].reason.contains("deadline"),
        "{}",
        poison[0].reason
    );
    let st = h.rt.module("R").unwrap().status();
    assert!(st.calls < st.served, "{} calls for {}", st.calls, st.served);
}

#[test]
fn a_module_without_batches_or_with_a_bound_of_one_is_served_one_call_each() {
    let limits = Limits {
        batch: 1,
        ..Limits::default()
    };
    let mut h = Host::with(RuntimeBuilder::default().limits(limits));
    h.ok(&format!("Load R {V1} config quiet"));
    h.ok(&format!("Load S {V1} config quiet"));
    h.ok("Send R do \"sleep 100\"");
    h.ok("Send S do \"send R 500\"");
    served_at_least(&h, "S", 1);
    h.ok("Send R do report");
    let report = h.wait_log("R", |l| l.starts_with("report "));
    assert!(report.contains("S:500"), "{report}");
    let st = h.rt.module("R").unwrap().status();
    assert_eq!(st.calls, st.served, "one call per message");
}
