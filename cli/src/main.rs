//! The `liveswap` binary: parses arguments, calls the host library, prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crossbeam_channel::{Receiver, bounded};
use liveswap::script::{self, ScriptEnd};
use liveswap::{Event, Reply, RuntimeBuilder};

/// liveswap: keep a multi-module WebAssembly application running while its
/// modules are loaded, replaced and removed.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a host, run a script of commands, then keep serving until
    /// `Quit` or Ctrl-C (graceful: every module drains its mailbox).
    ///
    /// In the script, `$GUESTS` stands for the folder of the guest modules
    /// this binary was built with, so examples run from any directory.
    /// Run `liveswap help-commands` for the command language.
    Run {
        /// The script: one command a line (`Load`, `Replace`, `Wait`, ...).
        script: PathBuf,
        /// Print one JSON object per line for every event instead of text.
        #[arg(long)]
        json: bool,
        /// Stop once the script ends instead of serving on.
        #[arg(long)]
        once: bool,
        /// Show debug-level guest log lines too.
        #[arg(long, short)]
        verbose: bool,
        /// Longest a single guest call may run, e.g. 5s or 500ms.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        call_deadline: Duration,
        /// Default mailbox capacity of each module.
        #[arg(long, default_value_t = 100_000)]
        mailbox: usize,
        /// Set a script variable, used as `$NAME` or `${NAME:-default}`.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Run the non-stop router of the thesis live, in one process: load it,
    /// upgrade it through six transactions (one aborts, one is refused),
    /// watch it from outside with a monitor, and check that no relay
    /// number was lost. Exits 0 only if every invariant held.
    Demo {
        /// Milliseconds between TIMER's broadcasts.
        #[arg(long, default_value_t = 100)]
        beat: u32,
        /// Time to let the router run between transactions.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        settle: Duration,
        /// A silence longer than this in a module's packets is an outage.
        #[arg(long, default_value = "400ms", value_parser = parse_duration)]
        gap: Duration,
        /// Where the monitor listens (UDP).
        #[arg(long, default_value = "127.0.0.1:0")]
        monitor: std::net::SocketAddr,
        /// Show every module log line, not a sample.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Listen for the packets modules send (as in the router) and show,
    /// per module, the version heard, the last timestamp and every outage.
    Monitor {
        /// Address to listen on (UDP).
        #[arg(long, default_value = "127.0.0.1:9301")]
        listen: std::net::SocketAddr,
        /// A silence longer than this is an outage.
        #[arg(long, default_value = "400ms", value_parser = parse_duration)]
        gap: Duration,
        /// Print the table every this often.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        every: Duration,
    },
    /// Print the command language.
    HelpCommands,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    liveswap::command::parse_duration(s)
}

fn guests_dir() -> PathBuf {
    Path::new(liveswap_guests::PROBE_V1)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVESWAP_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::HelpCommands => {
            println!("{}", liveswap::command::HELP);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            script,
            json,
            once,
            verbose,
            call_deadline,
            mailbox,
            vars,
        } => run(&script, json, once, verbose, call_deadline, mailbox, &vars),
        Cmd::Demo {
            beat,
            settle,
            gap,
            monitor,
            verbose,
        } => demo(beat, settle, gap, monitor, verbose),
        Cmd::Monitor { listen, gap, every } => monitor(listen, gap, every),
    }
}

