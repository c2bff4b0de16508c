//! The command language (thesis table 4.1, figure 4.11): one command a
//! line, keywords case-insensitive, `#` starts a comment, double quotes
//! group words (with `\n`, `\"` and `\\` escapes). The same parser serves
//! scripts, the shell and the admin endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use liveswap::command::{Command, GroupKind, LoadOptions, Mode, ShadowEnd, ShadowSpec, Target};
pub use liveswap::guest::Grant;
pub use liveswap::words::quote;

const OPTION_WORDS: [&str; 5] = ["config", "capacity", "grant", "pin", "memory"];

/// Parse options from `words` until one that is not an option keyword.
fn options(
    cmd: &str,
    words: &mut std::iter::Peekable<std::slice::Iter<'_, String>>,
) -> Result<LoadOptions, String> {
    let mut options = LoadOptions::default();
    while let Some(opt) = words.next_if(|w| OPTION_WORDS.contains(&w.to_ascii_lowercase().as_str()))
    {
        let opt = opt.to_ascii_lowercase();
        let mut value = || {
            words
                .next()
                .ok_or_else(|| format!("{cmd}: option `{opt}` needs a value"))
        };
        match opt.as_str() {
            "config" => options.config = value()?.clone().into_bytes(),
            "pin" => {
                let v = value()?;
                let hex = v.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "{cmd}: pin `{v}` is not sha256: followed by 64 hex digits"
                    ));
                }
                options.pin = Some(v.to_ascii_lowercase());
            }
            "memory" => {
                let v = value()?;
                options.memory = Some(parse_memory(v).map_err(|e| format!("{cmd}: memory {e}"))?);
            }
            "capacity" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{cmd}: capacity `{v}` is not a positive number"))?;
                options.capacity = Some(n);
            }
            _ => options.grants.push(grant(cmd, words)?),
        }
    }
    Ok(options)
}

/// Parse what follows `grant`: `udp|tcp <ip:port>`,
/// `dir <host-dir> <guest-path> ro|rw` or `env NAME=VALUE`.
fn grant(
    cmd: &str,
    words: &mut std::iter::Peekable<std::slice::Iter<'_, String>>,
) -> Result<Grant, String> {
    let mut next = |what: &str| {
        words
            .next()
            .ok_or_else(|| format!("{cmd}: option `grant` needs {what}"))
    };
    let kind = next("a kind (udp, tcp, dir or env)")?.to_ascii_lowercase();
    match kind.as_str() {
        "udp" | "tcp" => {
            let addr = next("an <ip:port>")?;
            let addr: SocketAddr = addr.parse().map_err(|_| {
                format!("{cmd}: grant {kind}: `{addr}` is not an IP address with a port")
            })?;
            Ok(if kind == "udp" {
                Grant::Udp(addr)
            } else {
                Grant::Tcp(addr)
            })
        }
        "dir" => {
            let usage = "dir <host-dir> <guest-path> ro|rw";
            let host = next(usage)?.clone();
            let guest = next(usage)?.clone();
            let mode = next(usage)?.to_ascii_lowercase();
            if host.is_empty() || guest.is_empty() {
                return Err(format!("{cmd}: grant dir: a path is empty"));
            }
            if host.contains('\0') || guest.contains('\0') {
                return Err(format!("{cmd}: grant dir: a path contains a NUL"));
            }
            let writable = match mode.as_str() {
                "ro" => false,
                "rw" => true,
                other => {
                    return Err(format!(
                        "{cmd}: grant dir: `{other}` is not ro or rw (usage `{usage}`)"
                    ));
                }
            };
            Ok(Grant::Dir {
                host: PathBuf::from(host),
                guest,
                writable,
            })
        }
        "env" => {
            let pair = next("NAME=VALUE")?;
            let (name, value) = pair
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| format!("{cmd}: grant env: `{pair}` is not NAME=VALUE"))?;
            if pair.contains('\0') {
                return Err(format!("{cmd}: grant env: `{name}` contains a NUL"));
            }
            Ok(Grant::Env {
                name: name.to_string(),
                value: value.to_string(),
            })
        }
        other => Err(format!(
            "{cmd}: cannot grant `{other}` (udp, tcp, dir or env){}",
            did_you_mean(other, ["udp", "tcp", "dir", "env"]).replace(" (try Help)", "")
        )),
    }
}

