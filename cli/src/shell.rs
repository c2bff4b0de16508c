//! `liveswap shell`: an interactive command line on a running host (over
//! its admin endpoint) or on a fresh one in this process.
//!
//! Tab completes by position in the grammar: command keywords first, then
//! module names where a command takes a loaded module, `.wasm` files and
//! folders where it takes a file, option and grant keywords after a
//! file. Every line is added to the history file as it is entered. `Watch`
//! streams events until Enter, a line, Ctrl-D or Ctrl-C.

use std::cell::RefCell;
use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::{Receiver, bounded};
use liveswap::RuntimeBuilder;
use liveswap_ops::admin::{Client, Final};
use liveswap_ops::command::KEYWORDS;
use liveswap_ops::{Reply, ToText as _};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter as _, Helper};

use crate::{Serve, Target, connect, for_host, start_admin};

/// Session commands of the admin endpoint, beside the command language.
const SESSION_KEYWORDS: &[&str] = &["Watch", "Json"];
const OPTIONS: &[&str] = &["config", "capacity", "grant", "pin", "memory"];
const GRANT_KINDS: &[&str] = &["udp", "tcp", "dir", "env"];

/// What the word at some position of a command takes.
#[derive(Debug, PartialEq)]
enum Slot {
    /// A loaded module's name.
    Name,
    /// A `.wasm` file (or a folder on the way to one).
    File,
    /// A host folder (`grant dir`).
    Dir,
    /// One of these words.
    Word(&'static [&'static str]),
    /// Free text, or a new name: nothing to offer.
    Nothing,
}

/// After `<name> <file>` of a Load (or a group's target): options.
fn options_slot(rest: &[String]) -> Slot {
    let mut j = 0;
    loop {
        let Some(w) = rest.get(j) else {
            return Slot::Word(OPTIONS);
        };
        let left = rest.len() - j;
        match w.to_ascii_lowercase().as_str() {
            "config" | "capacity" | "pin" | "memory" if left == 1 => return Slot::Nothing,
            "config" | "capacity" | "pin" | "memory" => j += 2,
            "grant" if left == 1 => return Slot::Word(GRANT_KINDS),
            "grant" if rest[j + 1].eq_ignore_ascii_case("dir") => match left {
                2 => return Slot::Dir,
                3 => return Slot::Nothing,
                4 => return Slot::Word(&["ro", "rw"]),
                _ => j += 5,
            },
            "grant" if left == 2 => return Slot::Nothing,
            "grant" => j += 3,
            _ => j += 1,
        }
    }
}

/// What the word after `before` (the command and its complete words)
/// takes.
fn slot(before: &[String]) -> Slot {
    let Some(cmd) = before.first() else {
        return Slot::Word(&[]);
    };
    let n = before.len(); // position of the word being completed
    match cmd.to_ascii_lowercase().as_str() {
        "load" => match n {
            1 => Slot::Nothing,
            2 => Slot::File,
            _ => options_slot(&before[3..]),
        },
        "replace" => match n {
            1 => Slot::Name,
            2 => Slot::File,
            3 => Slot::Word(&["pin"]),
            _ => Slot::Nothing,
        },
        "syn_replace" | "syn_upgrade" if n % 2 == 1 => Slot::Name,
        "syn_load" if n % 2 == 1 => Slot::Nothing,
        "syn_replace" | "syn_upgrade" | "syn_load" => Slot::File,
        "unload" | "enable" | "disable" | "poison" | "send" if n == 1 => Slot::Name,
        "setmode" if n == 1 => Slot::Word(&["concurrent", "sequential", "early"]),
        "json" if n == 1 => Slot::Word(&["on", "off"]),
        "help" if n == 1 => Slot::Word(KEYWORDS),
        _ => Slot::Nothing,
    }
}

/// `.wasm` files (or only folders) whose path starts with `word`,
/// relative to this directory; folders end in `/`.
fn paths(word: &str, wasm: bool) -> Vec<String> {
    let (dir_part, prefix) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word),
    };
    let dir = if dir_part.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(dir_part)
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            if is_dir {
                Some(format!("{dir_part}{name}/"))
            } else if wasm && name.ends_with(".wasm") {
                Some(format!("{dir_part}{name}"))
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out
}