fn demo(
    beat: u32,
    settle: Duration,
    gap: Duration,
    monitor: std::net::SocketAddr,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    use liveswap::demo::{self, Narration};
    let mut vars = script::Vars::default();
    vars.set("GUESTS", guests_dir().display().to_string());
    vars.set("BEAT", beat.to_string());
    vars.set("SETTLE", format!("{}ms", settle.as_millis()));
    let started = std::time::Instant::now();
    let stamp = move || format!("{:>6.2}s", started.elapsed().as_secs_f64());
    let narrate: Arc<dyn Fn(Narration) + Send + Sync> = Arc::new(move |n| match n {
        Narration::Heading(h) => println!("\n{} ━━ {h}", stamp()),
        Narration::Command(c) => println!("{} > {c}", stamp()),
        Narration::Reply(r) => println!("{}   {r}", stamp()),
        Narration::Transaction(r) => println!("{} {}", stamp(), r.to_text()),
        Narration::Log(l) => println!("{}   {l}", stamp()),
        Narration::Monitor(m) => println!("{}   [{m}]", stamp()),
    });
    let _ = verbose;
    println!("liveswap demo: the non-stop router, upgraded live (Ctrl-C to stop)");
    let result = demo::run(
        demo::DemoOptions {
            vars,
            gap,
            script: demo::ROUTER_SCRIPT.to_string(),
            monitor,
        },
        narrate,
    )?;
    println!("\n━━ Summary\n{}", result.summary());
    Ok(if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn monitor(
    listen: std::net::SocketAddr,
    gap: Duration,
    every: Duration,
) -> anyhow::Result<ExitCode> {
    use liveswap::monitor::{Monitor, Notice};
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut m =
        Monitor::start(listen, gap, Some(tx)).with_context(|| format!("listening on {listen}"))?;
    let (stop_tx, stop_rx) = bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    println!(
        "monitor listening on {} (outage: silence over {gap:?})",
        m.addr()
    );
    let started = std::time::Instant::now();
    let table = |m: &Monitor| {
        for h in m.snapshot() {
            let versions: Vec<String> = h.versions.iter().map(|(v, _)| format!("v{v}")).collect();
            println!(
                "  {:<6} now v{:<4} heard {:<20} last ts {} µs, {} outage(s)",
                h.module,
                h.versions.last().map(|v| v.0.as_str()).unwrap_or("?"),
                versions.join("->"),
                h.last_ts_us,
                h.outages.len()
            );
        }
    };
    let ticker = crossbeam_channel::tick(every);
    loop {
        crossbeam_channel::select! {
            recv(rx) -> n => match n {
                Ok(Notice::Heard { module, version }) => println!("{:>7.2}s heard {module} v{version}", started.elapsed().as_secs_f64()),
                Ok(Notice::Version { module, from, to }) => println!("{:>7.2}s {module} v{from} -> v{to}", started.elapsed().as_secs_f64()),
                Ok(Notice::Outage(o)) => println!(
                    "{:>7.2}s OUTAGE {} silent for {:.0} ms",
                    started.elapsed().as_secs_f64(),
                    o.module,
                    o.duration().as_secs_f64() * 1000.0
                ),
                Err(_) => break,
            },
            recv(ticker) -> _ => table(&m),
            recv(stop_rx) -> _ => break,
        }
    }
    m.stop();
    table(&m);
    Ok(ExitCode::SUCCESS)
}

/// Print every event until `done` fires, then what is left.
fn printer(
    events: Receiver<Event>,
    done: Receiver<()>,
    json: bool,
    verbose: bool,
) -> std::thread::JoinHandle<()> {
    let print = move |e: Event| {
        if json {
            println!("{}", e.to_json());
        } else if verbose || !e.is_chatty() {
            println!("{}", e.to_text());
        }
    };
    std::thread::spawn(move || {
        loop {
            crossbeam_channel::select! {
                recv(events) -> e => match e {
                    Ok(e) => print(e),
                    Err(_) => return,
                },
                recv(done) -> _ => break,
            }
        }
        while let Ok(e) = events.try_recv() {
            print(e);
        }
    })
}

fn run(
    path: &Path,
    json: bool,
    once: bool,
    verbose: bool,
    call_deadline: Duration,
    mailbox: usize,
    set: &[String],
) -> anyhow::Result<ExitCode> {
    let rt = Arc::new(
        RuntimeBuilder::default()
            .call_deadline(call_deadline)
            .mailbox_capacity(mailbox)
            .build()
            .context("starting the host")?,
    );
    let (stop_tx, stop_rx) = bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    let (done_tx, done_rx) = bounded::<()>(1);
    let printer = printer(rt.watch(), done_rx, json, verbose);

    let mut vars = script::Vars::default();
    vars.set("GUESTS", guests_dir().display().to_string());
    for v in set {
        let (name, value) = v
            .split_once('=')
            .with_context(|| format!("--var `{v}` is not NAME=VALUE"))?;
        vars.set(name, value);
    }
    let result = script::run_file(&rt, path, &vars, |_, line, reply| {
        if json {
            return; // the event stream says it all
        }
        match reply {
            Reply::Done(msg) => println!("> {line}\n  {msg}"),
            Reply::Text(t) => println!("> {line}\n{t}"),
            Reply::Transaction(_) | Reply::Quit => {}
        }
    });

    let code = match result {
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Ok(ScriptEnd::Quit) => ExitCode::SUCCESS,
        Ok(ScriptEnd::Finished) if once => ExitCode::SUCCESS,
        Ok(ScriptEnd::Finished) => {
            if !json {
                println!("-- script done; serving until Ctrl-C");
            }
            let _ = stop_rx.recv();
            ExitCode::SUCCESS
        }
    };
    if !json {
        println!("-- shutting down: modules drain their mailboxes");
    }
    rt.shutdown();
    let _ = done_tx.send(());
    let _ = printer.join();
    Ok(code)
}