/// Every command keyword [`parse`] takes, as the documentation writes it
/// (completion in the shell offers these).
pub const KEYWORDS: &[&str] = &[
    "Load",
    "Unload",
    "Move",
    "Enable",
    "Disable",
    "Replace",
    "Syn_Replace",
    "Syn_Load",
    "Syn_Upgrade",
    "SetTimer",
    "SetMode",
    "SetProbation",
    "SetCheckpoint",
    "Poison",
    "Shadow",
    "Promote",
    "Unshadow",
    "Send",
    "Wait",
    "Status",
    "Versions",
    "History",
    "Help",
    "Quit",
];

/// Each command's entry in `Help`: its keyword (as [`KEYWORDS`] writes
/// it, or a session command of the admin endpoint) and its lines.
pub const ENTRIES: &[(&str, &str)] = &[
    (
        "Load",
        "\
  Load <name> <file.wasm> [config \"<text>\"] [capacity <n>] [grant <what>]...
                                   [pin sha256:<hex>] [memory <size>]
                                   add a module: init, register, enable
                                   (a module may reach nothing it was not granted)
    grant udp|tcp <ip:port>        send datagrams to / connect to one address
    grant dir <host-dir> <guest-path> ro|rw
                                   the host directory, seen by the guest at
                                   <guest-path>, read-only or read-write
    grant env NAME=VALUE           one environment variable
                                   (a Replace keeps a module's grants)
    memory <size>                  its instances' linear-memory limit (64MiB, 1GB)",
    ),
    (
        "Unload",
        "  Unload <name>                    disable, drain its mailbox, remove it",
    ),
    (
        "Move",
        "\
  Move <name> <host>               move a module to another host of the
                                   lattice: state, queued messages, timers
                                   and subscriptions; senders everywhere
                                   follow the name, nothing is lost or
                                   doubled (a refusal leaves it serving here)",
    ),
    (
        "Enable",
        "  Enable <name> | Disable <name>   resume / hold a module (its mailbox fills)",
    ),
    (
        "Replace",
        "\
  Replace <name> <file.wasm> [pin sha256:<hex>]
                                   upgrade one module, state and messages kept
                                   (the file it runs already: a fresh instance
                                   takes the state over, and the report says
                                   nothing else changed)",
    ),
    (
        "Syn_Replace",
        "\
  Syn_Replace <name> <file> [<name> <file> ...]
                                   upgrade several, all or nothing",
    ),
    (
        "Syn_Load",
        "\
  Syn_Load <name> <file> [options] [...]
                                   load several, started together",
    ),
    (
        "Syn_Upgrade",
        "\
  Syn_Upgrade <name> <file> [...]  replace the loaded names, load the others,
                                   start them together",
    ),
    (
        "SetTimer",
        "  SetTimer <duration>              quiescence bound of upgrades (default 10s)",
    ),
    (
        "SetMode",
        "\
  SetMode concurrent|sequential|early
                                   how group votes are collected; early: each
                                   target votes at its TERM and serves on, and
                                   all switch at the decision",
    ),
    (
        "SetProbation",
        "\
  SetProbation <duration> [errors <n>%]
                                   after a commit, a trap (or more than n% of
                                   messages failing, default 50) in a new
                                   version within the window rolls the group
                                   back by itself (default 0: off)",
    ),
    (
        "SetCheckpoint",
        "\
  SetCheckpoint <duration>         how often each module's recovery point is
                                   renewed (default 1s; 0: at commits and
                                   every 10000 messages only)",
    ),
    (
        "Poison",
        "\
  Poison <name>                    messages set aside because they trapped
                                   the module twice",
    ),
    (
        "Shadow",
        "\
  Shadow <name> <file.wasm> [for <duration> [then promote|drop]]
                                   [queue <n>] [except <kind>[,<kind>...]]
                                   [pin sha256:<hex>]
                                   run a new version beside the module's, from
                                   its state, on a copy of every message it
                                   serves: its effects are compared, never
                                   delivered; a difference, trap or error
                                   drops it (Status shows how it does)
    for <duration> then promote|drop
                                   what happens when the time is up (default:
                                   it runs until Promote or Unshadow)
    queue <n>                      most messages it may fall behind (4096)
    except <kinds>                 kinds it answers differently on purpose",
    ),
    (
        "Promote",
        "\
  Promote <name> [<name>...]       the shadows take over, all or none, with no
                                   state moved in the pause",
    ),
    (
        "Unshadow",
        "  Unshadow <name>                  drop the module's shadow",
    ),
    (
        "Send",
        "  Send <name> <kind> [\"<text>\"]    inject a message from $admin",
    ),
    (
        "Wait",
        "  Wait <duration>                  pause the script (500ms, 2s, 1.5)",
    ),
    (
        "Status",
        "  Status                           every module: version, state, queue, faults",
    ),
    (
        "Versions",
        "  Versions                         the versions held, by digest, and who runs them",
    ),
    (
        "History",
        "  History                          every command and transaction, with times",
    ),
    (
        "Help",
        "  Help [<command>]                 all commands, or one",
    ),
    (
        "Quit",
        "  Quit                             stop a local host (end a session with a remote one)",
    ),
    (
        "Watch",
        "  Watch                            stream every event; any line (Enter) stops it",
    ),
    (
        "Json",
        "  Json on|off                      replies as one JSON object per line (admin endpoint)",
    ),
];

/// The grammar, as `Help` prints it.
pub fn help() -> String {
    let mut out =
        String::from("Commands (one per line, keywords case-insensitive, # starts a comment):\n");
    for (_, lines) in ENTRIES {
        out.push_str(lines);
        out.push('\n');
    }
    out.push_str(
        "Durations: a bare number is seconds; or 250us, 250ms, 2s, 1m.\n\
         Sizes: a bare number is bytes; or 512KiB, 16MiB, 1GiB (1024s), 512KB, 16MB, 1GB (1000s).\n\
         Relative paths in a script are relative to the script's folder.",
    );
    out
}

/// `Help <word>`: that command's entry, or what it might have meant.
pub fn help_for(word: &str) -> Result<String, String> {
    let found = ENTRIES.iter().find(|(k, _)| {
        k.eq_ignore_ascii_case(word)
            || (k.eq_ignore_ascii_case("Enable") && word.eq_ignore_ascii_case("disable"))
    });
    match found {
        Some((_, lines)) => Ok(lines.to_string()),
        None => Err(format!(
            "Help: no command `{word}`{}",
            did_you_mean(word, ENTRIES.iter().map(|(k, _)| *k).chain(["Disable"]))
        )),
    }
}

/// `; did you mean `X`?` for the closest of `known` to `word`, if one is
/// close enough to be a typo (else `` (try Help)``).
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let lower = word.to_ascii_lowercase();
    let best = known
        .into_iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => " (try Help)".to_string(),
    }
}

