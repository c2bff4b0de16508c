//! `liveswap run`: a host serving a script's modules until Quit or
//! Ctrl-C — and, with a state directory, handing itself over to a new
//! process (`--take-over`) or taking over from an old one.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender, bounded, never};
use liveswap::lattice::Lattice;
use liveswap::{Event, Runtime, RuntimeBuilder};
use liveswap_ops::admin::{AdminServer, Listeners};
use liveswap_ops::handoff::{self, HandoffPoint};
use liveswap_ops::script::{self, ScriptEnd};
use liveswap_ops::{Reply, ToJson as _, ToText as _};

use liveswap_ops::web::WebServer;

use super::{RunArgs, guests_dir, start_admin_with, start_web};

/// Print a line on stdout. A host whose stdout went away (`| head`)
/// serves on, silently.
fn tell(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// How long either side of a handoff waits for the other.
const HANDOFF_BOUND: Duration = Duration::from_secs(60);

/// Prints every event of one runtime until stopped.
struct Printer {
    done: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Printer {
    fn start(events: Receiver<Event>, json: bool, verbose: bool) -> Printer {
        let (done, done_rx) = bounded::<()>(1);
        let print = move |e: Event| {
            if json {
                tell(format_args!("{}", e.to_json()));
            } else if verbose || !e.is_chatty() {
                tell(format_args!("{}", e.to_text()));
            }
        };
        let thread = std::thread::spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(events) -> e => match e {
                        Ok(e) => print(e),
                        Err(_) => return,
                    },
                    recv(done_rx) -> _ => break,
                }
            }
            while let Ok(e) = events.try_recv() {
                print(e);
            }
        });
        Printer { done, thread }
    }

    fn stop(self) {
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

fn builder(args: &RunArgs, taking_over: bool) -> anyhow::Result<RuntimeBuilder> {
    Ok(RuntimeBuilder::default()
        .restore_all_or_nothing(taking_over)
        .call_deadline(args.call_deadline)
        .drain_deadline(args.drain_deadline)
        .mailbox_capacity(args.mailbox)
        .pooled(args.pooled)
        .memory_limit(args.memory_limit)
        .max_state_bytes(args.max_state)
        .trusted_keys(args.trust.read()?)
        .limits(args.limits.limits())
        .state_dir(args.durable.state_dir.clone())
        .compile_cache(super::compile_cache(args.compile_cache.as_deref()))
        .fetcher(Some(Arc::new(
            liveswap_ops::oci::OciFetcher::default_cache(),
        )))
        .sync(args.durable.sync))
}

/// What a restart brought back, in a few lines.
fn say_restored(rt: &Runtime) {
    let (Some(s), Some(dir)) = (rt.restart_summary(), rt.state_dir()) else {
        return;
    };
    tell(format_args!(
        "-- state directory {} (sync {}): restored {} module(s) and {} queued message(s) in {} ms",
        dir.display(),
        rt.sync_policy().map(|p| p.to_string()).unwrap_or_default(),
        s.modules,
        s.queued,
        s.took.as_millis()
    ));
    for (txn, line, committed) in &s.ended {
        let how = if *committed {
            "committed; finished"
        } else {
            "not decided; aborted"
        };
        tell(format_args!(
            "-- transaction {txn} (`{line}`) was interrupted by the stop: {how}"
        ));
    }
    for (name, why) in &s.lost {
        tell(format_args!("-- {name} not restored: {why}"));
    }
}

fn say_endpoint(endpoint: &Option<AdminServer>) {
    let Some(e) = endpoint else { return };
    if let Some(p) = e.unix_path() {
        tell(format_args!(
            "-- admin endpoint: {} (liveswap ctl --connect {} Status)",
            p.display(),
            p.display()
        ));
    }
    if let Some(a) = e.tcp_addr() {
        tell(format_args!("-- admin endpoint: tcp {a} (token required)"));
    }
}

/// A running host: its runtime, the printer of its events, its admin
/// endpoint and dashboard.
struct Serving {
    rt: Arc<Runtime>,
    lattice: Option<Lattice>,
    printer: Printer,
    endpoint: Option<AdminServer>,
    web: Option<WebServer>,
}

impl Serving {
    fn start(args: &RunArgs, inherited: Listeners, taking_over: bool) -> anyhow::Result<Serving> {
        // Watched from the first event: what the restored modules log while
        // the host starts is printed too.
        let (rt, events) = builder(args, taking_over)?
            .build_watched()
            .context("starting the host")?;
        let rt = Arc::new(rt);
        // A takeover restores every module or gives the directory back
        // before it serves anything (the admin sockets untouched).
        if let Some(s) = rt
            .restart_summary()
            .filter(|s| taking_over && !s.lost.is_empty())
        {
            let why: Vec<String> = s.lost.iter().map(|(n, w)| format!("{n}: {w}")).collect();
            let why = format!("could not restore {}", why.join("; "));
            rt.shutdown();
            anyhow::bail!(why);
        }
        let printer = Printer::start(events, args.json, args.verbose);
        let lattice = match args.lattice.options()? {
            None => None,
            Some(o) => {
                if !args.json {
                    tell(format_args!(
                        "-- lattice {}: host {} joins through {}",
                        o.name, o.host, o.url
                    ));
                }
                let lattice = Lattice::join(&rt, o).context("joining the lattice")?;
                // Commands other hosts forward for modules served here.
                let weak = Arc::downgrade(&rt);
                lattice.take_commands(Box::new(move |line, origin| match weak.upgrade() {
                    Some(rt) => liveswap_ops::forwarded(&rt, line, origin),
                    None => Err("the host is stopping".into()),
                }));
                Some(lattice)
            }
        };
        let endpoint = start_admin_with(&rt, &args.serve, inherited)?;
        let web = start_web(&rt, &args.serve)?;
        if !args.json {
            say_endpoint(&endpoint);
            if let Some(w) = &web {
                tell(format_args!(
                    "-- dashboard: http://{}/ (metrics: http://{}/metrics)",
                    w.addr(),
                    w.addr()
                ));
            }
            say_restored(&rt);
        }
        Ok(Serving {
            rt,
            lattice,
            printer,
            endpoint,
            web,
        })
    }

    fn stop(mut self) {
        if let Some(w) = self.web.as_mut() {
            w.stop();
        }
        if let Some(e) = self.endpoint.as_mut() {
            e.stop();
        }
        if let Some(l) = self.lattice.take() {
            l.leave();
        }
        self.rt.shutdown();
        self.printer.stop();
    }
}

/// New host: take over from the one serving the state directory.
fn take_over(args: &RunArgs) -> anyhow::Result<Serving> {
    let dir = args.durable.state_dir.as_deref().expect("clap requires it");
    let asked = Instant::now();
    let (stream, listeners) =
        handoff::take_over(dir, HANDOFF_BOUND).context("taking over the running host")?;
    let handed = Instant::now();
    let serving = match Serving::start(args, listeners, true) {
        Ok(s) => s,
        Err(e) => {
            handoff::answer(&stream, Err(format!("{e:#}")));
            return Err(e.context("taking over the running host (it serves on)"));
        }
    };
    let restored = handed.elapsed();
    handoff::answer(
        &stream,
        Ok(format!("restored in {} ms", restored.as_millis())),
    );
    tell(format_args!(
        "-- took over: the old host stopped its modules and handed over in {} ms; restored here in {} ms",
        handed.duration_since(asked).as_millis(),
        restored.as_millis()
    ));
    Ok(serving)
}

/// Old host: hand over to the process on `stream`. `Ok` once it serves;
/// otherwise serve again, from the state directory.
fn hand_over(
    args: &RunArgs,
    serving: Serving,
    stream: UnixStream,
    who: &str,
) -> anyhow::Result<Result<(), Serving>> {
    let paused = Instant::now();
    let Serving {
        rt,
        lattice,
        printer,
        mut endpoint,
        web,
    } = serving;
    // The dashboard's port is not handed over: the new host listens on it
    // again once it serves. Nor is the lattice link: the new host joins
    // again under the same id.
    drop(web);
    if let Some(l) = lattice {
        l.leave();
    }
    let listeners = endpoint
        .as_mut()
        .map(AdminServer::hand_over)
        .unwrap_or_default();
    let kept = listeners.clone();
    rt.release_state_dir();
    let ready = handoff::send_ready(&stream, &listeners).map_err(|e| e.to_string());
    // The rest of the stop while the new host restores.
    rt.shutdown();
    printer.stop();
    drop(rt);
    let outcome = ready.and_then(|()| handoff::await_serving(&stream, HANDOFF_BOUND));
    match outcome {
        Ok(detail) => {
            tell(format_args!(
                "-- handed over to pid {who} ({detail}): modules paused {} ms in all",
                paused.elapsed().as_millis()
            ));
            Ok(Ok(()))
        }
        Err(why) => {
            tell(format_args!(
                "-- the handoff to pid {who} failed: {why}; serving again"
            ));
            Ok(Err(Serving::start(args, kept, false)?))
        }
    }
}

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    match &args.script {
        None if args.durable.state_dir.is_none() => {
            anyhow::bail!("liveswap run needs a script, or --state-dir to resume a host")
        }
        // Before anything starts: a typo in the path is the first thing
        // to hear about.
        Some(s) => {
            std::fs::File::open(s)
                .with_context(|| format!("{}: cannot read script", s.display()))?;
        }
        None => {}
    }
    let (stop_tx, stop_rx) = bounded::<()>(1);
    let presses = std::sync::atomic::AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        // The first asks for a graceful stop (each module drains, within
        // --drain-deadline); a second one stops at once.
        if presses.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            eprintln!("-- second Ctrl-C: stopping now, without draining");
            std::process::exit(130);
        }
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    let mut serving = if args.durable.take_over {
        take_over(args)?
    } else {
        Serving::start(args, Listeners::default(), false)?
    };
    // Without its socket (a path too long for one, say) the host serves
    // on; it just cannot be handed over.
    let point = args
        .durable
        .state_dir
        .as_deref()
        .and_then(|dir| match HandoffPoint::start(dir) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!(
                    "-- no handoffs: cannot listen on {}: {e}",
                    handoff::socket_path(dir).display()
                );
                None
            }
        });
    let code = match run_script(args, &serving.rt)? {
        Some(code) => code,
        None => {
            if !args.json {
                tell(format_args!("-- script done; serving until Ctrl-C"));
            }
            let requests = point.as_ref().map_or(never(), |p| p.requests().clone());
            loop {
                crossbeam_channel::select! {
                    recv(stop_rx) -> _ => break,
                    recv(requests) -> r => {
                        let Ok((stream, who)) = r else { continue };
                        match hand_over(args, serving, stream, &who)? {
                            Ok(()) => return Ok(ExitCode::SUCCESS),
                            Err(again) => serving = again,
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
    };
    if !args.json {
        match serving.rt.state_dir() {
            None => tell(format_args!(
                "-- shutting down: modules drain their mailboxes"
            )),
            Some(d) => tell(format_args!(
                "-- shutting down: modules stop between two messages; what is queued stays in {}",
                d.display()
            )),
        }
    }
    drop(point);
    serving.stop();
    Ok(code)
}

/// Run the script, if any. `Some(code)`: the host stops now.
fn run_script(args: &RunArgs, rt: &Arc<Runtime>) -> anyhow::Result<Option<ExitCode>> {
    let mut vars = script::Vars::default();
    vars.set("GUESTS", guests_dir().display().to_string());
    for v in &args.vars {
        let (name, value) = v
            .split_once('=')
            .with_context(|| format!("--var `{v}` is not NAME=VALUE"))?;
        vars.set(name, value);
    }
    let json = args.json;
    let result = match &args.script {
        None => Ok(ScriptEnd::Finished),
        Some(path) => script::run_file(rt, path, &vars, |_, line, reply| {
            if json {
                return; // the event stream says it all
            }
            match reply {
                Reply::Done(msg) => tell(format_args!("> {line}\n  {msg}")),
                Reply::Text(t) => tell(format_args!("> {line}\n{t}")),
                Reply::Transaction(_) | Reply::Quit => {}
            }
        }),
    };
    Ok(match result {
        // Display, not the chain: a script error already says everything
        // (file, line, command, and the command's error with its cause).
        Err(e) => {
            eprintln!("error: {e}");
            Some(ExitCode::FAILURE)
        }
        Ok(ScriptEnd::Quit) => Some(ExitCode::SUCCESS),
        Ok(ScriptEnd::Finished) if args.once => Some(ExitCode::SUCCESS),
        Ok(ScriptEnd::Finished) => None,
    })
}
