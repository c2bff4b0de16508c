//! The benchmark keeps working: its quick mode runs every scenario and
//! writes every table and plot. Timings are not asserted here.

use liveswap_bench::{self as bench, BenchOptions};

use crate::support::*;

#[test]
fn the_quick_benchmark_produces_every_table_and_plot() {
    let out = std::env::temp_dir().join(format!("liveswap-bench-{}", std::process::id()));
    let opts = BenchOptions {
        quick: true,
        out: out.clone(),
        probe_v1: V1.into(),
        probe_v2: V2.into(),
        probe_v4: liveswap_guests::PROBE_V4.into(),
        only: Vec::new(),
    };
    let tables = bench::run(&opts, &mut |_| {}).unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pause_vs_state",
            "pause_vs_backlog",
            "group_scaling",
            "throughput",
            "scale",
            "faults",
            "durable_relay",
            "durable_restart",
            "durable_handoff",
            "shadow_promote",
            "shadow_cost",
            "lattice"
        ]
    );
    for t in &tables {
        assert!(!t.rows.is_empty(), "{} has no rows", t.name);
        let csv = std::fs::read_to_string(out.join(format!("{}.csv", t.name))).unwrap();
        assert_eq!(csv.lines().count(), t.rows.len() + 1, "{}", t.name);
        for row in &t.rows {
            assert_eq!(row.len(), t.header.len(), "{}", t.name);
        }
    }
    for svg in [
        "pause_vs_state.svg",
        "pause_vs_backlog.svg",
        "group_scaling.svg",
        "durable_restart.svg",
        "durable_handoff.svg",
    ] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<polyline"),
            "{svg}"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}
