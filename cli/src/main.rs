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
        } => run(&script, json, once, verbose, call_deadline, mailbox),
    }
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

    let guests = guests_dir().display().to_string();
    let expand = |line: &str| line.replace("$GUESTS", &guests);
    let result = script::run_file(&rt, path, expand, |_, line, reply| {
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
