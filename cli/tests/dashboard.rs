//! The web dashboard and `/metrics` as operators use them: a real host
//! (`liveswap run --http`), a real headless Chromium driven over WebDriver
//! (chromedriver), a real Prometheus parser.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them): `apt-get install chromium chromium-driver`.

mod common;

use common::{Proc, free_port};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use liveswap::RuntimeBuilder;
use liveswap_ops::web::{WebOptions, WebServer};

const TOKEN: &str = "a-token-of-twenty-chars";

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("liveswap-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().expect("the dashboard answers");
    let code = r.status().as_u16();
    (code, r.body_mut().read_to_string().unwrap())
}

fn post(url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = agent().post(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send(body).expect("the dashboard answers");
    let code = r.status().as_u16();
    (code, r.body_mut().read_to_string().unwrap())
}

/// A process killed when dropped.
fn need(tool: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(tool);
    assert!(
        p.exists(),
        "{} is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        p.display()
    );
    p
}

/// A headless Chromium session over WebDriver.
struct Browser {
    base: String,
    session: String,
    _driver: Proc,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let chromium = need("chromium");
        let driver = need("chromedriver");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Proc(child);
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        while agent().get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < until, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let (code, body) = post(&format!("{base}/session"), None, &caps.to_string());
        assert_eq!(code, 200, "no browser session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            base,
            session,
            _driver: driver,
        }
    }

    fn call(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let (code, text) = post(&url, None, &body.to_string());
        assert_eq!(code, 200, "{path}: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("url", json!({ "url": url }));
    }

    /// Run `script` (a function body) in the page.
    fn eval(&self, script: &str) -> Value {
        self.call("execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Wait until `script` returns true; its last value is in the panic.
    fn wait_for(&self, what: &str, script: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if self.eval(script) == json!(true) {
                return;
            }
            assert!(
                Instant::now() < until,
                "the page never showed {what}; it shows: {}",
                self.eval("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, to: &Path) {
        let url = format!("{}/session/{}/screenshot", self.base, self.session);
        let (_, text) = get(&url);
        let v: Value = serde_json::from_str(&text).unwrap();
        if let Some(b64) = v["value"].as_str() {
            let _ = std::fs::write(to, base64_decode(b64));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = agent().delete(&url).call();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(val(c))).collect();
        let n = v.iter().fold(0u32, |acc, &x| (acc << 6) | x) << (6 * (4 - v.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..v.len() - 1]);
    }
    out
}

/// `liveswap run` of a pair with a dashboard on a free port; returns it
/// and the dashboard address.
fn start_host(dir: &Path, sock: &Path) -> (Proc, SocketAddr) {
    let script = dir.join("pair.ls");
    std::fs::write(
        &script,
        format!(
            "Load SINK {}\nLoad T {} config \"timer t 5; tick-send SINK\"\n",
            liveswap_guests::PROBE_V1,
            liveswap_guests::PROBE_V1
        ),
    )
    .unwrap();
    start_host_with(&script, sock, "127.0.0.1:0")
}

/// `liveswap run SCRIPT --http HTTP`.
fn start_host_with(script: &Path, sock: &Path, http: &str) -> (Proc, SocketAddr) {
    let mut child = Command::new(common::BIN)
        .arg("run")
        .arg(script)
        .args(["--http", http, "--admin"])
        .arg(sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("liveswap runs");
    let rx = common::lines_of(&mut child);
    let host = Proc(child);
    let until = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    while addr.is_none() || !rx.is_empty() {
        let line = rx
            .recv_deadline(until)
            .expect("the host said where its dashboard is");
        if let Some(rest) = line.strip_prefix("-- dashboard: http://") {
            addr = rest.split('/').next().and_then(|a| a.parse().ok());
        }
        if line.starts_with("-- script done") {
            break;
        }
    }
    // Keep reading (and dropping) what it prints.
    std::thread::spawn(move || for _ in rx {});
    (host, addr.expect("a dashboard address"))
}

fn ctl(sock: &Path, args: &[&str]) -> (i32, String) {
    let o = common::ctl_in(None, sock, args);
    (o.code, o.stdout)
}

/// As the page writes a duration in µs.
fn page_us(v: u64) -> String {
    if v < 1000 {
        format!("{v} µs")
    } else if v < 1_000_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{:.2} s", v as f64 / 1e6)
    }
}

#[test]
fn a_replace_appears_on_the_open_dashboard_with_its_pause_without_a_reload() {
    let dir = temp_dir("dashboard");
    let sock = dir.join("admin.sock");
    let (host, addr) = start_host(&dir, &sock);
    let browser = Browser::start(&dir.join("profile"));
    browser.open(&format!("http://{addr}/"));
    browser.wait_for(
        "SINK on v1, live",
        r#"const v = document.querySelector('tr[data-module="SINK"] .version');
           return !!v && v.textContent === "v1.0"
               && document.getElementById("live-text").textContent === "live";"#,
    );
    // Messages flow: the served count on the page grows by itself.
    let served = |b: &Browser| {
        b.eval(r#"return Number(document.querySelector('tr[data-module="SINK"] td:nth-child(6)').textContent)"#)
            .as_f64()
            .unwrap()
    };
    let before = served(&browser);
    browser.wait_for(
        "SINK's served count growing",
        &format!(
            r#"return Number(document.querySelector('tr[data-module="SINK"] td:nth-child(6)').textContent) > {before}"#
        ),
    );
    // Anything set now is gone if the page reloads.
    browser.eval("window.stillTheSamePage = 42; return true");

    let (code, out) = ctl(
        &sock,
        &["--json", "Replace", "SINK", liveswap_guests::PROBE_V2],
    );
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let t = &reply["transaction"];
    assert_eq!(t["outcome"], "committed", "{out}");
    let id = t["id"].as_u64().unwrap();
    let pause = t["modules"][0]["pause_us"].as_u64().unwrap();

    browser.wait_for(
        "the transaction with its pause",
        &format!(
            r#"const t = document.querySelector('[data-txn="{id}"]');
               return !!t && t.textContent.includes("committed")
                   && t.textContent.includes("Replace SINK")
                   && t.querySelector(".pause").textContent === "pause {}";"#,
            page_us(pause)
        ),
    );
    browser.wait_for(
        "SINK on v2",
        r#"return document.querySelector('tr[data-module="SINK"] .version').textContent === "v2.0";"#,
    );
    browser.wait_for(
        "the pause in the histogram",
        r#"return document.getElementById("pause-summary").textContent.startsWith("1 pauses");"#,
    );
    assert_eq!(
        browser.eval("return window.stillTheSamePage"),
        json!(42),
        "the page was reloaded"
    );
    // Left for a look: target/tmp/dashboard.png.
    browser.screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));

    // The host goes, and another comes up on the same port: the page
    // follows it by itself, without a reload.
    drop(host);
    let other = dir.join("other.ls");
    std::fs::write(
        &other,
        format!("Load OTHER {}\n", liveswap_guests::PROBE_V1),
    )
    .unwrap();
    let (_next, again) = start_host_with(&other, &sock, &addr.to_string());
    assert_eq!(again, addr);
    browser.wait_for(
        "the new host's module, and no transaction of the old one",
        r#"return !!document.querySelector('tr[data-module="OTHER"]')
               && !document.querySelector('tr[data-module="SINK"]')
               && document.querySelectorAll('.txn').length === 0
               && document.getElementById("live-text").textContent === "live";"#,
    );
    assert_eq!(browser.eval("return window.stillTheSamePage"), json!(42));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Samples of one metric family, by their labels.
fn samples<'a>(s: &'a prometheus_parse::Scrape, metric: &str) -> Vec<&'a prometheus_parse::Sample> {
    s.samples.iter().filter(|x| x.metric == metric).collect()
}

fn value_of(s: &prometheus_parse::Scrape, metric: &str, label: (&str, &str)) -> f64 {
    samples(s, metric)
        .into_iter()
        .find(|x| x.labels.get(label.0) == Some(label.1))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric} is not a number: {other:?}"),
        })
        .unwrap_or(0.0)
}

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (code, text) = get(&format!("http://{addr}/metrics"));
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the exposition format parses")
}