/// `line` with every relative path it names (a `.wasm` file, a granted
/// host directory) made absolute against `base`: how a script's paths
/// are relative to the script, and how a client on the host's machine
/// names files relative to its own directory. A line that does not parse,
/// or names no relative path, comes back as it is.
pub fn resolve_paths(line: &str, base: &Path) -> String {
    fn fix(p: &mut PathBuf, base: &Path) -> bool {
        let relative =
            p.is_relative() && !p.as_os_str().is_empty() && !liveswap::repo::is_reference(p);
        if relative {
            *p = base.join(&*p);
        }
        relative
    }
    fn grants(o: &mut LoadOptions, base: &Path) -> bool {
        let mut changed = false;
        for g in &mut o.grants {
            if let Grant::Dir { host, .. } = g {
                changed |= fix(host, base);
            }
        }
        changed
    }
    let Ok(Some(mut cmd)) = parse(line) else {
        return line.to_string();
    };
    let changed = match &mut cmd {
        Command::Load { path, options, .. } => fix(path, base) | grants(options, base),
        Command::Upgrade { targets, .. } => targets.iter_mut().fold(false, |c, t| {
            fix(&mut t.path, base) | grants(&mut t.options, base) | c
        }),
        _ => false,
    };
    if changed {
        cmd.to_string()
    } else {
        line.to_string()
    }
}