struct ShellHelper {
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
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        let done: Vec<String> = before[..start]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // A complete word is followed by a space, as in bash; a folder is
        // not (its files come next).
        let pair = |s: &str| Pair {
            display: s.to_string(),
            replacement: if s.ends_with('/') {
                s.to_string()
            } else {
                format!("{s} ")
            },
        };
        let starts = |k: &&&str| {
            k.to_ascii_lowercase()
                .starts_with(&word.to_ascii_lowercase())
        };
        let c: Vec<Pair> = if done.is_empty() {
            KEYWORDS
                .iter()
                .chain(SESSION_KEYWORDS)
                .filter(starts)
                .map(|k| pair(k))
                .collect()
        } else {
            match slot(&done) {
                Slot::Name => (self.names.borrow_mut())()
                    .into_iter()
                    .filter(|n| n.starts_with(word))
                    .map(|n| pair(&n))
                    .collect(),
                Slot::File => paths(word, true).iter().map(|p| pair(p)).collect(),
                Slot::Dir => paths(word, false).iter().map(|p| pair(p)).collect(),
                Slot::Word(words) => words.iter().filter(starts).map(|k| pair(k)).collect(),
                Slot::Nothing => Vec::new(),
            }
        };
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

/// Wait for a line (or end of input) on the terminal, Ctrl-C, or `done`.
/// True if the user asked to stop.
fn user_stops(ctrl_c: &Receiver<()>, done: &AtomicBool) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    while !done.load(Ordering::SeqCst) {
        if ctrl_c.try_recv().is_ok() {
            return true;
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => {
                // Take what was typed (the line, or nothing at Ctrl-D) so
                // that it does not reach the next prompt.
                let mut buf = [0u8; 4096];
                let _ = std::io::stdin().lock().read(&mut buf);
                return true;
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    false
}

/// `Watch` on a remote host, until the user stops it or the host ends it.
fn watch(c: &mut Client, ctrl_c: &Receiver<()>) -> std::io::Result<Final> {
    while ctrl_c.try_recv().is_ok() {} // an old press is not this one
    let mut stop = c.interrupt()?;
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (done, ctrl_c) = (done.clone(), ctrl_c.clone());
        std::thread::spawn(move || {
            if user_stops(&ctrl_c, &done) {
                let _ = stop.stop();
            }
        })
    };
    let r = c.command("Watch", |l| println!("{l}"));
    done.store(true, Ordering::SeqCst);
    let _ = waiter.join();
    r
}

/// Either a client of a running host, or a host of our own.
enum Backend {
    Remote(Client),
    Local(
        Arc<liveswap::Runtime>,
        Option<liveswap_ops::admin::AdminServer>,
    ),
}

pub(crate) fn run(
    target: &Target,
    serve: &Serve,
    trusted_keys: Vec<liveswap::signing::PublicKey>,
) -> anyhow::Result<ExitCode> {
    let backend = Rc::new(RefCell::new(match target {
        Target::Local => {
            let rt = Arc::new(
                RuntimeBuilder::default()
                    .trusted_keys(trusted_keys)
                    .fetcher(Some(Arc::new(
                        liveswap_ops::oci::OciFetcher::default_cache(),
                    )))
                    .build()
                    .context("starting the host")?,
            );
            let endpoint = start_admin(&rt, serve)?;
            if let Some(p) = endpoint.as_ref().and_then(|e| e.unix_path()) {
                println!("a fresh host; its admin endpoint is {}", p.display());
            }
            Backend::Local(rt, endpoint)
        }
        t => match connect(t) {
            Ok(c) => Backend::Remote(c),
            Err(code) => return Ok(code),
        },
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
        names: Rc::new(RefCell::new(names)),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    // Ctrl-C at the prompt clears the line (the editor sees it); while a
    // Watch runs it stops the watch; it never kills the shell.
    let (ctrl_tx, ctrl_c) = bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = ctrl_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    println!("liveswap shell — `Help` for the commands, `Help <command>` for one, Ctrl-D to leave");
    let mut code = ExitCode::SUCCESS;
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
        if let Some(h) = &history {
            // As you go: a shell killed later keeps what was typed.
            let _ = editor.append_history(h);
        }
        let word = trimmed
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if word == "quit" || word == "exit" {
            break;
        }
        match one_line(&mut backend.borrow_mut(), trimmed, (target, &here), &ctrl_c) {
            Next::Prompt => {}
            Next::End => break,
            Next::HostGone => {
                // As `ctl` says it: the host could not be reached.
                code = ExitCode::from(liveswap_ops::admin::EXIT_UNREACHABLE);
                break;
            }
        }
    }
    if let Backend::Local(rt, endpoint) = &mut *backend.borrow_mut() {
        println!("shutting down: modules drain their mailboxes");
        if let Some(e) = endpoint.as_mut() {
            e.stop();
        }
        rt.shutdown();
    }
    Ok(code)
}

/// What the shell does after a line.
enum Next {
    Prompt,
    /// `Quit` on a local host.
    End,
    /// The remote host went away: the shell ends with status 4.
    HostGone,
}

/// Run one line.
fn one_line(
    backend: &mut Backend,
    line: &str,
    (target, here): (&Target, &Path),
    ctrl_c: &Receiver<()>,
) -> Next {
    let line = for_host(line, target, here);
    let is_watch = line.eq_ignore_ascii_case("watch");
    match backend {
        Backend::Remote(c) => {
            let r = if is_watch {
                println!("(watching: Enter, a line, Ctrl-D or Ctrl-C stops)");
                watch(c, ctrl_c)
            } else {
                c.command(&line, |l| println!("{l}"))
            };
            match r {
                Ok(Final::Ok(o)) if o != "done" => println!("{o}"),
                Ok(Final::Ok(_)) => {}
                Ok(Final::Err(e)) => println!("error: {e}"),
                Err(e) => {
                    println!("the host went away: {e}");
                    return Next::HostGone;
                }
            }
        }
        Backend::Local(_, _) if is_watch => {
            println!("a local shell shows every event as it happens; nothing to watch");
        }
        Backend::Local(rt, _) => match liveswap_ops::execute_line(rt, &line, "shell") {
            Ok(Some(Reply::Done(m))) | Ok(Some(Reply::Text(m))) => println!("{m}"),
            Ok(Some(Reply::Transaction(_))) => {} // printed from the event stream
            Ok(Some(Reply::Quit)) => return Next::End,
            Ok(None) => {}
            Err(e) => println!("error: {e}"),
        },
    }
    Next::Prompt
}

#[cfg(test)]
mod tests {
    use super::{Slot, slot};

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn names_come_from_the_status_table() {
        let text = "MODULE VERSION\nIP v1 abc serving\n           last fault: x\nOSPF v2\nquiescence bound 10s, mode concurrent\n";
        assert_eq!(super::names_from_status(text), ["IP", "OSPF"]);
    }

    #[test]
    fn each_position_completes_what_the_grammar_takes_there() {
        assert_eq!(slot(&words("Replace")), Slot::Name);
        assert_eq!(slot(&words("Replace IP")), Slot::File);
        assert_eq!(slot(&words("Replace IP ip.wasm")), Slot::Word(&["pin"]));
        assert_eq!(slot(&words("Load")), Slot::Nothing);
        assert_eq!(slot(&words("Load A")), Slot::File);
        assert_eq!(slot(&words("Load A a.wasm")), Slot::Word(super::OPTIONS));
        assert_eq!(
            slot(&words("Load A a.wasm grant")),
            Slot::Word(super::GRANT_KINDS)
        );
        assert_eq!(slot(&words("Load A a.wasm grant dir")), Slot::Dir);
        assert_eq!(slot(&words("Load A a.wasm grant dir /d")), Slot::Nothing);
        assert_eq!(
            slot(&words("Load A a.wasm grant dir /d /g")),
            Slot::Word(&["ro", "rw"])
        );
        assert_eq!(
            slot(&words("Load A a.wasm grant dir /d /g rw")),
            Slot::Word(super::OPTIONS)
        );
        assert_eq!(slot(&words("Load A a.wasm config")), Slot::Nothing);
        assert_eq!(
            slot(&words("Load A a.wasm config x")),
            Slot::Word(super::OPTIONS)
        );
        assert_eq!(slot(&words("Syn_Replace A a.wasm")), Slot::Name);
        assert_eq!(slot(&words("Syn_Replace A a.wasm B")), Slot::File);
        assert_eq!(slot(&words("Unload")), Slot::Name);
        assert_eq!(slot(&words("Unload A")), Slot::Nothing);
        assert_eq!(slot(&words("Send")), Slot::Name);
        assert_eq!(slot(&words("Send A")), Slot::Nothing);
    }

    #[test]
    fn file_completion_offers_wasm_files_and_folders_only() {
        let dir = std::env::temp_dir().join(format!("liveswap-complete-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["a.wasm", "a.d", "b.txt", ".hidden.wasm"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let base = format!("{}/", dir.display());
        let got = super::paths(&base, true);
        assert_eq!(got, [format!("{base}a.wasm"), format!("{base}sub/")]);
        assert_eq!(super::paths(&base, false), [format!("{base}sub/")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