/// The histogram of `metric` for `module`: (bucket upper bound, count).
fn histogram(s: &prometheus_parse::Scrape, metric: &str, module: &str) -> Vec<(f64, f64)> {
    samples(s, metric)
        .into_iter()
        .find(|x| x.labels.get("module") == Some(module))
        .map(|x| match &x.value {
            prometheus_parse::Value::Histogram(h) => {
                h.iter().map(|b| (b.less_than, b.count)).collect()
            }
            other => panic!("{metric} is not a histogram: {other:?}"),
        })
        .unwrap_or_default()
}

#[test]
fn metrics_move_with_a_replace_and_parse_as_prometheus_text() {
    let rt = Arc::new(RuntimeBuilder::default().build().unwrap());
    let mut web = WebServer::start(
        rt.clone(),
        WebOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
    )
    .unwrap();
    let addr = web.addr();
    let (v1, v2) = (liveswap_guests::PROBE_V1, liveswap_guests::PROBE_V2);
    let run = |line: &str| liveswap_ops::execute_line(&rt, line, "test").unwrap();
    run(&format!("Load SINK {v1}"));
    run(&format!("Load T {v1} config \"timer t 2; tick-send SINK\""));
    let until = Instant::now() + Duration::from_secs(30);
    while rt.module("SINK").unwrap().status().served < 5 {
        assert!(Instant::now() < until, "SINK serves nothing");
        std::thread::sleep(Duration::from_millis(20));
    }

    let before = scrape(addr);
    let served_before = value_of(
        &before,
        "liveswap_messages_served_total",
        ("module", "SINK"),
    );
    assert!(served_before >= 5.0, "{served_before}");
    assert_eq!(
        value_of(&before, "liveswap_module", ("version", "1.0")),
        1.0,
        "SINK on v1"
    );
    assert!(histogram(&before, "liveswap_swap_pause_seconds", "SINK").is_empty());
    let committed_before = value_of(
        &before,
        "liveswap_transactions_total",
        ("outcome", "committed"),
    );

    let report = match run(&format!("Replace SINK {v2}")) {
        Some(liveswap_ops::Reply::Transaction(r)) => r,
        other => panic!("not a transaction: {other:?}"),
    };
    assert_eq!(report.outcome, liveswap::Outcome::Committed);
    let pause_s = report.modules[0].pause_us.unwrap() as f64 / 1e6;
    std::thread::sleep(Duration::from_millis(100));

    let after = scrape(addr);
    assert!(
        value_of(&after, "liveswap_messages_served_total", ("module", "SINK")) > served_before,
        "served did not grow"
    );
    assert_eq!(
        value_of(
            &after,
            "liveswap_transactions_total",
            ("outcome", "committed")
        ),
        committed_before + 1.0
    );
    let sink_info = samples(&after, "liveswap_module")
        .into_iter()
        .find(|x| x.labels.get("module") == Some("SINK"))
        .expect("SINK's info");
    assert_eq!(sink_info.labels.get("version"), Some("2.0"));
    // One observation, in every bucket at or above the pause, in none below.
    let h = histogram(&after, "liveswap_swap_pause_seconds", "SINK");
    assert!(!h.is_empty(), "no pause histogram for SINK");
    for (le, count) in &h {
        let expected = if pause_s <= *le { 1.0 } else { 0.0 };
        assert_eq!(
            *count, expected,
            "bucket le={le} for a pause of {pause_s} s"
        );
    }
    let h = histogram(&after, "liveswap_quiescence_seconds", "SINK");
    assert_eq!(h.last().map(|b| b.1), Some(1.0), "{h:?}");
    assert_eq!(
        value_of(&after, "liveswap_mailbox_capacity", ("module", "SINK")),
        100_000.0
    );
    web.stop();
    rt.shutdown();
}