/// Split a line into words: whitespace-separated, double quotes group,
/// `#` outside quotes ends the line.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted string".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some('"') => cur.push('"'),
                            Some('\\') => cur.push('\\'),
                            Some(o) => {
                                return Err(format!("unknown escape `\\{o}` in a quoted string"));
                            }
                            None => return Err("unterminated quoted string".into()),
                        },
                        Some(o) => cur.push(o),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parse a duration: `1.5` (seconds), `250ms`, `2s`, `1m`, `100us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 2s, 1.5)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a duration (try 500ms, 2s, 1.5)"));
    }
    let secs = match unit.to_ascii_lowercase().as_str() {
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    if secs > 86_400.0 * 365.0 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size in bytes: a number, optionally with a unit: B; KiB, MiB, GiB
/// (powers of 1024) or KB, MB, GB (powers of 1000); case-insensitive.
pub fn parse_size(s: &str) -> Option<usize> {
    let lower = s.trim().to_ascii_lowercase();
    let units: [(&str, usize); 7] = [
        ("kib", 1 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("kb", 1_000),
        ("mb", 1_000_000),
        ("gb", 1_000_000_000),
        ("b", 1),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(unit, m)| lower.strip_suffix(unit).map(|n| (n, *m)))
        .unwrap_or((lower.as_str(), 1));
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

/// A linear-memory size ([`parse_size`]): at least one WebAssembly page,
/// so that a bare `64` (64 bytes) is caught with a hint rather than
/// refused by every instance.
pub fn parse_memory(v: &str) -> Result<usize, String> {
    let n = parse_size(v)
        .ok_or_else(|| format!("`{v}` is not a size (like 65536, 512KiB, 16MiB, 1GiB, 1GB)"))?;
    if n < 64 * 1024 {
        let hint = if v.trim().chars().all(|c| c.is_ascii_digit()) {
            format!("; did you mean {}MiB?", v.trim())
        } else {
            String::new()
        };
        return Err(format!(
            "`{v}` is {n} bytes, less than one WebAssembly page (64KiB){hint}"
        ));
    }
    Ok(n)
}

fn name_arg(cmd: &str, word: &str) -> Result<String, String> {
    if liveswap::guest::valid_name(word) {
        Ok(word.to_string())
    } else {
        Err(format!(
            "{cmd}: `{word}` is not a valid module name (a letter, then letters, digits, _ - .)"
        ))
    }
}

fn pairs(cmd: &str, args: &[String]) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = Vec::new();
    let mut words = args.iter().peekable();
    while let Some(name) = words.next() {
        let name = name_arg(cmd, name)?;
        let path = words.next().ok_or_else(|| {
            format!("{cmd}: `{name}` has no file: it takes <name> <file.wasm> pairs")
        })?;
        if out.iter().any(|t| t.name == name) {
            return Err(format!("{cmd}: `{name}` is named twice"));
        }
        let options = options(cmd, &mut words)?;
        out.push(Target {
            name,
            path: PathBuf::from(path),
            options,
        });
    }
    if out.is_empty() {
        return Err(format!("{cmd} takes pairs of <name> <file.wasm>, got none"));
    }
    Ok(out)
}

/// `Shadow`'s arguments.
fn shadow(args: &[String]) -> Result<ShadowSpec, String> {
    const USAGE: &str = "Shadow <name> <file.wasm> [for <duration> [then promote|drop]] [queue <n>] [except <kind>[,<kind>...]] [pin sha256:<hex>]";
    if args.len() < 2 {
        return Err(format!(
            "Shadow takes <name> <file.wasm> [options], got {} argument(s): usage `{USAGE}`",
            args.len()
        ));
    }
    let mut spec = ShadowSpec {
        name: name_arg("Shadow", &args[0])?,
        path: PathBuf::from(&args[1]),
        pin: None,
        run_for: None,
        then: ShadowEnd::Drop,
        queue: None,
        except: Vec::new(),
    };
    let mut words = args[2..].iter();
    while let Some(w) = words.next() {
        let opt = w.to_ascii_lowercase();
        let mut value = || {
            words
                .next()
                .ok_or_else(|| format!("Shadow: option `{opt}` needs a value: usage `{USAGE}`"))
        };
        match opt.as_str() {
            "for" => {
                let d = parse_duration(value()?).map_err(|e| format!("Shadow: for {e}"))?;
                if d.is_zero() {
                    return Err("Shadow: `for` must be more than zero".into());
                }
                spec.run_for = Some(d);
            }
            "then" => {
                spec.then = match value()?.to_ascii_lowercase().as_str() {
                    "promote" => ShadowEnd::Promote,
                    "drop" => ShadowEnd::Drop,
                    other => {
                        return Err(format!(
                            "Shadow: `then {other}`: a shadow's time ends with `then promote` or `then drop`"
                        ));
                    }
                };
            }
            "queue" => {
                let v = value()?;
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1 << 20).contains(n));
                spec.queue = Some(n.ok_or_else(|| {
                    format!("Shadow: queue `{v}` is not a number of messages from 1 to 1048576")
                })?);
            }
            "except" => {
                let v = value()?;
                spec.except = v.split(',').map(|k| k.trim().to_string()).collect();
                if spec.except.iter().any(String::is_empty) {
                    return Err(format!("Shadow: except `{v}` holds an empty message kind"));
                }
            }
            "pin" => {
                let pair = [w.clone(), value()?.clone()];
                spec.pin = options("Shadow", &mut pair.iter().peekable())?.pin;
            }
            _ => {
                return Err(format!(
                    "Shadow: unknown option `{w}` (known: for, then, queue, except, pin): usage `{USAGE}`"
                ));
            }
        }
    }
    if spec.run_for.is_none() && spec.then == ShadowEnd::Promote {
        return Err(
            "Shadow: `then promote` needs `for <duration>` (or Promote it when you choose)".into(),
        );
    }
    Ok(spec)
}

fn arity(cmd: &str, args: &[String], n: usize, usage: &str) -> Result<(), String> {
    if args.len() != n {
        Err(format!(
            "{cmd} takes {n} argument(s), got {}: usage `{usage}`",
            args.len()
        ))
    } else {
        Ok(())
    }
}

/// Parse one line. `Ok(None)` for a blank or comment line. An error is
/// one line of text, whatever the input held.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    parse_line(line).map_err(|e| printable(&e))
}

/// `text` with control characters and line separators escaped, so that it
/// stays one line wherever it is printed.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Option<Command>, String> {
    let words = tokenize(line)?;
    let Some((head, args)) = words.split_first() else {
        return Ok(None);
    };
    let cmd = head.to_ascii_lowercase();
    let c = match cmd.as_str() {
        "load" => {
            if args.len() < 2 {
                return Err(format!(
                    "Load takes <name> <file.wasm> [options], got {} argument(s)",
                    args.len()
                ));
            }
            let name = name_arg("Load", &args[0])?;
            let mut rest = args[2..].iter().peekable();
            let options = options("Load", &mut rest)?;
            if let Some(w) = rest.next() {
                return Err(format!(
                    "Load: unknown option `{w}` (known: config, capacity, grant, pin, memory){}",
                    did_you_mean(w, OPTION_WORDS).replace(" (try Help)", "")
                ));
            }
            Command::Load {
                name,
                path: PathBuf::from(&args[1]),
                options,
            }
        }
        "move" => {
            arity("Move", args, 2, "Move <name> <host>")?;
            let host = &args[1];
            if !liveswap::lattice::valid_id(host) {
                return Err(format!(
                    "Move: host id {:?} must be 1 to 64 letters, digits, `-` or `_`",
                    liveswap::limits::clip(host, 64)
                ));
            }
            Command::Move {
                name: name_arg("Move", &args[0])?,
                host: host.clone(),
            }
        }
        "unload" => {
            arity("Unload", args, 1, "Unload <name>")?;
            Command::Unload(name_arg("Unload", &args[0])?)
        }
        "enable" => {
            arity("Enable", args, 1, "Enable <name>")?;
            Command::Enable(name_arg("Enable", &args[0])?)
        }
        "disable" => {
            arity("Disable", args, 1, "Disable <name>")?;
            Command::Disable(name_arg("Disable", &args[0])?)
        }
        "replace" => {
            let targets = pairs("Replace", args)?;
            if targets.len() != 1 {
                return Err(format!(
                    "Replace takes one <name> <file.wasm> [pin sha256:...], got {} pairs (use Syn_Replace for a group)",
                    targets.len()
                ));
            }
            Command::Upgrade {
                kind: GroupKind::Replace,
                targets,
            }
        }
        "syn_replace" => Command::Upgrade {
            kind: GroupKind::Replace,
            targets: pairs("Syn_Replace", args)?,
        },
        "syn_load" => Command::Upgrade {
            kind: GroupKind::Load,
            targets: pairs("Syn_Load", args)?,
        },
        "syn_upgrade" => Command::Upgrade {
            kind: GroupKind::Upgrade,
            targets: pairs("Syn_Upgrade", args)?,
        },
        "settimer" => {
            arity("SetTimer", args, 1, "SetTimer <duration>")?;
            let d = parse_duration(&args[0]).map_err(|e| format!("SetTimer: {e}"))?;
            if d.is_zero() {
                return Err("SetTimer: the bound must be more than zero".into());
            }
            Command::SetTimer(d)
        }
        "setmode" => {
            arity("SetMode", args, 1, "SetMode concurrent|sequential|early")?;
            match args[0].to_ascii_lowercase().as_str() {
                "concurrent" => Command::SetMode(Mode::Concurrent),
                "sequential" => Command::SetMode(Mode::Sequential),
                "early" => Command::SetMode(Mode::Early),
                other => {
                    return Err(format!(
                        "SetMode: `{other}` is not a mode (concurrent, sequential or early)"
                    ));
                }
            }
        }
        "setprobation" => {
            let usage = "SetProbation <duration> [errors <percent>%]";
            if args.len() != 1 && args.len() != 3 {
                return Err(format!(
                    "SetProbation takes 1 or 3 argument(s), got {}: usage `{usage}`",
                    args.len()
                ));
            }
            let window = parse_duration(&args[0]).map_err(|e| format!("SetProbation: {e}"))?;
            let max_error_pct = match args.get(1..) {
                Some([word, pct]) if word.eq_ignore_ascii_case("errors") => pct
                    .strip_suffix('%')
                    .unwrap_or(pct)
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| {
                        format!("SetProbation: `{pct}` is not a percentage from 0% to 100%")
                    })?,
                Some([word, _]) => {
                    return Err(format!(
                        "SetProbation: unknown option `{word}`: usage `{usage}`"
                    ));
                }
                _ => 50,
            };
            Command::SetProbation {
                window,
                max_error_pct,
            }
        }
        "setcheckpoint" => {
            arity("SetCheckpoint", args, 1, "SetCheckpoint <duration>")?;
            Command::SetCheckpoint(
                parse_duration(&args[0]).map_err(|e| format!("SetCheckpoint: {e}"))?,
            )
        }
        "shadow" => Command::Shadow(shadow(args)?),
        "promote" => {
            if args.is_empty() {
                return Err(
                    "Promote takes one or more module names: usage `Promote <name> [<name>...]`"
                        .into(),
                );
            }
            let mut names: Vec<String> = Vec::new();
            for a in args {
                let n = name_arg("Promote", a)?;
                if names.contains(&n) {
                    return Err(format!("Promote: `{n}` is named twice"));
                }
                names.push(n);
            }
            Command::Promote(names)
        }
        "unshadow" => {
            arity("Unshadow", args, 1, "Unshadow <name>")?;
            Command::Unshadow(name_arg("Unshadow", &args[0])?)
        }
        "poison" => {
            arity("Poison", args, 1, "Poison <name>")?;
            Command::Poison(name_arg("Poison", &args[0])?)
        }
        "send" => {
            if !(2..=3).contains(&args.len()) {
                return Err(format!(
                    "Send takes <name> <kind> [\"text\"], got {} argument(s)",
                    args.len()
                ));
            }
            Command::Send {
                to: name_arg("Send", &args[0])?,
                kind: args[1].clone(),
                body: args.get(2).cloned().unwrap_or_default(),
            }
        }
        "wait" => {
            arity("Wait", args, 1, "Wait <duration>")?;
            Command::Wait(parse_duration(&args[0]).map_err(|e| format!("Wait: {e}"))?)
        }
        "help" if args.len() == 1 => {
            // Checked here so that a script stops at a bad one; the entry
            // itself is printed by `execute_line`.
            help_for(&args[0])?;
            Command::Help
        }
        "status" | "versions" | "history" | "help" | "quit" | "exit" => {
            if !args.is_empty() {
                return Err(format!("{head} takes no arguments"));
            }
            match cmd.as_str() {
                "status" => Command::Status,
                "versions" => Command::Versions,
                "history" => Command::History,
                "help" => Command::Help,
                _ => Command::Quit,
            }
        }
        _ => {
            return Err(format!(
                "unknown command `{head}`{}",
                did_you_mean(head, KEYWORDS.iter().copied().chain(["Watch", "Json"]))
            ));
        }
    };
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_keyword_is_a_command_the_parser_knows() {
        for k in super::KEYWORDS {
            if let Err(e) = super::parse(k) {
                assert!(!e.contains("unknown command"), "{k}: {e}");
            }
        }
    }

    use super::*;

    #[test]
    fn keywords_are_case_insensitive_and_comments_ignored() {
        assert_eq!(parse("  # nothing").unwrap(), None);
        assert_eq!(
            parse("uNLOAD IP # bye").unwrap(),
            Some(Command::Unload("IP".into()))
        );
    }

    #[test]
    fn quoted_config_keeps_spaces_and_escapes() {
        let c = parse(r#"Load A a.wasm config "sub B x\ntimer t 5" capacity 10"#).unwrap();
        let Some(Command::Load { options, .. }) = c else {
            panic!("{c:?}")
        };
        assert_eq!(options.config, b"sub B x\ntimer t 5");
        assert_eq!(options.capacity, Some(10));
    }

    #[test]
    fn group_targets_take_options() {
        let c = parse("Syn_Load A a.wasm grant udp 127.0.0.1:9 config x B b.wasm").unwrap();
        let Some(Command::Upgrade { targets, .. }) = c else {
            panic!("{c:?}")
        };
        assert_eq!(targets.len(), 2);
        assert_eq!(
            targets[0].options.grants,
            vec![Grant::Udp("127.0.0.1:9".parse().unwrap())]
        );
        assert_eq!(targets[0].options.config, b"x");
        assert!(targets[1].options.is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(parse("Replace A").unwrap_err().contains("`A` has no file"));
        assert!(
            parse("Replace A a.wasm B b.wasm")
                .unwrap_err()
                .contains("Syn_Replace")
        );
        assert!(
            parse("Replace A a.wasm pin sha256:12")
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            parse("Syn_Replace A a.wasm B")
                .unwrap_err()
                .contains("pairs")
        );
        assert!(
            parse("Syn_Replace A a.wasm A b.wasm")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse("Frobnicate").unwrap_err().contains("unknown command"));
        assert!(
            parse("Load 9x a.wasm")
                .unwrap_err()
                .contains("not a valid module name")
        );
        assert!(
            parse("Load A a.wasm config")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse("Send A do \"open")
                .unwrap_err()
                .contains("unterminated")
        );
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_command_it_meant() {
        let e = parse("Replce A a.wasm").unwrap_err();
        assert_eq!(e, "unknown command `Replce`; did you mean `Replace`?");
        let e = parse("synreplace A a.wasm").unwrap_err();
        assert!(e.contains("did you mean `Syn_Replace`?"), "{e}");
        let e = parse("Frobnicate").unwrap_err();
        assert_eq!(e, "unknown command `Frobnicate` (try Help)");
        let e = parse("Load A a.wasm capcity 3").unwrap_err();
        assert!(e.ends_with("did you mean `capacity`?"), "{e}");
        let e = parse("Load A a.wasm grant udb 127.0.0.1:9").unwrap_err();
        assert!(e.ends_with("did you mean `udp`?"), "{e}");
    }

    #[test]
    fn help_for_one_command_is_its_entry_only() {
        let h = help_for("replace").unwrap();
        assert!(
            h.trim_start().starts_with("Replace <name> <file.wasm>"),
            "{h}"
        );
        assert!(!h.contains("Load"), "{h}");
        assert!(help_for("Disable").unwrap().contains("Disable <name>"));
        assert!(help_for("json").unwrap().contains("Json on|off"));
        assert_eq!(
            help_for("Replac").unwrap_err(),
            "Help: no command `Replac`; did you mean `Replace`?"
        );
        assert!(parse("Help Replace").unwrap().is_some());
        assert!(parse("Help Nothing").is_err());
        let all = help();
        for (k, _) in ENTRIES {
            assert!(all.contains(k), "{k} is missing from Help");
        }
        assert!(all.contains("Watch") && all.contains("Json on|off"));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("1gib"), Some(1 << 30));
        assert_eq!(parse_size("500kb"), Some(500_000));
        assert_eq!(parse_size("12B"), Some(12));
        assert_eq!(parse_size("1.5GB"), None);
        let e = parse("Load A a.wasm memory 64").unwrap_err();
        assert!(
            e.contains("64 bytes") && e.contains("did you mean 64MiB?"),
            "{e}"
        );
        assert!(parse("Load A a.wasm memory 1GB").is_ok());
    }

    #[test]
    fn relative_paths_are_resolved_against_the_base_and_nothing_else_changes() {
        let base = Path::new("/scripts");
        assert_eq!(
            resolve_paths("Replace IP ip_v2.wasm", base),
            "Replace IP /scripts/ip_v2.wasm"
        );
        assert_eq!(
            resolve_paths("Load A ../g/a.wasm grant dir data /data rw", base),
            "Load A /scripts/../g/a.wasm grant dir /scripts/data /data rw"
        );
        assert_eq!(
            resolve_paths("Syn_Replace A /abs/a.wasm B b.wasm", base),
            "Syn_Replace A /abs/a.wasm B /scripts/b.wasm"
        );
        // Nothing relative, or not a command: as it was.
        assert_eq!(
            resolve_paths("Replace A /abs/a.wasm", base),
            "Replace A /abs/a.wasm"
        );
        assert_eq!(resolve_paths("Status # hi", base), "Status # hi");
        assert_eq!(resolve_paths("Replce A a.wasm", base), "Replce A a.wasm");
    }
}

#[cfg(test)]
mod render_tests {
    use super::parse;

    #[test]
    fn a_rendered_command_parses_back_to_itself() {
        for line in [
            "load A \"my dir/a.wasm\" config \"x y\" capacity 3 grant udp 127.0.0.1:9 \
             grant dir \"/tmp/a b\" /data RO grant env \"MODE=fast lane\" grant tcp [::1]:80",
            "syn_upgrade A a.wasm B b.wasm grant env X= C c.wasm",
            "send A \"#kind\" \"a \\\"quoted\\\" body\"",
            "settimer 1.5",
            "load A a.wasm memory 2MiB",
            "setprobation 5s errors 20%",
            "setprobation 250ms",
            "setcheckpoint 0",
            "poison A",
            "wait 250us",
            "exit",
        ] {
            let c = parse(line).unwrap().unwrap();
            let text = c.to_string();
            assert_eq!(parse(&text).unwrap().unwrap(), c, "{line} -> {text}");
        }
    }
}
