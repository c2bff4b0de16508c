//! `liveswap shell`: an interactive command line on a running host (over
//! its admin endpoint) or on a fresh one in this process.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context as _;
use liveswap::RuntimeBuilder;
use liveswap_ops::admin::Final;
use liveswap_ops::command::HELP;
use liveswap_ops::{Reply, ToText as _};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter as _, Helper};

use crate::{Serve, Target, dial, start_admin};

/// Session commands of the admin endpoint, beside the command language.
const SESSION_KEYWORDS: &[&str] = &["Watch"];

/// Commands whose arguments include module names.
const TAKE_NAMES: &[&str] = &[
    "unload",
    "enable",
    "disable",
    "replace",
    "syn_replace",
    "syn_upgrade",
    "send",
    "poison",
];

struct ShellHelper {
    files: FilenameCompleter,
    names: Rc<RefCell<dyn FnMut() -> Vec<String>>>,
}

impl Helper for ShellHelper {}
impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        let first = before
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let pair = |s: &str| Pair {
            display: s.to_string(),
            replacement: s.to_string(),
        };
        if start == 0 {
            let c = liveswap_ops::command::KEYWORDS
                .iter()
                .chain(SESSION_KEYWORDS)
                .filter(|k| {
                    k.to_ascii_lowercase()
                        .starts_with(&word.to_ascii_lowercase())
                })
                .map(|k| pair(k))
                .collect();
            return Ok((0, c));
        }
        if word.contains('/') || word.starts_with('.') || word.starts_with('~') {
            return self.files.complete(line, pos, ctx);
        }
        let mut c: Vec<Pair> = Vec::new();
        if TAKE_NAMES.contains(&first.as_str()) {
            c.extend(
                (self.names.borrow_mut())()
                    .into_iter()
                    .filter(|n| n.starts_with(word))
                    .map(|n| pair(&n)),
            );
        }
        if first.starts_with("load") || first.starts_with("syn") || first == "replace" {
            let (_, files) = self.files.complete(line, pos, ctx)?;
            c.extend(files);
        }
        Ok((start, c))
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".liveswap_history"))
}

/// The first column of `Status` output, but the header and the footer.
fn names_from_status(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter(|l| !l.starts_with(' ') && !l.starts_with("quiescence bound"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub(crate) fn run(
    target: &Target,
    serve: &Serve,
    trusted_keys: Vec<liveswap::signing::PublicKey>,
) -> anyhow::Result<ExitCode> {
    // Either a client of a running host, or a host of our own.
    enum Backend {
        Remote(liveswap_ops::admin::Client),
        Local(
            Arc<liveswap::Runtime>,
            Option<liveswap_ops::admin::AdminServer>,
        ),
    }
    let backend = Rc::new(RefCell::new(match target {
        Target::Local => {
            let rt = Arc::new(
                RuntimeBuilder::default()
                    .trusted_keys(trusted_keys)
                    .build()
                    .context("starting the host")?,
            );
            let endpoint = start_admin(&rt, serve)?;
            if let Some(p) = endpoint.as_ref().and_then(|e| e.unix_path()) {
                println!("a fresh host; its admin endpoint is {}", p.display());
            }
            Backend::Local(rt, endpoint)
        }
        t => Backend::Remote(dial(t)?),
    }));

    let names = {
        let backend = backend.clone();
        move || -> Vec<String> {
            match &mut *backend.borrow_mut() {
                Backend::Local(rt, _) => rt.status().into_iter().map(|s| s.name).collect(),
                Backend::Remote(c) => {
                    let mut text = String::new();
                    let _ = c.command("Status", |l| {
                        text.push_str(l);
                        text.push('\n');
                    });
                    names_from_status(&text)
                }
            }
        }
    };
    let mut editor: Editor<ShellHelper, rustyline::history::FileHistory> = Editor::new()?;
    if let Backend::Local(rt, _) = &*backend.borrow() {
        // Show what the modules say as it happens, above the prompt.
        let events = rt.watch();
        let mut printer = editor.create_external_printer()?;
        std::thread::spawn(move || {
            for e in events {
                if !e.is_chatty() && printer.print(e.to_text()).is_err() {
                    return;
                }
            }
        });
    }
    editor.set_helper(Some(ShellHelper {
        files: FilenameCompleter::new(),
        names: Rc::new(RefCell::new(names)),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("liveswap shell — `Help` for the commands, Ctrl-D to leave");
    loop {
        let line = match editor.readline("liveswap> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        let word = trimmed
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if word == "quit" || word == "exit" {
            break;
        }
        if word == "help" {
            println!(
                "{HELP}\n  Watch                            stream every event (Enter stops it)"
            );
            continue;
        }
        match &mut *backend.borrow_mut() {
            Backend::Remote(c) => match c.command(trimmed, |l| println!("{l}")) {
                Ok(Final::Ok(o)) if o != "done" => println!("{o}"),
                Ok(Final::Ok(_)) => {}
                Ok(Final::Err(e)) => println!("error: {e}"),
                Err(e) => {
                    println!("the host went away: {e}");
                    break;
                }
            },
            Backend::Local(rt, _) => match liveswap_ops::execute_line(rt, trimmed, "shell") {
                Ok(Some(Reply::Done(m))) | Ok(Some(Reply::Text(m))) => println!("{m}"),
                Ok(Some(Reply::Transaction(_))) => {} // printed from the event stream
                Ok(Some(Reply::Quit)) => break,
                Ok(None) => {}
                Err(e) => println!("error: {e}"),
            },
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if let Backend::Local(rt, endpoint) = &mut *backend.borrow_mut() {
        println!("shutting down: modules drain their mailboxes");
        if let Some(e) = endpoint.as_mut() {
            e.stop();
        }
        rt.shutdown();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_come_from_the_status_table() {
        let text = "MODULE VERSION\nIP v1 abc serving\n           last fault: x\nOSPF v2\nquiescence bound 10s, mode concurrent\n";
        assert_eq!(super::names_from_status(text), ["IP", "OSPF"]);
    }
}