#[test]
fn commands_from_the_dashboard_need_the_admin_token_and_a_public_address_needs_one_to_start() {
    let rt = Arc::new(RuntimeBuilder::default().build().unwrap());
    // Without a token the dashboard only shows.
    let mut open = WebServer::start(
        rt.clone(),
        WebOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
    )
    .unwrap();
    let url = format!("http://{}/api/command", open.addr());
    let (code, body) = post(&url, Some(TOKEN), "Status");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--token-file"), "{body}");
    let (code, page) = get(&format!("http://{}/", open.addr()));
    assert_eq!(code, 200);
    assert!(page.contains("<title>liveswap</title>"));
    open.stop();

    let mut guarded = WebServer::start(
        rt.clone(),
        WebOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.to_string()),
        },
    )
    .unwrap();
    let url = format!("http://{}/api/command", guarded.addr());
    let (code, _) = post(&url, None, "Status");
    assert_eq!(code, 401);
    let (code, _) = post(&url, Some("not-the-token-at-all"), "Status");
    assert_eq!(code, 401);
    let load = format!("Load A {}", liveswap_guests::PROBE_V1);
    let (code, body) = post(&url, Some(TOKEN), &load);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");
    assert!(rt.module("A").is_some(), "the Load ran");
    let (_, body) = post(&url, Some(TOKEN), "Replace NOPE x.wasm");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["outcome"], "refused", "{body}");
    assert!(v["output"].as_str().unwrap().contains("NOPE"), "{body}");
    // The origin in History says where it came from.
    assert!(
        rt.commands()
            .iter()
            .any(|c| c.line.starts_with("Load A") && c.origin.starts_with("http:127.0.0.1")),
        "{:?}",
        rt.commands()
    );
    guarded.stop();

    let err = WebServer::start(
        rt.clone(),
        WebOptions {
            addr: "0.0.0.0:0".parse().unwrap(),
            token: None,
        },
    )
    .err()
    .expect("refused without a token");
    assert!(err.to_string().contains("--token-file"), "{err}");
    rt.shutdown();
}
