//! `/metrics`: the host in the Prometheus exposition format
//! (OpenMetrics text), built by `prometheus-client` at each scrape from
//! the host's status and transaction history. Nothing is counted twice and
//! nothing lives beside the core: the counters are the ones `Status`
//! shows, the histograms are made from `History` (which keeps every
//! transaction, and comes back with a state directory).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use liveswap::{ProxyStatus, Runtime, TransactionReport};

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn module(name: &str) -> Labels {
    vec![("module", name.to_string())]
}

/// Seconds from 1 µs to about 4 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 23))
}

/// Bytes from 64 B to 256 MiB, by fours.
fn bytes() -> Histogram {
    Histogram::new(exponential_buckets(64.0, 4.0, 12))
}

/// The host's metrics, now.
pub fn render(rt: &Runtime) -> String {
    let mut reg = Registry::with_prefix("liveswap");
    modules(&mut reg, &rt.status());
    transactions(&mut reg, &rt.history());
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// One counter family, filled with `value` per module.
fn counter(
    reg: &mut Registry,
    mods: &[ProxyStatus],
    name: &str,
    help: &str,
    value: fn(&ProxyStatus) -> u64,
) {
    let f = Family::<Labels, Counter>::default();
    for m in mods {
        f.get_or_create(&module(&m.name)).inc_by(value(m));
    }
    reg.register(name, help, f);
}

/// One gauge family, filled with `value` per module (none: left out).
fn gauge(
    reg: &mut Registry,
    mods: &[ProxyStatus],
    (name, help, unit): (&str, &str, Option<Unit>),
    value: impl Fn(&ProxyStatus) -> Option<i64>,
) {
    let f = Family::<Labels, Gauge>::default();
    for m in mods {
        if let Some(v) = value(m) {
            f.get_or_create(&module(&m.name)).set(v);
        }
    }
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, f),
        None => reg.register(name, help, f),
    }
}

fn modules(reg: &mut Registry, mods: &[ProxyStatus]) {
    let info = Family::<Labels, Gauge>::default();
    for m in mods {
        let labels = vec![
            ("module", m.name.clone()),
            ("version", m.version.label().to_string()),
            ("digest", m.version.digest.clone()),
            ("state", m.state.as_str().to_string()),
        ];
        info.get_or_create(&labels).set(1);
    }
    reg.register(
        "module",
        "Each module: the version it runs and its state (always 1)",
        info,
    );
    counter(
        reg,
        mods,
        "messages_served",
        "Messages a module served",
        |m| m.served,
    );
    counter(
        reg,
        mods,
        "messages_refused",
        "Messages refused for a full mailbox (messages or bytes)",
        |m| m.refused,
    );
    counter(
        reg,
        mods,
        "service_errors",
        "Messages whose service call returned an error",
        |m| m.errors,
    );
    counter(
        reg,
        mods,
        "faults",
        "Traps and deadline overruns of a module's calls",
        |m| m.faults,
    );
    counter(
        reg,
        mods,
        "recoveries",
        "Rebuilds of a module from its recovery point after a fault",
        |m| m.recoveries,
    );
    let n = |v: usize| Some(i64::try_from(v).unwrap_or(i64::MAX));
    gauge(
        reg,
        mods,
        ("mailbox_depth", "Messages queued, not yet served", None),
        |m| n(m.depth),
    );
    gauge(
        reg,
        mods,
        ("mailbox_capacity", "Most messages a mailbox holds", None),
        |m| n(m.capacity),
    );
    gauge(
        reg,
        mods,
        (
            "mailbox_queued",
            "Bytes queued in a mailbox",
            Some(Unit::Bytes),
        ),
        |m| n(m.queued_bytes.0),
    );
    gauge(
        reg,
        mods,
        (
            "recovery_log",
            "Bytes logged since the recovery point",
            Some(Unit::Bytes),
        ),
        |m| n(m.logged_bytes),
    );
    gauge(
        reg,
        mods,
        ("poison_messages", "Messages set aside as poison", None),
        |m| n(m.poisoned),
    );
    gauge(
        reg,
        mods,
        (
            "probation_remaining",
            "Time left on probation after a commit (modules on probation only)",
            Some(Unit::Seconds),
        ),
        |m| m.probation_left.map(|d| d.as_secs() as i64),
    );
}

fn transactions(reg: &mut Registry, txns: &[TransactionReport]) {
    let outcomes = Family::<Labels, Counter>::default();
    let total = seconds();
    let pause = Family::<Labels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
    let quiesce = Family::<Labels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
    let state = Family::<Labels, Histogram>::new_with_constructor(bytes as fn() -> Histogram);
    for t in txns {
        outcomes
            .get_or_create(&vec![("outcome", t.outcome.as_str().to_string())])
            .inc();
        total.observe(t.total_us as f64 / 1e6);
        for m in &t.modules {
            let l = module(&m.name);
            if let Some(us) = m.pause_us {
                pause.get_or_create(&l).observe(us as f64 / 1e6);
            }
            if let Some(us) = m.quiesce_us {
                quiesce.get_or_create(&l).observe(us as f64 / 1e6);
            }
            if let Some(b) = m.state_bytes {
                state.get_or_create(&l).observe(b as f64);
            }
        }
    }
    reg.register(
        "transactions",
        "Upgrade transactions by outcome (committed, aborted, refused, rolled-back)",
        outcomes,
    );
    reg.register_with_unit(
        "transaction_duration",
        "A transaction from its command to its end, compiling included",
        Unit::Seconds,
        total,
    );
    reg.register_with_unit(
        "swap_pause",
        "Per module and transaction: TERM reached to the next message servable",
        Unit::Seconds,
        pause,
    );
    reg.register_with_unit(
        "quiescence",
        "Per module and transaction: TERM queued to TERM reached (still serving)",
        Unit::Seconds,
        quiesce,
    );
    reg.register_with_unit(
        "state_transfer",
        "Per module and transaction: state handed from the old version to the new",
        Unit::Bytes,
        state,
    );
}
