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

/// A per-module figure: its name, help and unit, and its value (none:
/// the module has no such figure now).
type Figure = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&ProxyStatus) -> Option<u64>,
);

/// The counters per module.
const COUNTERS: &[Figure] = &[
    ("messages_served", "Messages a module served", None, |m| {
        Some(m.served)
    }),
    (
        "guest_calls",
        "Guest calls that served messages (one serves many in a batch)",
        None,
        |m| Some(m.calls),
    ),
    (
        "messages_refused",
        "Messages refused for a full mailbox (messages or bytes)",
        None,
        |m| Some(m.refused),
    ),
    (
        "service_errors",
        "Messages whose service call returned an error",
        None,
        |m| Some(m.errors),
    ),
    (
        "faults",
        "Traps and deadline overruns of a module's calls",
        None,
        |m| Some(m.faults),
    ),
    (
        "recoveries",
        "Rebuilds of a module from its recovery point after a fault",
        None,
        |m| Some(m.recoveries),
    ),
];

/// The gauges per module.
const GAUGES: &[Figure] = &[
    (
        "mailbox_depth",
        "Messages queued, not yet served",
        None,
        |m| Some(m.depth as u64),
    ),
    (
        "mailbox_capacity",
        "Most messages a mailbox holds",
        None,
        |m| Some(m.capacity as u64),
    ),
    (
        "mailbox_queued",
        "Bytes queued in a mailbox",
        Some(Unit::Bytes),
        |m| Some(m.queued_bytes.0 as u64),
    ),
    (
        "recovery_log",
        "Bytes logged since the recovery point",
        Some(Unit::Bytes),
        |m| Some(m.logged_bytes as u64),
    ),
    (
        "poison_messages",
        "Messages set aside as poison",
        None,
        |m| Some(m.poisoned as u64),
    ),
    (
        "probation_remaining",
        "Time left on probation after a commit (modules on probation only)",
        Some(Unit::Seconds),
        |m| m.probation_left.map(|d| d.as_secs()),
    ),
    (
        "shadow_mirrored",
        "Messages given to the shadow running beside a module (modules with one only)",
        None,
        |m| running_shadow(m).map(|s| s.mirrored),
    ),
    (
        "shadow_matched",
        "Messages its shadow served with the same outcome and effects",
        None,
        |m| running_shadow(m).map(|s| s.matched),
    ),
    (
        "shadow_behind",
        "Messages given to its shadow and not yet served",
        None,
        |m| running_shadow(m).map(|s| s.behind),
    ),
];

/// The module's shadow, if one runs.
fn running_shadow(m: &ProxyStatus) -> Option<&liveswap::proxy::ShadowStatus> {
    m.shadow.as_ref().filter(|s| s.ended.is_none())
}

fn register(
    reg: &mut Registry,
    (name, help, unit): (&str, &str, Option<Unit>),
    metric: impl prometheus_client::registry::Metric,
) {
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, metric),
        None => reg.register(name, help, metric),
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
    for (name, help, unit, value) in COUNTERS {
        let f = Family::<Labels, Counter>::default();
        for m in mods {
            if let Some(v) = value(m) {
                f.get_or_create(&module(&m.name)).inc_by(v);
            }
        }
        register(reg, (name, help, unit.clone()), f);
    }
    for (name, help, unit, value) in GAUGES {
        let f = Family::<Labels, Gauge>::default();
        for m in mods {
            if let Some(v) = value(m) {
                f.get_or_create(&module(&m.name))
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        register(reg, (name, help, unit.clone()), f);
    }
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
